import type { IncomingHttpHeaders } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { Pool } from 'undici';
import { MESSAGES, sendError, type ErrorKind } from './errors.js';
import { failureOutcome, walkPool, type WalkOutcome } from './failover.js';
import { isKeyPool, resolveOptions, type KeyFailoverOptions, type ResolvedOptions } from './options.js';
import type { KeyPool } from './pool/key-pool.js';
import { openai } from './providers/openai.js';
import type { Provider } from './providers/provider.js';
import { readRequestBody } from './request-body.js';
import {
  hopByHop,
  relayResponse,
  sendAttempt,
  sendHeldResponse,
  type OutgoingHeaders,
  type UpstreamResponse,
} from './upstream/relay.js';
import { KeyFailoverError, OnceLogger } from './validations.js';

/** The middleware, plus `close()` to release its upstream connections on shutdown. */
export type KeyFailoverMiddleware = RequestHandler & { close(): Promise<void> };

const HEADER_SAFE = /^[\x21-\x7e]+$/;

/**
 * Intercepts the provider's POST routes (relative to where it is mounted),
 * walks the key pool for each request and relays the first usable answer.
 * Everything else goes to `next()`.
 */
export function keyFailover(options?: KeyFailoverOptions): KeyFailoverMiddleware {
  const resolved = resolveOptions(options);
  const provider = openai;
  const basePath = resolved.target.pathname.replace(/\/+$/, '');
  // One keep-alive connection pool per middleware; our own timer bounds the wait for headers.
  const dispatcher = new Pool(resolved.target.origin, { headersTimeout: 0, bodyTimeout: resolved.timeoutMs });
  const warnings = new OnceLogger(resolved.logger);
  const dropFromRequest = new Set(['host', 'content-length', 'expect', ...provider.clientAuthHeaders]);

  const handle = async (req: Request, res: Response): Promise<void> => {
    const pool = resolved.pool ?? (req.app?.locals?.['keyPool'] as unknown);
    const clientKey = resolved.byok?.(req);
    if (clientKey === undefined && !isKeyPool(pool)) {
      warnings.warn(new KeyFailoverError('ERR_EKF_NO_POOL', `${MESSAGES.no_pool} Requests to ${req.path} get a 500 until then.`));
      return fail(res, provider, 'no_pool');
    }
    if (clientKey !== undefined && (typeof clientKey !== 'string' || !HEADER_SAFE.test(clientKey))) {
      return fail(res, provider, 'invalid_client_key');
    }

    const read = await readRequestBody(req, resolved.maxBodyBytes);
    if (!read.ok) {
      if (read.reason === 'too_large') {
        const message = `The request body is larger than the gateway's limit of ${resolved.maxBodyBytes} bytes.`;
        return sendError(res, provider, 'body_too_large', { message });
      }
      if (read.reason === 'consumed') {
        warnings.warn(new KeyFailoverError('ERR_EKF_BODY_CONSUMED', MESSAGES.body_consumed));
        return fail(res, provider, 'body_consumed');
      }
      return; // the client went away while sending
    }

    const headers = upstreamHeaders(req.headers, dropFromRequest);
    headers['content-length'] = String(read.body.length);
    if (read.contentType) headers['content-type'] = read.contentType;
    const query = req.url.indexOf('?');
    const path = basePath + req.path + (query === -1 ? '' : req.url.slice(query));

    const clientGone = new AbortController();
    res.once('close', () => {
      if (!res.writableFinished) clientGone.abort();
    });
    const send = (key: string): Promise<UpstreamResponse> => {
      const [name, value] = provider.authHeader(key);
      return sendAttempt(dispatcher, {
        path,
        headers: { ...headers, [name]: value },
        body: read.body,
        signal: clientGone.signal,
        timeoutMs: resolved.timeoutMs,
      });
    };

    const outcome =
      clientKey !== undefined
        ? await send(clientKey).then((response): WalkOutcome => ({ kind: 'relay', response }), failureOutcome)
        : await walkPool(pool as KeyPool, resolved.failover, (key) => send(key.value));
    await writeOutcome(outcome, res, provider);
  };

  const middleware = (req: Request, res: Response, next: NextFunction): void => {
    if (req.method !== 'POST' || !provider.routes.has(req.path)) return next();
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) next(error);
      else res.destroy();
    });
  };
  return Object.assign(middleware, { close: () => dispatcher.close() });
}

function upstreamHeaders(incoming: IncomingHttpHeaders, drop: ReadonlySet<string>): OutgoingHeaders {
  const hop = hopByHop(incoming);
  const out: OutgoingHeaders = {};
  for (const name in incoming) {
    const value = incoming[name];
    if (value !== undefined && !hop.has(name) && !drop.has(name)) out[name] = value;
  }
  return out;
}

async function writeOutcome(outcome: WalkOutcome, res: Response, provider: Provider): Promise<void> {
  switch (outcome.kind) {
    case 'relay':
      // A failure mid-stream has already ended the client's response; no key is to blame.
      return relayResponse(outcome.response, res).catch(() => undefined);
    case 'held':
      return sendHeldResponse(outcome.response, res);
    case 'error':
      return fail(res, provider, outcome.error, outcome.retryAfterSeconds);
    case 'aborted':
      return;
  }
}

function fail(res: Response, provider: Provider, kind: ErrorKind, retryAfterSeconds?: number): void {
  sendError(res, provider, kind, retryAfterSeconds === undefined ? {} : { headers: { 'retry-after': String(retryAfterSeconds) } });
}
