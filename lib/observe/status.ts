/**
 * poolStatus(): an Express handler that shows a pool's key states, as JSON or
 * as a small self-refreshing HTML page. Ids, hints and states only, never a
 * key value; still, it tells whoever can read it which keys are out, so mount
 * it behind your own auth.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { isKeyPool } from '../options.js';
import type { KeyPool, KeyStateName } from '../pool/key-pool.js';
import { renderStatusPage, STATUS_PAGE_CSP, type PoolStatusBody } from './status-page.js';
import { KeyFailoverError, checkKnownOptions, describeValue } from '../validations.js';

export interface PoolStatusOptions {
  /** The pool to show. Default: `req.app.locals.keyPool`, read at each request. */
  pool?: KeyPool;
}

export type { PoolStatusBody };

const WHERE = 'poolStatus()';
const NO_POOL_MESSAGE = 'poolStatus(): the app has no key pool: set app.locals.keyPool = new KeyPool([...]) or pass poolStatus({ pool }).';

/**
 * GET: `{ now, strategy, counts, keys }` as JSON, or the HTML page for
 * `?format=html` and for clients that prefer text/html (a browser).
 * Other methods go to next().
 */
export function poolStatus(options: PoolStatusOptions = {}): RequestHandler {
  if (typeof options !== 'object' || options === null) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${WHERE}: options must be an object, got ${describeValue(options)}.`);
  }
  checkKnownOptions(WHERE, options, ['pool']);
  if (options.pool !== undefined && !isKeyPool(options.pool)) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${WHERE}: option "pool" must be a KeyPool, got ${describeValue(options.pool)}.`);
  }

  return (req: Request, res: Response, next: NextFunction): void => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    res.setHeader('cache-control', 'no-store');
    res.setHeader('x-content-type-options', 'nosniff');
    res.vary('Accept');
    const pool = options.pool ?? (req.app?.locals?.['keyPool'] as unknown);
    if (!isKeyPool(pool)) {
      res.status(500).json({ error: { message: NO_POOL_MESSAGE, code: 'ERR_EKF_NO_POOL' } });
      return;
    }
    const status = readStatus(pool);
    if (wantsHtml(req)) {
      res.setHeader('content-security-policy', STATUS_PAGE_CSP);
      res.type('html').send(renderStatusPage(status));
    } else {
      res.json(status);
    }
  };
}

function readStatus(pool: KeyPool): PoolStatusBody {
  // Read before the snapshot, so that a key shown cooling has time left against this `now`.
  const now = pool.now();
  const keys = pool.snapshot();
  const counts: Record<KeyStateName, number> = { available: 0, cooling: 0, disabled: 0 };
  for (const key of keys) counts[key.state]++;
  return { now, strategy: pool.strategy, counts, keys };
}

/** `?format=html|json` decides; otherwise the Accept header (no Accept, or `*\/*`, gives JSON). */
function wantsHtml(req: Request): boolean {
  const q = req.originalUrl.indexOf('?');
  const format = q === -1 ? null : new URLSearchParams(req.originalUrl.slice(q + 1)).get('format');
  if (format === 'html') return true;
  if (format === 'json') return false;
  return req.accepts(['json', 'html']) === 'html';
}
