/**
 * What an attempt and a walk come to: the 'attempt' event for observers, the pool's error for a walk
 * that found no key, and the gateway's error for an attempt that got no answer.
 */
import { performance } from 'node:perf_hooks';
import type { AttemptOutcome } from '../pool/events.js';
import type { KeyPool, PoolKey } from '../pool/key-pool.js';
import type { KeyWalker } from '../pool/walker.js';
import type { FailoverAction, FailureCause } from '../providers/causes.js';
import { UpstreamFailure } from '../upstream/relay.js';
import type { WalkOutcome } from './failover.js';

export function outcomeOf(action: FailoverAction): AttemptOutcome {
  return action === 'relay' ? 'relayed' : action;
}

/**
 * The 'attempt' events of one walk, for observers (metrics, tracing): sent only when one listened as the
 * walk began, and only then is the model read or the clock.
 */
export class AttemptReport {
  /** 1 for the walk's first attempt. */
  attempt = 0;
  private started = 0;
  private readonly observed: boolean;

  constructor(
    private readonly pool: KeyPool,
    private readonly walker: KeyWalker,
    private readonly requestId: string | undefined,
  ) {
    this.observed = pool.listenerCount('attempt') > 0;
  }

  /** The next attempt is sent now. */
  start(): void {
    this.attempt++;
    if (this.observed) this.started = performance.now();
  }

  report(key: PoolKey, outcome: AttemptOutcome, status?: number, cause?: FailureCause, inStream?: boolean): void {
    if (!this.observed) return;
    const model = this.walker.scope();
    const { requestId } = this;
    this.pool.emit('attempt', {
      id: key.id,
      hint: key.hint,
      attempt: this.attempt,
      outcome,
      durationMs: performance.now() - this.started,
      ...(status === undefined ? {} : { status }),
      ...(cause === undefined ? {} : { cause }),
      ...(model === undefined ? {} : { model }),
      ...(inStream ? { inStream: true } : {}),
      ...(requestId === undefined ? {} : { requestId }),
    });
  }
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
