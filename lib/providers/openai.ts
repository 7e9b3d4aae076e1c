import type { ErrorKind } from '../errors.js';
import type { Provider } from './provider.js';

// OpenAI's error envelope: { error: { message, type, param, code } }.
const TYPES: Record<ErrorKind, { type: string; code: string }> = {
  no_pool: { type: 'server_error', code: 'gateway_misconfigured' },
  body_consumed: { type: 'server_error', code: 'gateway_misconfigured' },
  body_too_large: { type: 'invalid_request_error', code: 'request_too_large' },
  invalid_client_key: { type: 'invalid_request_error', code: 'invalid_api_key' },
  rate_limited: { type: 'rate_limit_error', code: 'rate_limit_exceeded' },
  keys_disabled: { type: 'upstream_error', code: 'all_keys_unauthorized' },
  upstream_unreachable: { type: 'upstream_error', code: 'upstream_unreachable' },
  upstream_timeout: { type: 'upstream_error', code: 'upstream_timeout' },
  internal: { type: 'server_error', code: 'internal_error' },
};

export const openai: Provider = {
  name: 'openai',
  routes: new Set(['/v1/chat/completions', '/v1/responses']),
  clientAuthHeaders: ['authorization'],
  authHeader: (key) => ['authorization', `Bearer ${key}`],
  errorBody: (kind, message) => ({ error: { message, type: TYPES[kind].type, param: null, code: TYPES[kind].code } }),
};
