import type { Express } from 'express';
import fs from 'node:fs';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { inspect } from 'node:util';

/**
 * Shared pieces of the reliability suite: keys, servers on 127.0.0.1 that
 * count their connections, a client with a deadline, a capture of everything
 * the gateway let out (scanned for key values), and the figures file.
 */

// Shaped like real keys, not real, under 40 characters after "sk-".
export const KEYS = [
  'sk-rel-k0-Q7mZ2pX9vL4tR8nB6cW1yD3f',
  'sk-rel-k1-H5jK8sA2wE6uN0qT4zM9bV7g',
  'sk-rel-k2-P3xC7dF1hL5oR9yU2iW6eJ8k',
  'sk-rel-k3-T8vB4nM0aS6gZ2cX5qE9rY1w',
  'sk-rel-k4-D2fG6hJ0kL4pQ8sV3xN7bM5c',
] as const;
export const KEY_IDS = KEYS.map((_, i) => `key-${i}`);
export const keyIdOf = (value: string | undefined): string | undefined => {
  const index = KEYS.indexOf(value as (typeof KEYS)[number]);
  return index === -1 ? undefined : KEY_IDS[index];
};

export const CHAT = '/v1/chat/completions';
export const RESPONSES = '/v1/responses';
export const chatBody = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };

/** Wall clock that remembers its last reading, so a wrapper can see the exact instant the pool used. */
export class RecordingClock {
  last = 0;
  now = (): number => (this.last = Date.now());
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function until(what: string, condition: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await sleep(5);
  }
}

/** A deterministic PRNG (mulberry32), so that a chaos run can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An HTTP server on 127.0.0.1 that knows its open sockets. */
export interface Listening {
  server: http.Server;
  url: string;
  port: number;
  sockets: Set<Socket>;
  close(): Promise<void>;
}

export async function listen(handler: http.RequestListener | Express): Promise<Listening> {
  const server = http.createServer(handler as http.RequestListener);
  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    port,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface ClientResult {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** 'end': complete; 'aborted': the connection broke mid-body; 'error': no response; 'hang': deadline passed. */
  ended: 'end' | 'aborted' | 'error' | 'hang';
  error?: string;
  ms: number;
}

export interface ClientRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string | number>;
  body?: string | Buffer;
  agent?: http.Agent | false;
  /** Past this, the request is destroyed and reported as a hang. */
  deadlineMs?: number;
}

/** One request over a real socket; never rejects, always settles by its deadline. */
export function send(baseUrl: string, options: ClientRequest = {}): Promise<ClientResult> {
  const started = Date.now();
  const body = options.body ?? JSON.stringify(chatBody);
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result: Omit<ClientResult, 'ms'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...result, ms: Date.now() - started });
    };
    const req = http.request(
      baseUrl + (options.path ?? CHAT),
      {
        method: options.method ?? 'POST',
        agent: options.agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...options.headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        const done = (ended: ClientResult['ended']) => () =>
          finish({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), ended });
        res.on('end', done('end'));
        res.on('aborted', done('aborted'));
        res.on('error', done('aborted'));
        res.on('close', () => {
          if (!res.complete) done('aborted')();
        });
      },
    );
    const timer = setTimeout(() => {
      finish({ status: 0, headers: {}, body: Buffer.alloc(0), ended: 'hang' });
      req.destroy();
    }, options.deadlineMs ?? 20_000);
    req.on('error', (error) => finish({ status: 0, headers: {}, body: Buffer.alloc(0), ended: 'error', error: error.message }));
    req.end(body);
  });
}

/** Runs `total` tasks with at most `concurrency` at a time. */
export async function runConcurrently(total: number, concurrency: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
}

/**
 * Everything the gateway let out (response status, headers and bodies, logs,
 * events, pool status), kept for the secret scan at the end of each file.
 */
export class Capture {
  private readonly parts: string[] = [];
  bytes = 0;

  add(label: string, value: unknown): void {
    const text =
      typeof value === 'string'
        ? value
        : Buffer.isBuffer(value)
          ? value.toString('latin1')
          : inspect(value, { depth: 20, showHidden: true });
    this.parts.push(`${label}: ${text}`);
    this.bytes += text.length;
  }

  response(label: string, result: ClientResult): void {
    this.add(label, `${result.status} ${JSON.stringify(result.headers)} ${result.body.toString('latin1')}`);
  }

  get count(): number {
    return this.parts.length;
  }

  /** Each key value, and its part after "sk-", that occurs anywhere in the capture. */
  findKeys(keys: readonly string[] = KEYS): string[] {
    const hits: string[] = [];
    for (const part of this.parts) {
      for (const key of keys) {
        if (part.includes(key) || part.includes(key.slice(3))) hits.push(`${keys.indexOf(key)} in ${part.slice(0, 80)}`);
      }
    }
    return hits;
  }
}

const RESULTS_DIR = path.join(__dirname, '..', 'last-run');

/** Writes this file's figures to reliability/last-run/<name>.json; the global teardown prints them all. */
export function writeFigures(name: string, figures: Record<string, unknown>): void {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  fs.writeFileSync(path.join(RESULTS_DIR, `${name}.json`), JSON.stringify(figures, null, 2) + '\n');
}

/** Counts of active handles by type (process.getActiveResourcesInfo), for the leak checks. */
export function activeResources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1;
  return counts;
}

/** Waits until the active handles are back to `baseline` (sockets close asynchronously); returns what is left over. */
export async function leftoverResources(baseline: Record<string, number>, ms = 3000): Promise<Record<string, number>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const now = activeResources();
    const extra: Record<string, number> = {};
    for (const [type, count] of Object.entries(now)) {
      const more = count - (baseline[type] ?? 0);
      if (more > 0) extra[type] = more;
    }
    if (Object.keys(extra).length === 0 || Date.now() > deadline) return extra;
    await sleep(20);
  }
}
