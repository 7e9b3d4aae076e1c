/**
 * A key's state as selection, snapshots and exhaustion see it: its own state
 * and its group's (a group's cooldown or empty account holds for each of its
 * keys), read from the store. A disabled state whose authCooldownMs /
 * quotaCooldownMs ran out is brought back here, when it is next read, and
 * leaves an ended cooldown behind, so that one probe tries the key first.
 */
import type { DisabledReason, KeyState, KeyStateStore } from './store.js';
import type { Group, KeyGroups } from './groups.js';
import type { PoolKey } from './keys.js';
import { PROBE_RETRY_MS, RECOVERY_WINDOW_MS } from './probes.js';

/** Why a walk ended with no key left. 'quota': every key is out, and all for want of money. */
export type PoolExhaustion = { reason: 'rate_limited'; retryAfterMs: number } | { reason: 'disabled' } | { reason: 'quota' };

export type KeyStateName = 'available' | 'cooling' | 'disabled';

export interface KeySnapshot {
  id: string;
  /** The key's last 4 characters (empty for keys shorter than 16 characters). */
  hint: string;
  state: KeyStateName;
  /** Epoch ms, present while the key (or its group) is cooling for every model. */
  cooldownUntil?: number;
  /** Present while the key is disabled: 'auth' (refused) or 'quota' (its account is out of money). */
  disabledReason?: DisabledReason;
  /** Epoch ms, present while a disabled key has an `authCooldownMs` / `quotaCooldownMs` to wait out. */
  disabledUntil?: number;
  /** The models (model scopes) this key or its group is cooling for, when there are any. */
  models?: { model: string; cooldownUntil: number; reason?: 'remaining' }[];
  /** 'remaining' while a key-wide `cooling` is the pool's own, ahead of a 429: the answers said no requests are left. */
  coolingReason?: 'remaining';
  /** The key's group: configured (`{ key, group }`) or learned from the provider's answers. */
  group?: string;
  /** Present while one probe is trying the key after a cooldown ended; other requests pass it over meanwhile. */
  probing?: true;
}

export type EnabledReason = 'authCooldown' | 'quotaCooldown';

export class KeyStates {
  constructor(
    private readonly store: KeyStateStore,
    private readonly groups: KeyGroups,
    /** A disabled state ran out: `keys` (the key, or every key of a group) are back. */
    private readonly cameBack: (stateId: string, reason: EnabledReason) => void,
    /** The pool's remaining-based skips, for their reason in snapshots. */
    private readonly aheadUntil: (stateId: string, scope: string | undefined) => number | undefined,
  ) {}

  /** A state as stored, after bringing back a disabled one whose authCooldownMs / quotaCooldownMs ran out. */
  read(stateId: string, now: number): KeyState | undefined {
    const state = this.store.get(stateId);
    if (!state?.disabled || state.disabledUntil === undefined || state.disabledUntil > now) return state;
    const until = state.disabledUntil;
    this.store.enable(stateId);
    // An ended cooldown, in this process: the first request after it is a probe, not a rush.
    this.store.markRateLimited(stateId, until);
    this.cameBack(stateId, state.disabledReason === 'quota' ? 'quotaCooldown' : 'authCooldown');
    return this.store.get(stateId);
  }

  /**
   * 0 when `key` is available at `now` (for `scope`), else when it may be again (Infinity: only by enable).
   * A value in the past is a cooldown that ended and that no answer has said healthy yet.
   */
  unavailableUntil(key: PoolKey, now: number, scope: string | undefined): number {
    const store = this.store;
    const state = this.read(key.stateId, now);
    if (state?.disabled) return state.disabledUntil ?? Infinity;
    let until = state === undefined ? 0 : state.cooldownUntil;
    if (scope !== undefined && store.scopedUntil) {
      const scoped = store.scopedUntil(key.stateId, scope);
      if (scoped > until) until = scoped;
    }
    const group = this.groups.of(key);
    if (group === undefined) return until;
    const shared = this.read(group.stateId, now);
    if (shared?.disabled) return shared.disabledUntil ?? Infinity;
    if (shared !== undefined && shared.cooldownUntil > until) until = shared.cooldownUntil;
    if (scope !== undefined && store.scopedUntil) {
      const scoped = store.scopedUntil(group.stateId, scope);
      if (scoped > until) until = scoped;
    }
    return until;
  }

  /**
   * Which ended cooldown a probe of `key` (for `scope`) tries: its group's when the group's ended, else
   * the key's own; for every model when that one ended, else for the scope. Undefined: none within the
   * window. A skip the pool set itself from a remaining count ends at the limit's reset, when the limit is
   * whole again: it takes no probe (it is marked healthy here), and the sends after it are counted as before.
   */
  ended(
    key: PoolKey,
    now: number,
    scope: string | undefined,
  ): { entity: string; scope: string | undefined; group: Group | undefined } | undefined {
    const group = this.groups.of(key);
    return (
      (group === undefined ? undefined : this.endedOf(group.stateId, group, now, scope)) ?? this.endedOf(key.stateId, undefined, now, scope)
    );
  }

  private endedOf(
    entity: string,
    group: Group | undefined,
    now: number,
    scope: string | undefined,
  ): { entity: string; scope: string | undefined; group: Group | undefined } | undefined {
    const wide = this.store.get(entity)?.cooldownUntil ?? 0;
    if (recovering(wide, now)) {
      if (this.aheadUntil(entity, undefined) !== wide) return { entity, scope: undefined, group };
      this.store.markHealthy?.(entity);
    }
    if (scope === undefined) return undefined;
    const scoped = this.store.scopedUntil?.(entity, scope) ?? 0;
    if (!recovering(scoped, now)) return undefined;
    if (this.aheadUntil(entity, scope) !== scoped) return { entity, scope, group };
    this.store.markHealthy?.(entity, scope);
    return undefined;
  }

  /** Whether `entity`'s cooldown (for `scope`, or for every model) ended and no answer said it is healthy yet. */
  isRecovering(entity: string, scope: string | undefined, now: number): boolean {
    const until = scope === undefined ? (this.store.get(entity)?.cooldownUntil ?? 0) : (this.store.scopedUntil?.(entity, scope) ?? 0);
    return recovering(until, now);
  }

  /** Each key's state, for `pool.snapshot()`. */
  snapshot(key: PoolKey, now: number, leaseOf: (stateId: string) => boolean): KeySnapshot {
    const { id, hint } = key;
    const group = this.groups.of(key);
    const own = this.read(key.stateId, now);
    const shared = group === undefined ? undefined : this.read(group.stateId, now);
    const disabled = own?.disabled ? own : shared?.disabled ? shared : undefined;
    let snapshot: KeySnapshot;
    if (disabled) {
      snapshot = { id, hint, state: 'disabled', disabledReason: disabled.disabledReason ?? 'auth' };
      if (disabled.disabledUntil !== undefined) snapshot.disabledUntil = disabled.disabledUntil;
    } else {
      const ownUntil = own?.cooldownUntil ?? 0;
      const sharedUntil = shared?.cooldownUntil ?? 0;
      const until = Math.max(ownUntil, sharedUntil);
      snapshot = until > now ? { id, hint, state: 'cooling', cooldownUntil: until } : { id, hint, state: 'available' };
      if (until > now && this.aheadUntil(sharedUntil >= ownUntil && group ? group.stateId : key.stateId, undefined) === until) {
        snapshot.coolingReason = 'remaining';
      }
      const models = this.models(key.stateId, group, now);
      if (models.length > 0) snapshot.models = models;
    }
    if (group !== undefined) snapshot.group = group.name;
    if (leaseOf(key.stateId) || (group !== undefined && leaseOf(group.stateId))) snapshot.probing = true;
    return snapshot;
  }

  /** The model scopes the key or its group cools for, the longer of the two per scope, sorted. */
  private models(stateId: string, group: Group | undefined, now: number): NonNullable<KeySnapshot['models']> {
    const byScope = new Map<string, { until: number; entity: string }>();
    for (const entity of group === undefined ? [stateId] : [stateId, group.stateId]) {
      for (const { scope, until } of this.store.scopes?.(entity) ?? []) {
        if (until > now && until > (byScope.get(scope)?.until ?? 0)) byScope.set(scope, { until, entity });
      }
    }
    return [...byScope]
      .map(([model, { until, entity }]) =>
        this.aheadUntil(entity, model) === until
          ? { model, cooldownUntil: until, reason: 'remaining' as const }
          : { model, cooldownUntil: until },
      )
      .sort((a, b) => a.model.localeCompare(b.model));
  }

  /**
   * Why no key of `keys` is left (for `scope`): 'disabled' or 'quota' when every one is out, otherwise
   * 'rate_limited' with the smallest remaining cooldown (0 when a key came back while the walk was going on;
   * at most PROBE_RETRY_MS for a key that one probe is trying).
   */
  exhaustion(keys: readonly PoolKey[], now: number, scope: string | undefined, probeEnd: (key: PoolKey) => number): PoolExhaustion {
    let smallestRemaining = Infinity;
    let allQuota = true;
    for (const key of keys) {
      const reason = this.disabledReason(key, now);
      if (reason !== undefined) {
        if (reason !== 'quota') allQuota = false;
        continue;
      }
      const until = this.unavailableUntil(key, now, scope);
      let remaining = Math.max(0, until - now);
      if (remaining === 0 && until > 0) remaining = Math.min(Math.max(0, probeEnd(key) - now), PROBE_RETRY_MS);
      smallestRemaining = Math.min(smallestRemaining, remaining);
    }
    if (smallestRemaining === Infinity) return { reason: allQuota ? 'quota' : 'disabled' };
    return { reason: 'rate_limited', retryAfterMs: smallestRemaining };
  }

  private disabledReason(key: PoolKey, now: number): DisabledReason | undefined {
    const own = this.read(key.stateId, now);
    if (own?.disabled) return own.disabledReason ?? 'auth';
    const group = this.groups.of(key);
    const shared = group === undefined ? undefined : this.read(group.stateId, now);
    return shared?.disabled ? (shared.disabledReason ?? 'auth') : undefined;
  }
}

/** A cooldown that ended, recently enough that requests may still be waiting to rush back. */
export function recovering(until: number, now: number): boolean {
  return until > 0 && until <= now && now - until < RECOVERY_WINDOW_MS;
}
