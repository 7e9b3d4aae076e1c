import http from 'node:http';
import { STREAMS, type StreamKind } from '../provider-streams.js';
import { CHAT, RELEASE_PATH, STATS_PATH, STREAM_REQUESTS, chatBody } from '../shared.js';
import { percentile } from './load.js';

export interface PostOptions {
  agent: http.Agent;
  path: string;
  body: string;
  headers: Record<string, string>;
  /** Time (ms from sending) at which this text has fully arrived in the body: the first content, for a stream. */
  marker?: string;
  onMarker?: (ms: number) => void;
  /** Called with the request, once sent: to abort it. */
  onRequest?: (req: http.ClientRequest) => void;
}

export interface PostResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  contentType: string;
  body: string;
  firstByteMs: number;
  markerMs: number;
}

/** One POST; resolves once the answer ends with its status, body, and the times to its first byte and to `marker`. */
export function post(port: number, options: PostOptions): Promise<PostResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: options.path,
        method: 'POST',
        agent: options.agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(options.body), ...options.headers },
      },
      (res) => {
        let firstByteMs = NaN;
        let markerMs = NaN;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (body === '') firstByteMs = performance.now() - started;
          body += chunk;
          if (options.marker !== undefined && Number.isNaN(markerMs) && body.includes(options.marker)) {
            markerMs = performance.now() - started;
            options.onMarker?.(markerMs);
          }
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            contentType: String(res.headers['content-type']),
            body,
            firstByteMs,
            markerMs,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    options.onRequest?.(req);
    req.end(options.body);
  });
}

/** The JSON chat request, once, on a fresh connection. */
export function postJson(port: number, authorization: string, model?: string): Promise<PostResult> {
  const agent = new http.Agent({ keepAlive: false });
  const body = chatBody(model === undefined ? {} : { model });
  return post(port, { agent, path: CHAT, body, headers: { authorization } }).finally(() => agent.destroy());
}

function streamOptions(kind: StreamKind, key: string, hold: boolean, agent: http.Agent): PostOptions {
  const request = STREAM_REQUESTS[kind];
  return { agent, path: request.path, body: request.body({ hold }), headers: request.headers(key), marker: STREAMS[kind].firstContent };
}

/**
 * Sequential streaming requests of one kind on one keep-alive connection: p50/p99 time from sending
 * to the first content (the whole first text delta event), in ms; the first `warmup` are discarded.
 */
export async function firstContent(
  port: number,
  kind: StreamKind,
  key: string,
  samples: number,
  warmup: number,
): Promise<{ p50: number; p99: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const times: number[] = [];
  try {
    for (let i = 0; i < warmup + samples; i++) {
      const { status, markerMs } = await post(port, streamOptions(kind, key, false, agent));
      if (status !== 200 || Number.isNaN(markerMs))
        throw new Error(`${kind} stream answered ${status}${status === 200 ? ' without its first content' : ''}`);
      if (i >= warmup) times.push(markerMs);
    }
  } finally {
    agent.destroy();
  }
  const sorted = Float64Array.from(times).sort();
  return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) };
}

/**
 * Opens `count` streams of one kind that the mock holds open after their first content,
 * `batch` at a time, and resolves once every one has its first content: the relay
 * streamed the preamble and the first delta while the rest was not sent yet.
 * `release` asks the mock to end them and checks that every client got the stream
 * exactly as the mock sent it.
 */
export async function openHeldStreams(
  port: number,
  upstreamPort: number,
  kind: StreamKind,
  key: string,
  count: number,
  { batch = 100, timeoutMs = 20_000 } = {},
): Promise<{ release: () => Promise<void> }> {
  const agent = new http.Agent({ keepAlive: false, maxSockets: count });
  const ended: Promise<PostResult>[] = [];
  let endedEarly = 0;
  for (let opened = 0; opened < count; opened += batch) {
    const firsts: Promise<void>[] = [];
    for (let i = opened; i < Math.min(count, opened + batch); i++) {
      let gotFirst!: () => void;
      firsts.push(new Promise<void>((resolve) => (gotFirst = resolve)));
      const stream = post(port, { ...streamOptions(kind, key, true, agent), onMarker: () => gotFirst() });
      const early = (): void => {
        endedEarly++;
        gotFirst();
      };
      stream.then(early, early);
      ended.push(stream);
    }
    try {
      await withTimeout(Promise.all(firsts), timeoutMs, `held ${kind} streams did not all get their first content within ${timeoutMs} ms`);
    } catch (error) {
      await get(upstreamPort, RELEASE_PATH);
      agent.destroy();
      throw error;
    }
  }
  if (endedEarly > 0) {
    await get(upstreamPort, RELEASE_PATH);
    agent.destroy();
    const first = await Promise.race(ended.map((p) => p.then((r) => `${r.status} ${r.body.slice(0, 200)}`, String)));
    throw new Error(`${endedEarly} held ${kind} streams ended before the mock released them (first: ${first})`);
  }
  return {
    release: async () => {
      await get(upstreamPort, RELEASE_PATH);
      const results = await withTimeout(Promise.allSettled(ended), timeoutMs, `held ${kind} streams did not end after release`);
      agent.destroy();
      const complete = (r: (typeof results)[number]): boolean =>
        r.status === 'fulfilled' &&
        r.value.status === 200 &&
        r.value.contentType.startsWith('text/event-stream') &&
        r.value.body === STREAMS[kind].full;
      const failed = results.filter((r) => !complete(r));
      if (failed.length > 0) {
        const first = failed[0]!;
        const why =
          first.status === 'rejected'
            ? String(first.reason)
            : `${first.value.status} ${first.value.contentType}, ${first.value.body.length} bytes`;
        throw new Error(`${failed.length} of ${count} held ${kind} streams did not arrive intact (first: ${why})`);
      }
    },
  };
}

export interface MockStats {
  answered: Record<string, number>;
  byKey: Record<string, number>;
  clientKeySeen: number;
  held: number;
}

export async function mockStats(mockPort: number): Promise<MockStats> {
  return JSON.parse(await get(mockPort, STATS_PATH)) as MockStats;
}

/** A client that leaves mid-stream must end the upstream stream too: true when the mock sees its held stream close within `ms`. */
export async function abortReachesUpstream(port: number, mockPort: number, kind: StreamKind, key: string, ms = 2_000): Promise<boolean> {
  const agent = new http.Agent({ keepAlive: false });
  let request!: http.ClientRequest;
  let gotFirst!: () => void;
  const first = new Promise<void>((resolve) => (gotFirst = resolve));
  const stream = post(port, { ...streamOptions(kind, key, true, agent), onRequest: (r) => (request = r), onMarker: () => gotFirst() });
  stream.catch(() => gotFirst());
  await withTimeout(first, 5_000, `the ${kind} stream for the abort check got no first content`);
  if ((await mockStats(mockPort)).held !== 1) throw new Error(`the mock should hold exactly one stream`);
  request.destroy();
  await stream.catch(() => undefined);
  agent.destroy();
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    if ((await mockStats(mockPort)).held === 0) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await get(mockPort, RELEASE_PATH); // leave nothing held for the next check
  return false;
}

export function get(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve(Buffer.concat(chunks).toString()));
      })
      .on('error', reject);
  });
}

export function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]).finally(
    () => clearTimeout(timer),
  );
}
