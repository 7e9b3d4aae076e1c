/**
 * How the walk judges one upstream answer: its cause (from the provider's
 * classifier, for a failing status or an error frame at the opening of a
 * stream), the action the policy gives it, and what is left of the answer
 * to relay. The user's entries come first (cause, then status), then the
 * cause's default.
 */
import {
  DEFAULT_CAUSE_ACTIONS,
  errorObject,
  stringField,
  type FailoverAction,
  type FailureAnswer,
  type FailureCause,
  type FailureClassifier,
} from '../providers/causes.js';
import type { StreamFailure } from '../providers/streams.js';
import { readFailure } from '../upstream/failure-body.js';
import type { HeldResponse, UpstreamResponse } from '../upstream/relay.js';
import type { WalkBudget } from './session.js';

/** How the walk judges a failing answer: the user's entries first (cause, then status), then the cause's default. */
export interface FailoverPolicy {
  readonly statuses: ReadonlyMap<number, FailoverAction>;
  readonly causes: ReadonlyMap<FailureCause, FailoverAction>;
  readonly classifier: FailureClassifier;
  /** How many attempts, and how long, one request may take (maxAttempts, maxWalkMs). */
  readonly budget?: WalkBudget;
}

/** One answer, judged: what it does to the key, and what is left of it to relay. */
export interface Verdict {
  action: FailoverAction;
  cause: FailureCause | undefined;
  /** The answer, held in memory when its body was read, or still streaming. Undefined: its body was lost. */
  answer: { held: HeldResponse } | { streaming: UpstreamResponse } | undefined;
  signature: string | undefined;
  /**
   * For an answer about the request (request_not_allowed, request_too_large): the account it names
   * (organization and project headers, the organization or project ids in its message), so that two
   * such answers from different accounts are told apart. Undefined when it names none.
   */
  account?: string;
  /** An empty account that the provider says is the whole organization's: every key of its group is out. */
  accountWide?: boolean;
  /** The failure was an error frame inside a 200 stream, before its content. */
  inStream?: true;
}

/**
 * Reads (bounded) and classifies a failing answer. Any other answer (a success, a status no one
 * classifies) is judged by the user's status entry alone and left unread, unless it is to be held.
 */
export async function judge(policy: FailoverPolicy, response: UpstreamResponse): Promise<Verdict> {
  const { status } = response;
  const byStatus = policy.statuses.get(status);
  if (!policy.classifier.statuses.has(status) || (byStatus !== undefined && policy.causes.size === 0)) {
    if (byStatus !== 'skip')
      return { action: byStatus ?? 'relay', cause: undefined, answer: { streaming: response }, signature: undefined };
  }
  const read = await readFailure(response);
  const answer = 'held' in read ? { held: read.held } : 'streaming' in read ? { streaming: read.streaming } : undefined;
  return verdictOf(policy, { status, headers: response.headers, body: read.json }, answer);
}

/**
 * An error frame at the opening of a 200 stream, judged as the HTTP answer it stands for. What is
 * left to relay is that answer: a JSON error with the equivalent status (the stream is over), so
 * that a client that gets it sees a clean error its SDK knows, not a stream that breaks.
 */
export function judgeStreamFailure(policy: FailoverPolicy, failure: StreamFailure, response: UpstreamResponse): Verdict {
  const headers: Record<string, string | string[] | undefined> = { ...response.headers, 'content-type': 'application/json' };
  delete headers['content-length'];
  delete headers['content-encoding'];
  const held: HeldResponse = { status: failure.status, headers, body: Buffer.from(JSON.stringify(failure.body)) };
  return { ...verdictOf(policy, { status: failure.status, headers: response.headers, body: failure.body }, { held }), inStream: true };
}

function verdictOf(policy: FailoverPolicy, failure: FailureAnswer, answer: Verdict['answer']): Verdict {
  const cause = policy.classifier.classify(failure);
  const action =
    (cause && policy.causes.get(cause)) ?? policy.statuses.get(failure.status) ?? (cause && DEFAULT_CAUSE_ACTIONS[cause]) ?? 'relay';
  const verdict: Verdict = { action, cause, answer, signature: policy.classifier.signature(failure) };
  if (cause === 'insufficient_quota' && policy.classifier.accountWide?.(failure) === true) verdict.accountWide = true;
  if (cause === 'request_not_allowed' || cause === 'request_too_large') {
    const account = accountNamed(failure);
    if (account !== undefined) verdict.account = account;
  }
  return verdict;
}

const ACCOUNT_ANSWER_HEADERS = ['openai-organization', 'openai-project', 'anthropic-organization-id'];
// "Project `proj_Vx7T...` does not have access to model", "Request too large for gpt-4o in organization org-7kQe...".
const ACCOUNT_IDS = /\b(?:org-[A-Za-z0-9]{6,}|proj_[A-Za-z0-9]{6,})/g;

/** The account ids an answer names in its headers and its message, or undefined. */
function accountNamed({ headers, body }: FailureAnswer): string | undefined {
  const ids: string[] = [];
  for (const name of ACCOUNT_ANSWER_HEADERS) {
    const value = headers[name];
    if (typeof value === 'string' && value !== '') ids.push(value);
  }
  const message = stringField(errorObject(body), 'message');
  if (message !== undefined) for (const id of message.match(ACCOUNT_IDS) ?? []) ids.push(id);
  return ids.length === 0 ? undefined : [...new Set(ids)].sort().join(' ');
}

/** The walk's outcome for an answer to relay (or an error when its body was lost). */
export type RelayOutcome =
  | { kind: 'relay'; response: UpstreamResponse }
  | { kind: 'held'; response: HeldResponse }
  | { kind: 'error'; error: 'upstream_unreachable' };

export function relayOf(verdict: Verdict): RelayOutcome {
  if (verdict.answer === undefined) return { kind: 'error', error: 'upstream_unreachable' };
  return 'held' in verdict.answer ? { kind: 'held', response: verdict.answer.held } : { kind: 'relay', response: verdict.answer.streaming };
}
