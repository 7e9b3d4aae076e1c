/**
 * Where key state lives. Shaped like express-rate-limit's Store: a small
 * interface, a memory default, other stores (Redis) as separate modules.
 *
 * Reads are synchronous on purpose: selection runs on every request and must
 * not wait on I/O, so a shared store keeps a local view and reads from it.
 * The store applies the rules (a longer cooldown wins; a disabled key ignores
 * cooldowns) so that a shared store can apply them atomically.
 *
 * The pool addresses a key's state by its state id (the key's id and a short
 * fingerprint of its value, never the value): a rotated value starts with a
 * state of its own, and a late answer for the old value marks nothing live.
 * A group of keys has a state of its own too, `<name>@group`, kept the same way.
 *
 * A cooldown that ended stays readable (its end, in the past) until an answer
 * says the key is healthy again (`markHealthy`), for RECOVERY_WINDOW_MS at
 * most: the pool lets one probe at a time try such a key.
 */
import { DEFAULT_MAX_OBJECTS, ObjectOwners } from './affinity.js';

/** How long after its end a cooldown still takes a probe: past it, nobody was waiting to rush back. */
export const RECOVERY_WINDOW_MS = 60_000;

/** Why a key is out of the pool: its credential was refused, or its account is out of money. */
export type DisabledReason = 'auth' | 'quota';

export interface KeyState {
  /** Epoch milliseconds until which the key is cooling down for every model; 0 when it is not. */
  cooldownUntil: number;
  /** Out of the pool. */
  disabled: boolean;
  /** With `disabled`: epoch ms when the key may be tried again; absent when only `enable` brings it back. */
  disabledUntil?: number;
  /** With `disabled`: why. Absent means 'auth'. */
  disabledReason?: DisabledReason;
  /** @internal When a shared store's state was made (its Redis-time stamp): the newer of two changes wins. */
  stamp?: number;
}

/** A cooldown that holds for one model scope (a model, or the bucket `modelScope` maps it to). */
export interface ScopedCooldown {
  scope: string;
  /** Epoch ms. */
  until: number;
}

export interface KeyStateStore {
  /** The state of a key, or undefined for a key the store holds nothing about (available). */
  get(id: string): KeyState | undefined;
  /**
   * Cool the key until `until` (epoch ms) unless it already cools longer or is disabled: for every
   * model, or with `scope` for that model scope only (a store without `scopedUntil` may cool the whole key).
   */
  markRateLimited(id: string, until: number, scope?: string): void;
  /** Take the key out of the pool, until `enable(id)` or, when given, until `until` (epoch ms). */
  markDisabled(id: string, until?: number, reason?: DisabledReason): void;
  /** Put the key back: not disabled, not cooling (its scoped cooldowns go too). */
  enable(id: string): void;
  /** Optional: epoch ms until which the key cools for `scope`; 0 when it does not. */
  scopedUntil?(id: string, scope: string): number;
  /** Optional: the key's scoped cooldowns, for snapshots. */
  scopes?(id: string): ScopedCooldown[];
  /** Optional: how many scoped cooldowns the store holds (expired ones may count); 0 lets selection skip the request's model. */
  readonly scopedCount?: number;
  /** Optional: drop what this process holds about `id` (a key removed or rotated away) without telling anyone else. */
  forget?(id: string): void;
  /** Optional: the pool hands its clock to the store, so that both measure time alike. */
  useClock?(now: () => number): void;
  /**
   * Optional: a number that changes whenever any key's state changes. With it,
   * an 'ordered' pool remembers the run of unavailable keys at its head and
   * skips it in one step until something changes.
   */
  readonly generation?: number;
  /** Optional: the group key `id` was learned to belong to (from an upstream answer); shared stores share it. */
  groupOf?(id: string): string | undefined;
  /** Optional: remembers that key `id` belongs to `group`. The first group learned stays; true when this one is new. */
  learnGroup?(id: string, group: string): boolean;
  /**
   * Optional: an answer said the key is healthy again: its cooldowns that already ended (for `scope`, and
   * for every model) are dropped, so that no more probes are needed. A cooldown still running stays.
   */
  markHealthy?(id: string, scope?: string): void;
  /**
   * Optional, for stores shared by processes: takes the lease on probing `entry` (a state id and a scope)
   * for `ms`; resolves to 0 when this process holds it, else to the ms left on the lease another holds.
   */
  leaseProbe?(entry: string, ms: number): Promise<number>;
  /** Optional: gives a lease taken with `leaseProbe` back. */
  releaseProbe?(entry: string): void;
  /** Optional: remembers that the key with state id `id` created upstream object `object`, until `until` (epoch ms). */
  rememberObject?(object: string, id: string, until: number): void;
  /** Optional: the state id of the key that created `object`, while remembered. */
  objectOwner?(object: string): string | undefined;
}

export interface MemoryKeyStateStoreOptions {
  /** Most scoped cooldowns held at once; past it the expired, then the oldest, go first. Default 10 000. */
  maxScopedStates?: number;
  /** Most upstream objects whose creating key is remembered (affinity); past it the oldest go first. Default 10 000. */
  maxObjects?: number;
}

export const DEFAULT_MAX_SCOPED_STATES = 10_000;

/** The default store: state in this process only. */
export class MemoryKeyStateStore implements KeyStateStore {
  private readonly states = new Map<string, KeyState>();
  /** id -> scope -> until; `order` holds the same entries, oldest mark first, for the bound. */
  private readonly scoped = new Map<string, Map<string, number>>();
  private readonly order = new Map<string, { id: string; scope: string }>();
  private readonly maxScoped: number;
  private readonly groups = new Map<string, string>();
  private readonly objects: ObjectOwners;
  private now: () => number = Date.now;
  generation = 0;

  constructor(options: MemoryKeyStateStoreOptions = {}) {
    const max = options.maxScopedStates ?? DEFAULT_MAX_SCOPED_STATES;
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`new MemoryKeyStateStore(): option "maxScopedStates" must be a positive integer, got ${String(max)}.`);
    }
    const maxObjects = options.maxObjects ?? DEFAULT_MAX_OBJECTS;
    if (!Number.isSafeInteger(maxObjects) || maxObjects < 1) {
      throw new RangeError(`new MemoryKeyStateStore(): option "maxObjects" must be a positive integer, got ${String(maxObjects)}.`);
    }
    this.maxScoped = max;
    this.objects = new ObjectOwners(maxObjects, () => this.now());
  }

  get scopedCount(): number {
    return this.order.size;
  }

  useClock(now: () => number): void {
    this.now = now;
  }

  get(id: string): KeyState | undefined {
    return this.states.get(id);
  }

  scopedUntil(id: string, scope: string): number {
    const until = this.scoped.get(id)?.get(scope);
    if (until === undefined) return 0;
    // One that ended stays until an answer says the key is healthy (markHealthy), or the recovery window is over:
    // then it goes when it is next read, so that a pool that is all well again stops reading models.
    if (until + RECOVERY_WINDOW_MS <= this.now()) {
      this.dropScope(orderKey(id, scope), id, scope);
      return 0;
    }
    return until;
  }

  markHealthy(id: string, scope?: string): void {
    const now = this.now();
    const state = this.states.get(id);
    if (state && !state.disabled && state.cooldownUntil > 0 && state.cooldownUntil <= now) {
      state.cooldownUntil = 0;
      this.generation++;
    }
    if (scope === undefined) return;
    const until = this.scoped.get(id)?.get(scope);
    if (until !== undefined && until <= now) {
      this.dropScope(orderKey(id, scope), id, scope);
      this.generation++;
    }
  }

  groupOf(id: string): string | undefined {
    return this.groups.get(id);
  }

  learnGroup(id: string, group: string): boolean {
    if (this.groups.has(id)) return false;
    this.groups.set(id, group);
    this.generation++;
    return true;
  }

  rememberObject(object: string, id: string, until: number): void {
    this.objects.set(object, id, until);
  }

  objectOwner(object: string): string | undefined {
    return this.objects.get(object);
  }

  /** @internal Sets a key's learned group as another store said it is, whatever was here. */
  putGroup(id: string, group: string): void {
    if (this.groups.get(id) === group) return;
    this.groups.set(id, group);
    this.generation++;
  }

  /** @internal Every learned group membership (state id, group). */
  groupEntries(): IterableIterator<[string, string]> {
    return this.groups.entries();
  }

  /** @internal Every remembered object, for a store that keeps this one as its local view. */
  objectEntries(): { object: string; id: string; until: number }[] {
    return this.objects.entries();
  }

  scopes(id: string): ScopedCooldown[] {
    const now = this.now();
    const out: ScopedCooldown[] = [];
    for (const [scope, until] of this.scoped.get(id) ?? []) if (until > now) out.push({ scope, until });
    return out;
  }

  /** True when the state changed (a longer cooldown or a disable did not already hold). */
  markRateLimited(id: string, until: number, scope?: string): boolean {
    const state = this.states.get(id);
    if (state?.disabled) return false;
    if (scope !== undefined) return this.coolScope(id, scope, until);
    if (state && until <= state.cooldownUntil) return false;
    this.generation++;
    if (state) state.cooldownUntil = until;
    else this.states.set(id, { cooldownUntil: until, disabled: false });
    return true;
  }

  markDisabled(id: string, until?: number, reason: DisabledReason = 'auth'): void {
    this.generation++;
    const state: KeyState = { cooldownUntil: 0, disabled: true };
    if (until !== undefined) state.disabledUntil = until;
    if (reason !== 'auth') state.disabledReason = reason;
    this.states.set(id, state);
  }

  enable(id: string): void {
    this.generation++;
    this.states.delete(id);
    this.dropScopes(id);
  }

  forget(id: string): void {
    this.enable(id);
    this.groups.delete(id);
  }

  private dropScopes(id: string): void {
    const scopes = this.scoped.get(id);
    if (!scopes) return;
    for (const scope of scopes.keys()) this.order.delete(orderKey(id, scope));
    this.scoped.delete(id);
  }

  /** @internal Every key-wide state, for a store that keeps this one as its local view. */
  entries(): IterableIterator<[string, KeyState]> {
    return this.states.entries();
  }

  /** @internal Every scoped cooldown that has not expired. */
  scopedEntries(): { id: string; scope: string; until: number }[] {
    const now = this.now();
    const out: { id: string; scope: string; until: number }[] = [];
    for (const { id, scope } of this.order.values()) {
      const until = this.scoped.get(id)?.get(scope) ?? 0;
      if (until > now) out.push({ id, scope, until });
    }
    return out;
  }

  /** @internal Sets a key-wide state as another store said it is (undefined: nothing held), whatever was here. */
  put(id: string, state: KeyState | undefined): void {
    this.generation++;
    if (state === undefined) this.states.delete(id);
    else this.states.set(id, state);
  }

  /** @internal Sets a scoped cooldown as another store said it is (0: none), whatever was here. */
  putScope(id: string, scope: string, until: number): void {
    this.generation++;
    if (until > 0) {
      this.scoped.get(id)?.delete(scope);
      this.coolScope(id, scope, until);
    } else {
      this.dropScope(orderKey(id, scope), id, scope);
    }
  }

  private coolScope(id: string, scope: string, until: number): boolean {
    let scopes = this.scoped.get(id);
    if (scopes === undefined) this.scoped.set(id, (scopes = new Map<string, number>()));
    const current = scopes.get(scope);
    if (current !== undefined && current >= until) return false;
    this.generation++;
    scopes.set(scope, until);
    const key = orderKey(id, scope);
    this.order.delete(key); // re-inserted: the newest mark goes last
    this.order.set(key, { id, scope });
    if (this.order.size > this.maxScoped) this.evict();
    return true;
  }

  /**
   * Past the bound: from the oldest mark on, the expired (past their recovery window) go, and live ones while still over it.
   * A few at a time (the oldest marks are the likeliest to have expired), so that a mark stays O(1).
   */
  private evict(): void {
    const now = this.now();
    let looked = 0;
    for (const [key, { id, scope }] of this.order) {
      const over = this.order.size > this.maxScoped;
      if (!over && looked >= 64) break;
      looked++;
      if (over || (this.scoped.get(id)?.get(scope) ?? 0) + RECOVERY_WINDOW_MS <= now) this.dropScope(key, id, scope);
      else if (!over) break;
    }
  }

  private dropScope(key: string, id: string, scope: string): void {
    this.order.delete(key);
    const scopes = this.scoped.get(id);
    scopes?.delete(scope);
    if (scopes?.size === 0) this.scoped.delete(id);
  }
}

/** Unambiguous whatever the id and scope hold: the id's length comes first. */
export function orderKey(id: string, scope: string): string {
  return `${id.length}:${id}${scope}`;
}
