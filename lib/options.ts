import type { Request } from 'express';
import type { FailoverPolicy } from './walk/failover.js';
import { CAUSES, type FailoverAction, type FailureCause } from './providers/causes.js';
import type { KeyPool } from './pool/key-pool.js';
import { anthropic } from './providers/anthropic.js';
import { openai } from './providers/openai.js';
import type { Provider } from './providers/provider.js';
import { routeSources } from './providers/routes.js';
import {
  KeyFailoverError,
  checkBoolean,
  checkFunction,
  checkKnownOptions,
  checkLogger,
  checkPositiveInteger,
  describeValue,
  type Logger,
} from './validations.js';

export interface KeyFailoverOptions {
  /** Base URL of the upstream API; a path in it is kept. Default: the provider's (`https://api.openai.com`). */
  target?: string;
  /** The upstream API: `'openai'` (default), `'anthropic'`, or `openaiCompatible({...})`. */
  provider?: 'openai' | 'anthropic' | Provider;
  /** The pool to use. Default: `req.app.locals.keyPool`, read at each request. */
  pool?: KeyPool;
  /**
   * Bring your own key: a function returning the client's key, or `true` for the key in the
   * provider's own credential header. A request with a client key is one attempt with that key.
   */
  byok?: ((req: Request) => string | undefined) | true;
  /** Largest request body read into memory; larger ones get 413. Default 20 MiB. */
  maxBodyBytes?: number;
  /** Time allowed until the upstream's response headers (and between body chunks). Default 10 min. */
  timeoutMs?: number;
  /**
   * What an upstream answer does to the key, by cause (`insufficient_quota: 'cooldown'`) or by
   * status (`403: 'disable'`); merged over the defaults. A cause entry wins over a status entry,
   * and both win over a cause's default.
   */
  failover?: FailoverMap;
  /** Where request-time misconfiguration warnings go (once per kind). Default `console`; `false` for none. */
  logger?: Logger | false;
  /**
   * How long the opening of a 200 event stream is held back while it carries no content yet, so that
   * an error inside it (before any content) fails over like an error status. Default 1000 ms; 0: no hold.
   */
  streamHoldMs?: number;
  /**
   * Relay the upstream headers that name the pool's account (`openai-organization`, `openai-project`,
   * `anthropic-organization-id`) to the client. Default `false`: a tenant does not learn whose account serves it.
   */
  relayAccountHeaders?: boolean;
  /**
   * Most upstream attempts one request may make (each with another key). Default: every available key.
   * Past it, the request gets the last skipped answer, or the pool's 429.
   */
  maxAttempts?: number;
  /**
   * Most time one request may spend across its attempts, in ms: no attempt starts after it, and the one in
   * progress is cut (504) when it runs out. Default: no bound (each attempt within `timeoutMs`).
   */
  maxWalkMs?: number;
}

export interface ResolvedOptions {
  target: URL;
  provider: Provider;
  pool: KeyPool | undefined;
  byok: ((req: Request) => string | undefined) | undefined;
  maxBodyBytes: number;
  timeoutMs: number;
  failover: FailoverPolicy;
  logger: Logger | undefined;
  relayAccountHeaders: boolean;
  streamHoldMs: number;
}

/** The `failover` option: actions by HTTP status (400-599) and by cause. */
export type FailoverMap = { [status: number]: FailoverAction | undefined } & { [cause in FailureCause]?: FailoverAction };

export const KEY_FAILOVER_OPTIONS = [
  'target',
  'provider',
  'pool',
  'byok',
  'maxBodyBytes',
  'timeoutMs',
  'failover',
  'logger',
  'relayAccountHeaders',
  'streamHoldMs',
  'maxAttempts',
  'maxWalkMs',
] as const;
const ACTIONS: readonly FailoverAction[] = ['cooldown', 'disable', 'skip', 'relay'];
const DEFAULT_STREAM_HOLD_MS = 1000;

/** A hold of at most a minute: past that, a client would rather see the stream's opening. */
function checkStreamHold(where: string, value: unknown): number {
  return checkPositiveInteger(where, 'streamHoldMs', value, { allowZero: true, max: 60_000 });
}

/** Validates the options given to `where` ('keyFailover()', 'keyPassthrough()'); `known` lists the ones it takes. */
export function resolveOptions(where: string, options: unknown, known: readonly string[] = KEY_FAILOVER_OPTIONS): ResolvedOptions {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${where}: expected an options object, got ${describeValue(options)}.`);
  }
  checkKnownOptions(where, options, known);
  const given = options as KeyFailoverOptions;
  const provider = checkProvider(where, given.provider ?? 'openai');
  const target = checkTarget(where, given.target ?? (provider === anthropic ? 'https://api.anthropic.com' : 'https://api.openai.com'));
  checkTargetPrefix(where, target, provider);
  return {
    target,
    provider,
    pool: given.pool === undefined ? undefined : checkPool(where, given.pool),
    byok: checkByok(where, given.byok, provider),
    maxBodyBytes: given.maxBodyBytes === undefined ? 20 * 1024 * 1024 : checkPositiveInteger(where, 'maxBodyBytes', given.maxBodyBytes),
    timeoutMs: given.timeoutMs === undefined ? 10 * 60 * 1000 : checkPositiveInteger(where, 'timeoutMs', given.timeoutMs),
    failover: {
      ...checkFailover(where, given.failover),
      classifier: provider.failures,
      budget: {
        maxAttempts: given.maxAttempts === undefined ? undefined : checkPositiveInteger(where, 'maxAttempts', given.maxAttempts),
        maxWalkMs: given.maxWalkMs === undefined ? undefined : checkPositiveInteger(where, 'maxWalkMs', given.maxWalkMs),
      },
    },
    logger: checkLogger(where, given.logger),
    relayAccountHeaders: checkBoolean(where, 'relayAccountHeaders', given.relayAccountHeaders) ?? false,
    streamHoldMs: given.streamHoldMs === undefined ? DEFAULT_STREAM_HOLD_MS : checkStreamHold(where, given.streamHoldMs),
  };
}

function checkProvider(where: string, value: unknown): Provider {
  if (value === 'openai') return openai;
  if (value === 'anthropic') return anthropic;
  const provider = value as Partial<Provider> | null;
  if (
    typeof provider === 'object' &&
    provider !== null &&
    provider.routes instanceof Set &&
    typeof provider.authHeader === 'function' &&
    typeof provider.clientKey === 'function' &&
    typeof provider.errorBody === 'function' &&
    typeof provider.failures?.classify === 'function'
  ) {
    return provider as Provider;
  }
  throw new KeyFailoverError(
    'ERR_EKF_INVALID_OPTION',
    `${where}: option "provider" must be 'openai', 'anthropic' or a provider from openaiCompatible({...}), got ${
      typeof value === 'string' ? JSON.stringify(value) : describeValue(value)
    }.`,
  );
}

function checkByok(where: string, value: unknown, provider: Provider): ((req: Request) => string | undefined) | undefined {
  if (value === undefined) return undefined;
  if (value === true) return (req) => provider.clientKey(req.headers);
  return checkFunction(where, 'byok', value);
}

function checkTarget(where: string, value: unknown): URL {
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
      `${where}: option "target" must be an absolute http(s) URL such as "https://api.openai.com", got ${
        typeof value === 'string' ? JSON.stringify(value) : describeValue(value)
      }.`,
    );
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${where}: option "target" must not carry credentials, a query or a fragment; give the base URL only (a path is kept).`,
    );
  }
  return url;
}

// The SDKs' base URLs end in /v1 (Azure's endpoint + /openai); the routes here already start with it.
function checkTargetPrefix(where: string, target: URL, provider: Provider): void {
  const path = target.pathname.replace(/\/+$/, '');
  for (const route of routeSources(provider)) {
    const end = route.indexOf('/', 1);
    const first = route.slice(0, end);
    if (end !== -1 && path.endsWith(first)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `${where}: option "target" ends in ${first}, and the routes already start with ${first} (the upstream would get ${path}${first}/...); give the base URL without ${first}, such as "${target.origin}${path.slice(0, -first.length)}".`,
      );
    }
  }
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

function checkPool(where: string, value: unknown): KeyPool {
  if (!isKeyPool(value)) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${where}: option "pool" must be a KeyPool (new KeyPool([...])), got ${describeValue(value)}.`,
    );
  }
  return value;
}

function checkFailover(where: string, value: unknown): Omit<FailoverPolicy, 'classifier'> {
  const statuses = new Map<number, FailoverAction>();
  const causes = new Map<FailureCause, FailoverAction>();
  if (value === undefined) return { statuses, causes };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${where}: option "failover" must be an object mapping statuses or causes to actions, such as { 403: 'disable', insufficient_quota: 'cooldown' }, got ${describeValue(value)}.`,
    );
  }
  for (const [name, action] of Object.entries(value)) {
    const isCause = CAUSES.includes(name as FailureCause);
    const code = Number(name);
    if (!isCause && (!/^\d{3}$/.test(name) || code < 400 || code > 599)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `${where}: option "failover" has the key ${JSON.stringify(name)}; keys must be HTTP error statuses from 400 to 599 or causes (${CAUSES.join(', ')}).`,
      );
    }
    if (!ACTIONS.includes(action as FailoverAction)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `${where}: option "failover" maps ${name} to ${JSON.stringify(action)}; use one of ${ACTIONS.map((a) => `'${a}'`).join(', ')}.`,
      );
    }
    if (isCause) causes.set(name as FailureCause, action as FailoverAction);
    else statuses.set(code, action as FailoverAction);
  }
  return { statuses, causes };
}
