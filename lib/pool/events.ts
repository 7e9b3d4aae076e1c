/**
 * What a KeyPool emits. Every event names a key by id and hint, never by value.
 * `requestId` is the `x-request-id` of the request that caused it, when there is one.
 */

export interface KeyRef {
  id: string;
  hint: string;
}

export type AttemptOutcome = 'relayed' | 'cooldown' | 'disable' | 'skip' | 'unreachable' | 'timeout' | 'aborted';

export interface KeyPoolEvents {
  /** A key started (or extended) a cooldown. */
  rateLimited: [event: KeyRef & { cooldownMs: number; cooldownUntil: number; status?: number; requestId?: string }];
  /** A key was taken out of the pool; `until` is set when `authCooldownMs` brings it back by itself. */
  disabled: [event: KeyRef & { until?: number; status?: number; requestId?: string }];
  /** A key came back: by `enable(id)`, or when its `authCooldownMs` ran out (noticed at the next selection). */
  enabled: [event: KeyRef & { reason: 'manual' | 'authCooldown' }];
  /** A request's walk moved past a key because of its answer. */
  failover: [event: KeyRef & { status: number; action: 'cooldown' | 'disable' | 'skip'; requestId?: string }];
  /** A request found no key left. */
  exhausted: [event: { reason: 'rate_limited' | 'disabled'; retryAfterMs?: number; requestId?: string }];
  /** One upstream attempt ended (its response headers came, or it failed). */
  attempt: [event: KeyRef & { status?: number; outcome: AttemptOutcome; durationMs: number; requestId?: string }];
}
