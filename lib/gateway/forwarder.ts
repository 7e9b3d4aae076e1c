import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Request, Response } from 'express';
import { Pool } from 'undici';
import { MESSAGES, sendError, type ErrorKind } from '../errors.js';
import { walkPool, type WalkOutcome } from '../walk/failover.js';
import { failureOutcome } from '../walk/outcomes.js';
import { withoutAccountHeaders, withoutAccountIds } from './account-headers.js';
import { ownAnswerHeaders, plainRequestId } from './answer-headers.js';
import { withoutClientKey } from './client-key.js';
import { isKeyPool, type ResolvedOptions } from '../options.js';
import type { KeyPool, PoolKey } from '../pool/key-pool.js';
import type { RouteScope } from '../pool/scopes.js';
import type { ModelSource } from '../pool/walker.js';
import { RouteStreams, type RouteStream } from '../providers/streams.js';
import { isPlainEventStream } from '../upstream/stream-hold.js';
import type { ObjectRoute } from '../walk/affinity.js';
import type { AttemptLimits } from '../walk/session.js';
import { HEADER_SAFE } from '../pool/keys.js';
import { addKeyHeaders } from '../providers/provider.js';
import { CREDENTIAL_HEADERS, OVERRIDE_HEADERS, decodableAcceptEncoding } from '../upstream/request-headers.js';
import {
  hopByHop,
  relayResponse,
  sendAttempt,
  sendHeldResponse,
  type HeldResponse,
  type OutgoingHeaders,
  UpstreamFailure,
  type UpstreamRequest,
  type UpstreamResponse,
} from '../upstream/relay.js';
import { KeyFailoverError, OnceLogger, type KeyFailoverErrorCode } from '../validations.js';

export type Caller = { clientKey: string } | { pool: KeyPool };

/** What a walk may know of the request: its model (read lazily), and how its route's streams are held. */
export interface Forwarding {
  model?: ModelSource;
  route?: RouteScope | undefined;
  objects?: ObjectRoute | undefined;
  stream?: RouteStream | undefined;
}

/** What one request sends upstream, whichever key it goes with. */
export type Outgoing = Omit<UpstreamRequest, 'timeoutMs'>;

/**
 * What keyFailover and keyPassthrough share on the gateway side: the
 * upstream connection pool, finding the key pool and the client's key for a
 * request, the upstream URL and headers, and writing the outcome.
 */
export class Forwarder {
  private readonly dispatcher: Pool;
  /** The target's path, without a trailing slash: what every upstream path starts with. */
  readonly basePath: string;
  private readonly warnings: OnceLogger;
  private readonly dropFromRequest: ReadonlySet<string>;
  // The client's account headers go with the client's own key only.
  private readonly dropWithPoolKey: ReadonlySet<string>;
  private readonly streams: RouteStreams;
  // The provider's query parameters, listed once rather than at every request.
  private readonly fixedQuery: readonly [string, string][];

  constructor(readonly options: ResolvedOptions) {
    this.basePath = options.target.pathname.replace(/\/+$/, '');
    // Keep-alive connections to the upstream; our own timer bounds the wait for headers.
    this.dispatcher = new Pool(options.target.origin, { headersTimeout: 0, bodyTimeout: options.timeoutMs });
    this.warnings = new OnceLogger(options.logger);
    this.fixedQuery = Object.entries(options.provider.query);
    this.streams = new RouteStreams(options.provider.streams, options.streamHoldMs);
    // Cookies are the gateway's own session credentials: never for the upstream; nor may a header change its method or path.
    this.dropFromRequest = new Set([
      'host',
      'content-length',
      'expect',
      'cookie',
      ...OVERRIDE_HEADERS,
      ...CREDENTIAL_HEADERS,
      ...options.provider.clientAuthHeaders,
    ]);
    this.dropWithPoolKey = new Set([...this.dropFromRequest, ...options.provider.accountHeaders]);
  }

  /**
   * Whose key this request uses: the client's own (byok) or the pool's.
   * Undefined when the answer was already written (400 for an unusable client key, 500 without a pool).
   */
  caller(req: Request, res: Response): Caller | undefined {
    const key = this.options.byok?.(req);
    if (key === undefined) {
      const pool = this.pool(req, res);
      return pool && { pool };
    }
    if (typeof key === 'string' && HEADER_SAFE.test(key)) return { clientKey: key };
    this.fail(res, 'invalid_client_key');
    return undefined;
  }

  /**
   * One attempt with the client's key, relayed whatever it says; or a walk over the pool.
   * `model` reads the request's model, for the pool's per-model cooldowns (`route` scopes it when the
   * model cannot be read); `stream` holds the opening of a 200 event stream (a route that streams);
   * `objects`, the upstream objects it names or creates (affinity).
   */
  forward(caller: Caller, request: Outgoing, req: Request, { model, route, stream, objects }: Forwarding = {}): Promise<WalkOutcome> {
    if ('clientKey' in caller) {
      // The header or query parameter the client's key came in (whichever a byok function read) does not travel on: the key header carries it.
      return this.send(caller.clientKey, withoutClientKey(request, caller.clientKey)).then(
        (response): WalkOutcome => ({ kind: 'relay', response }),
        failureOutcome,
      );
    }
    return walkPool(caller.pool, this.options.failover, (key, limits) => this.send(key, request, limits), {
      requestId: this.requestId(req),
      model,
      route,
      objects,
      stream: stream?.hold,
      signal: request.signal,
    });
  }

  /** The hold for a route's streams, and the event that ends one cut after its commit; undefined: the route does not stream. */
  streamFor(route: string): RouteStream | undefined {
    return this.streams.for(route);
  }

  /** The request's `x-request-id`, for the pool's events, when it is a plain token. */
  requestId(req: Request): string | undefined {
    return plainRequestId(req.headers['x-request-id']);
  }

  /** The pool for this request, or undefined when the answer (500) was written. */
  private pool(req: Request, res: Response): KeyPool | undefined {
    const pool = this.options.pool ?? (req.app?.locals?.['keyPool'] as unknown);
    if (isKeyPool(pool)) return pool;
    this.warn('ERR_EKF_NO_POOL', `${MESSAGES.no_pool} Requests to ${requestPath(req)} get a 500 until then.`);
    this.fail(res, 'no_pool');
    return undefined;
  }

  /** Path and query on the upstream: the target's path, the request's path (or the matched route's) and query, the provider's query. */
  upstreamPath(req: Request, path: string = requestPath(req)): string {
    const q = req.url.indexOf('?');
    let search = q === -1 ? '' : req.url.slice(q);
    if (this.fixedQuery.length > 0) {
      const params = new URLSearchParams(search);
      for (const [name, value] of this.fixedQuery) params.set(name, value);
      search = '?' + params.toString();
    }
    return this.basePath + path + search;
  }

  /**
   * The client's headers less hop-by-hop ones, Host, Expect, Content-Length, Cookie, method/path
   * overrides and the client's credentials; for a pool key, also less the client's account headers
   * (`OpenAI-Organization`, ...).
   */
  upstreamHeaders(incoming: IncomingHttpHeaders, caller: Caller): OutgoingHeaders {
    const hop = hopByHop(incoming);
    const drop = 'pool' in caller ? this.dropWithPoolKey : this.dropFromRequest;
    const out: OutgoingHeaders = {};
    for (const name in incoming) {
      const value = incoming[name];
      if (value !== undefined && !hop.has(name) && !drop.has(name)) out[name] = value;
    }
    const accepted = out['accept-encoding'];
    if (accepted !== undefined) out['accept-encoding'] = this.acceptEncoding(accepted);
    return out;
  }

  // Clients send a handful of Accept-Encoding values: each is worked out once.
  private readonly acceptEncodings = new Map<string, string>();

  private acceptEncoding(value: string | string[]): string {
    if (Array.isArray(value)) return decodableAcceptEncoding(value);
    let kept = this.acceptEncodings.get(value);
    if (kept === undefined) {
      kept = decodableAcceptEncoding(value);
      if (this.acceptEncodings.size < 64) this.acceptEncodings.set(value, kept);
    }
    return kept;
  }

  /** The request's controller: aborted when the client goes away before its response is complete. */
  clientGone(res: Response): { signal: AbortSignal; controller: AbortController } {
    const controller = new AbortController();
    res.once('close', () => {
      if (!res.writableFinished) controller.abort();
    });
    return { signal: controller.signal, controller };
  }

  /** One attempt: with a pool key, its own account headers go too. `limits` can shorten its timeout (maxWalkMs). */
  send(key: PoolKey | string, request: Outgoing, limits?: AttemptLimits): Promise<UpstreamResponse> {
    const headers = { ...request.headers };
    addKeyHeaders(this.options.provider, key, headers);
    const timeoutMs = Math.min(this.options.timeoutMs, limits?.timeoutMs ?? Infinity);
    return sendAttempt(this.dispatcher, { ...request, headers, timeoutMs });
  }

  /** Writes the walk's outcome; a relayed event stream cut after its commit ends with `stream`'s break event. */
  write(outcome: WalkOutcome, res: Response, stream?: RouteStream): Promise<void> | void {
    switch (outcome.kind) {
      case 'relay': {
        const breakEvent = stream !== undefined && isPlainEventStream(outcome.response) ? stream.breakEvent : undefined;
        return relayResponse(this.forClient(outcome.response), res, breakEvent).catch((error: unknown) => {
          // The upstream failed before its first byte: a clean 502. No key is to blame: the key's answer was a usable one.
          if (error instanceof UpstreamFailure && !res.headersSent && !res.destroyed) this.fail(res, 'upstream_unreachable');
        });
      }
      case 'held': {
        // The ids are read from the account headers too, before those go.
        const held = this.options.relayAccountHeaders ? outcome.response : withoutAccountIds(outcome.response);
        return sendHeldResponse(this.forClient(held), res);
      }
      case 'error':
        return this.fail(res, outcome.error, { retryAfterMs: outcome.retryAfterMs });
      case 'aborted':
        return;
    }
  }

  /** The answer as the client gets it: without the headers that name the pool's account, unless relayAccountHeaders. */
  private forClient<T extends UpstreamResponse | HeldResponse>(answer: T): T {
    return this.options.relayAccountHeaders ? answer : { ...answer, headers: withoutAccountHeaders(answer.headers) };
  }

  /** Writes the gateway's own answer: `retryAfterMs` (the pool's 429) gives `Retry-After` and `retry-after-ms`. */
  fail(res: Response, kind: ErrorKind, { retryAfterMs, message }: { retryAfterMs?: number | undefined; message?: string } = {}): void {
    const req = res.req as Request | undefined;
    const headers = ownAnswerHeaders(kind, { provider: this.options.provider, clientRequestId: req && this.requestId(req), retryAfterMs });
    sendError(res, this.options.provider, kind, message === undefined ? { headers } : { headers, message });
  }

  warn(code: KeyFailoverErrorCode, message: string): void {
    this.warnings.warn(new KeyFailoverError(code, message));
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }
}

/**
 * The request's path without its query, relative to where the middleware is mounted: what Express
 * calls `req.path`, read from `req.url` (which Express rewrites for a mounted router) so that a plain
 * node:http request works the same.
 */
export function requestPath(req: IncomingMessage): string {
  const url = req.url ?? '/';
  let start = 0;
  if (url.charCodeAt(0) !== 0x2f) {
    // An absolute-form request target (`POST http://host/v1/...`): its path starts after the authority.
    const authority = url.indexOf('://');
    if (authority === -1) return url;
    start = url.indexOf('/', authority + 3);
    if (start === -1) return '/';
  }
  for (let i = start; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 0x3f || c === 0x23) return url.slice(start, i); // '?' or '#'
  }
  return start === 0 ? url : url.slice(start);
}

/** What a bare node:http mount answers for a request the middleware does not take, with no next() to pass it to. */
export function notFound(res: ServerResponse): void {
  res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', 'content-length': '9' });
  res.end('Not Found');
}
