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

/** Which of an answer's remaining limits set a key aside. */
export type RemainingLimit = 'requests' | 'tokens' | 'input-tokens' | 'output-tokens';

export type ProbeOutcome = 'started' | 'healthy' | 'cooled' | 'released';

export type AffinityOutcome = 'learned' | 'routed' | 'cooling' | 'unavailable';

export interface KeyPoolEvents {
  /**
   * A key started (or extended) a cooldown: for every model, or for one model scope (`model`). With
   * `group`, the cooldown is its group's: every key of the group is passed over.
   */
  rateLimited: [
    event: KeyRef & {
      cooldownMs: number;
      cooldownUntil: number;
      model?: string;
      group?: string;
      status?: number;
      cause?: string;
      requestId?: string;
    },
  ];
  /**
   * A key was taken out of the pool: `reason` 'auth' (refused) or 'quota' (out of money); `until`
   * is set when `authCooldownMs` / `quotaCooldownMs` brings it back by itself. With `group`, every key of
   * the group is out (its organization's account is empty).
   */
  disabled: [
    event: KeyRef & { reason: DisabledReason; until?: number; group?: string; status?: number; cause?: string; requestId?: string },
  ];
  /** A key's group was learned from an upstream answer (the organization it names). */
  grouped: [event: KeyRef & { group: string }];
  /**
   * Ahead of a 429: an answer said the key (its group, for `model`) has no requests left (or fewer tokens than
   * `minRemainingTokens`), so the pool passes it over until `cooldownUntil`, the limit's reset, without an upstream call.
   */
  depleted: [
    event: KeyRef & {
      limit: RemainingLimit;
      remaining: number;
      cooldownMs: number;
      cooldownUntil: number;
      model?: string;
      group?: string;
      requestId?: string;
    },
  ];
  /**
   * One probe after a cooldown ended: 'started' when a request takes the key (the others pass it over),
   * then 'healthy' (its answer was not a rate limit: the key is back for everyone), 'cooled' (it was:
   * cooling again) or 'released' (no answer: a network error, a timeout, the client left).
   */
  probe: [event: KeyRef & { outcome: ProbeOutcome; model?: string; group?: string; requestId?: string }];
  /**
   * Stateful objects stay on their key: 'learned' (an answer created an object with this key), 'routed'
   * (a request naming an object went to the key that created it), 'cooling' (that key is cooling: the
   * request got the pool's 429), 'unavailable' (that key is disabled or gone: the request walked the pool).
   * `object` is the kind (`response`, `file`, `batch`, ...), never the id.
   */
  affinity: [event: KeyRef & { outcome: AffinityOutcome; object: string; requestId?: string }];
  /** A key came back: by `enable(id)`, or when its `authCooldownMs` / `quotaCooldownMs` ran out (noticed at the next selection). */
  enabled: [event: KeyRef & { reason: 'manual' | 'authCooldown' | 'quotaCooldown' }];
  /** A request's walk moved past a key because of its answer (`inStream`: an error frame inside a 200 stream, as `status`). */
  failover: [
    event: KeyRef & { status: number; action: 'cooldown' | 'disable' | 'skip'; cause?: FailureCause; inStream?: true; requestId?: string },
  ];
  /**
   * A request found no key left (for its model); with `budget`, it still had keys, but its `maxAttempts`
   * or `maxWalkMs` was spent.
   */
  exhausted: [
    event: {
      reason: 'rate_limited' | 'disabled' | 'quota';
      retryAfterMs?: number;
      budget?: 'maxAttempts' | 'maxWalkMs';
      requestId?: string;
    },
  ];
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
