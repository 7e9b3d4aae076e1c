/**
 * Turns the delay headers of a 429 into milliseconds of cooldown.
 *
 * Precedence, first usable value wins:
 * 1. `retry-after-ms` (OpenAI);
 * 2. `Retry-After`, delta-seconds or an HTTP-date read against the injected clock;
 * 3. OpenAI's `x-ratelimit-reset-requests` / `-tokens` durations (`6m0s`, `20ms`);
 * 4. Anthropic's `anthropic-ratelimit-*-reset` RFC 3339 times.
 * For 3 and 4, the reset of the limit that is exhausted (its `-remaining` is 0)
 * is taken when that is known (the longest, if several are); otherwise the
 * soonest reset, since a key cooled too briefly costs one more 429 while a key
 * cooled too long costs minutes of capacity.
 *
 * A missing, unparsable or negative value, or a time in the past, gives no
 * information. The result is an integer within [minMs, maxMs], or undefined
 * when no header gave a usable value (the pool's default cooldown applies).
 * Never throws.
 */

export type HeaderValue = string | string[] | undefined;
export type ResponseHeaders = Readonly<Record<string, HeaderValue>>;

export interface CooldownBounds {
  minMs: number;
  maxMs: number;
}

export const DEFAULT_COOLDOWN_BOUNDS: CooldownBounds = { minMs: 1_000, maxMs: 3_600_000 };

const NUMBER = /^\d+(\.\d+)?$/;
const DURATION_PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, μs: 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
const ANTHROPIC_LIMITS = ['requests', 'tokens', 'input-tokens', 'output-tokens'];

export function cooldownFromHeaders(
  headers: ResponseHeaders,
  now: number,
  bounds: CooldownBounds = DEFAULT_COOLDOWN_BOUNDS,
): number | undefined {
  const ms =
    usable(retryAfterMs(headers['retry-after-ms'])) ??
    usable(retryAfter(headers['retry-after'], now)) ??
    usable(pickReset(openaiResets(headers))) ??
    usable(pickReset(anthropicResets(headers, now)));
  if (ms === undefined) return undefined;
  return Math.ceil(Math.min(Math.max(ms, bounds.minMs), bounds.maxMs));
}

interface LimitReset {
  ms: number | undefined;
  exhausted: boolean | undefined;
}

function pickReset(resets: LimitReset[]): number | undefined {
  const known = resets.filter((r): r is { ms: number; exhausted: boolean | undefined } => r.ms !== undefined);
  const exhausted = known.filter((r) => r.exhausted === true);
  if (exhausted.length > 0) return Math.max(...exhausted.map((r) => r.ms));
  const notExhausted = known.filter((r) => r.exhausted !== false);
  const candidates = notExhausted.length > 0 ? notExhausted : known;
  return candidates.length > 0 ? Math.min(...candidates.map((r) => r.ms)) : undefined;
}

function openaiResets(headers: ResponseHeaders): LimitReset[] {
  return ['requests', 'tokens'].map((limit) => ({
    ms: goDuration(first(headers[`x-ratelimit-reset-${limit}`])),
    exhausted: isZero(headers[`x-ratelimit-remaining-${limit}`]),
  }));
}

function anthropicResets(headers: ResponseHeaders, now: number): LimitReset[] {
  return ANTHROPIC_LIMITS.map((limit) => ({
    ms: untilDate(first(headers[`anthropic-ratelimit-${limit}-reset`]), now),
    exhausted: isZero(headers[`anthropic-ratelimit-${limit}-remaining`]),
  }));
}

function first(value: HeaderValue): string | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  return typeof text === 'string' ? text.trim() : undefined;
}

function isZero(value: HeaderValue): boolean | undefined {
  const text = first(value);
  if (!text || !NUMBER.test(text)) return undefined;
  return Number(text) === 0;
}

function retryAfterMs(value: HeaderValue): number | undefined {
  const text = first(value);
  return text && NUMBER.test(text) ? Number(text) : undefined;
}

function retryAfter(value: HeaderValue, now: number): number | undefined {
  const text = first(value);
  if (!text) return undefined;
  if (NUMBER.test(text)) return Number(text) * 1000;
  return untilDate(text, now);
}

function untilDate(text: string | undefined, now: number): number | undefined {
  if (!text || NUMBER.test(text)) return undefined;
  const date = Date.parse(text);
  return Number.isNaN(date) || date <= now ? undefined : date - now;
}

/** A Go duration as OpenAI sends it: `1s`, `6m0s`, `20ms`, `1h2m3.5s`. */
export function goDuration(text: string | undefined): number | undefined {
  if (!text) return undefined;
  DURATION_PART.lastIndex = 0;
  let total = 0;
  while (DURATION_PART.lastIndex < text.length) {
    const match = DURATION_PART.exec(text);
    if (!match) return undefined;
    total += Number(match[1]) * UNIT_MS[match[2]!]!;
  }
  return total;
}

function usable(ms: number | undefined): number | undefined {
  return ms !== undefined && ms >= 0 && !Number.isNaN(ms) ? ms : undefined;
}
