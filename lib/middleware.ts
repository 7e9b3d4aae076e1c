import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { MESSAGES } from './errors.js';
import { Forwarder } from './forwarder.js';
import { resolveOptions, type KeyFailoverOptions } from './options.js';
import { readRequestBody } from './request-body.js';
import { readModel } from './request/model.js';
import { objectRoute } from './walk/affinity.js';

/** The middleware, plus `close()` to release its upstream connections on shutdown. */
export type KeyFailoverMiddleware = RequestHandler & { close(): Promise<void> };

/**
 * Intercepts the provider's POST routes (relative to where it is mounted),
 * walks the key pool for each request and relays the first usable answer.
 * Everything else goes to `next()`.
 */
export function keyFailover(options?: KeyFailoverOptions): KeyFailoverMiddleware {
  const forwarder = new Forwarder(resolveOptions('keyFailover()', options));
  const { provider, maxBodyBytes } = forwarder.options;

  const handle = async (req: Request, res: Response): Promise<void> => {
    const caller = forwarder.caller(req, res);
    if (caller === undefined) return;

    const read = await readRequestBody(req, maxBodyBytes);
    if (!read.ok) {
      if (read.reason === 'too_large') {
        return forwarder.fail(res, 'body_too_large', {
          message: `The request body is larger than the gateway's limit of ${maxBodyBytes} bytes.`,
        });
      }
      if (read.reason === 'consumed') {
        forwarder.warn('ERR_EKF_BODY_CONSUMED', MESSAGES.body_consumed);
        return forwarder.fail(res, 'body_consumed');
      }
      return; // the client went away while sending
    }

    const headers = forwarder.upstreamHeaders(req.headers, caller);
    headers['content-length'] = String(read.body.length);
    if (read.contentType) headers['content-type'] = read.contentType;
    const { body } = read;
    const request = { method: 'POST', path: forwarder.upstreamPath(req), headers, body, signal: forwarder.clientGone(res) };

    const objects = objectRoute('POST', req.path, body);
    await forwarder.write(await forwarder.forward(caller, request, req, () => readModel(body), objects), res);
  };

  const middleware = (req: Request, res: Response, next: NextFunction): void => {
    if (req.method !== 'POST' || !provider.routes.has(req.path)) return next();
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) next(error);
      else res.destroy();
    });
  };
  return Object.assign(middleware, { close: () => forwarder.close() });
}
