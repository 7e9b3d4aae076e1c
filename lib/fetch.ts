import { Readable } from 'node:stream';
import { Agent } from 'undici';
import { MESSAGES, statusOf } from './errors.js';
import { walkPool, type WalkOutcome } from './walk/failover.js';
import { ownAnswerHeaders, plainRequestId } from './gateway/answer-headers.js';
import { isKeyPool, resolveOptions, type KeyFailoverOptions } from './options.js';
import type { KeyPool, PoolKey } from './pool/key-pool.js';
import { addKeyHeaders } from './providers/provider.js';
import { RouteStreams } from './providers/streams.js';
import { routeScope } from './pool/scopes.js';
import { readModel } from './request/model.js';
import { withHead } from './upstream/stream-hold.js';
import type { ResponseHeaders } from './upstream/rate-limit-headers.js';
import { decodeBody } from './upstream/decode.js';
import { relayableHeaders, sendAttempt, UpstreamFailure, type OutgoingHeaders } from './upstream/relay.js';
import { CREDENTIAL_HEADERS, OVERRIDE_HEADERS } from './upstream/request-headers.js';
import { objectRoute } from './walk/affinity.js';
import type { AttemptLimits } from './walk/session.js';
import { KeyFailoverError, describeValue } from './validations.js';

export type FailoverFetchOptions = Pick<
  KeyFailoverOptions,
  'provider' | 'failover' | 'timeoutMs' | 'maxBodyBytes' | 'streamHoldMs' | 'maxAttempts' | 'maxWalkMs'
> & {
  /**
   * The base URL a pool key may be sent to (its origin, and its path as a prefix); a call to any other
   * URL is refused (rejects with ERR_EKF_TARGET_MISMATCH) before a key is used. Default: the provider's
   * (`https://api.openai.com`, `https://api.anthropic.com`). Give your Azure endpoint, or your proxy's URL.
   */
  target?: string;
};

/** A `fetch` that walks the pool: what the official `openai` and `@anthropic-ai/sdk` clients accept as `fetch`. */
export type FailoverFetch = ((input: string | URL | Request, init?: RequestInit) => Promise<Response>) & {
  /** Releases the upstream keep-alive connections. */
  close(): Promise<void>;
};

const WHERE = 'createFailoverFetch()';
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

/**
 * Each call is one upstream call with a fresh walker: the request body is
 * buffered, sent with each available key in turn under the middleware's rules
 * (the same loop), and the first usable Response is returned with its body
 * still streaming. When the pool is exhausted the Response is the pool error
 * (429 with Retry-After, or 502), marked `x-should-retry: false` so that the
 * SDK does not retry what every key already refused. Network failures and
 * timeouts reject, as `fetch` does.
 */
export function createFailoverFetch(pool: KeyPool, options?: FailoverFetchOptions): FailoverFetch {
  if (!isKeyPool(pool)) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${WHERE}: the first argument must be a KeyPool, got ${describeValue(pool)}.`);
  }
  const { target, provider, failover, timeoutMs, maxBodyBytes, streamHoldMs } = resolveOptions(WHERE, options, [
    'target',
    'provider',
    'failover',
    'timeoutMs',
    'maxBodyBytes',
    'streamHoldMs',
    'maxAttempts',
    'maxWalkMs',
  ]);
  const streams = new RouteStreams(provider.streams, streamHoldMs);
  const basePath = target.pathname.replace(/\/+$/, '');
  // One agent; our own timer bounds the wait for headers.
  const agent = new Agent({ headersTimeout: 0, bodyTimeout: timeoutMs });
  const drop = new Set([
    'host',
    'content-length',
    'accept-encoding',
    'connection',
    'keep-alive',
    'transfer-encoding',
    ...OVERRIDE_HEADERS,
    ...CREDENTIAL_HEADERS,
    ...provider.clientAuthHeaders,
    // The SDK's own OpenAI-Organization / OpenAI-Project (OPENAI_ORG_ID) belong to its key, not the pool's.
    ...provider.accountHeaders,
  ]);

  const failoverFetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const signal = callerSignal(input, init);
    const body = request.body === null ? null : Buffer.from(await request.arrayBuffer());
    if (body !== null && body.length > maxBodyBytes) {
      throw new RangeError(`${WHERE}: the request body is ${body.length} bytes, over maxBodyBytes (${maxBodyBytes}).`);
    }
    const url = new URL(request.url);
    if (url.origin !== target.origin || (basePath !== '' && url.pathname !== basePath && !url.pathname.startsWith(basePath + '/'))) {
      // A baseURL from configuration a tenant can touch, or a tool reusing this fetch: no pool key leaves for another host.
      throw new KeyFailoverError(
        'ERR_EKF_TARGET_MISMATCH',
        `${WHERE}: a call to ${url.origin}${url.pathname} is outside the target ${target.origin}${basePath}; no pool key is sent there. Give the SDK client a baseURL under the target, or set the target option.`,
      );
    }
    const headers: OutgoingHeaders = {};
    request.headers.forEach((value, name) => {
      if (!drop.has(name)) headers[name] = value;
    });
    if (body !== null) headers['content-length'] = String(body.length);

    const send = (key: PoolKey, limits?: AttemptLimits) => {
      const keyHeaders = { ...headers };
      addKeyHeaders(provider, key, keyHeaders);
      return sendAttempt(agent, {
        origin: url.origin,
        method: request.method,
        path: url.pathname + url.search,
        headers: keyHeaders,
        body,
        signal,
        timeoutMs: Math.min(timeoutMs, limits?.timeoutMs ?? Infinity),
      });
    };
    const apiPath = url.pathname.slice(basePath.length) || '/';
    const stream = request.method === 'POST' ? streams.for(apiPath) : undefined;
    const route = routeScope(apiPath);
    const objects = objectRoute(request.method, apiPath, body);
    const outcome = await walkPool(pool, failover, send, { model: () => readModel(body), route, objects, stream: stream?.hold, signal });
    if (outcome.kind === 'relay' && input instanceof Request) retained.set(outcome.response.body, input);
    return toResponse(outcome, signal, request.method, request.headers.get('x-request-id'));
  };

  function toResponse(outcome: WalkOutcome, signal: AbortSignal, method: string, requestId: string | null): Response {
    switch (outcome.kind) {
      case 'relay': {
        const { status } = outcome.response;
        refuseInvalidStatus(status, outcome.response.body);
        if (NULL_BODY_STATUS.has(status) || method === 'HEAD') {
          outcome.response.body.resume();
          return new Response(null, { status, headers: toHeaders(outcome.response.headers) });
        }
        const { head } = outcome.response;
        // A held stream opening goes first, then the rest as it arrives.
        const upstreamBody =
          head === undefined || head.length === 0 ? outcome.response.body : Readable.from(withHead(head, outcome.response.body));
        const { headers, body } = decodeBody(outcome.response.headers, upstreamBody);
        return new Response(Readable.toWeb(body) as ReadableStream, { status, headers: toHeaders(headers) });
      }
      case 'held': {
        const { headers, body } = decodeBody(outcome.response.headers, Readable.from([outcome.response.body]));
        return new Response(Readable.toWeb(body) as ReadableStream, { status: outcome.response.status, headers: toHeaders(headers) });
      }
      case 'error': {
        if (outcome.error === 'upstream_unreachable' || outcome.error === 'upstream_timeout') {
          const reason = outcome.error === 'upstream_timeout' ? 'timeout' : 'unreachable';
          throw new TypeError(`fetch failed: the upstream ${reason === 'timeout' ? 'did not answer in time' : 'could not be reached'}`, {
            cause: new UpstreamFailure(reason),
          });
        }
        const headers = new Headers({
          ...ownAnswerHeaders(outcome.error, {
            provider,
            clientRequestId: plainRequestId(requestId),
            retryAfterMs: outcome.retryAfterMs,
          }),
          'content-type': 'application/json',
          'x-should-retry': 'false',
        });
        return new Response(JSON.stringify(provider.errorBody(outcome.error, MESSAGES[outcome.error])), {
          status: statusOf(outcome.error),
          headers,
        });
      }
      case 'aborted':
        throw signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
    }
  }

  return Object.assign(failoverFetch, { close: () => agent.close() });
}

/**
 * A Response carries a status from 200 to 599 only (`new Response` throws a
 * RangeError past it): any other rejects as a failed fetch, and its body is
 * destroyed, which frees the upstream connection at once.
 */
function refuseInvalidStatus(status: number, body: Readable): void {
  if (status >= 200 && status <= 599) return;
  body.destroy();
  throw new TypeError(`fetch failed: the upstream answered with HTTP status ${status}, which a Response cannot carry`, {
    cause: new UpstreamFailure('unreachable'),
  });
}

const NEVER_ABORTED = new AbortController().signal;
// An input Request, kept alive as long as the body of its answer: its signal follows the caller's only while it lives.
const retained = new WeakMap<object, Request>();

/**
 * The caller's own signal (`init.signal`, else the input Request's), never
 * the one of `new Request(input, init)`: undici links that one to the caller's
 * through a WeakRef, so once a garbage collection took the Request (nothing
 * holds it after this function returns) an abort would no longer reach the
 * upstream, and the generation would run on, and be billed, to its end.
 */
function callerSignal(input: string | URL | Request, init: RequestInit | undefined): AbortSignal {
  if (init?.signal !== undefined) return init.signal ?? NEVER_ABORTED;
  return input instanceof Request ? input.signal : NEVER_ABORTED;
}

function toHeaders(headers: ResponseHeaders): Headers {
  const out = new Headers();
  for (const [name, value] of Object.entries(relayableHeaders(headers))) {
    if (name === 'content-length') continue; // the body may be re-chunked; let the Response work it out
    for (const v of Array.isArray(value) ? value : [value]) out.append(name, v);
  }
  return out;
}
