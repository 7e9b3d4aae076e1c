import http, { type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request as the upstream received it. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The key the request carried: bearer, else x-api-key (Anthropic), else api-key (Azure). */
  key: string | undefined;
}

export type Behaviour = (req: SeenRequest, res: ServerResponse) => void | Promise<void>;

/**
 * A real HTTP server on 127.0.0.1 that plays the upstream API. Each test sets
 * `behaviour`; the server records every request, and which ones the gateway
 * aborted before the answer was complete.
 */
export class MockUpstream {
  readonly seen: SeenRequest[] = [];
  /** Requests whose connection closed before the mock finished answering. */
  readonly aborted: SeenRequest[] = [];
  behaviour: Behaviour = (_req, res) => json(res, 200, { ok: true });
  /** Called when a request's headers arrive, before its body: proves that a body is streamed. */
  onRequestStart: (() => void) | undefined;
  private readonly server: http.Server;

  constructor() {
    this.server = http.createServer((req, res) => {
      this.onRequestStart?.();
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const auth = req.headers.authorization;
        const seen: SeenRequest = {
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks),
          key: auth?.startsWith('Bearer ') ? auth.slice(7) : ((req.headers['x-api-key'] ?? req.headers['api-key']) as string | undefined),
        };
        this.seen.push(seen);
        res.on('close', () => {
          if (!res.writableFinished) this.aborted.push(seen);
        });
        Promise.resolve(this.behaviour(seen, res)).catch(() => res.destroy());
      });
    });
  }

  static async start(): Promise<MockUpstream> {
    const mock = new MockUpstream();
    await mock.listen();
    return mock;
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The keys the upstream saw, in order. */
  keysSeen(): (string | undefined)[] {
    return this.seen.map((r) => r.key);
  }

  reset(): void {
    this.seen.length = 0;
    this.aborted.length = 0;
    this.onRequestStart = undefined;
    this.behaviour = (_req, res) => json(res, 200, { ok: true });
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Answers by key: `byKey({ [k0]: (req, res) => ... }, fallback)`. */
export function byKey(answers: Record<string, Behaviour>, fallback?: Behaviour): Behaviour {
  return (req, res) => {
    const answer = (req.key !== undefined ? answers[req.key] : undefined) ?? fallback;
    if (!answer) return json(res, 500, { error: 'mock: no answer for this key' });
    return answer(req, res);
  };
}

export const ok =
  (body: unknown = { id: 'chatcmpl-1', object: 'chat.completion' }): Behaviour =>
  (_req, res) =>
    json(res, 200, body);
export const status =
  (code: number, headers: Record<string, string> = {}, body: unknown = { error: { message: `mock ${code}` } }): Behaviour =>
  (_req, res) =>
    json(res, code, body, headers);
