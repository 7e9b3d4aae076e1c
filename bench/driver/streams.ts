import http from 'node:http';
import { CHAT, RELEASE_PATH, chatBody } from '../shared.js';
import { percentile } from './load.js';

const SSE_BODY = chatBody({ stream: true });
const HELD_BODY = chatBody({ stream: true, hold: true });

interface StreamOptions {
  agent: http.Agent;
  body: string;
  authorization: string;
  /** Called with the time from sending to the first body byte. */
  onFirstByte?: (ms: number) => void;
}

/** One POST of a chat body (JSON or SSE answer); resolves with status, body and time to the first body byte once the answer ends. */
export function postChat(
  port: number,
  options: StreamOptions,
): Promise<{ status: number; contentType: string; body: string; firstByteMs: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: CHAT,
        method: 'POST',
        agent: options.agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(options.body),
          authorization: options.authorization,
        },
      },
      (res) => {
        let firstByteMs = NaN;
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => {
          if (chunks.length === 0) {
            firstByteMs = performance.now() - started;
            options.onFirstByte?.(firstByteMs);
          }
          chunks.push(chunk);
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            contentType: String(res.headers['content-type']),
            body: Buffer.concat(chunks).toString(),
            firstByteMs,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Sequential SSE requests on one keep-alive connection: p50/p99 time to the first body byte, in ms. */
export async function sseFirstByte(
  port: number,
  authorization: string,
  samples: number,
  warmup = 20,
): Promise<{ p50: number; p99: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const times: number[] = [];
  try {
    for (let i = 0; i < warmup + samples; i++) {
      const { status, firstByteMs } = await postChat(port, { agent, body: SSE_BODY, authorization });
      if (status !== 200) throw new Error(`SSE request answered ${status}`);
      if (i >= warmup) times.push(firstByteMs);
    }
  } finally {
    agent.destroy();
  }
  const sorted = Float64Array.from(times).sort();
  return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) };
}

/**
 * Opens `count` SSE streams that the mock holds open after their first event,
 * `batch` at a time, and resolves once every one has its first byte. `release`
 * asks the mock to end them and waits until all have ended.
 */
export async function openHeldStreams(
  port: number,
  upstreamPort: number,
  authorization: string,
  count: number,
  batch = 100,
): Promise<{ release: () => Promise<void> }> {
  const agent = new http.Agent({ keepAlive: false, maxSockets: count });
  const ended: ReturnType<typeof postChat>[] = [];
  for (let opened = 0; opened < count; opened += batch) {
    const firstBytes: Promise<void>[] = [];
    for (let i = opened; i < Math.min(count, opened + batch); i++) {
      let gotFirst!: () => void;
      firstBytes.push(new Promise<void>((resolve) => (gotFirst = resolve)));
      const stream = postChat(port, { agent, body: HELD_BODY, authorization, onFirstByte: () => gotFirst() });
      stream.catch(() => gotFirst()); // a failed stream counts below
      ended.push(stream);
    }
    await withTimeout(Promise.all(firstBytes), 20_000, 'held streams did not all get their first byte');
  }
  return {
    release: async () => {
      await get(upstreamPort, RELEASE_PATH);
      const results = await withTimeout(Promise.allSettled(ended), 20_000, 'held streams did not end after release');
      agent.destroy();
      const complete = (r: (typeof results)[number]): boolean =>
        r.status === 'fulfilled' &&
        r.value.status === 200 &&
        r.value.contentType.startsWith('text/event-stream') &&
        r.value.body.endsWith('data: [DONE]\n\n');
      const failed = results.filter((r) => !complete(r)).length;
      if (failed > 0) throw new Error(`${failed} of ${count} held streams failed`);
    },
  };
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
