import type { ErrorKind } from '../errors.js';
import { anthropicFailures } from './anthropic-causes.js';
import { anthropicStreams } from './anthropic-stream.js';
import { bearerToken, headerValue, type Provider } from './provider.js';

// Anthropic's error envelope: { type: 'error', error: { type, message } }.
const TYPES: Record<ErrorKind, string> = {
  no_pool: 'api_error',
  body_consumed: 'api_error',
  body_too_large: 'request_too_large',
  invalid_client_key: 'invalid_request_error',
  invalid_path: 'invalid_request_error',
  method_not_allowed: 'invalid_request_error',
  path_not_allowed: 'permission_error',
  rate_limited: 'rate_limit_error',
  keys_disabled: 'api_error',
  keys_out_of_quota: 'billing_error',
  key_refused: 'api_error',
  upstream_unreachable: 'api_error',
  upstream_timeout: 'timeout_error',
  internal: 'api_error',
};

/**
 * Anthropic's Messages API: the key goes in `x-api-key` (a client's own key
 * may also come as `Authorization: Bearer`); `anthropic-version`
 * and `anthropic-beta` pass through like every other request header.
 */
export const anthropic: Provider = {
  name: 'anthropic',
  routes: new Set(['/v1/messages', '/v1/messages/count_tokens']),
  // Token counting has its own requests-per-minute limit, apart from message creation.
  routeBuckets: new Map([['/v1/messages/count_tokens', 'count_tokens']]),
  clientAuthHeaders: ['authorization', 'x-api-key'],
  authHeader: (key) => ['x-api-key', key],
  // x-api-key first; @anthropic-ai/sdk 1.x sends its key as a bearer token.
  clientKey: (headers) => headerValue(headers['x-api-key']) ?? bearerToken(headers.authorization),
  query: {},
  errorBody: (kind, message) => ({ type: 'error', error: { type: TYPES[kind], message } }),
  failures: anthropicFailures,
  streams: anthropicStreams,
  // An Anthropic key belongs to one workspace; no request header chooses another.
  accountHeaders: [],
  keyAccountHeaders: () => [],
};
