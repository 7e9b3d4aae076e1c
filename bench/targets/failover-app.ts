import express from 'express';
import { KeyPool, keyFailover, type KeyPoolOptions } from '../../lib/index.js';
import { listen, upstream } from './listen.js';

/** Targets 4-6: Express 5 + keyFailover, mounted as the README shows, with the pool on app.locals. */
export function serveFailover(poolOptions: KeyPoolOptions, prepare?: (pool: KeyPool) => void): void {
  const app = express();
  const pool = new KeyPool(poolOptions);
  prepare?.(pool);
  app.locals['keyPool'] = pool;
  app.use(keyFailover({ target: upstream, logger: false }));
  listen(app);
}
