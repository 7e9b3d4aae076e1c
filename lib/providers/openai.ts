import type { ErrorKind } from '../errors.js';
import { KeyFailoverError, checkKnownOptions, describeValue } from '../validations.js';
import type { KeyAccount } from '../pool/keys.js';
import { PRESETS, type ProviderPreset } from './azure.js';
import { openaiFailures } from './openai-causes.js';
import { openaiStreams } from './openai-stream.js';
import { bearerToken, headerValue, type Provider } from './provider.js';
import { parseRoutes } from './routes.js';

// OpenAI's error envelope: { error: { message, type, param, code } }.
const TYPES: Record<ErrorKind, { type: string; code: string }> = {
  no_pool: { type: 'server_error', code: 'gateway_misconfigured' },
  body_consumed: { type: 'server_error', code: 'gateway_misconfigured' },
  body_too_large: { type: 'invalid_request_error', code: 'request_too_large' },
  invalid_client_key: { type: 'invalid_request_error', code: 'invalid_api_key' },
  invalid_path: { type: 'invalid_request_error', code: 'invalid_path' },
  method_not_allowed: { type: 'invalid_request_error', code: 'method_not_allowed' },
  path_not_allowed: { type: 'invalid_request_error', code: 'path_not_allowed' },
  rate_limited: { type: 'rate_limit_error', code: 'rate_limit_exceeded' },
  keys_disabled: { type: 'upstream_error', code: 'all_keys_unauthorized' },
  keys_out_of_quota: { type: 'insufficient_quota', code: 'all_keys_out_of_quota' },
  key_refused: { type: 'upstream_error', code: 'key_refused' },
  upstream_unreachable: { type: 'upstream_error', code: 'upstream_unreachable' },
  upstream_timeout: { type: 'upstream_error', code: 'upstream_timeout' },
  internal: { type: 'server_error', code: 'internal_error' },
};

const OPENAI_ROUTES = ['/v1/chat/completions', '/v1/responses'];

export interface OpenAICompatibleOptions {
  /**
   * Defaults for a known host: `'azure'` (Azure OpenAI, as the `AzureOpenAI` class calls it: the key in
   * `api-key`, its deployment routes). Any option given beside it wins over the preset's.
   */
  preset?: ProviderPreset;
  /** A name for logs. Default `'openai-compatible'`. */
  name?: string;
  /** The header that carries the key. Default `'authorization'`; Azure uses `'api-key'`. */
  authHeader?: string;
  /** Written before the key in that header. Default `'Bearer'` for `authorization`, none otherwise. */
  authScheme?: string;
  /** Query parameters set on every upstream URL, such as `{ 'api-version': '2024-10-21' }`. */
  query?: Record<string, string>;
  /**
   * POST routes that get failover. Default `['/v1/chat/completions', '/v1/responses']`. A segment
   * `:name` is a path parameter (`/openai/deployments/:deployment/chat/completions`).
   */
  routes?: string[];
}

const WHERE = 'openaiCompatible()';
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** A host that speaks OpenAI's API with another key header, query or routes: Azure OpenAI, OpenRouter, Groq, vLLM... */
export function openaiCompatible(options: OpenAICompatibleOptions = {}): Provider {
  checkKnownOptions(WHERE, options, ['preset', 'name', 'authHeader', 'authScheme', 'query', 'routes']);
  const preset = checkPreset(options.preset);
  const authHeader = checkString('authHeader', options.authHeader ?? preset?.authHeader ?? 'authorization', TOKEN).toLowerCase();
  const scheme = checkString('authScheme', options.authScheme ?? (authHeader === 'authorization' ? 'Bearer' : ''), /^[A-Za-z-]*$/);
  const query = checkQuery(options.query ?? {});
  const { routes, routePatterns } = parseRoutes(WHERE, options.routes ?? preset?.routes ?? OPENAI_ROUTES);
  const prefix = scheme ? `${scheme} ` : '';
  return {
    name: checkString('name', options.name ?? preset?.name ?? 'openai-compatible', /^.+$/),
    routes,
    ...(routePatterns.length === 0 ? {} : { routePatterns }),
    clientAuthHeaders: [...new Set(['authorization', authHeader])],
    authHeader: (key) => [authHeader, prefix + key],
    clientKey: (headers) => (scheme ? bearerToken(headers[authHeader]) : headerValue(headers[authHeader])),
    query,
    errorBody: (kind, message) => ({ error: { message, type: TYPES[kind].type, param: null, code: TYPES[kind].code } }),
    failures: openaiFailures,
    streams: openaiStreams,
    accountHeaders: ACCOUNT_HEADERS,
    keyAccountHeaders,
  };
}

const ACCOUNT_HEADERS = ['openai-organization', 'openai-project'];

function keyAccountHeaders(account: KeyAccount): [string, string][] {
  const headers: [string, string][] = [];
  if (account.organization !== undefined) headers.push(['openai-organization', account.organization]);
  if (account.project !== undefined) headers.push(['openai-project', account.project]);
  return headers;
}

/** OpenAI itself: `Authorization: Bearer <key>`, chat completions and responses. */
export const openai: Provider = openaiCompatible({ name: 'openai' });

function checkString(name: string, value: unknown, pattern: RegExp): string {
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "${name}" must be a valid ${name === 'authHeader' ? 'header name' : 'string'}, got ${
        typeof value === 'string' ? JSON.stringify(value) : describeValue(value)
      }.`,
    );
  }
  return value;
}

function checkQuery(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.values(value).some((v) => typeof v !== 'string')) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "query" must be an object of string values, got ${describeValue(value)}.`,
    );
  }
  return { ...(value as Record<string, string>) };
}

function checkPreset(value: unknown): (typeof PRESETS)[ProviderPreset] | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string' && Object.hasOwn(PRESETS, value)) return PRESETS[value as ProviderPreset];
  throw new KeyFailoverError(
    'ERR_EKF_INVALID_OPTION',
    `${WHERE}: option "preset" must be one of ${Object.keys(PRESETS)
      .map((name) => `'${name}'`)
      .join(', ')}, got ${typeof value === 'string' ? JSON.stringify(value) : describeValue(value)}.`,
  );
}
