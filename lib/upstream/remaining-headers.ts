/**
 * What every upstream answer says besides its status: whose account the key
 * is (`openai-organization`, `anthropic-organization-id`) and how much of its
 * limits is left (`x-ratelimit-remaining-requests` / `-tokens` with their
 * `-reset-*` durations, OpenAI; `anthropic-ratelimit-{requests,tokens,
 * input-tokens,output-tokens}-remaining` with their RFC 3339 `-reset` times,
 * Anthropic). Read on every answer, success included: only the few headers
 * needed, and nothing is allocated unless a limit is low.
 */
import type { RemainingLimit } from '../pool/events.js';
import { goDuration, type HeaderValue, type ResponseHeaders } from './rate-limit-headers.js';

/** The organization an answer names, when it names one. */
export function accountOf(headers: ResponseHeaders): string | undefined {
  return single(headers['openai-organization']) ?? single(headers['anthropic-organization-id']);
}

/** How many requests the answer says are left, for the request's model; undefined when it does not say. */
export function remainingRequests(headers: ResponseHeaders): number | undefined {
  return count(headers['x-ratelimit-remaining-requests'] ?? headers['anthropic-ratelimit-requests-remaining']);
}

/** Milliseconds until the request limit resets (an upper bound on when one is free again); undefined when unknown. */
export function requestsResetMs(headers: ResponseHeaders, now: number): number | undefined {
  const openai = single(headers['x-ratelimit-reset-requests']);
  if (openai !== undefined) return goDuration(openai);
  return untilDate(single(headers['anthropic-ratelimit-requests-reset']), now);
}

// Header names made once: reading them allocates nothing.
const ANTHROPIC_TOKEN_LIMITS = (['tokens', 'input-tokens', 'output-tokens'] as const).map((limit) => ({
  limit,
  remaining: `anthropic-ratelimit-${limit}-remaining`,
  reset: `anthropic-ratelimit-${limit}-reset`,
}));

/**
 * The token limit the answer says is below `threshold`, with its reset; undefined when none is (or
 * `threshold` is 0). Of several, the one that resets last: the key is no use before that.
 */
export function lowTokens(
  headers: ResponseHeaders,
  threshold: number,
  now: number,
): { limit: RemainingLimit; remaining: number; resetMs: number } | undefined {
  if (threshold <= 0) return undefined;
  const openai = count(headers['x-ratelimit-remaining-tokens']);
  if (openai !== undefined) {
    const resetMs = openai < threshold ? goDuration(single(headers['x-ratelimit-reset-tokens'])) : undefined;
    return resetMs === undefined ? undefined : { limit: 'tokens', remaining: openai, resetMs };
  }
  let low: { limit: RemainingLimit; remaining: number; resetMs: number } | undefined;
  for (const { limit, remaining: remainingHeader, reset } of ANTHROPIC_TOKEN_LIMITS) {
    const remaining = count(headers[remainingHeader]);
    if (remaining === undefined || remaining >= threshold) continue;
    const resetMs = untilDate(single(headers[reset]), now);
    if (resetMs !== undefined && (low === undefined || resetMs > low.resetMs)) low = { limit, remaining, resetMs };
  }
  return low;
}

function single(value: HeaderValue): string | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  return typeof text === 'string' && text !== '' ? text : undefined;
}

/** A non-negative integer count; anything else says nothing. */
function count(value: HeaderValue): number | undefined {
  const text = single(value);
  if (text === undefined) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

function untilDate(text: string | undefined, now: number): number | undefined {
  if (text === undefined) return undefined;
  const date = Date.parse(text);
  return Number.isNaN(date) || date <= now ? undefined : date - now;
}
