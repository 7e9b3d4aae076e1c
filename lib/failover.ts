import { performance } from 'node:perf_hooks';
import type { ErrorKind } from './errors.js';
import type { AttemptOutcome } from './pool/events.js';
import type { KeyPool, PoolKey } from './pool/key-pool.js';
import { cooldownFromHeaders } from './upstream/rate-limit-headers.js';
import { UpstreamFailure, discard, holdResponse, type HeldResponse, type UpstreamResponse } from './upstream/relay.js';

/** What a failover status does to the key that got it. 'relay' ends the walk with that answer. */
export type FailoverAction = 'cooldown' | 'disable' | 'skip' | 'relay';

export const DEFAULT_FAILOVER: Readonly<Record<number, FailoverAction>> = { 429: 'cooldown', 401: 'disable', 403: 'skip' };

/** How one walk over the pool ended. */
export type WalkOutcome =
  | { kind: 'relay'; response: UpstreamResponse }
  | { kind: 'held'; response: HeldResponse }
  | { kind: 'error'; error: ErrorKind; retryAfterSeconds?: number }
  | { kind: 'aborted' };

// A skipped answer (a 403 body) is held until the walk ends; past this size it is relayed at once.
const HELD_ANSWER_LIMIT = 1024 * 1024;

/**
 * Walks the pool with a fresh walker: sends with each available key in turn,
 * marks the key as the failover map says, and stops at the first answer that
 * is not a failover status. The caller writes the outcome. The one attempt
 * loop of the package: the middleware, the passthrough and the fetch use it.
 */
export async function walkPool(
  pool: KeyPool,
  failover: ReadonlyMap<number, FailoverAction>,
  send: (key: PoolKey) => Promise<UpstreamResponse>,
  requestId?: string,
): Promise<WalkOutcome> {
  const walker = pool.walker();
  const observed = pool.listenerCount('attempt') > 0;
  let lastSkipped: HeldResponse | undefined;
  for (let key = walker.next(); key !== undefined; key = walker.next()) {
    const started = observed ? performance.now() : 0;
    let response: UpstreamResponse;
    try {
      response = await send(key);
    } catch (error) {
      const outcome = failureOutcome(error);
      if (observed)
        attempted(pool, key, started, outcome.kind === 'aborted' ? 'aborted' : (error as UpstreamFailure).reason, undefined, requestId);
      return outcome;
    }
    const action = failover.get(response.status);
    if (observed)
      attempted(pool, key, started, action === undefined || action === 'relay' ? 'relayed' : action, response.status, requestId);
    if (action === undefined || action === 'relay') return { kind: 'relay', response };
    markKey(pool, key, action, response, requestId);
    pool.emit('failover', { id: key.id, hint: key.hint, status: response.status, action, ...(requestId ? { requestId } : {}) });
    if (action === 'skip') {
      const held = await holdResponse(response, HELD_ANSWER_LIMIT);
      if (held && 'streaming' in held) return { kind: 'relay', response: held.streaming };
      if (held) lastSkipped = held.held;
    } else {
      discard(response);
    }
  }
  return lastSkipped ? { kind: 'held', response: lastSkipped } : exhaustedOutcome(pool, requestId);
}

function attempted(
  pool: KeyPool,
  key: PoolKey,
  started: number,
  outcome: AttemptOutcome,
  status: number | undefined,
  requestId?: string,
): void {
  pool.emit('attempt', {
    id: key.id,
    hint: key.hint,
    outcome,
    durationMs: performance.now() - started,
    ...(status === undefined ? {} : { status }),
    ...(requestId ? { requestId } : {}),
  });
}

/** Applies a failover action to the key that got the answer ('skip' and 'relay' leave it as it is). */
export function markKey(pool: KeyPool, key: PoolKey, action: FailoverAction, response: UpstreamResponse, requestId?: string): void {
  const details = requestId ? { status: response.status, requestId } : { status: response.status };
  if (action === 'cooldown') {
    const ms = cooldownFromHeaders(response.headers, pool.now(), pool.cooldownBounds) ?? pool.defaultCooldownMs;
    pool.markRateLimited(key.id, ms, details);
  } else if (action === 'disable') {
    pool.markDisabled(key.id, details);
  }
}

/** The pool error for a walk that found no key: 502 when every key is disabled, else 429 with Retry-After. */
export function exhaustedOutcome(pool: KeyPool, requestId?: string): WalkOutcome {
  const exhaustion = pool.exhaustion();
  pool.emit('exhausted', { ...exhaustion, ...(requestId ? { requestId } : {}) });
  if (exhaustion.reason === 'disabled') return { kind: 'error', error: 'keys_disabled' };
  return { kind: 'error', error: 'rate_limited', retryAfterSeconds: Math.max(1, Math.ceil(exhaustion.retryAfterMs / 1000)) };
}

export function failureOutcome(error: unknown): WalkOutcome {
  if (!(error instanceof UpstreamFailure)) throw error;
  if (error.reason === 'aborted') return { kind: 'aborted' };
  return { kind: 'error', error: error.reason === 'timeout' ? 'upstream_timeout' : 'upstream_unreachable' };
}
