import type { Redis } from 'ioredis';
import { KeyFailoverError, describeValue, type Logger } from '../validations.js';

/** The options of `new RedisStateStore(options)`, and the checks that are its own; the shared ones are in ../validations.ts. */

export const WHERE = 'new RedisStateStore()';

export interface RedisStateStoreOptions {
  /** An ioredis client to use (not closed by `close()`); a duplicate of it subscribes. Give this or `url`. */
  client?: Redis;
  /** `redis://` or `rediss://` URL: the store makes (and closes) its own clients. Give this or `client`. */
  url?: string;
  /** Prepended to every Redis key and to the channel. Default `'ekf:'`. One prefix per set of keys. */
  prefix?: string;
  /** Not needed: the KeyPool hands the store its own clock. When given, it must be the pool's `now`. */
  now?: () => number;
  /** Where an outage is reported, once per outage (`info`, when present, hears the recovery). Default `console`; `false` for silence. */
  logger?: Logger | false;
  /** How long a Redis call may take before it counts as failed. Default 1000 ms. */
  operationTimeoutMs?: number;
  /** Full resync period, a safety net for lost pub/sub messages; 0: only on (re)connect. Default 30 000 ms. */
  resyncIntervalMs?: number;
  /** Most per-model cooldowns held (in Redis and in each replica); past it the soonest to end go first. Default 10 000. */
  maxScopedStates?: number;
  /**
   * Most upstream objects whose creating key is remembered (affinity), in Redis and in each replica; past it
   * the soonest to end go first. Default 10 000.
   */
  maxObjects?: number;
}

export const OPTIONS = [
  'client',
  'url',
  'prefix',
  'now',
  'logger',
  'operationTimeoutMs',
  'resyncIntervalMs',
  'maxScopedStates',
  'maxObjects',
];

export function checkConnection(client: unknown, url: unknown): { client?: Redis; url?: string } {
  if ((client === undefined) === (url === undefined)) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: give exactly one of option "client" (an ioredis client) or option "url" (a redis:// URL), got ${client === undefined ? 'neither' : 'both'}.`,
    );
  }
  const redis = client as Partial<Redis> | null;
  if (
    client !== undefined &&
    (typeof redis !== 'object' || redis === null || typeof redis.duplicate !== 'function' || typeof redis.defineCommand !== 'function')
  ) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "client" must be an ioredis client (new Redis(...)), got ${describeValue(client)}.`,
    );
  }
  // The URL may hold a password: never echo it.
  if (url !== undefined && (typeof url !== 'string' || !/^rediss?:\/\/./.test(url))) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "url" must be a redis:// or rediss:// URL string, got ${typeof url === 'string' ? 'another string' : describeValue(url)}.`,
    );
  }
  return { client: client as Redis | undefined, url: url };
}

export function checkPrefix(value: unknown): string {
  if (typeof value !== 'string' || value === '') {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "prefix" must be a non-empty string such as 'ekf:', got ${describeValue(value)}.`,
    );
  }
  return value;
}

/**
 * Why Redis is out, for the one warning per outage: a refused password or ACL says so, with the
 * server's words (which never hold the password); anything else by its code only.
 */
export function describeRedisError(error: unknown): string {
  const message = error instanceof Error ? error.message : '';
  const auth = /^(WRONGPASS|NOAUTH|NOPERM)\b[^\n]*/.exec(message);
  if (auth) return `Redis refused the store's credentials: authentication failed (${auth[0].slice(0, 200)})`;
  const code = (error as { code?: unknown } | undefined)?.code;
  return `Redis is unreachable${typeof code === 'string' ? ` (${code})` : ''}`;
}
