import { KeyFailoverError, checkPositiveInteger, describeValue } from '../validations.js';
import type { KeyPoolOptions } from './key-pool.js';
import type { KeyStateStore } from './store.js';
import type { Strategy } from './walker.js';

/** The checks of `new KeyPool(options)`: each names the option and what it expects. */

export const WHERE = 'new KeyPool()';
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
