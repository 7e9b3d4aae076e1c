import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { ResponseHeaders } from './rate-limit-headers.js';

/**
 * One attempt against the upstream, and the two ways its answer leaves:
 * streamed to the client as it arrives, or held (a skipped answer that may
 * be relayed later). Knows nothing of keys or pool states.
 */

export type OutgoingHeaders = Record<string, string | string[]>;

export interface UpstreamRequest {
  /** Needed only with a dispatcher that serves several origins (an Agent). */
  origin?: string;
  method: string;
  path: string;
  headers: OutgoingHeaders;
  /** A buffer can be sent again to the next key; a stream (passthrough) only once. */
  body: Buffer | Readable | null;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
  /**
   * The request's own controller of `signal`, when the caller has one (the middleware): each attempt
   * uses it as it is, and a timeout aborts it too (a timeout ends the walk). Without it, each attempt
   * makes a controller of its own, linked to `signal`.
   */
  controller?: AbortController;
  /** Time allowed until the upstream's response headers arrive. */
  timeoutMs: number;
}

export interface UpstreamResponse {
  status: number;
  headers: ResponseHeaders;
  body: Readable;
  /** Bytes already read from the body (a held stream opening): they go out first, as they were. */
  head?: readonly Buffer[];
}

export interface HeldResponse {
  status: number;
  headers: ResponseHeaders;
  body: Buffer;
}

export type UpstreamFailureReason = 'unreachable' | 'timeout' | 'aborted';

/** The attempt got no response: the fault is the network's, the clock's or the client's, never the key's. */
export class UpstreamFailure extends Error {
  constructor(
    readonly reason: UpstreamFailureReason,
    options?: ErrorOptions,
  ) {
    super(`upstream attempt failed: ${reason}`, options);
    this.name = 'UpstreamFailure';
  }
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Headers that must not cross a proxy: the fixed hop-by-hop set and whatever `Connection` names. */
export function hopByHop(headers: Readonly<Record<string, unknown>>): Set<string> {
  const connection = headers['connection'];
  if (typeof connection !== 'string' || connection === '') return HOP_BY_HOP;
  // What nearly every peer sends names nothing new: no need for a set of this request's own.
  const lower = connection.toLowerCase();
  if (lower === 'keep-alive' || lower === 'close') return HOP_BY_HOP;
  const names = new Set(HOP_BY_HOP);
  for (const name of connection.split(',')) names.add(name.trim().toLowerCase());
  return names;
}

/** The response headers worth relaying to the client. */
export function relayableHeaders(headers: ResponseHeaders): OutgoingHeaders {
  const drop = hopByHop(headers);
  const out: OutgoingHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value !== undefined && !drop.has(name)) out[name] = value;
  }
  return out;
}

const TIMED_OUT = Symbol('timed out');

export async function sendAttempt(dispatcher: Dispatcher, request: UpstreamRequest): Promise<UpstreamResponse> {
  if (request.signal.aborted) throw new UpstreamFailure('aborted');
  // The client's signal and our headers timer both end the attempt: through the request's own
  // controller when it has one, else through one of the attempt's, linked to the client's signal.
  const attempt = request.controller ?? new AbortController();
  const onClientAbort = request.controller === undefined ? (): void => attempt.abort() : undefined;
  if (onClientAbort) request.signal.addEventListener('abort', onClientAbort, { once: true });
  const timer = setTimeout(() => attempt.abort(TIMED_OUT), request.timeoutMs);
  try {
    const { statusCode, headers, body } = await dispatcher.request({
      ...(request.origin === undefined ? {} : { origin: request.origin }),
      path: request.path,
      method: request.method,
      headers: request.headers,
      body: request.body,
      signal: attempt.signal,
    });
    // The client may still leave while this body is read (held, discarded or relayed): until the
    // body is done, that aborts the attempt, which destroys the body and frees the upstream.
    // The listener must not hold on to the request (its body, its headers) for the answer's whole life.
    if (onClientAbort) {
      const { signal } = request;
      body.once('close', () => signal.removeEventListener('abort', onClientAbort));
    }
    return { status: statusCode, headers: headers, body };
  } catch (error) {
    if (onClientAbort) request.signal.removeEventListener('abort', onClientAbort);
    if (attempt.signal.aborted) {
      throw new UpstreamFailure(attempt.signal.reason === TIMED_OUT ? 'timeout' : 'aborted', { cause: error });
    }
    throw new UpstreamFailure('unreachable', { cause: error });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Streams the upstream answer to the client unchanged. Nothing is written
 * before the first body byte (or the end) has arrived: an upstream that fails
 * between its head and its body is an `UpstreamFailure('unreachable')`, and
 * the client still gets a clean error. Resolves once the answer is on its
 * way; from then on the stream's own listeners see it to its end (a failure
 * on either side ends the other), and nothing waits on it: a long stream
 * keeps no promise chain alive.
 */
export async function relayResponse(upstream: UpstreamResponse, res: ServerResponse, breakEvent?: string): Promise<void> {
  if (upstream.head === undefined || upstream.head.length === 0) {
    try {
      await firstBytes(upstream.body);
    } catch (error) {
      throw new UpstreamFailure('unreachable', { cause: error });
    }
  }
  startRelay(upstream, res, breakEvent);
}

/** Writes the head and what was held, and pipes the rest: the answer object itself is not kept for the stream's life. */
function startRelay(upstream: UpstreamResponse, res: ServerResponse, breakEvent: string | undefined): void {
  const { head, body } = upstream;
  res.writeHead(upstream.status, relayableHeaders(upstream.headers));
  if (head !== undefined) for (const chunk of head) res.write(chunk);
  if (body.readableEnded) res.end();
  else pipe(body, res, breakEvent);
}

/**
 * body.pipe(res), with the two endings a relay has: the upstream failing
 * (the client's response is destroyed, so it sees the break; an event
 * stream is ended with `breakEvent` instead, so that the SDK raises rather
 * than take the cut for the end) and the client leaving (the upstream body
 * is destroyed, which aborts the attempt). Plain pipe rather than
 * stream.pipeline: this runs for every response, and pipeline's promise form
 * allocates an AbortController (and an abort error with a stack) per call.
 */
function pipe(body: Readable, res: ServerResponse, breakEvent?: string): void {
  const onError = (error: Error): void => {
    res.off('close', onClose);
    if (breakEvent !== undefined && !res.destroyed && !res.writableEnded) {
      body.unpipe(res);
      // The blank line first ends a frame the cut left half-written (an SDK then raises on it); at a
      // frame boundary an empty frame dispatches nothing.
      res.end(`\n\n${breakEvent}`);
    } else {
      res.destroy(error);
    }
  };
  const onClose = (): void => {
    body.off('error', onError).on('error', ignore); // a late abort error has nowhere to go
    if (!res.writableFinished) body.destroy(); // the client went away before the end: the upstream goes too
  };
  body.once('error', onError);
  res.once('close', onClose);
  body.pipe(res);
}

/** Resolves once the stream has data to read or has ended; rejects if it fails first. */
function firstBytes(body: Readable): Promise<void> {
  if (body.readableLength > 0 || body.readableEnded) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (error?: Error): void => {
      body.off('readable', onReadable).off('error', done).off('close', onClose);
      if (error) reject(error);
      else resolve();
    };
    const onReadable = (): void => done();
    // A body destroyed without an error (the client left) is not the upstream's failure, but nothing follows.
    const onClose = (): void => done(body.readableEnded ? undefined : new Error('upstream body closed before its first byte'));
    body.on('readable', onReadable).on('error', done).on('close', onClose);
  });
}

export function sendHeldResponse(held: HeldResponse, res: ServerResponse): void {
  const headers = relayableHeaders(held.headers);
  headers['content-length'] = String(held.body.length);
  res.writeHead(held.status, headers);
  res.end(held.body);
}

/** Frees the connection of an answer nobody will read. */
export function discard(upstream: UpstreamResponse): void {
  upstream.body.on('error', ignore).resume();
}

function ignore(): void {
  // An error on a body nobody reads any more: nothing to do.
}

/**
 * Reads an answer into memory, up to `limit` bytes, so that it can be relayed
 * after other keys were tried. A larger answer is not dropped: it comes back
 * as `{ streaming }`, whose body replays the bytes read so far and then the rest.
 * Undefined: the upstream died (or the attempt was aborted) before the end.
 * Plain listeners rather than the body's async iterator: this runs between two
 * attempts of a failover, and the iterator's promises and end-of-stream
 * watcher cost more than the read itself.
 */
export function holdResponse(
  upstream: UpstreamResponse,
  limit: number,
): Promise<{ held: HeldResponse } | { streaming: UpstreamResponse } | undefined> {
  const { body } = upstream;
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = (outcome: { held: HeldResponse } | { streaming: UpstreamResponse } | undefined): void => {
      body.off('data', onData).off('end', onEnd).off('error', onLost).off('close', onLost);
      resolve(outcome);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (size <= limit) return;
      body.pause();
      const iterator = body[Symbol.asyncIterator]() as AsyncIterator<Buffer, undefined>;
      settle({ streaming: { ...upstream, body: Readable.from(replay(chunks, iterator)) } });
    };
    const onEnd = (): void => settle({ held: { status: upstream.status, headers: upstream.headers, body: Buffer.concat(chunks, size) } });
    // An error, or a close before the end ('end' comes first when the body is whole): nothing worth relaying.
    const onLost = (): void => settle(undefined);
    body.on('data', onData).once('end', onEnd).once('error', onLost).once('close', onLost);
  });
}

async function* replay(chunks: Buffer[], iterator: AsyncIterator<Buffer, undefined>): AsyncGenerator<Buffer> {
  try {
    yield* chunks;
    for (;;) {
      const { done, value } = await iterator.next();
      if (done) return;
      yield value;
    }
  } finally {
    await iterator.return?.(); // the client went away: release the upstream body too
  }
}
