/**
 * OpenAI's failures, from its error body `{ error: { message, type, param, code } }`
 * and the status. Also used for OpenAI-compatible hosts (Azure, OpenRouter, Groq,
 * vLLM...), which send the same shape or less of it: what is not recognised
 * falls back on the status.
 */
import { errorObject, stringField, type FailureAnswer, type FailureCause, type FailureClassifier } from './causes.js';

/** The key itself is refused: whatever the request, it will not work. */
export const INVALID_KEY_CODES = new Set(['invalid_api_key', 'account_deactivated', 'access_terminated', 'no_organization']);
/** The account is out of money. Billing errors share the type insufficient_quota; the code says which limit. */
export const QUOTA_CODES = new Set([
  'insufficient_quota',
  'billing_not_active',
  'billing_hard_limit_reached',
  'credit_balance_exhausted',
  'organization_spend_limit_exceeded',
  'project_spend_limit_exceeded',
  'organization_usage_limit_exceeded',
]);
/** A 401 about this request's headers or needs, not the key: another key (project) may allow it. */
export const REQUEST_401_CODES = new Set(['mismatched_organization', 'mismatched_project', 'missing_scope', 'insufficient_permissions']);
const MISSING_SCOPES = /\bmissing scopes?\b/i;
// "Request too large for gpt-4o in organization org-... on tokens per min (TPM): Limit 30000, Requested 36055. ..."
const TOO_LARGE = /^request too large\b/i;
const LIMIT_AND_REQUESTED = /\blimit\s+([\d,]+)\b.*?\brequested\s+([\d,]+)/i;

export const openaiFailures: FailureClassifier = {
  statuses: new Set([401, 402, 403, 404, 429, 503, 529]),

  classify({ status, body }: FailureAnswer): FailureCause | undefined {
    const error = errorObject(body);
    const code = stringField(error, 'code');
    const type = stringField(error, 'type');
    const message = stringField(error, 'message') ?? '';
    if (code !== undefined && INVALID_KEY_CODES.has(code)) return 'invalid_key';
    if (type === 'insufficient_quota' || type === 'billing_not_active' || (code !== undefined && QUOTA_CODES.has(code))) {
      return 'insufficient_quota';
    }
    switch (status) {
      case 401:
        return (code !== undefined && REQUEST_401_CODES.has(code)) || MISSING_SCOPES.test(message) ? 'request_not_allowed' : 'unauthorized';
      case 402: // OpenRouter, Together and others: payment required
        return 'insufficient_quota';
      case 403: // unsupported_country_region_territory, a project without access to the model, ...
        return 'request_not_allowed';
      case 404:
        return code === 'model_not_found' ? 'request_not_allowed' : undefined;
      case 429:
        return tooLarge(message) ? 'request_too_large' : 'rate_limited';
      case 503:
        // "Slow Down": this organization's request rate rose too fast; anything else is the service's own state.
        return code === 'slow_down' ? 'rate_limited' : 'overloaded';
      case 529:
        return 'overloaded';
      default:
        return undefined;
    }
  },

  signature({ status, body }: FailureAnswer): string {
    const error = errorObject(body);
    return `${status} ${stringField(error, 'type') ?? ''} ${stringField(error, 'code') ?? ''}`;
  },

  // Billing is the organization's; a project's own budget is that project's.
  accountWide({ body }: FailureAnswer): boolean {
    return stringField(errorObject(body), 'code') !== 'project_spend_limit_exceeded';
  },
};

/** A request whose own size is above the limit, not a limit reached by the traffic before it. */
function tooLarge(message: string): boolean {
  if (!TOO_LARGE.test(message)) return false;
  const numbers = LIMIT_AND_REQUESTED.exec(message);
  if (!numbers) return true;
  return Number(numbers[2]!.replaceAll(',', '')) > Number(numbers[1]!.replaceAll(',', ''));
}
