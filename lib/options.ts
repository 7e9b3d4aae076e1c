import type { Request } from 'express';
import { DEFAULT_FAILOVER, type FailoverAction } from './failover.js';
import type { KeyPool } from './pool/key-pool.js';
import {
  KeyFailoverError,
  checkFunction,
  checkKnownOptions,
  checkLogger,
  checkPositiveInteger,
  describeValue,
  type Logger,
} from './validations.js';

export interface KeyFailoverOptions {
  /** Base URL of the upstream API; a path in it is kept. Default `https://api.openai.com`. */
  target?: string;
  /** The pool to use. Default: `req.app.locals.keyPool`, read at each request. */
  pool?: KeyPool;
  /** Bring your own key: return a key to send this request with it alone, bypassing the pool. */
  byok?: (req: Request) => string | undefined;
  /** Largest request body read into memory; larger ones get 413. Default 20 MiB. */
  maxBodyBytes?: number;
  /** Time allowed until the upstream's response headers (and between body chunks). Default 10 min. */
  timeoutMs?: number;
  /** Upstream statuses that fail over, and what each does to the key; merged over the defaults. */
  failover?: Partial<Record<number, FailoverAction>>;
  /** Where request-time misconfiguration warnings go (once per kind). Default `console`; `false` for none. */
  logger?: Logger | false;
}

export interface ResolvedOptions {
  target: URL;
  pool: KeyPool | undefined;
  byok: ((req: Request) => string | undefined) | undefined;
  maxBodyBytes: number;
  timeoutMs: number;
  failover: ReadonlyMap<number, FailoverAction>;
  logger: Logger | undefined;
}

const WHERE = 'keyFailover()';
const KNOWN = ['target', 'pool', 'byok', 'maxBodyBytes', 'timeoutMs', 'failover', 'logger'] as const;
const ACTIONS: readonly FailoverAction[] = ['cooldown', 'disable', 'skip', 'relay'];

export function resolveOptions(options: unknown): ResolvedOptions {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${WHERE}: expected an options object, got ${describeValue(options)}.`);
  }
  checkKnownOptions(WHERE, options, KNOWN);
  const given = options as KeyFailoverOptions;
  return {
    target: checkTarget(given.target ?? 'https://api.openai.com'),
    pool: given.pool === undefined ? undefined : checkPool(given.pool),
    byok: given.byok === undefined ? undefined : checkFunction(WHERE, 'byok', given.byok),
    maxBodyBytes: given.maxBodyBytes === undefined ? 20 * 1024 * 1024 : checkPositiveInteger(WHERE, 'maxBodyBytes', given.maxBodyBytes),
    timeoutMs: given.timeoutMs === undefined ? 10 * 60 * 1000 : checkPositiveInteger(WHERE, 'timeoutMs', given.timeoutMs),
    failover: checkFailover(given.failover),
    logger: checkLogger(WHERE, given.logger),
  };
}

function checkTarget(value: unknown): URL {
  let url: URL | undefined;
  if (typeof value === 'string') {
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "target" must be an absolute http(s) URL such as "https://api.openai.com", got ${
        typeof value === 'string' ? JSON.stringify(value) : describeValue(value)
      }.`,
    );
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "target" must not carry credentials, a query or a fragment; give the base URL only (a path is kept).`,
    );
  }
  return url;
}

/** A pool is recognised by shape, so that a pool made by the CommonJS build works with the ESM one. */
export function isKeyPool(value: unknown): value is KeyPool {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as KeyPool).walker === 'function' &&
    typeof (value as KeyPool).exhaustion === 'function'
  );
}

function checkPool(value: unknown): KeyPool {
  if (!isKeyPool(value)) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "pool" must be a KeyPool (new KeyPool([...])), got ${describeValue(value)}.`,
    );
  }
  return value;
}

function checkFailover(value: unknown): ReadonlyMap<number, FailoverAction> {
  const map = new Map<number, FailoverAction>(Object.entries(DEFAULT_FAILOVER).map(([s, a]) => [Number(s), a]));
  if (value === undefined) return map;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "failover" must be an object mapping statuses to actions, such as { 403: 'disable' }, got ${describeValue(value)}.`,
    );
  }
  for (const [status, action] of Object.entries(value)) {
    const code = Number(status);
    if (!/^\d{3}$/.test(status) || code < 400 || code > 599) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `${WHERE}: option "failover" has the key ${JSON.stringify(status)}; keys must be HTTP error statuses from 400 to 599.`,
      );
    }
    if (!ACTIONS.includes(action as FailoverAction)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `${WHERE}: option "failover" maps ${status} to ${JSON.stringify(action)}; use one of ${ACTIONS.map((a) => `'${a}'`).join(', ')}.`,
      );
    }
    map.set(code, action as FailoverAction);
  }
  return map;
}
