import type { IncomingHttpHeaders } from 'node:http';
import type { Request, Response } from 'express';
import { Pool } from 'undici';
import { MESSAGES, sendError, type ErrorKind } from './errors.js';
import { failureOutcome, walkPool, type WalkOutcome } from './failover.js';
import { withoutAccountHeaders } from './gateway/account-headers.js';
import { ownAnswerHeaders, plainRequestId, poolRetryAfterMs } from './gateway/answer-headers.js';
import { withoutClientKey } from './gateway/client-key.js';
import { isKeyPool, type ResolvedOptions } from './options.js';
import type { KeyPool } from './pool/key-pool.js';
import { HEADER_SAFE } from './pool/keys.js';
import { OVERRIDE_HEADERS } from './upstream/request-headers.js';
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
} from './upstream/relay.js';
import { KeyFailoverError, OnceLogger, type KeyFailoverErrorCode } from './validations.js';

export type Caller = { clientKey: string } | { pool: KeyPool };

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
  // The provider's query parameters, listed once rather than at every request.
  private readonly fixedQuery: readonly [string, string][];

  constructor(readonly options: ResolvedOptions) {
    this.basePath = options.target.pathname.replace(/\/+$/, '');
    // Keep-alive connections to the upstream; our own timer bounds the wait for headers.
    this.dispatcher = new Pool(options.target.origin, { headersTimeout: 0, bodyTimeout: options.timeoutMs });
    this.warnings = new OnceLogger(options.logger);
    this.fixedQuery = Object.entries(options.provider.query);
    // Cookies are the gateway's own session credentials: never for the upstream; nor may a header change its method or path.
    this.dropFromRequest = new Set([
      'host',
      'content-length',
      'expect',
      'cookie',
      ...OVERRIDE_HEADERS,
      ...options.provider.clientAuthHeaders,
    ]);
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

  /** One attempt with the client's key, relayed whatever it says; or a walk over the pool. */
  forward(caller: Caller, request: Omit<UpstreamRequest, 'timeoutMs'>, req: Request): Promise<WalkOutcome> {
    if ('clientKey' in caller) {
      // The header or query parameter the client's key came in (whichever a byok function read) does not travel on: the key header carries it.
      return this.send(caller.clientKey, withoutClientKey(request, caller.clientKey)).then(
        (response): WalkOutcome => ({ kind: 'relay', response }),
        failureOutcome,
      );
    }
    return walkPool(caller.pool, this.options.failover, (key) => this.send(key.value, request), this.requestId(req));
  }

  /** The request's `x-request-id`, for the pool's events, when it is a plain token. */
  requestId(req: Request): string | undefined {
    return plainRequestId(req.headers['x-request-id']);
  }

  /** The pool for this request, or undefined when the answer (500) was written. */
  private pool(req: Request, res: Response): KeyPool | undefined {
    const pool = this.options.pool ?? (req.app?.locals?.['keyPool'] as unknown);
    if (isKeyPool(pool)) return pool;
    this.warn('ERR_EKF_NO_POOL', `${MESSAGES.no_pool} Requests to ${req.path} get a 500 until then.`);
    this.fail(res, 'no_pool');
    return undefined;
  }

  /** Path and query on the upstream: the target's path, the request's path and query, the provider's query. */
  upstreamPath(req: Request): string {
    const q = req.url.indexOf('?');
    let search = q === -1 ? '' : req.url.slice(q);
    if (this.fixedQuery.length > 0) {
      const params = new URLSearchParams(search);
      for (const [name, value] of this.fixedQuery) params.set(name, value);
      search = '?' + params.toString();
    }
    return this.basePath + req.path + search;
  }

  /** The client's headers less hop-by-hop ones, Host, Expect, Content-Length, Cookie, method/path overrides and the client's credentials. */
  upstreamHeaders(incoming: IncomingHttpHeaders): OutgoingHeaders {
    const hop = hopByHop(incoming);
    const out: OutgoingHeaders = {};
    for (const name in incoming) {
      const value = incoming[name];
      if (value !== undefined && !hop.has(name) && !this.dropFromRequest.has(name)) out[name] = value;
    }
    return out;
  }

  /** A signal that aborts when the client goes away before its response is complete. */
  clientGone(res: Response): AbortSignal {
    const controller = new AbortController();
    res.once('close', () => {
      if (!res.writableFinished) controller.abort();
    });
    return controller.signal;
  }

  send(key: string, request: Omit<UpstreamRequest, 'timeoutMs'>): Promise<UpstreamResponse> {
    const [name, value] = this.options.provider.authHeader(key);
    return sendAttempt(this.dispatcher, {
      ...request,
      headers: { ...request.headers, [name]: value },
      timeoutMs: this.options.timeoutMs,
    });
  }

  async write(outcome: WalkOutcome, res: Response): Promise<void> {
    switch (outcome.kind) {
      case 'relay':
        return relayResponse(this.forClient(outcome.response), res).catch((error: unknown) => {
          // Before the first byte: a clean 502. Mid-stream: the client's response has been ended.
          // Either way no key is to blame: the key's answer was a usable one.
          if (error instanceof UpstreamFailure && !res.headersSent && !res.destroyed) this.fail(res, 'upstream_unreachable');
        });
      case 'held':
        return sendHeldResponse(this.forClient(outcome.response), res);
      case 'error':
        return this.fail(res, outcome.error, outcome.retryAfterSeconds);
      case 'aborted':
        return;
    }
  }

  /** The answer as the client gets it: without the headers that name the pool's account, unless relayAccountHeaders. */
  private forClient<T extends UpstreamResponse | HeldResponse>(answer: T): T {
    return this.options.relayAccountHeaders ? answer : { ...answer, headers: withoutAccountHeaders(answer.headers) };
  }

  fail(res: Response, kind: ErrorKind, retryAfterSeconds?: number, message?: string): void {
    const req = res.req as Request | undefined;
    const headers = ownAnswerHeaders(kind, {
      provider: this.options.provider,
      clientRequestId: req && this.requestId(req),
      retryAfterSeconds,
      retryAfterMs: kind === 'rate_limited' && req ? this.poolRetryAfterMs(req) : undefined,
    });
    sendError(res, this.options.provider, kind, message === undefined ? { headers } : { headers, message });
  }

  /** The pool's exact wait, read again for `retry-after-ms` (the walk's outcome has whole seconds only). */
  private poolRetryAfterMs(req: Request): number | undefined {
    const pool = this.options.pool ?? (req.app?.locals?.['keyPool'] as unknown);
    return isKeyPool(pool) ? poolRetryAfterMs(pool) : undefined;
  }

  warn(code: KeyFailoverErrorCode, message: string): void {
    this.warnings.warn(new KeyFailoverError(code, message));
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }
}
