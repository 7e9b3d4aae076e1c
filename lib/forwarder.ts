import type { IncomingHttpHeaders } from 'node:http';
import type { Request, Response } from 'express';
import { Pool } from 'undici';
import { MESSAGES, sendError, type ErrorKind } from './errors.js';
import { failureOutcome, walkPool, type WalkOutcome } from './failover.js';
import { withoutAccountHeaders } from './gateway/account-headers.js';
import { ownAnswerHeaders, plainRequestId } from './gateway/answer-headers.js';
import { withoutClientKey } from './gateway/client-key.js';
import { isKeyPool, type ResolvedOptions } from './options.js';
import type { KeyPool, PoolKey } from './pool/key-pool.js';
import type { ModelSource } from './pool/walker.js';
import type { ObjectRoute } from './walk/affinity.js';
import type { AttemptLimits } from './walk/session.js';
import { HEADER_SAFE } from './pool/keys.js';
import { addKeyHeaders } from './providers/provider.js';
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
   * `model` reads the request's model, for the pool's per-model cooldowns; `objects`, the upstream
   * objects it names or creates (affinity).
   */
  forward(caller: Caller, request: Outgoing, req: Request, model?: ModelSource, objects?: ObjectRoute): Promise<WalkOutcome> {
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
      objects,
    });
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

  /** One attempt: with a pool key, its own account headers go too. `limits` can shorten its timeout (maxWalkMs). */
  send(key: PoolKey | string, request: Outgoing, limits?: AttemptLimits): Promise<UpstreamResponse> {
    const headers = { ...request.headers };
    addKeyHeaders(this.options.provider, key, headers);
    const timeoutMs = Math.min(this.options.timeoutMs, limits?.timeoutMs ?? Infinity);
    return sendAttempt(this.dispatcher, { ...request, headers, timeoutMs });
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
