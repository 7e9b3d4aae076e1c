/** poolMetrics()'s checks of its arguments, each error naming the option and what was expected. */
import type { Registry } from 'prom-client';
import type { KeyPool } from '../pool/key-pool.js';
import { KeyFailoverError, describeValue } from '../validations.js';

export const WHERE = 'poolMetrics()';
export const OPTIONS = ['register', 'prefix', 'poolName'];
const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/** What poolMetrics() uses of a pool. */
export type PoolLike = Pick<KeyPool, 'snapshot' | 'on' | 'off'>;

export function checkPool(pool: unknown): void {
  const p = pool as Partial<PoolLike> | null;
  if (
    typeof p !== 'object' ||
    p === null ||
    typeof p.snapshot !== 'function' ||
    typeof p.on !== 'function' ||
    typeof p.off !== 'function'
  ) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${WHERE}: the first argument must be a KeyPool, got ${describeValue(pool)}.`);
  }
}

export function checkRegistry(value: unknown): Registry {
  const r = value as Partial<Registry> | null;
  if (typeof r !== 'object' || r === null || typeof r.getSingleMetric !== 'function' || typeof r.registerMetric !== 'function') {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "register" must be a prom-client Registry (new Registry() or prom-client's register), got ${describeValue(value)}.`,
    );
  }
  return value as Registry;
}

export function checkPrefix(value: unknown): string {
  if (typeof value !== 'string' || (value !== '' && !METRIC_NAME.test(value))) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "prefix" must be a string of letters, digits, _ and : that does not start with a digit (like 'ekf_' or 'gateway_'), got ${
        typeof value === 'string' ? JSON.stringify(value) : describeValue(value)
      }.`,
    );
  }
  return value;
}

export function checkPoolName(value: unknown): string {
  if (typeof value !== 'string' || value === '') {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "poolName" must be a non-empty string, got ${describeValue(value)}.`,
    );
  }
  return value;
}
