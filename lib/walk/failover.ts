import type { ErrorKind } from '../errors.js';
import type { KeyPool, MarkDetails, PoolKey } from '../pool/key-pool.js';
import type { RouteScope } from '../pool/scopes.js';
import type { KeyWalker, ModelSource } from '../pool/walker.js';
import { judge, judgeStreamFailure, relayOf, type FailoverPolicy, type Verdict } from './judge.js';
import type { FailoverAction } from '../providers/causes.js';
import { cooldownFromHeaders } from '../upstream/rate-limit-headers.js';
import { UpstreamFailure, discard, type HeldResponse, type UpstreamResponse } from '../upstream/relay.js';
import { holdStream, isPlainEventStream, type StreamHold } from '../upstream/stream-hold.js';
import { learnCreated, startWalk, type ObjectRoute } from './affinity.js';
import { NO_BUDGET, WalkSession, type AttemptLimits } from './session.js';
import { exhaustedOutcome, failureOutcome, outcomeOf } from './outcomes.js';

export type { FailoverAction, FailoverPolicy };

/** What the walk knows of the request besides its attempts. */
export interface WalkContext {
  requestId?: string | undefined;
  /** The request's model, read only when the pool needs it. */
  model?: ModelSource;
  /** The request's route: its scope when the model cannot be read. */
  route?: RouteScope | undefined;
  /** For a route that streams: how the opening of a 200 event stream is held and read. */
  stream?: StreamHold | undefined;
  /** Aborted when the client goes away: a hold it ends is no upstream failure. */
  signal?: AbortSignal | undefined;
  /** The upstream objects the request names or creates (affinity). */
  objects?: ObjectRoute | undefined;
}

/** How one walk over the pool ended. */
export type WalkOutcome =
  | { kind: 'relay'; response: UpstreamResponse }
  | { kind: 'held'; response: HeldResponse }
  | { kind: 'error'; error: ErrorKind; retryAfterMs?: number }
  | { kind: 'aborted' };

/** An unrecognised 401, waiting for another key's answer to say whether the key or the request is at fault. */
interface Unconfirmed {
  key: PoolKey;
  answered: Answered;
  /** Its answer, held, lost, or still streaming (paused until it is relayed or let go). */
  verdict: Verdict;
}

/** The head of an answer: what a mark reads. */
type Answered = Pick<UpstreamResponse, 'status' | 'headers'>;

/**
 * Walks the pool with a fresh walker: sends with each available key in turn,
 * judges each failing answer by its cause, marks the key as the policy says,
 * and stops at the first answer to relay. The caller writes the outcome. The
 * one attempt loop of the package: the middleware, the passthrough and the
 * fetch use it.
 */
export async function walkPool(
  pool: KeyPool,
  policy: FailoverPolicy,
  send: (key: PoolKey, limits?: AttemptLimits) => Promise<UpstreamResponse>,
  context: WalkContext = {},
): Promise<WalkOutcome> {
  const { requestId } = context;
  // A request naming an object goes to the key that created it (or gets the pool's 429 while that key cools).
  const walker = startWalk(pool, context.model, context.route, context.objects, requestId);
  if ('kind' in walker) return walker; // not a walker: the pool's 429
  const session = new WalkSession(pool, walker, policy.budget ?? NO_BUDGET, requestId);
  let lastSkipped: HeldResponse | undefined;
  let unconfirmed: Unconfirmed | undefined;
  let requestCaused: { signature: string | undefined; account: string | undefined } | undefined;
  for (let key = session.next(); key !== undefined; key = session.next()) {
    if (!(await session.admit(key))) continue; // a probe another replica is sending
    session.startAttempt();
    let response: UpstreamResponse;
    try {
      response = await send(key, session.limits());
    } catch (error) {
      return unanswered(error, key, session);
    }
    let verdict: Verdict | undefined;
    if (context.stream !== undefined && context.stream.holdMs > 0 && isPlainEventStream(response)) {
      const held = await holdStream(response, context.stream);
      if (held.kind === 'lost') {
        session.failed();
        const aborted = context.signal?.aborted === true;
        session.report(key, aborted ? 'aborted' : 'unreachable', response.status);
        return aborted ? { kind: 'aborted' } : { kind: 'error', error: 'upstream_unreachable' };
      }
      if (held.kind === 'commit') response = held.response;
      else verdict = judgeStreamFailure(policy, held.failure, response);
    }
    session.heard(key, response.headers);
    verdict ??= await judge(policy, response);
    if (context.signal?.aborted) return clientLeft(key, response.status, session, verdict, unconfirmed?.verdict);
    const status =
      verdict.inStream && verdict.answer !== undefined && 'held' in verdict.answer ? verdict.answer.held.status : response.status;
    const answered: Answered = { status, headers: response.headers };
    // An unrecognised 401 waits for a second key's answer, whether its body was read, lost or too large to hold.
    const provisional = verdict.cause === 'unauthorized' && verdict.action === 'disable';
    session.judged(key, response.headers, provisional ? 'pending' : verdict.action);
    session.report(key, provisional ? 'skip' : outcomeOf(verdict.action), status, verdict.cause, verdict.inStream);

    if (unconfirmed) {
      // The same unrecognised answer from a second key: the request is at fault, not the keys. Neither is marked.
      if (verdict.signature !== undefined && verdict.signature === unconfirmed.verdict.signature) {
        release(unconfirmed.verdict);
        return relayOf(verdict);
      }
      mark(pool, walker, unconfirmed.key, unconfirmed.verdict, unconfirmed.answered, requestId);
      release(unconfirmed.verdict);
      unconfirmed = undefined;
    }
    if (verdict.action === 'relay') return created(pool, key, context, relayOf(verdict));
    if (provisional) {
      unconfirmed = { key, answered, verdict };
      continue;
    }
    mark(pool, walker, key, verdict, answered, requestId);
    if (verdict.action === 'skip' && isRequestCaused(verdict)) {
      // A second key answering the same about the request (a model that does not exist, a request above the
      // limit) ends the walk: a third would say it again, for the whole body sent once more. Unless the
      // two answers came from two organizations, whose models and limits may differ.
      const account = accountOf(key, verdict);
      if (requestCaused !== undefined && requestCaused.signature === verdict.signature && sameAccount(requestCaused.account, account)) {
        return relayOf(verdict);
      }
      requestCaused = { signature: verdict.signature, account };
    }
    if (verdict.answer !== undefined && 'streaming' in verdict.answer) {
      if (verdict.action === 'skip') return { kind: 'relay', response: verdict.answer.streaming }; // too large to hold
      discard(verdict.answer.streaming); // a cooled or disabled key's answer: nobody reads it; free its connection
    } else if (verdict.action === 'skip' && verdict.answer !== undefined) {
      lastSkipped = verdict.answer.held;
    }
  }
  // An unrecognised 401 that no other key could confirm marks nothing: it is relayed, as the last word.
  if (unconfirmed) return relayOf(unconfirmed.verdict);
  return lastSkipped ? { kind: 'held', response: lastSkipped } : exhaustedOutcome(pool, walker, requestId, session.spent);
}

/** A relayed 2xx answer to a create call: the key that made the object is remembered for it (affinity). */
function created(pool: KeyPool, key: PoolKey, context: WalkContext, outcome: WalkOutcome): WalkOutcome {
  const creates = context.objects?.creates;
  if (creates !== undefined && outcome.kind === 'relay' && outcome.response.status >= 200 && outcome.response.status < 300) {
    learnCreated(pool, key, creates, outcome.response, context.requestId);
  }
  return outcome;
}

/** A send that got no answer: the walk ends with what happened to it (the client left, a timeout, no connection). */
function unanswered(error: unknown, key: PoolKey, session: WalkSession): WalkOutcome {
  session.failed();
  const outcome = failureOutcome(error);
  session.report(key, outcome.kind === 'aborted' ? 'aborted' : (error as UpstreamFailure).reason);
  return outcome;
}

/** The client left while the answer was read: what was read of it says nothing about the key. */
function clientLeft(key: PoolKey, status: number, session: WalkSession, ...verdicts: (Verdict | undefined)[]): WalkOutcome {
  session.failed();
  for (const verdict of verdicts) if (verdict !== undefined) release(verdict);
  session.report(key, 'aborted', status);
  return { kind: 'aborted' };
}

/** Frees the connection of a verdict's answer that will not be relayed. */
function release(verdict: Verdict): void {
  if (verdict.answer !== undefined && 'streaming' in verdict.answer) discard(verdict.answer.streaming);
}

function isRequestCaused(verdict: Verdict): boolean {
  return verdict.cause === 'request_not_allowed' || verdict.cause === 'request_too_large';
}

/**
 * The account a request-caused answer came from, as far as it is known: the key's own `organization`
 * and `project`, and the ids the answer names. Undefined: nothing tells.
 */
function accountOf(key: PoolKey, verdict: Verdict): string | undefined {
  const { organization, project } = key.account ?? {};
  if (organization === undefined && project === undefined && verdict.account === undefined) return undefined;
  return `${organization ?? ''} ${project ?? ''} ${verdict.account ?? ''}`;
}

/** Two answers from one account, as far as they tell: different only when both say whose they are, and not the same. */
function sameAccount(a: string | undefined, b: string | undefined): boolean {
  return a === undefined || b === undefined || a === b;
}

/** What a verdict does to the key: a cooldown (for the request's model when it is a rate limit) or a disable. */
function mark(pool: KeyPool, walker: KeyWalker, key: PoolKey, verdict: Verdict, answer: Answered, requestId: string | undefined): void {
  const { action, cause } = verdict;
  if (action === 'relay') return;
  const details: MarkDetails = { status: answer.status };
  if (cause !== undefined) details.cause = cause;
  if (requestId !== undefined) details.requestId = requestId;
  if (action === 'cooldown') {
    const cooldownMs = cooldownFromHeaders(answer.headers, pool.now(), pool.cooldownBounds) ?? pool.defaultCooldownMs;
    // A rate limit is the group's (its organization's), for the request's model.
    const limited = cause === 'rate_limited';
    pool.markAnswer(key, { cooldownMs, group: limited }, details, limited ? walker.scope() : undefined);
  } else if (action === 'disable') {
    const reason = cause === 'insufficient_quota' ? 'quota' : 'auth';
    pool.markAnswer(key, { disable: true, group: verdict.accountWide === true }, { ...details, reason });
  }
  // Built only for a listener: this runs on every failover.
  if (pool.listenerCount('failover') === 0) return;
  pool.emit('failover', {
    id: key.id,
    hint: key.hint,
    status: answer.status,
    action,
    ...(cause === undefined ? {} : { cause }),
    ...(verdict.inStream ? { inStream: true } : {}),
    ...(requestId === undefined ? {} : { requestId }),
  });
}

/**
 * A request that can be sent once only (a streamed body): with the walk's first available key, judged
 * as a walk's attempt is, and reported by an 'attempt' event like a walk's first attempt. `onExhausted`
 * runs when no key is left (to drain the body nobody will send).
 */
export async function sendOnce(
  pool: KeyPool,
  policy: FailoverPolicy,
  send: (key: PoolKey) => Promise<UpstreamResponse>,
  context: WalkContext & { onExhausted?: () => void } = {},
): Promise<WalkOutcome> {
  const { requestId } = context;
  // The key that holds an object the request names, if any.
  const walker = startWalk(pool, context.model, context.route, context.objects, requestId);
  if ('kind' in walker) {
    context.onExhausted?.();
    return walker;
  }
  const session = new WalkSession(pool, walker, NO_BUDGET, requestId);
  let key = session.next();
  while (key !== undefined && !(await session.admit(key))) key = session.next();
  if (key === undefined) {
    context.onExhausted?.();
    return exhaustedOutcome(pool, walker, requestId);
  }
  session.startAttempt();
  let response: UpstreamResponse;
  try {
    response = await send(key);
  } catch (error) {
    return unanswered(error, key, session);
  }
  session.heard(key, response.headers);
  const verdict = await judge(policy, response);
  if (context.signal?.aborted) return clientLeft(key, response.status, session, verdict);
  // An unrecognised 401 marks nothing here: no second key can confirm it.
  const marks = verdict.cause !== 'unauthorized';
  session.judged(key, response.headers, marks ? verdict.action : 'pending');
  session.report(key, marks ? outcomeOf(verdict.action) : 'skip', response.status, verdict.cause);
  if (marks) mark(pool, walker, key, verdict, response, requestId);
  if (marks && verdict.action === 'disable') {
    // The pool key's own failure (revoked, out of money) is no answer for the client, and names the key: the gateway's error instead.
    release(verdict);
    return { kind: 'error', error: 'key_refused' };
  }
  return created(pool, key, context, relayOf(verdict));
}
