import { performance } from 'node:perf_hooks';
import type { ErrorKind } from './errors.js';
import type { AttemptOutcome } from './pool/events.js';
import type { KeyPool, MarkDetails, PoolKey } from './pool/key-pool.js';
import type { KeyWalker, ModelSource } from './pool/walker.js';
import {
  DEFAULT_CAUSE_ACTIONS,
  type FailoverAction,
  type FailureAnswer,
  type FailureCause,
  type FailureClassifier,
} from './providers/causes.js';
import { readFailure } from './upstream/failure-body.js';
import { cooldownFromHeaders } from './upstream/rate-limit-headers.js';
import { UpstreamFailure, discard, type HeldResponse, type UpstreamResponse } from './upstream/relay.js';
import { learnCreated, startWalk, type ObjectRoute } from './walk/affinity.js';
import { NO_BUDGET, WalkSession, type AttemptLimits, type WalkBudget } from './walk/session.js';

export type { FailoverAction };

/** How the walk judges a failing answer: the user's entries first (cause, then status), then the cause's default. */
export interface FailoverPolicy {
  readonly statuses: ReadonlyMap<number, FailoverAction>;
  readonly causes: ReadonlyMap<FailureCause, FailoverAction>;
  readonly classifier: FailureClassifier;
  /** How many attempts, and how long, one request may take (maxAttempts, maxWalkMs). */
  readonly budget?: WalkBudget;
}

/** What the walk knows of the request besides its attempts. */
export interface WalkContext {
  requestId?: string | undefined;
  /** The request's model, read only when the pool needs it. */
  model?: ModelSource;
  /** The upstream objects the request names or creates (affinity). */
  objects?: ObjectRoute | undefined;
}

/** How one walk over the pool ended. */
export type WalkOutcome =
  | { kind: 'relay'; response: UpstreamResponse }
  | { kind: 'held'; response: HeldResponse }
  | { kind: 'error'; error: ErrorKind; retryAfterMs?: number }
  | { kind: 'aborted' };

/** One answer, judged: what it does to the key, and what is left of it to relay. */
interface Verdict {
  action: FailoverAction;
  cause: FailureCause | undefined;
  /** The answer, held in memory when its body was read, or still streaming. Undefined: its body was lost. */
  answer: { held: HeldResponse } | { streaming: UpstreamResponse } | undefined;
  signature: string | undefined;
  /** An empty account that the provider says is the whole organization's: every key of its group is out. */
  accountWide?: boolean;
}

/** An unrecognised 401, waiting for another key's answer to say whether the key or the request is at fault. */
interface Unconfirmed {
  key: PoolKey;
  answered: Answered;
  verdict: Verdict & { answer: { held: HeldResponse } };
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
  const walker = startWalk(pool, context.model, context.objects, requestId);
  if ('kind' in walker) return walker; // not a walker: the pool's 429 (by shape: a pool of the other build works too)
  const session = new WalkSession(pool, walker, policy.budget ?? NO_BUDGET, requestId);
  const observed = pool.listenerCount('attempt') > 0;
  let lastSkipped: HeldResponse | undefined;
  let unconfirmed: Unconfirmed | undefined;
  let attempt = 0;
  for (let key = session.next(); key !== undefined; key = session.next()) {
    if (!(await session.admit(key))) continue; // a probe another replica is sending
    attempt++;
    const started = observed ? performance.now() : 0;
    let response: UpstreamResponse;
    try {
      response = await send(key, session.limits());
    } catch (error) {
      session.failed();
      const outcome = failureOutcome(error);
      if (observed) {
        const reason = outcome.kind === 'aborted' ? 'aborted' : (error as UpstreamFailure).reason;
        attempted(pool, walker, { key, attempt, started, outcome: reason, status: undefined, cause: undefined, requestId });
      }
      return outcome;
    }
    session.heard(key, response.headers);
    const verdict = await judge(policy, response);
    const provisional =
      verdict.cause === 'unauthorized' && verdict.action === 'disable' && verdict.answer !== undefined && 'held' in verdict.answer;
    session.judged(key, response.headers, provisional ? 'pending' : verdict.action);
    if (observed) {
      const outcome = provisional ? 'skip' : outcomeOf(verdict.action);
      attempted(pool, walker, { key, attempt, started, outcome, status: response.status, cause: verdict.cause, requestId });
    }

    if (unconfirmed) {
      // The same unrecognised answer from a second key: the request is at fault, not the keys. Neither is marked.
      if (verdict.signature !== undefined && verdict.signature === unconfirmed.verdict.signature) return relayOf(verdict);
      mark(pool, walker, unconfirmed.key, unconfirmed.verdict, unconfirmed.answered, requestId);
      unconfirmed = undefined;
    }
    if (verdict.action === 'relay') return created(pool, key, context, relayOf(verdict));
    if (provisional) {
      unconfirmed = { key, answered: response, verdict: verdict as Unconfirmed['verdict'] };
      continue;
    }
    mark(pool, walker, key, verdict, response, requestId);
    if (verdict.answer !== undefined && 'streaming' in verdict.answer) {
      if (verdict.action === 'skip') return { kind: 'relay', response: verdict.answer.streaming }; // too large to hold
      discard(verdict.answer.streaming); // a cooled or disabled key's answer: nobody reads it; free its connection
    } else if (verdict.action === 'skip' && verdict.answer !== undefined) {
      lastSkipped = verdict.answer.held;
    }
  }
  // An unrecognised 401 that no other key could confirm marks nothing: it is relayed, as the last word.
  if (unconfirmed) return { kind: 'held', response: unconfirmed.verdict.answer.held };
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

/**
 * Reads (bounded) and classifies a failing answer. Any other answer (a success, a status no one
 * classifies) is judged by the user's status entry alone and left unread, unless it is to be held.
 */
async function judge(policy: FailoverPolicy, response: UpstreamResponse): Promise<Verdict> {
  const { status } = response;
  const byStatus = policy.statuses.get(status);
  if (!policy.classifier.statuses.has(status) || (byStatus !== undefined && policy.causes.size === 0)) {
    if (byStatus !== 'skip')
      return { action: byStatus ?? 'relay', cause: undefined, answer: { streaming: response }, signature: undefined };
  }
  const read = await readFailure(response);
  const failure: FailureAnswer = { status, headers: response.headers, body: read.json };
  const cause = policy.classifier.classify(failure);
  const action = (cause && policy.causes.get(cause)) ?? byStatus ?? (cause && DEFAULT_CAUSE_ACTIONS[cause]) ?? 'relay';
  const answer = 'held' in read ? { held: read.held } : 'streaming' in read ? { streaming: read.streaming } : undefined;
  const accountWide = cause === 'insufficient_quota' && policy.classifier.accountWide?.(failure) === true;
  return { action, cause, answer, signature: policy.classifier.signature(failure), accountWide };
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
  pool.emit('failover', {
    id: key.id,
    hint: key.hint,
    status: answer.status,
    action,
    ...(cause === undefined ? {} : { cause }),
    ...(requestId === undefined ? {} : { requestId }),
  });
}

/**
 * One attempt that cannot be sent again (a streamed body): the key still learns from the answer,
 * which is relayed whatever it says. An unrecognised 401 marks nothing: no second key can confirm it.
 */
export async function learnFromAnswer(
  session: WalkSession,
  pool: KeyPool,
  policy: FailoverPolicy,
  key: PoolKey,
  response: UpstreamResponse,
  context: WalkContext,
): Promise<WalkOutcome> {
  session.heard(key, response.headers);
  const verdict = await judge(policy, response);
  const unconfirmable = verdict.cause === 'unauthorized';
  session.judged(key, response.headers, unconfirmable ? 'pending' : verdict.action);
  if (!unconfirmable) mark(pool, session.walker, key, verdict, response, context.requestId);
  return created(pool, key, context, relayOf(verdict));
}

function relayOf(verdict: Verdict): WalkOutcome {
  if (verdict.answer === undefined) return { kind: 'error', error: 'upstream_unreachable' };
  return 'held' in verdict.answer ? { kind: 'held', response: verdict.answer.held } : { kind: 'relay', response: verdict.answer.streaming };
}

function outcomeOf(action: FailoverAction): AttemptOutcome {
  return action === 'relay' ? 'relayed' : action;
}

interface Attempted {
  key: PoolKey;
  /** 1 for the walk's first attempt. */
  attempt: number;
  started: number;
  outcome: AttemptOutcome;
  status: number | undefined;
  cause: FailureCause | undefined;
  requestId: string | undefined;
}

/** The 'attempt' event, for observers (metrics, tracing); only built when one listens, and only then is the model read. */
function attempted(pool: KeyPool, walker: KeyWalker, { key, attempt, started, outcome, status, cause, requestId }: Attempted): void {
  const model = walker.scope();
  pool.emit('attempt', {
    id: key.id,
    hint: key.hint,
    attempt,
    outcome,
    durationMs: performance.now() - started,
    ...(status === undefined ? {} : { status }),
    ...(cause === undefined ? {} : { cause }),
    ...(model === undefined ? {} : { model }),
    ...(requestId === undefined ? {} : { requestId }),
  });
}

/**
 * The pool error for a walk that found no key: 502 when every key is out (disabled, or out of quota),
 * else 429 with Retry-After (for the request's model: a key cooling for another model is not "no key").
 */
export function exhaustedOutcome(
  pool: KeyPool,
  walker: KeyWalker | undefined,
  requestId?: string,
  budget?: 'maxAttempts' | 'maxWalkMs',
): WalkOutcome {
  const exhaustion = pool.exhaustionFor(walker?.scope(), walker?.list);
  pool.emit('exhausted', { ...exhaustion, ...(budget === undefined ? {} : { budget }), ...(requestId === undefined ? {} : { requestId }) });
  if (exhaustion.reason === 'disabled') return { kind: 'error', error: 'keys_disabled' };
  if (exhaustion.reason === 'quota') return { kind: 'error', error: 'keys_out_of_quota' };
  return { kind: 'error', error: 'rate_limited', retryAfterMs: Math.ceil(exhaustion.retryAfterMs) };
}

export function failureOutcome(error: unknown): WalkOutcome {
  if (!(error instanceof UpstreamFailure)) throw error;
  if (error.reason === 'aborted') return { kind: 'aborted' };
  return { kind: 'error', error: error.reason === 'timeout' ? 'upstream_timeout' : 'upstream_unreachable' };
}
