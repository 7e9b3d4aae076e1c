/**
 * What an attempt and a walk come to: an attempt's outcome for its event, the pool's error for a walk
 * that found no key, and the gateway's error for an attempt that got no answer.
 */
import type { AttemptOutcome } from '../pool/events.js';
import type { KeyPool } from '../pool/key-pool.js';
import type { KeyWalker } from '../pool/walker.js';
import type { FailoverAction } from '../providers/causes.js';
import { UpstreamFailure } from '../upstream/relay.js';
import type { WalkOutcome } from './failover.js';

export function outcomeOf(action: FailoverAction): AttemptOutcome {
  return action === 'relay' ? 'relayed' : action;
}

/**
 * The pool error for a walk that found no key: 502 when every key is out (disabled, or out of quota),
 * else 429 with Retry-After (for the request's model: a key cooling for another model is not "no key").
 */
export function exhaustedOutcome(
  pool: KeyPool,
  walker: KeyWalker | undefined,
  requestId?: string,
  budget?: 'maxAttempts' | 'maxWalkMs',
): WalkOutcome {
  const exhaustion = pool.exhaustionFor(walker?.scope(), walker?.list);
  pool.emit('exhausted', { ...exhaustion, ...(budget === undefined ? {} : { budget }), ...(requestId === undefined ? {} : { requestId }) });
  if (exhaustion.reason === 'disabled') return { kind: 'error', error: 'keys_disabled' };
  if (exhaustion.reason === 'quota') return { kind: 'error', error: 'keys_out_of_quota' };
  return { kind: 'error', error: 'rate_limited', retryAfterMs: Math.ceil(exhaustion.retryAfterMs) };
}

export function failureOutcome(error: unknown): WalkOutcome {
  if (!(error instanceof UpstreamFailure)) throw error;
  if (error.reason === 'aborted') return { kind: 'aborted' };
  return { kind: 'error', error: error.reason === 'timeout' ? 'upstream_timeout' : 'upstream_unreachable' };
}
