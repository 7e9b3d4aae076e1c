import type { NextFunction, Request, Response } from 'express';
import { MESSAGES } from './errors.js';
import { exhaustedOutcome, failureOutcome, learnFromAnswer, type WalkContext, type WalkOutcome } from './failover.js';
import { Forwarder, type Outgoing } from './forwarder.js';
import { PASSTHROUGH_METHODS } from './gateway/passthrough-methods.js';
import { checkPassthroughPath } from './gateway/passthrough-path.js';
import { checkPathRules, type PassthroughPathRule } from './gateway/path-rules.js';
import type { KeyFailoverMiddleware } from './middleware.js';
import { KEY_FAILOVER_OPTIONS, resolveOptions, type KeyFailoverOptions } from './options.js';
import type { KeyPool } from './pool/key-pool.js';
import { readRequestBody } from './request-body.js';
import { readModel } from './request/model.js';
import { NAMING_BODY_LIMIT, bodyNamesObjects, objectRoute, startWalk } from './walk/affinity.js';
import { NO_BUDGET, WalkSession } from './walk/session.js';

export type KeyPassthroughOptions = Omit<KeyFailoverOptions, 'maxBodyBytes'> & {
  /** Only these paths (prefixes, or functions `(path, req) => boolean`) are forwarded. Default: every path not denied. */
  allow?: PassthroughPathRule | readonly PassthroughPathRule[];
  /** These paths are refused with a 403 (checked before `allow`). Default: the admin API (`/v1/organization`, `/v1/organizations`). */
  deny?: PassthroughPathRule | readonly PassthroughPathRule[];
};

const KNOWN = [...KEY_FAILOVER_OPTIONS.filter((name) => name !== 'maxBodyBytes'), 'allow', 'deny'];
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

  const handle = async (req: Request, res: Response): Promise<void> => {
    if (!PASSTHROUGH_METHODS.has(req.method)) return forwarder.fail(res, 'method_not_allowed');
    const path = checkPassthroughPath(req.path, forwarder.options.target, forwarder.basePath);
    if (!path.ok) return forwarder.fail(res, 'invalid_path');
    if (!rules.permits(path.routed, req)) return forwarder.fail(res, 'path_not_allowed');
    const caller = forwarder.caller(req, res);
    if (caller === undefined) return;

    const headers = forwarder.upstreamHeaders(req.headers, caller);
    const request: Outgoing = {
      method: req.method,
      path: forwarder.upstreamPath(req),
      headers,
      body: null,
      signal: forwarder.clientGone(res),
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
    const buffered = Buffer.isBuffer(request.body) ? request.body : null;
    const objects = objectRoute(req.method, path.routed, buffered);
    const outcome =
      streamed && 'pool' in caller
        ? await sendOnce(caller.pool, forwarder, request, { requestId: forwarder.requestId(req), objects })
        : await forwarder.forward(caller, request, req, () => (buffered ? readModel(buffered) : undefined), objects);
    await forwarder.write(outcome, res);
  };

  const middleware = (req: Request, res: Response, next: NextFunction): void => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) next(error);
      else res.destroy();
    });
  };
  return Object.assign(middleware, { close: () => forwarder.close() });
}

function hasBody(req: Request): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

/**
 * A streamed body goes once, with the first available key (the one that holds the object it names, if
 * any); the key still learns from the answer.
 */
async function sendOnce(pool: KeyPool, forwarder: Forwarder, request: Outgoing, context: WalkContext): Promise<WalkOutcome> {
  const walker = startWalk(pool, undefined, context.objects, context.requestId);
  if ('kind' in walker) {
    (request.body as NodeJS.ReadableStream).resume();
    return walker;
  }
  const session = new WalkSession(pool, walker, NO_BUDGET, context.requestId);
  let key = session.next();
  while (key !== undefined && !(await session.admit(key))) key = session.next();
  if (key === undefined) {
    (request.body as NodeJS.ReadableStream).resume();
    return exhaustedOutcome(pool, walker, context.requestId);
  }
  let response;
  try {
    response = await forwarder.send(key, request);
  } catch (error) {
    session.failed();
    return failureOutcome(error);
  }
  return learnFromAnswer(session, pool, forwarder.options.failover, key, response, context);
}
