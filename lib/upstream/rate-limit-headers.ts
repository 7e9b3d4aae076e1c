/**
 * Turns the delay headers of a 429 into milliseconds of cooldown.
 * Precedence: `retry-after-ms`, then `Retry-After` (delta-seconds or an
 * HTTP-date, read against the injected clock). A value that is missing,
 * unparsable, negative or a date in the past gives no information: undefined,
 * so that the pool's default cooldown applies.
 */

export type HeaderValue = string | string[] | undefined;
export type ResponseHeaders = Readonly<Record<string, HeaderValue>>;

const NUMBER = /^\d+(\.\d+)?$/;
// Longer than any provider asks for; keeps arithmetic on the result safe.
const LONGEST_MEANINGFUL_MS = 365 * 24 * 3600 * 1000;

export function cooldownFromHeaders(headers: ResponseHeaders, now: number): number | undefined {
  return retryAfterMs(headers['retry-after-ms']) ?? retryAfter(headers['retry-after'], now);
}

function first(value: HeaderValue): string | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  return text?.trim();
}

function retryAfterMs(value: HeaderValue): number | undefined {
  const text = first(value);
  if (!text || !NUMBER.test(text)) return undefined;
  return bounded(Number(text));
}

function retryAfter(value: HeaderValue, now: number): number | undefined {
  const text = first(value);
  if (!text) return undefined;
  if (NUMBER.test(text)) return bounded(Number(text) * 1000);
  const date = Date.parse(text);
  if (Number.isNaN(date) || date <= now) return undefined;
  return bounded(date - now);
}

function bounded(ms: number): number | undefined {
  if (Number.isNaN(ms) || ms < 0) return undefined;
  return Math.ceil(Math.min(ms, LONGEST_MEANINGFUL_MS));
}
