/**
 * What an upstream failure means, the way the provider means it. Each
 * provider classifies its own error answers (status, error body, headers)
 * into one of a few causes; each cause has a default action, which the
 * `failover` option can change per cause or per status.
 */

/** What a failover answer does to the key that got it. 'relay' ends the walk with that answer. */
export type FailoverAction = 'cooldown' | 'disable' | 'skip' | 'relay';

export type FailureCause =
  /** The key is invalid, revoked or its account closed: out for every model. */
  | 'invalid_key'
  /** The key's account is out of money (quota, credit, spend limit): out for every model. */
  | 'insufficient_quota'
  /** The key hit a rate limit: it cools for the request's model. */
  | 'rate_limited'
  /** The request alone is above a key's rate limit ("Request too large"): another organization may allow it. */
  | 'request_too_large'
  /** The request is not allowed with this key (organization or project mismatch, scope, region, model access): another may allow it. */
  | 'request_not_allowed'
  /** The provider is overloaded: not the key's fault. */
  | 'overloaded'
  /** A 401 the classifier does not know: the key is out only once another key answered the same request differently. */
  | 'unauthorized';

export const CAUSES: readonly FailureCause[] = [
  'invalid_key',
  'insufficient_quota',
  'rate_limited',
  'request_too_large',
  'request_not_allowed',
  'overloaded',
  'unauthorized',
];

export const DEFAULT_CAUSE_ACTIONS: Readonly<Record<FailureCause, FailoverAction>> = {
  invalid_key: 'disable',
  insufficient_quota: 'disable',
  rate_limited: 'cooldown',
  request_too_large: 'skip',
  request_not_allowed: 'skip',
  overloaded: 'relay',
  unauthorized: 'disable',
};

/** A failing upstream answer as a classifier sees it: the body is the parsed JSON (undefined when there is none). */
export interface FailureAnswer {
  status: number;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  body: unknown;
}

/** How a provider reads its failing answers. */
export interface FailureClassifier {
  /** The statuses whose body is read (bounded) and classified; every other answer is left unread. */
  readonly statuses: ReadonlySet<number>;
  classify(answer: FailureAnswer): FailureCause | undefined;
  /**
   * What makes two answers "the same answer" for the unrecognised-401 rule: status and the
   * error's codes, never its message (which may name the key's hint).
   */
  signature(answer: FailureAnswer): string;
  /**
   * For an `insufficient_quota` answer: whether the empty account is the whole organization's (its
   * balance, its spend limit), so that every key of the key's group is out, rather than one project's.
   */
  accountWide?(answer: FailureAnswer): boolean;
}

/** The `error` object of an error body (`{ error: {...} }`, OpenAI's and Anthropic's shape alike). */
export function errorObject(body: unknown): Record<string, unknown> | undefined {
  const error = isObject(body) ? body['error'] : undefined;
  return isObject(error) ? error : undefined;
}

export function stringField(object: Record<string, unknown> | undefined, name: string): string | undefined {
  const value = object?.[name];
  return typeof value === 'string' ? value : undefined;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
