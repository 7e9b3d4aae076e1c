import { inspect } from 'node:util';
import { KeyFailoverError, checkFunction, checkKnownOptions, checkPositiveInteger, describeValue } from '../validations.js';
import { MemoryKeyStateStore, type KeyStateStore } from './store.js';

/** A key as given to the pool: the value alone, or with an id of your choosing. */
export type KeyInput = string | { id?: string; key: string };

export interface KeyPoolOptions {
  /** The upstream API keys, tried in this order. */
  keys: readonly KeyInput[];
  /** Cooldown when a 429 carries no usable delay header. Default 60 000 ms. */
  defaultCooldownMs?: number;
  /** Shortest cooldown a 429's headers can set. Default 1 000 ms. */
  minCooldownMs?: number;
  /** Longest cooldown a 429's headers can set. Default 3 600 000 ms (1 h). */
  maxCooldownMs?: number;
  /** The clock cooldowns are measured against (epoch ms). Default `Date.now`. */
  now?: () => number;
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
}

/** Why a walk ended with no key left. */
export type PoolExhaustion =
  | { reason: 'rate_limited'; retryAfterMs: number }
  | { reason: 'disabled' };

const MIN_KEY_LENGTH_FOR_HINT = 16;
const HEADER_SAFE = /^[\x21-\x7e]+$/;

/**
 * One key of the pool. The value is held in a private field and hidden from
 * JSON.stringify and util.inspect, so that logging a key shows id and hint only.
 */
export class PoolKey {
  readonly #value: string;
  readonly hint: string;

  constructor(
    readonly id: string,
    value: string,
  ) {
    this.#value = value;
    this.hint = value.length >= MIN_KEY_LENGTH_FOR_HINT ? value.slice(-4) : '';
  }

  /** The secret itself: only for the header sent upstream. */
  get value(): string {
    return this.#value;
  }

  toJSON(): { id: string; hint: string } {
    return { id: this.id, hint: this.hint };
  }

  [inspect.custom](): string {
    return `PoolKey { id: ${JSON.stringify(this.id)}, hint: ${JSON.stringify(this.hint)} }`;
  }
}

/**
 * One request's way through the pool: starts at the first key and hands out
 * the first available key at or after its position, each key at most once.
 */
export class KeyWalker {
  private position = 0;

  constructor(private readonly pool: KeyPool) {}

  next(): PoolKey | undefined {
    const keys = this.pool.keys;
    const now = this.pool.now();
    while (this.position < keys.length) {
      const key = keys[this.position++]!;
      if (this.pool.isAvailable(key.id, now)) return key;
    }
    return undefined;
  }
}

const WHERE = 'new KeyPool()';

export class KeyPool {
  /** @internal the keys in walking order */
  readonly keys: readonly PoolKey[];
  readonly now: () => number;
  readonly defaultCooldownMs: number;
  /** Bounds for cooldowns read from response headers. */
  readonly cooldownBounds: { readonly minMs: number; readonly maxMs: number };
  private readonly store: KeyStateStore;
  private readonly byId: ReadonlyMap<string, PoolKey>;

  constructor(keysOrOptions: readonly KeyInput[] | KeyPoolOptions) {
    const options: KeyPoolOptions = Array.isArray(keysOrOptions)
      ? { keys: keysOrOptions }
      : checkOptionsObject(keysOrOptions);
    checkKnownOptions(WHERE, options, ['keys', 'defaultCooldownMs', 'minCooldownMs', 'maxCooldownMs', 'now', 'store']);
    this.keys = buildKeys(options.keys);
    this.byId = new Map(this.keys.map((key) => [key.id, key]));
    this.defaultCooldownMs =
      options.defaultCooldownMs === undefined
        ? 60_000
        : checkPositiveInteger(WHERE, 'defaultCooldownMs', options.defaultCooldownMs);
    this.cooldownBounds = checkCooldownBounds(options.minCooldownMs ?? 1_000, options.maxCooldownMs ?? 3_600_000);
    this.now = options.now === undefined ? Date.now : checkFunction<() => number>(WHERE, 'now', options.now);
    this.store = options.store === undefined ? new MemoryKeyStateStore() : checkStore(options.store);
  }

  get size(): number {
    return this.keys.length;
  }

  /** A fresh walker for one upstream call. Never share one between requests. */
  walker(): KeyWalker {
    return new KeyWalker(this);
  }

  /** Cool key `id` for `ms` from now. A longer cooldown already set wins; a disabled key stays disabled. */
  markRateLimited(id: string, ms: number): void {
    this.requireKey(id, 'markRateLimited');
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `pool.markRateLimited("${id}", ms): ms must be a non-negative finite number of milliseconds, got ${describeValue(ms)}.`,
      );
    }
    this.store.markRateLimited(id, Math.ceil(this.now() + ms));
  }

  /** Take key `id` out of the pool until `enable(id)`. */
  markDisabled(id: string): void {
    this.requireKey(id, 'markDisabled');
    this.store.markDisabled(id);
  }

  /** Put key `id` back: neither disabled nor cooling. */
  enable(id: string): void {
    this.requireKey(id, 'enable');
    this.store.enable(id);
  }

  /** Each key's id, hint and state; never a key value. */
  snapshot(): KeySnapshot[] {
    const now = this.now();
    return this.keys.map(({ id, hint }) => {
      const state = this.store.get(id);
      if (state?.disabled) return { id, hint, state: 'disabled' };
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
    let anyEnabled = false;
    for (const { id } of this.keys) {
      const state = this.store.get(id);
      if (state?.disabled) continue;
      anyEnabled = true;
      if (state) smallestRemaining = Math.min(smallestRemaining, Math.max(0, state.cooldownUntil - now));
      else smallestRemaining = 0;
    }
    if (!anyEnabled) return { reason: 'disabled' };
    return { reason: 'rate_limited', retryAfterMs: smallestRemaining };
  }

  /** @internal */
  isAvailable(id: string, now: number): boolean {
    const state = this.store.get(id);
    return state === undefined || (!state.disabled && state.cooldownUntil <= now);
  }

  private requireKey(id: string, method: string): void {
    if (!this.byId.has(id)) {
      throw new KeyFailoverError(
        'ERR_EKF_UNKNOWN_KEY',
        `pool.${method}(${JSON.stringify(id)}): no key has this id. Ids in this pool: ${[...this.byId.keys()].join(', ')}.`,
      );
    }
  }
}

function checkOptionsObject(value: unknown): KeyPoolOptions {
  if (typeof value !== 'object' || value === null) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_KEYS',
      `${WHERE}: expected an array of keys or an options object { keys: [...] }, got ${describeValue(value)}.`,
    );
  }
  return value as KeyPoolOptions;
}

function checkCooldownBounds(minMs: unknown, maxMs: unknown): { minMs: number; maxMs: number } {
  const bounds = {
    minMs: checkPositiveInteger(WHERE, 'minCooldownMs', minMs, { allowZero: true }),
    maxMs: checkPositiveInteger(WHERE, 'maxCooldownMs', maxMs),
  };
  if (bounds.minMs > bounds.maxMs) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "minCooldownMs" (${bounds.minMs}) must not be larger than "maxCooldownMs" (${bounds.maxMs}).`,
    );
  }
  return bounds;
}

function checkStore(value: unknown): KeyStateStore {
  const store = value as Partial<KeyStateStore> | null;
  const methods = ['get', 'markRateLimited', 'markDisabled', 'enable'] as const;
  if (typeof store !== 'object' || store === null || methods.some((m) => typeof store[m] !== 'function')) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "store" must implement KeyStateStore (${methods.join(', ')}).`,
    );
  }
  return store as KeyStateStore;
}

// Error messages here name a key by its index, never by its value.
function buildKeys(inputs: unknown): PoolKey[] {
  if (!Array.isArray(inputs) || inputs.length === 0) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_KEYS',
      `${WHERE}: "keys" must be a non-empty array of API keys (strings or { id, key }), got ${
        Array.isArray(inputs) ? 'an empty array' : describeValue(inputs)
      }.`,
    );
  }
  const keys: PoolKey[] = [];
  const indexByValue = new Map<string, number>();
  const indexById = new Map<string, number>();
  inputs.forEach((input: unknown, index) => {
    const { id, value } = readKeyInput(input, index);
    if (!HEADER_SAFE.test(value)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${WHERE}: the key at index ${index} contains whitespace or characters not allowed in an HTTP header; check for a stray newline or quote.`,
      );
    }
    const sameValue = indexByValue.get(value);
    if (sameValue !== undefined) {
      throw new KeyFailoverError(
        'ERR_EKF_DUPLICATE_KEY',
        `${WHERE}: the key at index ${index} is the same key as the one at index ${sameValue}; list each key once.`,
      );
    }
    const sameId = indexById.get(id);
    if (sameId !== undefined) {
      throw new KeyFailoverError(
        'ERR_EKF_DUPLICATE_KEY',
        `${WHERE}: the keys at index ${sameId} and ${index} both have the id ${JSON.stringify(id)}; ids must be unique.`,
      );
    }
    indexByValue.set(value, index);
    indexById.set(id, index);
    keys.push(new PoolKey(id, value));
  });
  return keys;
}

function readKeyInput(input: unknown, index: number): { id: string; value: string } {
  if (typeof input === 'string' && input.length > 0) return { id: `key-${index}`, value: input };
  if (typeof input === 'object' && input !== null && !Array.isArray(input)) {
    const { id, key } = input as { id?: unknown; key?: unknown };
    if (typeof key !== 'string' || key.length === 0) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${WHERE}: the entry at index ${index} needs a non-empty string "key", got ${describeValue(key)}.`,
      );
    }
    if (id !== undefined && (typeof id !== 'string' || id.length === 0)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${WHERE}: the entry at index ${index} has an "id" that is not a non-empty string (${describeValue(id)}).`,
      );
    }
    return { id: id ?? `key-${index}`, value: key };
  }
  throw new KeyFailoverError(
    'ERR_EKF_INVALID_KEYS',
    `${WHERE}: the key at index ${index} must be a non-empty string or { id, key }, got ${
      input === '' ? 'an empty string' : describeValue(input)
    }.`,
  );
}
