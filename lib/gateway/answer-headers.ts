import { randomUUID } from 'node:crypto';
import type { ErrorKind } from '../errors.js';
import type { Provider } from '../providers/provider.js';
import { ALLOW_HEADER } from './passthrough-methods.js';

/**
 * The headers of an answer the gateway writes itself. The SDKs read them:
 * `x-request-id` (Anthropic's SDK: `request-id`) becomes `err.requestID`, so
 * that a user can quote it; `x-should-retry: false` stops their automatic
 * retries of an answer that a retry cannot change (every key refused the
 * credentials, the request itself is refused), which they would otherwise
 * repeat twice; `retry-after-ms` gives the pool's exact wait beside
 * `Retry-After`'s whole seconds.
 */

const NOT_RETRYABLE: ReadonlySet<ErrorKind> = new Set<ErrorKind>([
  'keys_disabled',
  'body_too_large',
  'invalid_client_key',
  'invalid_path',
  'method_not_allowed',
  'path_not_allowed',
  'no_pool',
  'body_consumed',
]);

const REQUEST_ID = /^[\w.:@/+=-]{1,128}$/;

/** A client's request id when it is a plain token (letters, digits, `.:@/+=_-`, at most 128 characters). */
export function plainRequestId(value: unknown): string | undefined {
  return typeof value === 'string' && REQUEST_ID.test(value) ? value : undefined;
}

export interface AnswerDetails {
  provider: Provider;
  /** The client's own `x-request-id`, when a plain token; else one is made up. */
  clientRequestId?: string | undefined;
  /** The pool's exact wait: `Retry-After` in whole seconds (rounded up, at least 1) and `retry-after-ms` beside it. */
  retryAfterMs?: number | undefined;
}

export function ownAnswerHeaders(kind: ErrorKind, details: AnswerDetails): Record<string, string> {
  const id = details.clientRequestId ?? `ekf-${randomUUID()}`;
  const headers: Record<string, string> = { 'x-request-id': id };
  if (details.provider.name === 'anthropic') headers['request-id'] = id;
  if (NOT_RETRYABLE.has(kind)) headers['x-should-retry'] = 'false';
  if (kind === 'method_not_allowed') headers['allow'] = ALLOW_HEADER;
  if (details.retryAfterMs !== undefined) {
    headers['retry-after'] = String(Math.max(1, Math.ceil(details.retryAfterMs / 1000)));
    headers['retry-after-ms'] = String(details.retryAfterMs);
  }
  return headers;
}
