/**
 * The default KeyStateStore: state in this process only, with the rules of
 * store.ts (a longer cooldown wins, a disabled key ignores cooldowns), its
 * scoped cooldowns bounded, oldest mark first.
 */
import { DEFAULT_MAX_OBJECTS, ObjectOwners } from './affinity.js';
import { RECOVERY_WINDOW_MS, orderKey, type DisabledReason, type KeyState, type KeyStateStore, type ScopedCooldown } from './store.js';

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
