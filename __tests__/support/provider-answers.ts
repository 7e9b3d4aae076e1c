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
  return (_req, res) => {
    const body = JSON.stringify({ error: { message: error.message, type: error.type, param: error.param ?? null, code: error.code } });
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'x-request-id': openaiRequestId(),
      'openai-organization': ORG,
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
  return (_req, res) => {
    const requestId = anthropicRequestId();
    const body = JSON.stringify({ type: 'error', error, request_id: requestId });
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'request-id': requestId,
      'anthropic-organization-id': ANTHROPIC_ORG,
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
