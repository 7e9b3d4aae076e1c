import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import net from 'node:net';
import { keyIdOf, listen, type Listening } from './common.js';

/** One request as the upstream received it, and what the upstream did with it. */
export interface Seen {
  seq: number;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** The raw header list, names as sent. */
  rawHeaders: string[];
  body: Buffer;
  key: string | undefined;
  keyId: string | undefined;
  /** The x-load-id the client put on the request (passed through by the gateway). */
  loadId: string | undefined;
  arrivedAt: number;
  /** When the request head was parsed (arrivedAt is when its body ended). */
  headAt: number;
  /** The gateway's side of the connection, to tell connections apart. */
  remotePort: number | undefined;
  /** Status and time of the response head, once written. */
  status?: number;
  answeredAt?: number;
  sentHeaders?: OutgoingHttpHeaders;
  /** The body bytes the upstream wrote, in order. */
  sent: Buffer[];
  /** The response was complete. */
  finished: boolean;
  /** The connection closed before the response was complete (the gateway aborted, or the upstream broke it). */
  closedEarly: boolean;
  /** What the behaviour decided, for the checks (e.g. 'ok', '429', 'reset-before-headers'). */
  note?: string;
  /** For a 429: the delay in ms the upstream asked for, and how. */
  retryAfterMs?: number;
  retryStyle?: string;
  /** For a 429 with an HTTP-date: the date itself (epoch ms). */
  retryDate?: number;
}

export type Behaviour = (req: Seen, res: ServerResponse) => void | Promise<void>;

/**
 * The upstream played by a real HTTP server on 127.0.0.1. Records every
 * request, the head and bytes of every answer, and which answers the gateway
 * cut short. `behaviour` is set per test.
 */
export class Upstream {
  readonly seen: Seen[] = [];
  behaviour: Behaviour = (_req, res) => json(res, 200, { ok: true });
  private listening!: Listening;
  private seq = 0;
  /** Requests whose answer is neither finished nor cut short. */
  active = 0;

  static async start(configure?: (server: http.Server) => void): Promise<Upstream> {
    const upstream = new Upstream();
    upstream.listening = await listen((req: http.IncomingMessage, res: ServerResponse) => upstream.handle(req, res));
    configure?.(upstream.listening.server);
    return upstream;
  }

  get url(): string {
    return this.listening.url;
  }
  get port(): number {
    return this.listening.port;
  }
  get server(): http.Server {
    return this.listening.server;
  }
  get openSockets(): number {
    return this.listening.sockets.size;
  }

  private handle(req: http.IncomingMessage, res: ServerResponse): void {
    const headAt = Date.now();
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const auth = req.headers.authorization;
      const key = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
      const seen: Seen = {
        seq: this.seq++,
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks),
        key,
        keyId: keyIdOf(key),
        loadId: req.headers['x-load-id'] as string | undefined,
        arrivedAt: Date.now(),
        headAt,
        remotePort: req.socket.remotePort,
        sent: [],
        finished: false,
        closedEarly: false,
      };
      this.seen.push(seen);
      this.active++;
      record(seen, res);
      res.on('close', () => {
        this.active--;
        if (res.writableFinished) seen.finished = true;
        else seen.closedEarly = true;
      });
      Promise.resolve(this.behaviour(seen, res)).catch(() => res.destroy());
    });
  }

  reset(): void {
    this.seen.length = 0;
    this.behaviour = (_req, res) => json(res, 200, { ok: true });
  }

  close(): Promise<void> {
    return this.listening.close();
  }
}

/** Notes the head and body bytes a behaviour writes. */
function record(seen: Seen, res: ServerResponse): void {
  const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => ServerResponse;
  (res as { writeHead: unknown }).writeHead = (status: number, ...rest: unknown[]) => {
    seen.status = status;
    seen.answeredAt = Date.now();
    seen.sentHeaders = rest.find((r) => typeof r === 'object') as OutgoingHttpHeaders | undefined;
    return writeHead(status, ...rest);
  };
  const write = res.write.bind(res) as (...args: unknown[]) => boolean;
  (res as { write: unknown }).write = (chunk: unknown, ...rest: unknown[]) => {
    if (chunk !== undefined && chunk !== null) seen.sent.push(Buffer.from(chunk as string));
    return write(chunk, ...rest);
  };
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
  (res as { end: unknown }).end = (chunk?: unknown, ...rest: unknown[]) => {
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') seen.sent.push(Buffer.from(chunk as string));
    return end(chunk, ...rest);
  };
}

export function json(res: ServerResponse, status: number, body: unknown, headers: OutgoingHttpHeaders = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** The exact bytes the upstream wrote as its body. */
export const sentBody = (seen: Seen): Buffer => Buffer.concat(seen.sent);

/**
 * A raw TCP upstream on 127.0.0.1 for answers Node's http server refuses to
 * write (malformed status lines, bad or huge headers). Reads one request
 * (head + Content-Length body), records its key, writes `answer` bytes.
 */
export class RawUpstream {
  readonly seen: { key: string | undefined; head: string }[] = [];
  answer: (socket: net.Socket) => void = (socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}');
  private readonly server: net.Server;
  readonly sockets = new Set<net.Socket>();

  private constructor() {
    this.server = net.createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => {});
      let buffered = Buffer.alloc(0);
      const onData = (chunk: Buffer): void => {
        buffered = Buffer.concat([buffered, chunk]);
        const end = buffered.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buffered.subarray(0, end).toString('latin1');
        const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
        if (buffered.length < end + 4 + length) return;
        socket.off('data', onData);
        const auth = /\r\nauthorization:\s*Bearer (\S+)/i.exec(head)?.[1];
        this.seen.push({ key: auth, head });
        this.answer(socket);
      };
      socket.on('data', onData);
    });
  }

  static async start(): Promise<RawUpstream> {
    const raw = new RawUpstream();
    await new Promise<void>((resolve) => raw.server.listen(0, '127.0.0.1', resolve));
    return raw;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
