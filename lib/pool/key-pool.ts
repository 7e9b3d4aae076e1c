import { EventEmitter } from 'node:events';
import { KeyFailoverError, checkFunction, checkKnownOptions, checkPositiveInteger, describeValue } from '../validations.js';
import { WHERE, checkCooldownBounds, checkOptionsObject, checkStore, checkStrategy } from './pool-options.js';
import type { KeyPoolEvents } from './events.js';
import { buildKeys, PoolKey, type KeyInput } from './keys.js';
import { MemoryKeyStateStore, type KeyState, type KeyStateStore } from './store.js';
import { KeyWalker, cumulativeWeights, weightedIndex, type Strategy } from './walker.js';

export interface KeyPoolOptions {
  /** The upstream API keys, tried in this order (the 'ordered' strategy). */
  keys: readonly KeyInput[];
  /** Where each walk starts: 'ordered' (default), 'round-robin' or 'weighted'. */
  strategy?: Strategy;
  /** Cooldown when a 429 carries no usable delay header. Default 60 000 ms. */
  defaultCooldownMs?: number;
  /** Shortest cooldown a 429's headers can set. Default 1 000 ms. */
  minCooldownMs?: number;
  /** Longest cooldown a 429's headers can set. Default 3 600 000 ms (1 h). */
  maxCooldownMs?: number;
  /** When set, a disabled key is tried again after this long instead of staying out until `enable(id)`. */
  authCooldownMs?: number;
  /** The clock cooldowns are measured against (epoch ms). Default `Date.now`. */
  now?: () => number;
  /** Random numbers in [0, 1) for the 'weighted' strategy. Default `Math.random`. */
  random?: () => number;
  /** Where key state lives. Default: a `MemoryKeyStateStore` of this process. */
  store?: KeyStateStore;
}

export type KeyStateName = 'available' | 'cooling' | 'disabled';

export interface KeySnapshot {
  id: string;
  /** The key's last 4 characters (empty for keys shorter than 16 characters). */
  hint: string;
  state: KeyStateName;
  /** Epoch ms, present while the key is cooling. */
  cooldownUntil?: number;
  /** Epoch ms, present while a disabled key has an `authCooldownMs` to wait out. */
  disabledUntil?: number;
}

/** Why a walk ended with no key left. */
export type PoolExhaustion = { reason: 'rate_limited'; retryAfterMs: number } | { reason: 'disabled' };

/** Where a mark came from, for the events. */
export interface MarkDetails {
  status?: number;
  requestId?: string;
}

const OPTIONS = ['keys', 'strategy', 'defaultCooldownMs', 'minCooldownMs', 'maxCooldownMs', 'authCooldownMs', 'now', 'random', 'store'];

export class KeyPool extends EventEmitter<KeyPoolEvents> {
  readonly now: () => number;
  readonly strategy: Strategy;
  readonly defaultCooldownMs: number;
  /** Bounds for cooldowns read from response headers. */
  readonly cooldownBounds: { readonly minMs: number; readonly maxMs: number };
  readonly authCooldownMs: number | undefined;
  private readonly random: () => number;
  private readonly store: KeyStateStore;
  // Replaced, never mutated, so that a walk in progress keeps the list it started with.
  private keys: readonly PoolKey[] = [];
  private byId = new Map<string, PoolKey>();
  private weights: Float64Array = new Float64Array(0);
  private nextStart = 0;
  // The run of unavailable keys at the head of an 'ordered' pool, while the store is unchanged.
  private head = { end: 0, until: 0, generation: NaN };
  private keysCreated = 0;

  constructor(keysOrOptions: readonly KeyInput[] | KeyPoolOptions) {
    super();
    const options: KeyPoolOptions = Array.isArray(keysOrOptions) ? { keys: keysOrOptions } : checkOptionsObject(keysOrOptions);
    checkKnownOptions(WHERE, options, OPTIONS);
    this.strategy = checkStrategy(options.strategy ?? 'ordered');
    this.defaultCooldownMs = checkPositiveInteger(WHERE, 'defaultCooldownMs', options.defaultCooldownMs ?? 60_000);
    this.cooldownBounds = checkCooldownBounds(options.minCooldownMs ?? 1_000, options.maxCooldownMs ?? 3_600_000);
    this.authCooldownMs =
      options.authCooldownMs === undefined ? undefined : checkPositiveInteger(WHERE, 'authCooldownMs', options.authCooldownMs);
    this.now = options.now === undefined ? Date.now : checkFunction<() => number>(WHERE, 'now', options.now);
    this.random = options.random === undefined ? Math.random : checkFunction<() => number>(WHERE, 'random', options.random);
    this.store = options.store === undefined ? new MemoryKeyStateStore() : checkStore(options.store);
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

  /** A fresh walker for one upstream call. Never share one between requests. */
  walker(): KeyWalker {
    const { keys } = this;
    let start = 0;
    if (this.strategy === 'round-robin') {
      start = this.nextStart;
      this.nextStart = start + 1 >= keys.length ? 0 : start + 1;
    } else if (this.strategy === 'weighted') {
      start = weightedIndex(this.weights, this.random());
    }
    return new KeyWalker(this, keys, start, start === 0 ? this.knownHead() : 0);
  }

  private knownHead(): number {
    const { head } = this;
    return head.generation === this.store.generation && this.now() < head.until ? head.end : 0;
  }

  /** @internal */
  rememberHead(end: number, until: number): void {
    if (this.store.generation !== undefined) this.head = { end, until, generation: this.store.generation };
  }

  /** Cool key `id` for `ms` from now. A longer cooldown already set wins; a disabled key stays disabled. */
  markRateLimited(id: string, ms: number, details: MarkDetails = {}): void {
    const key = this.requireKey(id, 'markRateLimited');
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `pool.markRateLimited(${JSON.stringify(id)}, ms): ms must be a non-negative finite number of milliseconds, got ${describeValue(ms)}.`,
      );
    }
    const before = this.store.get(id)?.cooldownUntil;
    this.store.markRateLimited(id, Math.ceil(this.now() + ms));
    const state = this.store.get(id);
    // Only a real change is an event: a shorter mark that a longer cooldown outlasts is not.
    if (state && !state.disabled && state.cooldownUntil !== before) {
      this.emit('rateLimited', { id, hint: key.hint, cooldownMs: ms, cooldownUntil: state.cooldownUntil, ...details });
    }
  }

  /** Take key `id` out of the pool until `enable(id)` (or for `authCooldownMs`, when set). */
  markDisabled(id: string, details: MarkDetails = {}): void {
    const key = this.requireKey(id, 'markDisabled');
    const until = this.authCooldownMs === undefined ? undefined : this.now() + this.authCooldownMs;
    const wasDisabled = this.store.get(id)?.disabled === true;
    this.store.markDisabled(id, until);
    if (!wasDisabled) this.emit('disabled', { id, hint: key.hint, ...(until === undefined ? {} : { until }), ...details });
  }

  /** Put key `id` back: neither disabled nor cooling. */
  enable(id: string): void {
    const key = this.requireKey(id, 'enable');
    this.store.enable(id);
    this.emit('enabled', { id, hint: key.hint, reason: 'manual' });
  }

  /** Add a key at the end of the walking order, available. Its id defaults to `key-N`, N never reused. */
  add(input: KeyInput): string {
    const [key] = buildKeys('pool.add()', [input], { firstIndex: this.keysCreated, taken: this.keys });
    this.keysCreated++;
    this.store.enable(key!.id); // whatever a key of that id left behind is not this key's
    this.setKeys([...this.keys, key!]);
    return key!.id;
  }

  /** Remove key `id`; walks in progress finish with the list they started with. */
  remove(id: string): void {
    this.requireKey(id, 'remove');
    if (this.keys.length === 1) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `pool.remove(${JSON.stringify(id)}): a pool keeps at least one key; add the new one first.`,
      );
    }
    this.setKeys(this.keys.filter((key) => key.id !== id));
    this.store.enable(id);
  }

  /**
   * Replace the whole list. A key that stays (same id and same value) keeps
   * its state; a new key, or an id whose value changed (a rotated key), starts available.
   */
  replace(inputs: readonly KeyInput[]): void {
    const keys = buildKeys('pool.replace()', inputs);
    for (const key of keys) {
      if (this.byId.get(key.id)?.value !== key.value) this.store.enable(key.id);
    }
    const kept = new Set(keys.map((key) => key.id));
    for (const old of this.keys) if (!kept.has(old.id)) this.store.enable(old.id);
    this.keysCreated = Math.max(this.keysCreated, keys.length);
    this.setKeys(keys);
  }

  /** Each key's id, hint and state; never a key value. */
  snapshot(): KeySnapshot[] {
    const now = this.now();
    return this.keys.map(({ id, hint }) => {
      const state = this.currentState(id, now);
      if (state?.disabled)
        return state.disabledUntil === undefined
          ? { id, hint, state: 'disabled' }
          : { id, hint, state: 'disabled', disabledUntil: state.disabledUntil };
      if (state && state.cooldownUntil > now) return { id, hint, state: 'cooling', cooldownUntil: state.cooldownUntil };
      return { id, hint, state: 'available' };
    });
  }

  /**
   * Why no key is left: 'disabled' when every key is disabled, otherwise
   * 'rate_limited' with the smallest remaining cooldown (0 when a key came
   * back while the walk was going on).
   */
  exhaustion(): PoolExhaustion {
    const now = this.now();
    let smallestRemaining = Infinity;
    for (const { id } of this.keys) {
      const state = this.currentState(id, now);
      if (state?.disabled) continue;
      smallestRemaining = Math.min(smallestRemaining, state ? Math.max(0, state.cooldownUntil - now) : 0);
    }
    if (smallestRemaining === Infinity) return { reason: 'disabled' };
    return { reason: 'rate_limited', retryAfterMs: smallestRemaining };
  }

  /** @internal 0 when key `id` is available at `now`, else when it may be again (Infinity: only by enable) */
  unavailableUntil(id: string, now: number): number {
    const state = this.currentState(id, now);
    if (state === undefined) return 0;
    if (state.disabled) return state.disabledUntil ?? Infinity;
    return state.cooldownUntil;
  }

  /** The stored state, after bringing back a disabled key whose authCooldownMs ran out. */
  private currentState(id: string, now: number): KeyState | undefined {
    const state = this.store.get(id);
    if (state?.disabled && state.disabledUntil !== undefined && state.disabledUntil <= now) {
      this.store.enable(id);
      this.emit('enabled', { id, hint: this.byId.get(id)?.hint ?? '', reason: 'authCooldown' });
      return undefined;
    }
    return state;
  }

  private setKeys(keys: readonly PoolKey[]): void {
    this.keys = keys;
    this.head = { end: 0, until: 0, generation: NaN };
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

export { KeyWalker, PoolKey, type KeyInput, type Strategy };
