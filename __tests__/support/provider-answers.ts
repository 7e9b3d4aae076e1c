/**
 * Error answers exactly as OpenAI and Anthropic send them: their bodies
 * (`{ error: { message, type, param, code } }`; Anthropic's envelope with
 * `request_id` and `details.error_code`) and their headers (`x-request-id`,
 * `openai-organization`, `x-ratelimit-*`, `retry-after`, `request-id`,
 * `anthropic-organization-id`, `anthropic-ratelimit-*`). Messages are the
 * providers' own wording, with made-up organization ids.
 */
import type { Behaviour } from './mock-upstream.js';

export const ORG = 'org-7kQe2iT0mBxWc3a9';
export const ANTHROPIC_ORG = '3f6c1b8e-2d4a-4c7b-9e1f-5a0d8c2b7e61';

/**
 * The organization each key belongs to upstream, as its answers name it: one of its own per key (a pool
 * of keys from different organizations, where failover adds capacity), made up from the order keys are
 * first seen in. A test of keys that share an organization passes the header itself.
 */
const organizations = new Map<string, number>();
function organizationIndex(key: string | undefined): number {
  const known = organizations.get(key ?? '');
  if (known !== undefined) return known;
  organizations.set(key ?? '', organizations.size);
  return organizations.size - 1;
}
export const organizationOf = (key: string | undefined): string => `org-mock${organizationIndex(key)}Kq7Wc3a9`;
export const anthropicOrganizationOf = (key: string | undefined): string =>
  `3f6c1b8e-2d4a-4c7b-9e1f-${String(organizationIndex(key)).padStart(12, '0')}`;

let requestCounter = 0;
const openaiRequestId = () => `req_${(++requestCounter).toString(16).padStart(32, '0')}`;
const anthropicRequestId = () => `req_011C${(++requestCounter).toString(36).padStart(20, 'X')}`;

export interface OpenAIErrorShape {
  message: string;
  type: string;
  code: string | null;
  param?: string | null;
}

/** An OpenAI error answer: its body and the headers every answer of theirs carries. */
export function openaiError(status: number, error: OpenAIErrorShape, headers: Record<string, string> = {}): Behaviour {
  return (req, res) => {
    const body = JSON.stringify({ error: { message: error.message, type: error.type, param: error.param ?? null, code: error.code } });
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'x-request-id': openaiRequestId(),
      'openai-organization': organizationOf(req.key),
      'openai-processing-ms': '12',
      'openai-version': '2020-10-01',
      ...headers,
    });
    res.end(body);
  };
}

/** OpenAI's rate-limit headers for a model whose tokens-per-minute limit is used up. */
export function openaiLimitHeaders(resetTokens = '1.088s', resetRequests = '6ms'): Record<string, string> {
  return {
    'x-ratelimit-limit-requests': '10000',
    'x-ratelimit-limit-tokens': '30000',
    'x-ratelimit-remaining-requests': '9999',
    'x-ratelimit-remaining-tokens': '0',
    'x-ratelimit-reset-requests': resetRequests,
    'x-ratelimit-reset-tokens': resetTokens,
  };
}

export const openai = {
  rateLimited: (model = 'gpt-4o', headers: Record<string, string> = openaiLimitHeaders()) =>
    openaiError(
      429,
      {
        message: `Rate limit reached for ${model} in organization ${ORG} on tokens per min (TPM): Limit 30000, Used 29460, Requested 1581. Please try again in 2.082s. Visit https://platform.openai.com/account/rate-limits to learn more.`,
        type: 'tokens',
        code: 'rate_limit_exceeded',
      },
      headers,
    ),
  /** A 429 whose body carries no code at all (some OpenAI-compatible hosts). */
  rateLimitedNoCode: (headers: Record<string, string> = {}) =>
    openaiError(429, { message: 'Too Many Requests', type: 'requests', code: null }, headers),
  tooLarge: (model = 'gpt-4o') =>
    openaiError(429, {
      message: `Request too large for ${model} in organization ${ORG} on tokens per min (TPM): Limit 30000, Requested 36055. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.`,
      type: 'tokens',
      code: 'rate_limit_exceeded',
    }),
  insufficientQuota: () =>
    openaiError(429, {
      message:
        'You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.',
      type: 'insufficient_quota',
      code: 'insufficient_quota',
    }),
  billingNotActive: () =>
    openaiError(429, {
      message: 'Your account is not active, please check your billing details on our website.',
      type: 'billing_not_active',
      code: 'billing_not_active',
    }),
  creditBalanceExhausted: () =>
    openaiError(429, {
      message: 'Your credit balance is exhausted. Add credits to your API balance to continue.',
      type: 'insufficient_quota',
      code: 'credit_balance_exhausted',
    }),
  invalidKey: (hint = 'ab12') =>
    openaiError(401, {
      message: `Incorrect API key provided: sk-test-************************${hint}. You can find your API key at https://platform.openai.com/account/api-keys.`,
      type: 'invalid_request_error',
      code: 'invalid_api_key',
    }),
  accountDeactivated: () =>
    openaiError(401, {
      message:
        'This key is associated with a deactivated account. If you feel this is an error, contact us through our help center at help.openai.com.',
      type: 'invalid_request_error',
      code: 'account_deactivated',
    }),
  accessTerminated: () =>
    openaiError(401, {
      message: 'You have been terminated for violation of our usage policies. Contact us through our help center at help.openai.com.',
      type: 'access_terminated',
      code: 'access_terminated',
    }),
  mismatchedOrganization: () =>
    openaiError(401, {
      message: 'OpenAI-Organization header should match organization for API key',
      type: 'invalid_request_error',
      code: 'mismatched_organization',
    }),
  mismatchedProject: () =>
    openaiError(401, {
      message: 'OpenAI-Project header should match project for API key',
      type: 'invalid_request_error',
      code: 'mismatched_project',
    }),
  missingScope: (scope = 'api.management.read') =>
    openaiError(401, {
      message: `You have insufficient permissions for this operation. Missing scopes: ${scope}. Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a restricted API key, that it has the necessary scopes.`,
      type: 'invalid_request_error',
      code: 'missing_scope',
    }),
  /** A 401 with a code this package does not know. */
  unknown401: () =>
    openaiError(401, {
      message: 'IP address 203.0.113.9 is not authorized for this project.',
      type: 'invalid_request_error',
      code: 'ip_not_authorized',
    }),
  unsupportedRegion: () =>
    openaiError(403, {
      message: 'Country, region, or territory not supported',
      type: 'request_forbidden',
      code: 'unsupported_country_region_territory',
    }),
  modelNotAllowed: (model = 'gpt-4o') =>
    openaiError(403, {
      message: `Project \`proj_Vx7T2kq9ZcW3\` does not have access to model \`${model}\``,
      type: 'invalid_request_error',
      code: 'model_not_found',
    }),
  modelNotFound: (model = 'gpt-5-turbo-preview') =>
    openaiError(404, {
      message: `The model \`${model}\` does not exist or you do not have access to it.`,
      type: 'invalid_request_error',
      code: 'model_not_found',
    }),
  overloaded: () => openaiError(503, { message: 'The server is overloaded or not ready yet.', type: 'server_error', code: null }),
  slowDown: () =>
    openaiError(
      503,
      {
        message:
          'Please reduce your request rate to its original level, maintain a consistent rate for at least 15 minutes, and then gradually increase it.',
        type: 'server_error',
        code: 'slow_down',
      },
      { 'retry-after': '30' },
    ),
};

/** An Anthropic error answer: its envelope and the headers every answer of theirs carries. */
export function anthropicError(
  status: number,
  error: { type: string; message: string; details?: { error_code: string } },
  headers: Record<string, string> = {},
): Behaviour {
  return (req, res) => {
    const requestId = anthropicRequestId();
    const body = JSON.stringify({ type: 'error', error, request_id: requestId });
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'request-id': requestId,
      'anthropic-organization-id': anthropicOrganizationOf(req.key),
      'x-should-retry': status === 429 || status >= 500 ? 'true' : 'false',
      ...headers,
    });
    res.end(body);
  };
}

/** Anthropic's rate-limit headers with its request limit used up until `reset`. */
export function anthropicLimitHeaders(reset: Date, retryAfterSeconds = 20): Record<string, string> {
  const at = reset.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return {
    'retry-after': String(retryAfterSeconds),
    'anthropic-ratelimit-requests-limit': '50',
    'anthropic-ratelimit-requests-remaining': '0',
    'anthropic-ratelimit-requests-reset': at,
    'anthropic-ratelimit-input-tokens-limit': '30000',
    'anthropic-ratelimit-input-tokens-remaining': '30000',
    'anthropic-ratelimit-input-tokens-reset': at,
    'anthropic-ratelimit-output-tokens-limit': '8000',
    'anthropic-ratelimit-output-tokens-remaining': '8000',
    'anthropic-ratelimit-output-tokens-reset': at,
  };
}

export const anthropic = {
  rateLimited: (headers: Record<string, string> = { 'retry-after': '20' }) =>
    anthropicError(
      429,
      {
        type: 'rate_limit_error',
        message:
          'This request would exceed the rate limit for your organization (3f6c1b8e-2d4a-4c7b-9e1f-5a0d8c2b7e61) of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.',
      },
      headers,
    ),
  spendLimit: () =>
    anthropicError(429, {
      type: 'rate_limit_error',
      message:
        'Your organization has reached its monthly spend limit for its usage tier. Access resumes on the first day of next month at 00:00 UTC.',
      details: { error_code: 'enforced_spend_limit_reached' },
    }),
  usageLimits: () =>
    anthropicError(400, {
      type: 'invalid_request_error',
      message: 'You have reached your specified API usage limits. You will regain access on 2026-02-01 at 00:00 UTC.',
    }),
  creditTooLow: () =>
    anthropicError(400, {
      type: 'invalid_request_error',
      message: 'Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.',
    }),
  billing: () => anthropicError(402, { type: 'billing_error', message: 'There is an issue with your billing or payment information.' }),
  invalidKey: () => anthropicError(401, { type: 'authentication_error', message: 'invalid x-api-key' }),
  permission: () =>
    anthropicError(403, { type: 'permission_error', message: 'Your API key does not have permission to use the specified resource.' }),
  modelNotFound: (model = 'claude-opus-9') => anthropicError(404, { type: 'not_found_error', message: `model: ${model}` }),
  overloaded: () => anthropicError(529, { type: 'overloaded_error', message: 'Overloaded' }),
};

/**
 * An Azure OpenAI error answer: `{ error: { code, message } }` (the code is often the status as a
 * string), and the headers Azure's front door adds (`apim-request-id`, `x-ms-region`, the remaining
 * counts; a 429 names its policy and gives `retry-after` in seconds).
 */
export function azureError(status: number, error: { code: string; message: string }, headers: Record<string, string> = {}): Behaviour {
  return (_req, res) => {
    const body = JSON.stringify({ error });
    const id = `0f3c${(++requestCounter).toString(16).padStart(4, '0')}-5b1e-4c2a-9d7e-1a2b3c4d5e6f`;
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'apim-request-id': id,
      'x-ms-client-request-id': id,
      'x-ms-region': 'Sweden Central',
      'strict-transport-security': 'max-age=31536000; includeSubDomains; preload',
      'x-content-type-options': 'nosniff',
      ...headers,
    });
    res.end(body);
  };
}

export const azure = {
  rateLimited: (deployment = 'gpt-4o', retryAfterSeconds = 6) =>
    azureError(
      429,
      {
        code: '429',
        message: `Your requests to ${deployment} for gpt-4o in Sweden Central have exceeded the token rate limit for your current AIServices S0 pricing tier. This request was for ChatCompletions_Create under Azure OpenAI API version 2024-10-21. Please retry after ${retryAfterSeconds} seconds. To increase your default rate limit, visit: https://aka.ms/oai/quotaincrease.`,
      },
      {
        'retry-after': String(retryAfterSeconds),
        'policy-id': 'DeploymentRatelimit-Token',
        'x-ratelimit-remaining-requests': '79',
        'x-ratelimit-remaining-tokens': '0',
      },
    ),
  invalidKey: () =>
    azureError(401, {
      code: '401',
      message:
        'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.',
    }),
  deploymentNotFound: () =>
    azureError(404, {
      code: 'DeploymentNotFound',
      message:
        'The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.',
    }),
};
/** What OpenAI's limits look like on an answer: by default plenty left; a test says what is used up. */
export interface OpenAILimits {
  limitRequests?: number;
  remainingRequests?: number;
  resetRequests?: string;
  limitTokens?: number;
  remainingTokens?: number;
  resetTokens?: string;
  /** The organization the answer names; default the key's own (see organizationOf). */
  organization?: string;
}

export function openaiLimits(limits: OpenAILimits = {}): Record<string, string> {
  return {
    'x-ratelimit-limit-requests': String(limits.limitRequests ?? 10_000),
    'x-ratelimit-limit-tokens': String(limits.limitTokens ?? 30_000_000),
    'x-ratelimit-remaining-requests': String(limits.remainingRequests ?? 9_999),
    'x-ratelimit-remaining-tokens': String(limits.remainingTokens ?? 29_999_785),
    'x-ratelimit-reset-requests': limits.resetRequests ?? '6ms',
    'x-ratelimit-reset-tokens': limits.resetTokens ?? '0s',
  };
}

/**
 * An OpenAI 200, as OpenAI sends it: the JSON body and the headers of every answer (request id,
 * organization, processing time, the `x-ratelimit-*` state for the request's model).
 */
export function openaiOk(body: unknown = { id: 'chatcmpl-1', object: 'chat.completion' }, limits: OpenAILimits = {}): Behaviour {
  return (req, res) => {
    const text = JSON.stringify(typeof body === 'function' ? (body as (key: string | undefined) => unknown)(req.key) : body);
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'x-request-id': openaiRequestId(),
      'openai-organization': limits.organization ?? organizationOf(req.key),
      'openai-processing-ms': '212',
      'openai-project': 'proj_mock00000000000000',
      'openai-version': '2020-10-01',
      ...openaiLimits(limits),
    });
    res.end(text);
  };
}

/** Anthropic's limits on an answer, by limit: its remaining count and its reset time. */
export interface AnthropicLimits {
  requests?: { remaining: number; reset: Date };
  tokens?: { remaining: number; reset: Date };
  inputTokens?: { remaining: number; reset: Date };
  outputTokens?: { remaining: number; reset: Date };
  organization?: string;
}

/** An Anthropic 200 with the `anthropic-ratelimit-*` headers of every answer (RFC 3339 resets). */
export function anthropicOk(body: unknown = { id: 'msg_01', type: 'message' }, limits: AnthropicLimits = {}): Behaviour {
  return (req, res) => {
    const text = JSON.stringify(body);
    const at = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
    const soon = new Date(Date.parse('2026-01-01T00:00:01Z'));
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(text)),
      'request-id': anthropicRequestId(),
      'anthropic-organization-id': limits.organization ?? anthropicOrganizationOf(req.key),
    };
    const limit = (name: string, max: number, value: { remaining: number; reset: Date } | undefined) => {
      headers[`anthropic-ratelimit-${name}-limit`] = String(max);
      headers[`anthropic-ratelimit-${name}-remaining`] = String(value?.remaining ?? max - 1);
      headers[`anthropic-ratelimit-${name}-reset`] = at(value?.reset ?? soon);
    };
    limit('requests', 4000, limits.requests);
    limit('tokens', 2_400_000, limits.tokens);
    limit('input-tokens', 2_000_000, limits.inputTokens);
    limit('output-tokens', 400_000, limits.outputTokens);
    res.writeHead(200, headers);
    res.end(text);
  };
}

/**
 * `behaviour` as keys of one organization answer it: every answer names `organization` (the pool's
 * keys share an account, and its limits), whatever key it came to.
 */
export function oneOrganization(behaviour: Behaviour, organization = ORG, anthropicOrganization = ANTHROPIC_ORG): Behaviour {
  return (req, res) => {
    const writeHead = res.writeHead.bind(res) as (status: number, headers?: Record<string, unknown>) => typeof res;
    (res as { writeHead: unknown }).writeHead = (status: number, headers: Record<string, unknown> = {}) => {
      const named = { ...headers };
      if ('openai-organization' in named) named['openai-organization'] = organization;
      if ('anthropic-organization-id' in named) named['anthropic-organization-id'] = anthropicOrganization;
      return writeHead(status, named);
    };
    return behaviour(req, res);
  };
}
