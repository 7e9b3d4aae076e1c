/**
 * A KeyPool behind an existing http-proxy-middleware 4 proxy, as one of its
 * plugins (`express-key-failover/http-proxy-middleware`).
 *
 * http-proxy-middleware hands a plugin its proxy server (httpxy's). The
 * plugin wraps that server's `web()`, the one call the middleware makes per
 * request, so that each request is decided before anything is sent: method,
 * path and path rules as in keyPassthrough, the client's credential and
 * account headers taken off the request, then a walk over the pool in which
 * each attempt is one call of the original `web()` with the key's headers
 * (its `headers` option, which httpxy applies over the request's) and
 * `selfHandleResponse`, so that the answer comes back through the
 * `proxyRes` event to be judged by the package's one attempt loop. A
 * body-less request fails over; a request with a body is sent once (its
 * stream is consumed), and its key still learns from the answer.
 *
 * Nothing of http-proxy-middleware is loaded here: it calls the plugin with
 * its server; the types below describe what the plugin uses of it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Request, Response } from 'express';
import { MESSAGES, type ErrorKind } from '../errors.js';
import { sendOnce, walkPool, type WalkOutcome } from '../walk/failover.js';
import { Forwarder } from './forwarder.js';
import { isKeyPool, resolveOptions, type KeyFailoverOptions } from '../options.js';
import type { PoolKey } from '../pool/key-pool.js';
import { addKeyHeaders } from '../providers/provider.js';
import { OVERRIDE_HEADERS } from '../upstream/request-headers.js';
import { UpstreamFailure, type UpstreamResponse } from '../upstream/relay.js';
import { KeyFailoverError } from '../validations.js';
import { PASSTHROUGH_METHODS } from './passthrough-methods.js';
import { checkPassthroughPath } from './passthrough-path.js';
import { checkPathRules, type PassthroughPathRule } from './path-rules.js';
import { STORED_OBJECTS_MESSAGE, touchesStoredObjects } from './stored-objects.js';
import { routeScope } from '../pool/scopes.js';

export type KeyFailoverPluginOptions = Pick<KeyFailoverOptions, 'pool' | 'provider' | 'failover' | 'logger' | 'relayAccountHeaders'> & {
  /**
   * Only these paths (prefixes, or functions `(path, req) => boolean`) are proxied with a pool key. Default: every path not
   * denied, except the calls on the shared account's stored objects (as keyPassthrough's `allow`).
   */
  allow?: PassthroughPathRule | readonly PassthroughPathRule[];
  /** These paths get a 403 (checked before `allow`). Default: the admin API (`/v1/organization`, `/v1/organizations`). */
  deny?: PassthroughPathRule | readonly PassthroughPathRule[];
};

/** What the plugin uses of http-proxy-middleware's proxy server (httpxy's `ProxyServer`). */
export interface ProxyServerLike {
  web(req: IncomingMessage, res: ServerResponse, options?: ProxyOptionsLike, head?: unknown): Promise<void>;
  ws(req: IncomingMessage, socket: Socket, options?: ProxyOptionsLike, head?: unknown): Promise<void>;
  on(event: string, listener: (...args: never[]) => void): unknown;
}

/** The http-proxy-middleware options the plugin reads (each request's, after `router` and `pathRewrite`). */
export interface ProxyOptionsLike {
  target?: unknown;
  headers?: Record<string, string | string[]>;
  selfHandleResponse?: boolean;
  followRedirects?: boolean | number;
  forward?: unknown;
  ws?: boolean;
}

/** What `keyFailoverPlugin()` returns: an http-proxy-middleware plugin, for its `plugins` option. */
export type KeyFailoverPlugin = (proxyServer: ProxyServerLike, options: ProxyOptionsLike) => void;

const WHERE = 'keyFailoverPlugin()';
const KNOWN = ['pool', 'provider', 'failover', 'logger', 'relayAccountHeaders', 'allow', 'deny'];

// http-proxy-middleware options that cannot work with the plugin, and why.
const REFUSED: Readonly<Record<string, string>> = {
  selfHandleResponse: 'the plugin writes each answer itself, after judging it; a responseInterceptor cannot be combined with it',
  followRedirects: 'a redirect would take the pool key to wherever the upstream points',
  forward: "a copy of each request, the pool key's header included, would go to the forward target",
  ws: 'WebSocket upgrades are neither judged nor given a pool key; proxy them with a createProxyMiddleware of their own',
  buffer: 'a stream can be sent once, and the plugin may send a request again',
  toProxy: 'the plugin checks the path each request is sent to, which this option changes',
  ignorePath: 'the plugin checks the path each request is sent to, which this option changes',
  cookieDomainRewrite: 'it applies to answers http-proxy-middleware writes, and the plugin writes them',
  cookiePathRewrite: 'it applies to answers http-proxy-middleware writes, and the plugin writes them',
  hostRewrite: 'it applies to answers http-proxy-middleware writes, and the plugin writes them',
  autoRewrite: 'it applies to answers http-proxy-middleware writes, and the plugin writes them',
  protocolRewrite: 'it applies to answers http-proxy-middleware writes, and the plugin writes them',
  preserveHeaderKeyCase: 'it applies to answers http-proxy-middleware writes, and the plugin writes them',
};

/**
 * An http-proxy-middleware plugin that gives each proxied request a pool key:
 * `createProxyMiddleware({ target, changeOrigin: true, plugins: [keyFailoverPlugin({ pool })] })`.
 */
export function keyFailoverPlugin(options?: KeyFailoverPluginOptions): KeyFailoverPlugin {
  const resolved = resolveOptions(WHERE, options, KNOWN);
  const rules = checkPathRules(WHERE, options ?? {});
  const guardStoredObjects = options?.allow === undefined;
  const { provider, failover: policy } = resolved;
  // Answers and the gateway's own errors are written as keyPassthrough writes them (its upstream connections stay unused).
  const forwarder = new Forwarder(resolved);
  // The client's credentials, account headers and cookies, and what could reroute the request: never sent with a pool key.
  const dropped = new Set([
    'cookie',
    'expect',
    'proxy-authorization',
    ...OVERRIDE_HEADERS,
    ...provider.clientAuthHeaders,
    ...provider.accountHeaders,
  ]);

  return (proxyServer, proxyOptions) => {
    checkProxyOptions(proxyOptions);
    const web = proxyServer.web.bind(proxyServer);
    const links = new WeakMap<IncomingMessage, AttemptLink>();
    proxyServer.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage) => links.get(req)?.answered(proxyRes));
    proxyServer.on('error', (error: Error, req?: IncomingMessage) => req && links.get(req)?.failed(error));
    proxyServer.on('econnreset', (_error: Error, req: IncomingMessage) => links.get(req)?.aborted());

    const handle = async (req: IncomingMessage, res: ServerResponse, opts: ProxyOptionsLike): Promise<void> => {
      const checked = check(req, opts);
      if ('refused' in checked)
        return forwarder.fail(res as Response, checked.refused, checked.message === undefined ? {} : { message: checked.message });
      const pool = resolved.pool ?? ((req as Partial<Request>).app?.locals?.['keyPool'] as unknown);
      if (!isKeyPool(pool)) {
        forwarder.warn('ERR_EKF_NO_POOL', `${MESSAGES.no_pool} Requests through the proxy get a 500 until then.`);
        return fail(res, 'no_pool');
      }
      // Off the request itself, which httpxy copies for each attempt (and for anything else it sends).
      // eslint-disable-next-line @typescript-eslint/no-dynamic-delete -- the names are the fixed set above
      for (const name of dropped) delete req.headers[name];

      const link = new AttemptLink();
      links.set(req, link);
      res.once('close', () => {
        if (!res.writableFinished) link.aborted();
      });
      let attempts = 0;
      const send = (key: PoolKey): Promise<UpstreamResponse> => {
        if (res.destroyed) return Promise.reject(new UpstreamFailure('aborted'));
        if (attempts++ > 0) raiseListenerLimits(req, res);
        const answer = link.next();
        web
          .call(proxyServer, req, res, { ...opts, headers: keyHeaders(opts.headers, key), selfHandleResponse: true })
          .catch((error: unknown) => link.failed(error));
        return answer;
      };
      // A 429 cools the key for this resource (`/v1/embeddings`): the model of a proxied body is not read.
      const context = { requestId: forwarder.requestId(req as Request), route: routeScope(checked.routed), signal: link.signal };
      const outcome = hasBody(req)
        ? await sendOnce(pool, policy, send, { ...context, onExhausted: () => req.resume() })
        : await walkPool(pool, policy, send, context);
      links.delete(req);
      await write(outcome, res);
    };

    /**
     * The path as the upstream routes it, or why the request is refused before any key is used: a method
     * the APIs lack, a path that could be routed elsewhere, a denied path, the account's stored objects.
     */
    const check = (req: IncomingMessage, opts: ProxyOptionsLike): { routed: string } | { refused: ErrorKind; message?: string } => {
      if (!PASSTHROUGH_METHODS.has(req.method ?? '')) return { refused: 'method_not_allowed' };
      const target = targetURL(opts.target);
      if (target === undefined) return { refused: 'internal' };
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const path = q === -1 ? url : url.slice(0, q);
      const checked = checkPassthroughPath(path.startsWith('/') ? path : `/${path}`, target, target.pathname.replace(/\/+$/, ''));
      if (!checked.ok) return { refused: 'invalid_path' };
      if (!rules.permits(checked.routed, req as Request)) return { refused: 'path_not_allowed' };
      if (guardStoredObjects && touchesStoredObjects(checked.routed, req.method ?? '')) {
        return { refused: 'path_not_allowed', message: STORED_OBJECTS_MESSAGE };
      }
      return { routed: checked.routed };
    };

    /** The pool key's headers for one attempt, over the proxy's own `headers` (a static key there is left out). */
    const keyHeaders = (fixed: ProxyOptionsLike['headers'], key: PoolKey): Record<string, string | string[]> => {
      const headers: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(fixed ?? {})) if (!dropped.has(name.toLowerCase())) headers[name] = value;
      addKeyHeaders(provider, key, headers);
      return headers;
    };

    const write = async (outcome: WalkOutcome, res: ServerResponse): Promise<void> => {
      // A network error was answered by http-proxy-middleware's error handling (or your on.error), unless nothing did.
      if (outcome.kind === 'error' && (res.headersSent || res.writableEnded)) return;
      await forwarder.write(outcome, res as Response);
    };

    const fail = (res: ServerResponse, kind: ErrorKind): void => forwarder.fail(res as Response, kind);

    proxyServer.web = (req, res, opts = {}) =>
      handle(req, res, opts).catch(() => {
        // Never back to http-proxy-middleware: its error handling would write a second answer.
        if (!res.headersSent) fail(res, 'internal');
        else res.destroy();
      });
    // Upgrades would carry the client's headers and no pool key: refused (the proxy's `ws` option is refused at creation).
    proxyServer.ws = (_req, socket) => {
      socket.destroy();
      return Promise.resolve();
    };
  };
}

/**
 * The attempt in flight for one request: http-proxy-middleware reports its
 * answer (`proxyRes`) or its failure (`error`, `econnreset`) as events of the
 * proxy server, which the plugin hands to the attempt the walk awaits.
 */
class AttemptLink {
  private pending: { resolve: (response: UpstreamResponse) => void; reject: (error: UpstreamFailure) => void } | undefined;
  private gone = false;
  private readonly controller = new AbortController();
  /** Aborted when the client goes away: an answer read after that marks no key. */
  readonly signal = this.controller.signal;

  next(): Promise<UpstreamResponse> {
    if (this.gone) return Promise.reject(new UpstreamFailure('aborted'));
    return new Promise((resolve, reject) => (this.pending = { resolve, reject }));
  }

  answered(proxyRes: IncomingMessage): void {
    this.take()?.resolve({ status: proxyRes.statusCode ?? 502, headers: proxyRes.headers, body: proxyRes });
  }

  failed(error: unknown): void {
    this.take()?.reject(new UpstreamFailure('unreachable', { cause: error }));
  }

  aborted(): void {
    this.gone = true;
    this.controller.abort();
    this.take()?.reject(new UpstreamFailure('aborted'));
  }

  private take(): AttemptLink['pending'] {
    const pending = this.pending;
    this.pending = undefined;
    return pending;
  }
}

function checkProxyOptions(options: ProxyOptionsLike): void {
  for (const [name, why] of Object.entries(REFUSED)) {
    const value = (options as Record<string, unknown>)[name];
    if (value !== undefined && value !== false) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `${WHERE}: the http-proxy-middleware option "${name}" cannot be used with it: ${why}.`,
      );
    }
  }
}

/** The proxy's target as a URL: a string, a URL, or httpxy's `{ protocol, host, port, pathname }`. */
function targetURL(target: unknown): URL | undefined {
  try {
    if (target instanceof URL) return target;
    if (typeof target === 'string') return new URL(target);
    if (typeof target === 'object' && target !== null) {
      const { protocol = 'http:', host, hostname, port, pathname = '' } = target as Record<string, string | undefined>;
      return new URL(`${protocol}//${host ?? hostname ?? 'localhost'}${port ? `:${port}` : ''}${pathname}`);
    }
  } catch {
    // not a URL: refused below
  }
  return undefined;
}

function hasBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

/**
 * Each attempt through http-proxy-middleware adds its own listeners to the
 * request and response (close, error): a walk over many keys raises the
 * limits rather than warn of a leak that is not one.
 */
function raiseListenerLimits(req: IncomingMessage, res: ServerResponse): void {
  for (const emitter of [req, res]) {
    const max = emitter.getMaxListeners();
    if (max !== 0 && Number.isFinite(max)) emitter.setMaxListeners(max + 5);
  }
}
