import express, { type ErrorRequestHandler } from 'express';
import { keyFailover, KeyPool, type KeyFailoverMiddleware, type KeyFailoverOptions, type KeyPoolOptions } from '../../lib/index.js';
import { KEYS, listen, type Listening } from './common.js';

/** A gateway on a real socket: the pool, the middleware, what it logged, what reached Express's error handler. */
export interface Gateway {
  url: string;
  server: Listening;
  pool: KeyPool;
  middleware: KeyFailoverMiddleware;
  warnings: string[];
  /** Errors the middleware passed to next(err): there should be none. */
  errors: string[];
  states(): string[];
  close(): Promise<void>;
}

export async function startGateway(
  target: string,
  options: Omit<KeyFailoverOptions, 'target' | 'pool'> = {},
  poolOptions: Partial<KeyPoolOptions> = {},
  setup?: (app: express.Express) => void,
): Promise<Gateway> {
  const pool = new KeyPool({ keys: KEYS.slice(0, 3), ...poolOptions });
  const warnings: string[] = [];
  const errors: string[] = [];
  const middleware = keyFailover({ target, pool, logger: { warn: (m) => void warnings.push(m) }, ...options });
  const app = express();
  setup?.(app);
  app.use(middleware);
  const onError: ErrorRequestHandler = (error, _req, _res, next) => {
    errors.push(String(error));
    next(error);
  };
  app.use(onError);
  const server = await listen(app);
  let closed = false;
  return {
    url: server.url,
    server,
    pool,
    middleware,
    warnings,
    errors,
    // Each run asks for one model: a key cooling for a model counts as cooling here.
    states: () => pool.snapshot().map((k) => (k.state === 'available' && k.models?.length ? 'cooling' : k.state)),
    close: async () => {
      if (closed) return;
      closed = true;
      await server.close();
      await middleware.close();
    },
  };
}

/** The gateway's own error code, when the body is its OpenAI-shaped error. */
export function errorCode(body: Buffer): string | undefined {
  try {
    const parsed = JSON.parse(body.toString()) as { error?: { code?: unknown; type?: unknown; message?: unknown; param?: unknown } };
    const e = parsed.error;
    if (e && typeof e.message === 'string' && typeof e.type === 'string' && e.param === null && typeof e.code === 'string') return e.code;
  } catch {
    /* not JSON */
  }
  return undefined;
}
