import type { ServerResponse } from 'node:http';
import type { Provider } from './providers/provider.js';

/** Every answer the middleware writes itself, rather than relaying the upstream's. */
export type ErrorKind =
  | 'no_pool'
  | 'body_consumed'
  | 'body_too_large'
  | 'invalid_client_key'
  | 'invalid_path'
  | 'method_not_allowed'
  | 'path_not_allowed'
  | 'rate_limited'
  | 'keys_disabled'
  | 'keys_out_of_quota'
  | 'key_refused'
  | 'upstream_unreachable'
  | 'upstream_timeout'
  | 'internal';

const STATUS: Record<ErrorKind, number> = {
  no_pool: 500,
  body_consumed: 500,
  body_too_large: 413,
  invalid_client_key: 400,
  invalid_path: 400,
  method_not_allowed: 405,
  path_not_allowed: 403,
  rate_limited: 429,
  keys_disabled: 502,
  keys_out_of_quota: 502,
  key_refused: 502,
  upstream_unreachable: 502,
  upstream_timeout: 504,
  internal: 500,
};

export const MESSAGES: Record<ErrorKind, string> = {
  no_pool: 'The gateway has no key pool: set app.locals.keyPool = new KeyPool(...) or pass { pool } to keyFailover().',
  body_consumed: 'The gateway could not read the request body: a body parser consumed it and left nothing in req.body to replay.',
  body_too_large: 'The request body is larger than the gateway allows.',
  invalid_client_key: 'The API key supplied with the request is not a valid header value.',
  invalid_path:
    'The request path contains dot segments ("." or ".."), a backslash or an encoded slash, or does not stay under the API base path; the gateway does not forward it.',
  method_not_allowed: 'The gateway does not forward this HTTP method; the Allow header lists the ones it does.',
  path_not_allowed: 'The gateway does not forward requests to this path.',
  rate_limited: 'All configured keys are rate-limited; retry after the time in the Retry-After header.',
  keys_disabled: 'All configured keys failed authentication with the upstream.',
  keys_out_of_quota: "All configured keys are out of quota: the upstream account's credit or spend limit is used up.",
  key_refused:
    "The upstream refused the gateway's key for this request, which could be sent once only (its body was streamed); that key is out of the pool now, and a retry goes with another.",
  upstream_unreachable: 'The upstream API could not be reached.',
  upstream_timeout: 'The upstream API did not answer in time.',
  internal: 'The gateway failed while relaying the request.',
};

export function statusOf(kind: ErrorKind): number {
  return STATUS[kind];
}

/** Writes a provider-shaped JSON error. Messages are fixed strings: no key or header value ever goes in. */
export function sendError(
  res: ServerResponse,
  provider: Provider,
  kind: ErrorKind,
  { message = MESSAGES[kind], headers = {} }: { message?: string; headers?: Record<string, string> } = {},
): void {
  const body = JSON.stringify(provider.errorBody(kind, message));
  res.writeHead(STATUS[kind], {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}
