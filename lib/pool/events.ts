/**
 * What a KeyPool emits. Every event names a key by id and hint, never by value.
 * `requestId` is the `x-request-id` of the request that caused it, when there is one;
 * `cause` is what the upstream's answer meant (see the README's cause table).
 */
import type { FailureCause } from '../providers/causes.js';
import type { DisabledReason } from './store.js';

export interface KeyRef {
  id: string;
  hint: string;
}

export type AttemptOutcome = 'relayed' | 'cooldown' | 'disable' | 'skip' | 'unreachable' | 'timeout' | 'aborted';

export interface KeyPoolEvents {
  /** A key started (or extended) a cooldown: for every model, or for one model scope (`model`). */
  rateLimited: [
    event: KeyRef & { cooldownMs: number; cooldownUntil: number; model?: string; status?: number; cause?: string; requestId?: string },
  ];
  /**
   * A key was taken out of the pool: `reason` 'auth' (refused) or 'quota' (out of money); `until`
   * is set when `authCooldownMs` / `quotaCooldownMs` brings it back by itself.
   */
  disabled: [event: KeyRef & { reason: DisabledReason; until?: number; status?: number; cause?: string; requestId?: string }];
  /** A key came back: by `enable(id)`, or when its `authCooldownMs` / `quotaCooldownMs` ran out (noticed at the next selection). */
  enabled: [event: KeyRef & { reason: 'manual' | 'authCooldown' | 'quotaCooldown' }];
  /** A request's walk moved past a key because of its answer (`inStream`: an error frame inside a 200 stream, as `status`). */
  failover: [
    event: KeyRef & { status: number; action: 'cooldown' | 'disable' | 'skip'; cause?: FailureCause; inStream?: true; requestId?: string },
  ];
  /** A request found no key left (for its model). */
  exhausted: [event: { reason: 'rate_limited' | 'disabled' | 'quota'; retryAfterMs?: number; requestId?: string }];
  /**
   * One upstream attempt ended (its response headers came, or it failed). `attempt` is 1 for a walk's
   * first; `model` the request's model scope (read only for these events, when something listens).
   */
  attempt: [
    event: KeyRef & {
      attempt: number;
      status?: number;
      outcome: AttemptOutcome;
      cause?: FailureCause;
      model?: string;
      /** The failure was an error frame inside a 200 stream (`status` is the status it stands for). */
      inStream?: true;
      durationMs: number;
      requestId?: string;
    },
  ];
}
