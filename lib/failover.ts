import type { ErrorKind } from './errors.js';
import type { KeyPool, PoolKey } from './pool/key-pool.js';
import { cooldownFromHeaders } from './upstream/rate-limit-headers.js';
import {
  UpstreamFailure,
  discard,
  holdResponse,
  type HeldResponse,
  type UpstreamResponse,
} from './upstream/relay.js';

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
 * is not a failover status. The caller writes the outcome.
 */
export async function walkPool(
  pool: KeyPool,
  failover: ReadonlyMap<number, FailoverAction>,
  send: (key: PoolKey) => Promise<UpstreamResponse>,
): Promise<WalkOutcome> {
  const walker = pool.walker();
  let lastSkipped: HeldResponse | undefined;
  for (let key = walker.next(); key !== undefined; key = walker.next()) {
    let response: UpstreamResponse;
    try {
      response = await send(key);
    } catch (error) {
      return failureOutcome(error);
    }
    const action = failover.get(response.status);
    switch (action) {
      case undefined:
      case 'relay':
        return { kind: 'relay', response };
      case 'cooldown':
        pool.markRateLimited(
          key.id,
          cooldownFromHeaders(response.headers, pool.now(), pool.cooldownBounds) ?? pool.defaultCooldownMs,
        );
        discard(response);
        break;
      case 'disable':
        pool.markDisabled(key.id);
        discard(response);
        break;
      case 'skip': {
        const held = await holdResponse(response, HELD_ANSWER_LIMIT);
        if (held && 'streaming' in held) return { kind: 'relay', response: held.streaming };
        if (held) lastSkipped = held.held;
        break;
      }
    }
  }
  if (lastSkipped) return { kind: 'held', response: lastSkipped };
  const exhaustion = pool.exhaustion();
  if (exhaustion.reason === 'disabled') return { kind: 'error', error: 'keys_disabled' };
  return { kind: 'error', error: 'rate_limited', retryAfterSeconds: Math.max(1, Math.ceil(exhaustion.retryAfterMs / 1000)) };
}

export function failureOutcome(error: unknown): WalkOutcome {
  if (!(error instanceof UpstreamFailure)) throw error;
  if (error.reason === 'aborted') return { kind: 'aborted' };
  return { kind: 'error', error: error.reason === 'timeout' ? 'upstream_timeout' : 'upstream_unreachable' };
}
