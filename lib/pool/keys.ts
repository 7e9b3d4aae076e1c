import { createHash } from 'node:crypto';
import { inspect } from 'node:util';
import { KeyFailoverError, describeValue } from '../validations.js';

/**
 * A key as given to the pool: the value alone, or with an id, a weight for the
 * 'weighted' strategy, the OpenAI organization / project it sends with
 * (`OpenAI-Organization` / `OpenAI-Project`, with this key only), and the group
 * of keys whose rate limits and balance it shares (its organization upstream).
 */
export type KeyInput = string | { id?: string; key: string; weight?: number; organization?: string; project?: string; group?: string };

/** Longest group name kept (a configured one longer is refused; a learned one longer is ignored). */
export const MAX_GROUP_LENGTH = 128;
/** What a group name may hold: visible ASCII, as in a header value. */
export const GROUP_NAME = /^[\x21-\x7e]{1,128}$/;

/** What a key sends besides itself: its own account headers. */
export interface KeyAccount {
  organization?: string;
  project?: string;
}

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
  /** @internal Where the pool keeps this key's state: the id and a truncated SHA-256 of the value, never the value. */
  readonly stateId: string;
  /** The account headers sent with this key (OpenAI-compatible providers). */
  readonly account: Readonly<KeyAccount> | undefined;

  constructor(
    readonly id: string,
    value: string,
    readonly weight = 1,
    account?: KeyAccount,
    /** The group configured for this key (`{ key, group }`); a learned one lives in the pool. */
    readonly group?: string,
  ) {
    this.#value = value;
    this.hint = value.length >= MIN_KEY_LENGTH_FOR_HINT ? value.slice(-4) : '';
    this.stateId = `${id}@${createHash('sha256').update(value).digest('hex').slice(0, 12)}`;
    this.account = account && (account.organization !== undefined || account.project !== undefined) ? account : undefined;
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
    const { id, value, weight, account, group } = readKeyInput(where, input, index);
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
    keys.push(new PoolKey(id, value, weight, account, group));
  });
  return keys;
}

const KEY_FIELDS = ['id', 'key', 'weight', 'organization', 'project', 'group'];

function readKeyInput(
  where: string,
  input: unknown,
  index: number,
): { id: string; value: string; weight: number; account: KeyAccount | undefined; group: string | undefined } {
  if (typeof input === 'string' && input.length > 0) {
    return { id: `key-${index}`, value: input, weight: 1, account: undefined, group: undefined };
  }
  if (typeof input === 'object' && input !== null && !Array.isArray(input)) {
    const { id, key, weight, organization, project, group } = input as Record<string, unknown>;
    const unknown = Object.keys(input).find((name) => !KEY_FIELDS.includes(name));
    if (unknown !== undefined) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${where}: the entry at index ${index} has an unknown field ${JSON.stringify(unknown)}; a key entry takes ${KEY_FIELDS.join(', ')}.`,
      );
    }
    if (typeof key !== 'string' || key.length === 0) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${where}: the entry at index ${index} needs a non-empty string "key", got ${describeValue(key)}.`,
      );
    }
    // Ids go into Redis keys, metric labels and the status page: printable text only.
    if (id !== undefined && (typeof id !== 'string' || id.length === 0 || id.length > 200 || hasControlCharacter(id))) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${where}: the entry at index ${index} has an "id" that is not a non-empty string of at most 200 printable characters (${describeValue(id)}).`,
      );
    }
    if (weight !== undefined && (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${where}: the entry at index ${index} has a "weight" that is not a positive number (${describeValue(weight)}).`,
      );
    }
    // Group names go into Redis keys, metric labels and the status page: printable ASCII, bounded.
    if (group !== undefined && (typeof group !== 'string' || !GROUP_NAME.test(group))) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `${where}: the entry at index ${index} has a "group" that is not a non-empty string of at most ${MAX_GROUP_LENGTH} visible ASCII characters (${describeValue(group)}).`,
      );
    }
    return {
      id: id ?? `key-${index}`,
      value: key,
      weight: weight ?? 1,
      account: { ...accountField(where, index, 'organization', organization), ...accountField(where, index, 'project', project) },
      group,
    };
  }
  throw new KeyFailoverError(
    'ERR_EKF_INVALID_KEYS',
    `${where}: the key at index ${index} must be a non-empty string or { id, key }, got ${
      input === '' ? 'an empty string' : describeValue(input)
    }.`,
  );
}

function accountField(where: string, index: number, name: 'organization' | 'project', value: unknown): KeyAccount {
  if (value === undefined) return {};
  if (typeof value !== 'string' || !HEADER_SAFE.test(value)) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_KEYS',
      `${where}: the entry at index ${index} has a "${name}" that is not a non-empty header-safe string (${describeValue(value)}).`,
    );
  }
  return { [name]: value };
}

function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return true;
  }
  return false;
}
