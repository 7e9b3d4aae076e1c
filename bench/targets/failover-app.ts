import express from 'express';
import { KeyPool, keyFailover, type KeyPoolOptions } from '../../lib/index.js';
import { listen, upstream } from './listen.js';

/**
 * The kf-* targets: Express 5 + keyFailover, mounted as the README shows, the
 * OpenAI pool on app.locals. A second keyFailover for Anthropic's /v1/messages
 * (its own pool, the same keys, no `prepare`) sits behind it; the OpenAI routes never reach it.
 */
export function serveFailover(poolOptions: KeyPoolOptions, prepare?: (pool: KeyPool) => void): void {
  const app = express();
  const pool = new KeyPool(poolOptions);
  const anthropicPool = new KeyPool(poolOptions);
  prepare?.(pool);
  app.locals['keyPool'] = pool;
  app.use(keyFailover({ target: upstream, logger: false }));
  app.use(keyFailover({ provider: 'anthropic', target: upstream, pool: anthropicPool, logger: false }));
  listen(app);
}
