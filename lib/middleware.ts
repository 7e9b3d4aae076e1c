import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MESSAGES } from './errors.js';
import type { WalkOutcome } from './walk/failover.js';
import { Forwarder, notFound, requestPath } from './gateway/forwarder.js';
import { resolveOptions, type KeyFailoverOptions } from './options.js';
import { matchRoute, type RouteMatch } from './providers/routes.js';
import { readRequestBody } from './request/body.js';
import type { RouteScope } from './pool/scopes.js';
import { readModel } from './request/model.js';
import { objectRoute } from './walk/affinity.js';

/**
 * The middleware, plus `close()` to release its upstream connections on shutdown. An Express
 * handler, and also a plain `(req, res, next?)` one for node:http or connect (give it `pool`).
 */
export type KeyFailoverMiddleware = RequestHandler & {
  (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void): void;
  close(): Promise<void>;
};

/**
 * Intercepts the provider's POST routes (relative to where it is mounted),
 * walks the key pool for each request and relays the first usable answer.
 * Everything else goes to `next()`.
 */
export function keyFailover(options?: KeyFailoverOptions): KeyFailoverMiddleware {
  const forwarder = new Forwarder(resolveOptions('keyFailover()', options));
  const { provider, maxBodyBytes } = forwarder.options;
  // Each route's scope for a request whose model cannot be read, and the bucket of a route with limits of its own.
  const routeScopes = new Map<string, RouteScope>();
  const routeScopeOf = (path: string): RouteScope => {
    let scope = routeScopes.get(path);
    if (scope === undefined) {
      scope = { fallback: path, bucket: provider.routeBuckets?.get(path) };
      if (routeScopes.size < 1000) routeScopes.set(path, scope); // the exact routes, and the first patterns' paths
    }
    return scope;
  };

  /** Reads the body and walks the pool; its frame (the body, the headers) ends before the answer is relayed. */
  const walk = async (req: Request, res: Response, route: RouteMatch): Promise<WalkOutcome | undefined> => {
    const caller = forwarder.caller(req, res);
    if (caller === undefined) return undefined;

    const read = await readRequestBody(req, maxBodyBytes);
    if (!read.ok) {
      if (read.reason === 'too_large') {
        forwarder.fail(res, 'body_too_large', {
          message: `The request body is larger than the gateway's limit of ${maxBodyBytes} bytes.`,
        });
      } else if (read.reason === 'consumed') {
        forwarder.warn('ERR_EKF_BODY_CONSUMED', MESSAGES.body_consumed);
        forwarder.fail(res, 'body_consumed');
      } // else the client went away while sending
      return undefined;
    }

    const headers = forwarder.upstreamHeaders(req.headers, caller);
    headers['content-length'] = String(read.body.length);
    if (read.contentType) headers['content-type'] = read.contentType;
    const { body } = read;
    // The upstream path is the matched route's, built from the route, never the request line's.
    const request = { method: 'POST', path: forwarder.upstreamPath(req, route.path), headers, body, ...forwarder.clientGone(res) };
    const model = route.model ?? (() => readModel(body)); // an Azure deployment is its own rate-limit unit
    const objects = objectRoute('POST', route.path, body);
    return forwarder.forward(caller, request, req, {
      model,
      route: routeScopeOf(route.path),
      objects,
      stream: forwarder.streamFor(route.path),
    });
  };

  const handle = async (req: Request, res: Response, route: RouteMatch): Promise<void> => {
    const outcome = await walk(req, res, route);
    if (outcome !== undefined) await forwarder.write(outcome, res, forwarder.streamFor(route.path));
  };

  const middleware = (req: Request, res: Response, next?: NextFunction): void => {
    const route = req.method === 'POST' ? matchRoute(provider, requestPath(req)) : undefined;
    if (route === undefined) return next ? next() : notFound(res);
    handle(req, res, route).catch((error: unknown) => {
      if (res.headersSent) res.destroy();
      else if (next) next(error);
      else forwarder.fail(res, 'internal');
    });
  };
  return Object.assign(middleware, { close: () => forwarder.close() }) as KeyFailoverMiddleware;
}
