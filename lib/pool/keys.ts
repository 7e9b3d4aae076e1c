import { inspect } from 'node:util';
import { KeyFailoverError, describeValue } from '../validations.js';

/** A key as given to the pool: the value alone, or with an id (and a weight for the 'weighted' strategy). */
export type KeyInput = string | { id?: string; key: string; weight?: number };

const MIN_KEY_LENGTH_FOR_HINT = 16;
/** Visible ASCII only: a value that can go into an HTTP header as it is. */
export const HEADER_SAFE = /^[\x21-\x7e]+$/;

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
    readonly weight = 1,
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
 * Builds the keys, refusing empty, unsafe and duplicate ones. `taken` holds
 * the ids and values already in the pool (for add); `firstIndex` numbers the
 * default ids. Error messages name a key by its index, never by its value.
 */
export function buildKeys(where: string, inputs: unknown, { firstIndex = 0, taken = [] as readonly PoolKey[] } = {}): PoolKey[] {
  if (!Array.isArray(inputs) || inputs.length === 0) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_KEYS',
      `${where}: "keys" must be a non-empty array of API keys (strings or { id, key }), got ${
        Array.isArray(inputs) ? 'an empty array' : describeValue(inputs)
      }.`,
    );
  }
  const keys: PoolKey[] = [];
  const indexByValue = new Map<string, number | 'pool'>(taken.map((k) => [k.value, 'pool']));
  const indexById = new Map<string, number | 'pool'>(taken.map((k) => [k.id, 'pool']));
  const at = (i: number | 'pool') => (i === 'pool' ? 'a key already in the pool' : `the one at index ${i}`);
  inputs.forEach((input: unknown, offset) => {
    const index = firstIndex + offset;
    const { id, value, weight } = readKeyInput(where, input, index);
    if (!HEADER_SAFE.test(value)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${where}: the key at index ${index} contains whitespace or characters not allowed in an HTTP header; check for a stray newline or quote.`,
      );
    }
    const sameValue = indexByValue.get(value);
    if (sameValue !== undefined) {
      throw new KeyFailoverError(
        'ERR_EKF_DUPLICATE_KEY',
        `${where}: the key at index ${index} is the same key as ${at(sameValue)}; list each key once.`,
      );
    }
    const sameId = indexById.get(id);
    if (sameId !== undefined) {
      throw new KeyFailoverError(
        'ERR_EKF_DUPLICATE_KEY',
        sameId === 'pool'
          ? `${where}: the key at index ${index} has the id ${JSON.stringify(id)}, which a key already in the pool has; ids must be unique.`
          : `${where}: the keys at index ${sameId} and ${index} both have the id ${JSON.stringify(id)}; ids must be unique.`,
      );
    }
    indexByValue.set(value, index);
    indexById.set(id, index);
    keys.push(new PoolKey(id, value, weight));
  });
  return keys;
}

function readKeyInput(where: string, input: unknown, index: number): { id: string; value: string; weight: number } {
  if (typeof input === 'string' && input.length > 0) return { id: `key-${index}`, value: input, weight: 1 };
  if (typeof input === 'object' && input !== null && !Array.isArray(input)) {
    const { id, key, weight } = input as { id?: unknown; key?: unknown; weight?: unknown };
    if (typeof key !== 'string' || key.length === 0) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${where}: the entry at index ${index} needs a non-empty string "key", got ${describeValue(key)}.`,
      );
    }
    if (id !== undefined && (typeof id !== 'string' || id.length === 0)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${where}: the entry at index ${index} has an "id" that is not a non-empty string (${describeValue(id)}).`,
      );
    }
    if (weight !== undefined && (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${where}: the entry at index ${index} has a "weight" that is not a positive number (${describeValue(weight)}).`,
      );
    }
    return { id: id ?? `key-${index}`, value: key, weight: weight ?? 1 };
  }
  throw new KeyFailoverError(
    'ERR_EKF_INVALID_KEYS',
    `${where}: the key at index ${index} must be a non-empty string or { id, key }, got ${
      input === '' ? 'an empty string' : describeValue(input)
    }.`,
  );
}
