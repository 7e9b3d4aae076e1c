import type { Redis } from 'ioredis';
import { KeyFailoverError, describeValue } from '../validations.js';

/** The checks of `new RedisStateStore(options)` that are its own; the shared ones are in ../validations.ts. */

export const WHERE = 'new RedisStateStore()';

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
