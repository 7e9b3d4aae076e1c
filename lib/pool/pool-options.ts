import { KeyFailoverError, checkPositiveInteger, describeValue, type Logger } from '../validations.js';
import type { KeyInput } from './keys.js';
import type { ModelScopeFunction } from './scopes.js';
import type { KeyStateStore } from './store.js';
import type { Strategy } from './walker.js';

/** The options of `new KeyPool(options)`, and their checks: each names the option and what it expects. */

export const WHERE = 'new KeyPool()';

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
  /** When set, a key whose account is out of money is tried again after this long instead of staying out until `enable(id)`. */
  quotaCooldownMs?: number;
  /**
   * The rate-limit bucket of a model: a 429 for one model cools the key for the models of the same bucket only.
   * Default: each model is its own bucket. Return `undefined` to cool the whole key for that model's 429s.
   */
  modelScope?: ModelScopeFunction;
  /** The clock cooldowns are measured against (epoch ms). Default `Date.now`. Handed to the store too. */
  now?: () => number;
  /** Random numbers in [0, 1) for the 'weighted' strategy and the cooldown jitter. Default `Math.random`. */
  random?: () => number;
  /** Where key state lives. Default: a `MemoryKeyStateStore` of this process. */
  store?: KeyStateStore;
  /**
   * A 429's cooldown is lengthened by a random share of itself, up to this fraction (never past
   * `maxCooldownMs`), so that keys cooled together do not come back together. Default 0.1; 0 for none.
   */
  cooldownJitter?: number;
  /**
   * A key (its group) whose answer says fewer tokens than this are left, for the request's model, is passed
   * over until that limit resets. Default 0: only an exhausted request limit sets a key aside.
   */
  minRemainingTokens?: number;
  /** The longest one probe holds a key whose cooldown ended, if its answer never comes. Default 30 000 ms. */
  probeTimeoutMs?: number;
  /** How long the pool remembers which key created an upstream object (affinity). Default 24 h; 0 turns affinity off. */
  affinityTtlMs?: number;
  /** Where the pool's warnings go (all keys in one group). Default `console`; `false` for silence. */
  logger?: Logger | false;
}

export const OPTIONS = [
  'keys',
  'strategy',
  'defaultCooldownMs',
  'minCooldownMs',
  'maxCooldownMs',
  'authCooldownMs',
  'quotaCooldownMs',
  'modelScope',
  'now',
  'random',
  'store',
  'cooldownJitter',
  'minRemainingTokens',
  'probeTimeoutMs',
  'affinityTtlMs',
  'logger',
];

const STRATEGIES: readonly Strategy[] = ['ordered', 'round-robin', 'weighted'];

export function checkOptionsObject(value: unknown): KeyPoolOptions {
  if (typeof value !== 'object' || value === null) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_KEYS',
      `${WHERE}: expected an array of keys or an options object { keys: [...] }, got ${describeValue(value)}.`,
    );
  }
  return value as KeyPoolOptions;
}

export function checkStrategy(value: unknown): Strategy {
  if (!STRATEGIES.includes(value as Strategy)) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "strategy" must be one of ${STRATEGIES.map((s) => `'${s}'`).join(', ')}, got ${
        typeof value === 'string' ? JSON.stringify(value) : describeValue(value)
      }.`,
    );
  }
  return value as Strategy;
}

export function checkCooldownBounds(minMs: unknown, maxMs: unknown): { minMs: number; maxMs: number } {
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

export function checkStore(value: unknown): KeyStateStore {
  const store = value as Partial<KeyStateStore> | null;
  const methods = ['get', 'markRateLimited', 'markDisabled', 'enable'] as const;
  if (typeof store !== 'object' || store === null || methods.some((m) => typeof store[m] !== 'function')) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${WHERE}: option "store" must implement KeyStateStore (${methods.join(', ')}).`);
  }
  return store as KeyStateStore;
}

export function optionalPositive(name: string, value: unknown): number | undefined {
  return value === undefined ? undefined : checkPositiveInteger(WHERE, name, value);
}

export function checkFraction(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "${name}" must be a number from 0 to 1, got ${describeValue(value)}.`,
    );
  }
  return value;
}
