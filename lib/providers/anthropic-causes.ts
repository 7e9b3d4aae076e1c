/**
 * Anthropic's failures, from its envelope
 * `{ type: 'error', error: { type, message, details?: { error_code } }, request_id }`
 * and the status. `details.error_code` (what @anthropic-ai/sdk reads as `err.errorCode`)
 * says which limit or account state it is when the type alone does not.
 */
import { errorObject, isObject, stringField, type FailureAnswer, type FailureCause, type FailureClassifier } from './causes.js';

/** The account is out of money or past a spend limit: monthly tiers, contracts, linked organizations. */
const QUOTA_ERROR_CODES = new Set([
  'enforced_spend_limit_reached',
  'contract_spend_limit_reached',
  'linked_organization_spend_limit_reached',
  'linked_organization_billing_unavailable',
]);
/** The key can no longer be used, whatever the request. */
const INVALID_KEY_ERROR_CODES = new Set(['organization_on_hold', 'claude_code_key_creator_not_member']);
// 400 invalid_request_error when a spend limit you set is reached, or the prepaid credit is gone.
const USAGE_LIMITS = /^you have reached your specified (workspace )?api usage limits/i;
const WORKSPACE_LIMITS = /^you have reached your specified workspace api usage limits/i;
const CREDIT_TOO_LOW = /credit balance is too low/i;
// The buckets a 429 names in its headers; "(rounded to the nearest thousand)" for tokens, so 0 is "empty".
const REMAINING_HEADERS = [
  'anthropic-ratelimit-requests-remaining',
  'anthropic-ratelimit-tokens-remaining',
  'anthropic-ratelimit-input-tokens-remaining',
  'anthropic-ratelimit-output-tokens-remaining',
];
// 404 not_found_error for a model the key cannot see: "model: claude-...".
const MODEL_NOT_FOUND = /^model:/i;

export const anthropicFailures: FailureClassifier = {
  statuses: new Set([400, 401, 402, 403, 404, 429, 503, 529]),

  classify({ status, headers, body }: FailureAnswer): FailureCause | undefined {
    const error = errorObject(body);
    const type = stringField(error, 'type');
    const message = stringField(error, 'message') ?? '';
    const errorCode = detailsCode(error);
    if (errorCode !== undefined && QUOTA_ERROR_CODES.has(errorCode)) return 'insufficient_quota';
    if (errorCode !== undefined && INVALID_KEY_ERROR_CODES.has(errorCode)) return 'invalid_key';
    if (type === 'billing_error') return 'insufficient_quota';
    switch (status) {
      case 400:
        return USAGE_LIMITS.test(message) || CREDIT_TOO_LOW.test(message) ? 'insufficient_quota' : undefined;
      case 401:
        return type === 'authentication_error' ? 'invalid_key' : 'unauthorized';
      case 402:
        return 'insufficient_quota';
      case 403:
        return 'request_not_allowed';
      case 404:
        return MODEL_NOT_FOUND.test(message) ? 'request_not_allowed' : undefined;
      case 429:
        // rate_limit_error for a used-up limit, and for a request that alone is above one (the same
        // body): the headers tell them apart. A ramp (acceleration) limit names itself in details.error_code.
        return errorCode === undefined && bucketsLeft(headers) ? 'request_too_large' : 'rate_limited';
      case 503:
      case 529:
        return 'overloaded';
      default:
        return undefined;
    }
  },

  signature({ status, body }: FailureAnswer): string {
    const error = errorObject(body);
    return `${status} ${stringField(error, 'type') ?? ''} ${detailsCode(error) ?? ''}`;
  },

  // Credit, billing and spend limits are the organization's; a workspace's own usage limit is that workspace's.
  accountWide({ body }: FailureAnswer): boolean {
    return !WORKSPACE_LIMITS.test(stringField(errorObject(body), 'message') ?? '');
  },
};

function detailsCode(error: Record<string, unknown> | undefined): string | undefined {
  const details = error?.['details'];
  return isObject(details) ? stringField(details, 'error_code') : undefined;
}

/**
 * Whether the 429's headers show something left in every bucket they name: no limit is used up,
 * so the request alone is larger than what is left (Anthropic answers "This request would exceed
 * your organization's rate limit of 30,000 input tokens per minute" both ways). Without those
 * headers, a plain rate limit.
 */
function bucketsLeft(headers: FailureAnswer['headers']): boolean {
  let named = false;
  for (const name of REMAINING_HEADERS) {
    const value = headers[name];
    if (typeof value !== 'string') continue;
    const remaining = Number(value.trim());
    if (value.trim() === '' || !Number.isFinite(remaining) || remaining <= 0) return false;
    named = true;
  }
  return named;
}
