import type { NextFunction, Request, Response } from 'express';
import { MESSAGES } from './errors.js';
import { sendOnce } from './walk/failover.js';
import { Forwarder, requestPath, type Outgoing } from './gateway/forwarder.js';
import { PASSTHROUGH_METHODS } from './gateway/passthrough-methods.js';
import { checkPassthroughPath } from './gateway/passthrough-path.js';
import { checkPathRules, type PassthroughPathRule } from './gateway/path-rules.js';
import { STORED_OBJECTS_MESSAGE, touchesStoredObjects } from './gateway/stored-objects.js';
import type { KeyFailoverMiddleware } from './middleware.js';
import { KEY_FAILOVER_OPTIONS, resolveOptions, type KeyFailoverOptions } from './options.js';
import { readRequestBody } from './request/body.js';
import { routeScope } from './pool/scopes.js';
import type { Provider } from './providers/provider.js';
import { matchRoute } from './providers/routes.js';
import { readModel } from './request/model.js';
import { NAMING_BODY_LIMIT, bodyNamesObjects, objectRoute } from './walk/affinity.js';

export type KeyPassthroughOptions = Omit<KeyFailoverOptions, 'maxBodyBytes' | 'streamHoldMs'> & {
  /**
   * Only these paths (prefixes, or functions `(path, req) => boolean`) are forwarded. Default: every
   * path not denied, except the calls that list, read, change or delete the shared account's stored
   * objects (files, batches, stored responses, ...); giving `allow` replaces that default too.
   */
  allow?: PassthroughPathRule | readonly PassthroughPathRule[];
  /** These paths are refused with a 403 (checked before `allow`). Default: the admin API (`/v1/organization`, `/v1/organizations`). */
  deny?: PassthroughPathRule | readonly PassthroughPathRule[];
};

const KNOWN = [...KEY_FAILOVER_OPTIONS.filter((name) => name !== 'maxBodyBytes' && name !== 'streamHoldMs'), 'allow', 'deny'];
const WHERE = 'keyPassthrough()';

/**
 * The rest of the provider's API (models, embeddings, files, ...), proxied
 * with a pool key. Body-less requests (GET, DELETE, ...) fail over like the
 * intercepted routes. A request with a body is streamed, not buffered, so it
 * is sent once, with the first available key; a failover status still marks
 * that key, so the pool learns from it, and the answer is relayed.
 */
export function keyPassthrough(options?: KeyPassthroughOptions): KeyFailoverMiddleware {
  const forwarder = new Forwarder(resolveOptions(WHERE, options, KNOWN));
  const rules = checkPathRules(WHERE, options ?? {});
  // An allow list is the operator's own choice of what tenants may reach; without one, the account's stored objects stay out.
  const guardStoredObjects = options?.allow === undefined;

  const handle = async (req: Request, res: Response): Promise<void> => {
    if (!PASSTHROUGH_METHODS.has(req.method)) return forwarder.fail(res, 'method_not_allowed');
    const path = checkPassthroughPath(requestPath(req), forwarder.options.target, forwarder.basePath);
    if (!path.ok) return forwarder.fail(res, 'invalid_path');
    if (!rules.permits(path.routed, req)) return forwarder.fail(res, 'path_not_allowed');
    const route = req.method === 'POST' ? disguisedRoute(forwarder.options.provider, path.routed) : undefined;
    if (route !== undefined) {
      // keyFailover's route written another way would skip its body limit, scopes and hold on the way to the same endpoint.
      return forwarder.fail(res, 'invalid_path', {
        message: `The path is the failover route ${route} written another way (a trailing or repeated slash, another letter case); send it to ${route}.`,
      });
    }
    if (guardStoredObjects && touchesStoredObjects(path.routed, req.method)) {
      return forwarder.fail(res, 'path_not_allowed', { message: STORED_OBJECTS_MESSAGE });
    }
    const caller = forwarder.caller(req, res);
    if (caller === undefined) return;

    const headers = forwarder.upstreamHeaders(req.headers, caller);
    const request: Outgoing = {
      method: req.method,
      path: forwarder.upstreamPath(req),
      headers,
      body: null,
      ...forwarder.clientGone(res),
    };
    const bodyConsumed = (req as { _body?: boolean })._body === true || req.readableEnded;
    if (bodyConsumed) {
      // A body parser read it: rebuild it, and then it can be sent again like an intercepted route's.
      const read = await readRequestBody(req, Number.MAX_SAFE_INTEGER);
      if (!read.ok) {
        forwarder.warn('ERR_EKF_BODY_CONSUMED', MESSAGES.body_consumed);
        return forwarder.fail(res, 'body_consumed');
      }
      request.body = read.body;
      headers['content-length'] = String(read.body.length);
      if (read.contentType) headers['content-type'] = read.contentType;
    } else if (bodyNamesObjects(req.method, path.routed, req.headers['content-type'], Number(req.headers['content-length']))) {
      // A small JSON body that may name an object (a batch's input_file_id): read, so that the request goes to that object's key.
      const read = await readRequestBody(req, NAMING_BODY_LIMIT);
      if (!read.ok) return read.reason === 'too_large' ? forwarder.fail(res, 'body_too_large') : undefined;
      request.body = read.body;
      headers['content-length'] = String(read.body.length);
    } else if (hasBody(req)) {
      request.body = req;
      if (req.headers['content-length'] !== undefined) headers['content-length'] = req.headers['content-length'];
    }

    // A streamed body can be sent once only: no walk, but the key still learns from the answer.
    const streamed = request.body !== null && !Buffer.isBuffer(request.body);
    // Its model is not read: a 429 cools the key for this resource (`/v1/embeddings`), not the whole key.
    const scope = routeScope(path.routed);
    const buffered = Buffer.isBuffer(request.body) ? request.body : null;
    const objects = objectRoute(req.method, path.routed, buffered);
    const outcome =
      streamed && 'pool' in caller
        ? await sendOnce(caller.pool, forwarder.options.failover, (key) => forwarder.send(key, request), {
            requestId: forwarder.requestId(req),
            route: scope,
            objects,
            signal: request.signal,
            onExhausted: () => (request.body as NodeJS.ReadableStream).resume(),
          })
        : await forwarder.forward(caller, request, req, {
            model: () => (buffered ? readModel(buffered) : undefined),
            route: scope,
            objects,
          });
    await forwarder.write(outcome, res);
  };

  const middleware = (req: Request, res: Response, next?: NextFunction): void => {
    handle(req, res).catch((error: unknown) => {
      if (res.headersSent) res.destroy();
      else if (next) next(error);
      else forwarder.fail(res, 'internal');
    });
  };
  return Object.assign(middleware, { close: () => forwarder.close() }) as KeyFailoverMiddleware;
}

/** The provider's failover route that `path` is a variant of (not the route itself), or undefined. */
function disguisedRoute(provider: Provider, path: string): string | undefined {
  if (matchRoute(provider, path) !== undefined) return undefined;
  const plain = path.replace(/\/{2,}/g, '/').replace(/(.)\/+$/, '$1');
  for (const candidate of plain === path ? [path.toLowerCase()] : [plain, plain.toLowerCase()]) {
    if (candidate === path) continue;
    const match = matchRoute(provider, candidate);
    if (match !== undefined) return match.path;
  }
  return undefined;
}

function hasBody(req: Request): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}
