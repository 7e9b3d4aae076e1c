import { createHash, timingSafeEqual } from 'node:crypto';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { keyFailover, type KeyFailoverMiddleware, type KeyPool } from '../lib/index.js';
import { REQUEST_ID_HEADER } from './fake-upstream.js';

/**
 * The gateway a team would run: its own (toy) user auth in front, then
 * keyFailover with the key pool on app.locals. Users may bring their own
 * OpenAI key in the `x-openai-key` header (BYOK).
 */

export const DEMO_USER_TOKEN = 'demo-user-token';
export const BYOK_HEADER = 'x-openai-key';

export interface GatewayOptions {
  /** Base URL of the upstream API (no `/v1`). */
  target: string;
  pool: KeyPool;
  /** Send the request id upstream too, so that the fake upstream can say which keys served which request. */
  forwardRequestId?: boolean;
  /** Called when each response is done (or the client went away). */
  onResponse?: (info: { requestId: string; method: string; path: string; status: number; byok: boolean }) => void;
}

export interface Gateway {
  app: Express;
  middleware: KeyFailoverMiddleware;
}

export function createGateway({ target, pool, forwardRequestId = false, onResponse }: GatewayOptions): Gateway {
  const app = express();
  app.disable('x-powered-by');
  app.locals['keyPool'] = pool;

  const clientKeys = new WeakMap<Request, string>();
  let counter = 0;
  app.use((req: Request, res: Response, next: NextFunction) => {
    const requestId = firstHeader(req, REQUEST_ID_HEADER) ?? `req-${++counter}`;
    res.setHeader(REQUEST_ID_HEADER, requestId);
    if (forwardRequestId) req.headers[REQUEST_ID_HEADER] = requestId;
    else delete req.headers[REQUEST_ID_HEADER];
    res.once('close', () =>
      onResponse?.({ requestId, method: req.method, path: req.path, status: res.statusCode, byok: clientKeys.has(req) }),
    );
    next();
  });

  app.use(toyAuth);

  // The client's own key leaves the headers here: keyFailover forwards every
  // other request header upstream, and this one is ours, not the upstream's.
  app.use((req: Request, _res: Response, next: NextFunction) => {
    const key = firstHeader(req, BYOK_HEADER);
    delete req.headers[BYOK_HEADER];
    if (key) clientKeys.set(req, key);
    next();
  });

  // Ids and hints only: a snapshot never holds a key value.
  app.get('/pool', (req: Request, res: Response) => {
    res.json((req.app.locals['keyPool'] as KeyPool).snapshot());
  });

  const middleware = keyFailover({ target, byok: (req) => clientKeys.get(req) });
  app.use(middleware);

  app.use((_req: Request, res: Response) => {
    res.status(404).json(openaiError('Not found. The demo gateway serves POST /v1/chat/completions, POST /v1/responses and GET /pool.'));
  });
  return { app, middleware };
}

const expectedToken = createHash('sha256').update(`Bearer ${DEMO_USER_TOKEN}`).digest();

/** Stands for whatever auth the real gateway has. The Authorization header never reaches the upstream. */
function toyAuth(req: Request, res: Response, next: NextFunction): void {
  const given = createHash('sha256')
    .update(req.headers.authorization ?? '')
    .digest();
  if (timingSafeEqual(given, expectedToken)) return next();
  res.status(401).json(openaiError(`The demo gateway wants "Authorization: Bearer ${DEMO_USER_TOKEN}".`));
}

function openaiError(message: string): unknown {
  return { error: { message, type: 'invalid_request_error', param: null, code: null } };
}

function firstHeader(req: Request, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}
