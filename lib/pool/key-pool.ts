import { EventEmitter } from 'node:events';
import { KeyFailoverError, checkFunction, checkKnownOptions, checkPositiveInteger, describeValue } from '../validations.js';
import {
  OPTIONS,
  WHERE,
  checkCooldownBounds,
  checkOptionsObject,
  checkStore,
  checkStrategy,
  optionalPositive,
  type KeyPoolOptions,
} from './pool-options.js';
import type { KeyPoolEvents } from './events.js';
import { buildKeys, PoolKey, type KeyInput } from './keys.js';
import { ModelScopes, type ModelScopeFunction, type RouteScope } from './scopes.js';

export type { KeyPoolOptions };
import { MemoryKeyStateStore, type DisabledReason, type KeyState, type KeyStateStore } from './store.js';
import { KeyWalker, cumulativeWeights, weightedIndex, type ModelSource, type Strategy } from './walker.js';

export type KeyStateName = 'available' | 'cooling' | 'disabled';

export interface KeySnapshot {
  id: string;
  /** The key's last 4 characters (empty for keys shorter than 16 characters). */
  hint: string;
  state: KeyStateName;
  /** Epoch ms, present while the key is cooling for every model. */
  cooldownUntil?: number;
  /** Present while the key is disabled: 'auth' (refused) or 'quota' (its account is out of money). */
  disabledReason?: DisabledReason;
  /** Epoch ms, present while a disabled key has an `authCooldownMs` / `quotaCooldownMs` to wait out. */
  disabledUntil?: number;
  /** The models (model scopes) this key is cooling for, when there are any. */
  models?: { model: string; cooldownUntil: number }[];
}

/** Why a walk ended with no key left. 'quota': every key is out, and all for want of money. */
export type PoolExhaustion = { reason: 'rate_limited'; retryAfterMs: number } | { reason: 'disabled' } | { reason: 'quota' };

/** Where a mark came from, for the events, and which model a cooldown is for. */
export interface MarkDetails {
  status?: number;
  requestId?: string;
  /** For markRateLimited: the request's model; the cooldown holds for its model scope only. */
  model?: string;
  /** For markDisabled: 'quota' when the key's account is out of money (`quotaCooldownMs`). Default 'auth'. */
  reason?: DisabledReason;
  /** What the upstream's answer meant (set by the middleware). */
  cause?: string;
}

const REASONS: readonly DisabledReason[] = ['auth', 'quota'];

export class KeyPool extends EventEmitter<KeyPoolEvents> {
  readonly now: () => number;
  readonly strategy: Strategy;
  readonly defaultCooldownMs: number;
  /** Bounds for cooldowns read from response headers. */
  readonly cooldownBounds: { readonly minMs: number; readonly maxMs: number };
  readonly authCooldownMs: number | undefined;
  readonly quotaCooldownMs: number | undefined;
  /** @internal */
  readonly scopes: ModelScopes;
  private readonly random: () => number;
  private readonly store: KeyStateStore;
  // Replaced, never mutated, so that a walk in progress keeps the list it started with.
  private keys: readonly PoolKey[] = [];
  private byId = new Map<string, PoolKey>();
  private weights: Float64Array = new Float64Array(0);
  private nextStart = 0;
  // The run of unavailable keys at the head of an 'ordered' pool, per model scope, while the store is unchanged.
  private heads = new Map<string | undefined, { end: number; until: number; generation: number }>();
  private keysCreated = 0;

  constructor(keysOrOptions: readonly KeyInput[] | KeyPoolOptions) {
    super();
    const options: KeyPoolOptions = Array.isArray(keysOrOptions) ? { keys: keysOrOptions } : checkOptionsObject(keysOrOptions);
    checkKnownOptions(WHERE, options, OPTIONS);
    this.strategy = checkStrategy(options.strategy ?? 'ordered');
    this.defaultCooldownMs = checkPositiveInteger(WHERE, 'defaultCooldownMs', options.defaultCooldownMs ?? 60_000);
    this.cooldownBounds = checkCooldownBounds(options.minCooldownMs ?? 1_000, options.maxCooldownMs ?? 3_600_000);
    this.authCooldownMs = optionalPositive('authCooldownMs', options.authCooldownMs);
    this.quotaCooldownMs = optionalPositive('quotaCooldownMs', options.quotaCooldownMs);
    this.scopes = new ModelScopes(
      options.modelScope === undefined ? undefined : checkFunction<ModelScopeFunction>(WHERE, 'modelScope', options.modelScope),
    );
    this.now = options.now === undefined ? Date.now : checkFunction<() => number>(WHERE, 'now', options.now);
    this.random = options.random === undefined ? Math.random : checkFunction<() => number>(WHERE, 'random', options.random);
    this.store = options.store === undefined ? new MemoryKeyStateStore() : checkStore(options.store);
    this.store.useClock?.(this.now);
    this.setKeys(buildKeys(WHERE, options.keys));
    this.keysCreated = this.keys.length;
  }

  get size(): number {
    return this.keys.length;
  }

  /** The ids, in walking order. */
  ids(): string[] {
    return this.keys.map((key) => key.id);
  }

  /**
   * A fresh walker for one upstream call. Never share one between requests.
   * `model` (the request's model, or a function that reads it when needed) lets the walk pass over
   * keys that are cooling for that model only; `route` scopes a request whose model cannot be read
   * (and qualifies the model of a route with limits of its own).
   */
  walker(model?: ModelSource, route?: RouteScope): KeyWalker {
    const { keys } = this;
    let start = 0;
    if (this.strategy === 'round-robin') {
      start = this.nextStart;
      this.nextStart = start + 1 >= keys.length ? 0 : start + 1;
    } else if (this.strategy === 'weighted') {
      start = weightedIndex(this.weights, this.random());
    }
    return new KeyWalker(this, keys, start, model, route);
  }

  /** @internal Whether any key may be cooling for a single model scope: only then is a request's model read. */
  hasScopedStates(): boolean {
    return (this.store.scopedCount ?? 0) > 0;
  }

  /** @internal How many keys at the head of an ordered pool are known to be unavailable for `scope`. */
  knownHead(scope: string | undefined): number {
    const head = this.heads.get(scope);
    return head !== undefined && head.generation === this.store.generation && this.now() < head.until ? head.end : 0;
  }

  /** @internal */
  rememberHead(end: number, until: number, scope: string | undefined): void {
    if (this.store.generation === undefined) return;
    if (this.heads.size >= 64 && !this.heads.has(scope)) this.heads.clear(); // one per model scope seen, bounded
    this.heads.set(scope, { end, until, generation: this.store.generation });
  }

  /**
   * Cool key `id` for `ms` from now: for every model, or with `details.model` for that model's scope only.
   * A longer cooldown already set wins; a disabled key stays disabled.
   */
  markRateLimited(id: string, ms: number, details: MarkDetails = {}): void {
    const key = this.requireKey(id, 'markRateLimited');
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `pool.markRateLimited(${JSON.stringify(id)}, ms): ms must be a non-negative finite number of milliseconds, got ${describeValue(ms)}.`,
      );
    }
    if (details.model !== undefined && typeof details.model !== 'string') {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `pool.markRateLimited(${JSON.stringify(id)}, ms, details): details.model must be a string, got ${describeValue(details.model)}.`,
      );
    }
    this.cool(key, ms, details, this.scopes.of(details.model));
  }

  /** Take key `id` out of the pool until `enable(id)` (or for `authCooldownMs` / `quotaCooldownMs`, when set). */
  markDisabled(id: string, details: MarkDetails = {}): void {
    const key = this.requireKey(id, 'markDisabled');
    if (details.reason !== undefined && !REASONS.includes(details.reason)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `pool.markDisabled(${JSON.stringify(id)}, details): details.reason must be 'auth' or 'quota', got ${describeValue(details.reason)}.`,
      );
    }
    this.disable(key, details);
  }

  /**
   * @internal A mark from an upstream answer, for the exact key that got it: dropped when that key
   * (id and value) is no longer in the pool, so that a late answer for a removed or rotated key marks nothing.
   */
  markAnswer(key: PoolKey, mark: { cooldownMs: number } | { disable: true }, details: MarkDetails, scope?: string): void {
    if (this.byId.get(key.id)?.stateId !== key.stateId) return;
    if ('cooldownMs' in mark) this.cool(key, mark.cooldownMs, details, scope);
    else this.disable(key, details);
  }

  /** Put key `id` back: neither disabled nor cooling, for any model. */
  enable(id: string): void {
    const key = this.requireKey(id, 'enable');
    this.store.enable(key.stateId);
    this.emit('enabled', { id, hint: key.hint, reason: 'manual' });
  }

  /** Add a key at the end of the walking order, available. Its id defaults to `key-N`, N never reused. */
  add(input: KeyInput): string {
    const [key] = buildKeys('pool.add()', [input], { firstIndex: this.keysCreated, taken: this.keys });
    this.keysCreated++;
    this.store.enable(key!.stateId); // a key added is meant to be tried: whatever it left behind here goes
    this.setKeys([...this.keys, key!]);
    return key!.id;
  }

  /** Remove key `id`; walks in progress finish with the list they started with, and their answers mark nothing. */
  remove(id: string): void {
    const key = this.requireKey(id, 'remove');
    if (this.keys.length === 1) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `pool.remove(${JSON.stringify(id)}): a pool keeps at least one key; add the new one first.`,
      );
    }
    this.setKeys(this.keys.filter((k) => k.id !== id));
    this.forget(key);
  }

  /**
   * Replace the whole list. A key that stays (same id and same value) keeps
   * its state; a new key, or an id whose value changed (a rotated key), starts available.
   */
  replace(inputs: readonly KeyInput[]): void {
    const keys = buildKeys('pool.replace()', inputs);
    const kept = new Set(keys.map((key) => key.stateId));
    for (const old of this.keys) if (!kept.has(old.stateId)) this.forget(old);
    this.keysCreated = Math.max(this.keysCreated, keys.length);
    this.setKeys(keys);
  }

  /** Each key's id, hint and state; never a key value. */
  snapshot(): KeySnapshot[] {
    const now = this.now();
    return this.keys.map((key) => {
      const { id, hint } = key;
      const state = this.currentState(key, now);
      if (state?.disabled) {
        const snapshot: KeySnapshot = { id, hint, state: 'disabled', disabledReason: state.disabledReason ?? 'auth' };
        if (state.disabledUntil !== undefined) snapshot.disabledUntil = state.disabledUntil;
        return snapshot;
      }
      const snapshot: KeySnapshot =
        state && state.cooldownUntil > now
          ? { id, hint, state: 'cooling', cooldownUntil: state.cooldownUntil }
          : { id, hint, state: 'available' };
      const models = this.store.scopes?.(key.stateId).filter((s) => s.until > now);
      if (models && models.length > 0) {
        snapshot.models = models.map((s) => ({ model: s.scope, cooldownUntil: s.until })).sort((a, b) => a.model.localeCompare(b.model));
      }
      return snapshot;
    });
  }

  /**
   * Why no key is left (for the request's `model`, when given): 'disabled' or 'quota' when every key
   * is out, otherwise 'rate_limited' with the smallest remaining cooldown (0 when a key came back
   * while the walk was going on).
   */
  exhaustion(model?: string): PoolExhaustion {
    return this.exhaustionFor(this.scopes.of(model));
  }

  /** @internal exhaustion() for a model scope already resolved */
  exhaustionFor(scope: string | undefined): PoolExhaustion {
    const now = this.now();
    let smallestRemaining = Infinity;
    let allQuota = true;
    for (const key of this.keys) {
      const state = this.currentState(key, now);
      if (state?.disabled) {
        if (state.disabledReason !== 'quota') allQuota = false;
        continue;
      }
      let until = state ? state.cooldownUntil : 0;
      if (scope !== undefined) until = Math.max(until, this.store.scopedUntil?.(key.stateId, scope) ?? 0);
      smallestRemaining = Math.min(smallestRemaining, Math.max(0, until - now));
    }
    if (smallestRemaining === Infinity) return { reason: allQuota ? 'quota' : 'disabled' };
    return { reason: 'rate_limited', retryAfterMs: smallestRemaining };
  }

  /** @internal 0 when `key` is available at `now` (for `scope`), else when it may be again (Infinity: only by enable) */
  unavailableUntil(key: PoolKey, now: number, scope: string | undefined): number {
    const state = this.currentState(key, now);
    if (state?.disabled) return state.disabledUntil ?? Infinity;
    const until = state === undefined ? 0 : state.cooldownUntil;
    if (scope === undefined) return until;
    const scoped = this.store.scopedUntil?.(key.stateId, scope) ?? 0;
    return scoped > until ? scoped : until;
  }

  private cool(key: PoolKey, ms: number, details: MarkDetails, scope: string | undefined): void {
    const until = Math.ceil(this.now() + ms);
    const store = this.store;
    const before = scope === undefined ? store.get(key.stateId)?.cooldownUntil : store.scopedUntil?.(key.stateId, scope);
    store.markRateLimited(key.stateId, until, scope);
    const state = store.get(key.stateId);
    if (state?.disabled) return;
    const after = scope === undefined ? state?.cooldownUntil : (store.scopedUntil?.(key.stateId, scope) ?? state?.cooldownUntil);
    // Only a real change is an event: a shorter mark that a longer cooldown outlasts is not.
    if (after === undefined || after === before) return;
    this.emit('rateLimited', {
      id: key.id,
      hint: key.hint,
      cooldownMs: ms,
      cooldownUntil: after,
      ...(scope === undefined ? {} : { model: scope }),
      ...whence(details),
    });
  }

  private disable(key: PoolKey, details: MarkDetails): void {
    const reason = details.reason ?? 'auth';
    const forMs = reason === 'quota' ? this.quotaCooldownMs : this.authCooldownMs;
    const until = forMs === undefined ? undefined : this.now() + forMs;
    const before = this.store.get(key.stateId);
    this.store.markDisabled(key.stateId, until, reason);
    // Only a real change is an event: disabling a disabled key for the same reason is not.
    if (before?.disabled && (before.disabledReason ?? 'auth') === reason) return;
    this.emit('disabled', { id: key.id, hint: key.hint, reason, ...(until === undefined ? {} : { until }), ...whence(details) });
  }

  /** Drops what this process holds about a key that left the pool; another replica may still use it. */
  private forget(key: PoolKey): void {
    if (this.store.forget) this.store.forget(key.stateId);
    else this.store.enable(key.stateId);
  }

  /** The stored state, after bringing back a disabled key whose authCooldownMs / quotaCooldownMs ran out. */
  private currentState(key: PoolKey, now: number): KeyState | undefined {
    const state = this.store.get(key.stateId);
    if (state?.disabled && state.disabledUntil !== undefined && state.disabledUntil <= now) {
      this.store.enable(key.stateId);
      this.emit('enabled', { id: key.id, hint: key.hint, reason: state.disabledReason === 'quota' ? 'quotaCooldown' : 'authCooldown' });
      return undefined;
    }
    return state;
  }

  private setKeys(keys: readonly PoolKey[]): void {
    this.keys = keys;
    this.heads = new Map();
    this.byId = new Map(keys.map((key) => [key.id, key]));
    this.weights = cumulativeWeights(keys);
    if (this.nextStart >= keys.length) this.nextStart = 0;
  }

  private requireKey(id: string, method: string): PoolKey {
    const key = this.byId.get(id);
    if (!key) {
      throw new KeyFailoverError(
        'ERR_EKF_UNKNOWN_KEY',
        `pool.${method}(${JSON.stringify(id)}): no key has this id. Ids in this pool: ${[...this.byId.keys()].join(', ')}.`,
      );
    }
    return key;
  }
}

/** Where a mark came from, for its event: the answer's status and cause, the request's id. */
function whence({ status, cause, requestId }: MarkDetails): Pick<MarkDetails, 'status' | 'cause' | 'requestId'> {
  const out: Pick<MarkDetails, 'status' | 'cause' | 'requestId'> = {};
  if (status !== undefined) out.status = status;
  if (cause !== undefined) out.cause = cause;
  if (requestId !== undefined) out.requestId = requestId;
  return out;
}

export { KeyWalker, PoolKey, type KeyInput, type Strategy };
