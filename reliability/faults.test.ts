import http from 'node:http';
import { inspect } from 'node:util';
import {
  CHAT,
  Capture,
  KEYS,
  activeResources,
  leftoverResources,
  prng,
  runConcurrently,
  send,
  sleep,
  until,
  writeFigures,
  type ClientResult,
} from './support/common.js';
import { errorCode, startGateway, type Gateway } from './support/gateway.js';
import { RawUpstream, Upstream, json, sentBody, type Seen } from './support/upstream.js';

/**
 * Faults: the upstream resets before its head, breaks mid-stream, is slower
 * than timeoutMs, sends malformed or huge heads, closes keep-alive sockets
 * under load; the client goes away at every phase. After all of it, no socket,
 * timer or listener is left behind.
 */

let upstream: Upstream;
let raw: RawUpstream;
const gateways: Gateway[] = [];
const capture = new Capture();
const figures = { requests: 0, faultsInjected: 0, failuresSeen: 0, keepAliveRaces502: 0, faults: {} as Record<string, number> };
const processWarnings: string[] = [];
const onWarning = (w: Error): void => void processWarnings.push(`${w.name}: ${w.message}`);
let baseline: Record<string, number>;

const fault = (name: string, n = 1): void => {
  figures.faultsInjected += n;
  figures.faults[name] = (figures.faults[name] ?? 0) + n;
};

beforeAll(async () => {
  baseline = activeResources();
  process.on('warning', onWarning);
  upstream = await Upstream.start();
  raw = await RawUpstream.start();
});
afterEach(() => upstream.reset());
afterAll(async () => {
  process.off('warning', onWarning);
  await Promise.all(gateways.map((g) => g.close()));
  await upstream.close();
  await raw.close();
  writeFigures('faults', figures);
});

const initialListeners = new Map<Gateway, string>();
const listenersOf = (g: Gateway): string =>
  g.server.server
    .eventNames()
    .map((e) => `${String(e)}:${g.server.server.listenerCount(e)}`)
    .join(',');

async function gateway(
  target = upstream.url,
  options: Parameters<typeof startGateway>[1] = {},
  poolOptions: Parameters<typeof startGateway>[2] = {},
): Promise<Gateway> {
  const g = await startGateway(target, options, poolOptions);
  gateways.push(g);
  initialListeners.set(g, listenersOf(g));
  return g;
}

/** Sends `n` requests at once, records them for the secret scan, counts failures the test then asserts on. */
async function burst(g: Gateway, n: number, label: string): Promise<ClientResult[]> {
  const results = await Promise.all(
    Array.from({ length: n }, (_, i) => send(g.url, { headers: { 'x-load-id': `${label}-${i}` }, agent: false })),
  );
  results.forEach((r) => capture.response(label, r));
  figures.requests += n;
  return results;
}

function expectNothingMarked(g: Gateway): void {
  expect(g.states()).toEqual(['available', 'available', 'available']);
  expect(g.errors).toEqual([]);
}

function track<T>(check: () => T): T {
  try {
    return check();
  } catch (error) {
    figures.failuresSeen++;
    throw error;
  }
}

describe('upstream resets the connection before its head', () => {
  test('reset after reading the request: clean 502, one attempt, no key marked', async () => {
    const g = await gateway();
    upstream.behaviour = (_req, res) => {
      fault('reset before head');
      res.socket?.destroy();
    };
    const results = await burst(g, 20, 'reset-before-head');
    track(() => {
      for (const r of results) {
        expect([r.status, r.ended, errorCode(r.body)]).toEqual([502, 'end', 'upstream_unreachable']);
      }
      expect(upstream.seen.map((s) => s.keyId)).toEqual(Array(20).fill('key-0'));
      expectNothingMarked(g);
    });
  });

  test.each([
    ['RST before any byte', (s: import('node:net').Socket) => s.resetAndDestroy()],
    ['FIN before any byte', (s: import('node:net').Socket) => s.end()],
    ['half a status line, then FIN', (s: import('node:net').Socket) => s.end('HTTP/1.1 20')],
    ['a head cut in the middle', (s: import('node:net').Socket) => s.end('HTTP/1.1 200 OK\r\ncontent-type: applic')],
  ])('%s: clean 502, no key marked', async (_name, answer) => {
    const g = await gateway(raw.url);
    raw.seen.length = 0;
    raw.answer = (socket) => {
      fault('reset before head');
      answer(socket);
    };
    const results = await burst(g, 5, 'raw-reset');
    track(() => {
      for (const r of results) expect([r.status, r.ended, errorCode(r.body)]).toEqual([502, 'end', 'upstream_unreachable']);
      expect(raw.seen.map((s) => s.key)).toEqual(Array(5).fill(KEYS[0]));
      expectNothingMarked(g);
    });
  });
});

/** What ends a chat stream the upstream broke off after its commit: an error event the SDKs raise on. */
const BREAK_EVENT =
  'data: {"error":{"message":"The upstream stream broke off before it was complete.","type":"upstream_error","param":null,"code":"stream_interrupted"}}\n\n';

describe('upstream breaks after its head', () => {
  test('SSE stream cut mid-stream: the client stream ends early with an error event (never [DONE]), no retry, no key marked', async () => {
    const g = await gateway();
    upstream.behaviour = async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"n":0}\n\n');
      await sleep(30);
      res.write('data: {"n":1}\n\n');
      await sleep(30);
      fault('cut mid-stream');
      res.socket?.destroy();
    };
    const results = await burst(g, 10, 'cut-sse');
    track(() => {
      for (const r of results) {
        expect(r.status).toBe(200);
        expect(r.ended).toBe('end');
        expect(r.body.toString()).toBe(`data: {"n":0}\n\ndata: {"n":1}\n\n\n\n${BREAK_EVENT}`);
      }
      expect(upstream.seen).toHaveLength(10); // no retry
      expectNothingMarked(g);
    });
  });

  test('JSON body cut after half its Content-Length: the client sees a truncated body (aborted), never a complete 200', async () => {
    const g = await gateway();
    const full = JSON.stringify({ id: 'x', content: 'y'.repeat(200_000) });
    upstream.behaviour = async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(full) });
      res.write(full.slice(0, 100_000));
      await sleep(30);
      fault('cut mid-body');
      res.socket?.destroy();
    };
    const results = await burst(g, 10, 'cut-json');
    track(() => {
      for (const r of results) {
        expect(r.status).toBe(200);
        expect(r.ended).toBe('aborted');
        expect(r.body.length).toBeLessThan(Buffer.byteLength(full));
        expect(full.startsWith(r.body.toString())).toBe(true);
      }
      expect(upstream.seen).toHaveLength(10);
      expectNothingMarked(g);
    });
  });

  // Contract: "network error before any byte reached the client -> clean 502". Here the upstream's
  // head arrived but its body failed before the first body byte: nothing has reached the client yet.
  test.each([
    [
      'a 200 head, then RST before any body byte',
      (s: import('node:net').Socket) => {
        s.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n');
        setTimeout(() => s.resetAndDestroy(), 30);
      },
    ],
    [
      'a chunked 200 head, then a malformed chunk',
      (s: import('node:net').Socket) => {
        s.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n');
      },
    ],
  ])('%s: the client gets a clean 502 (nothing had reached it), no key marked', async (_name, answer) => {
    const g = await gateway(raw.url);
    raw.seen.length = 0;
    raw.answer = (socket) => {
      fault('body fails before first byte');
      answer(socket);
    };
    const results = await burst(g, 3, 'head-then-fail');
    track(() => {
      expect(raw.seen).toHaveLength(3);
      expectNothingMarked(g);
      for (const r of results) {
        expect({ status: r.status, ended: r.ended, code: errorCode(r.body) }).toEqual({
          status: 502,
          ended: 'end',
          code: 'upstream_unreachable',
        });
      }
    });
  });
});

describe('upstream slower than timeoutMs', () => {
  test('no head within timeoutMs: 504 for each request, every upstream request aborted, no key marked', async () => {
    const g = await gateway(upstream.url, { timeoutMs: 300 });
    upstream.behaviour = () => {
      fault('no head within timeoutMs');
      return new Promise(() => {});
    };
    const results = await burst(g, 20, 'timeout');
    track(() => {
      for (const r of results) {
        expect([r.status, errorCode(r.body)]).toEqual([504, 'upstream_timeout']);
        expect(r.ms).toBeGreaterThanOrEqual(290);
        expect(r.ms).toBeLessThan(3000);
      }
      expectNothingMarked(g);
    });
    await until('every timed-out upstream request to be aborted', () => upstream.seen.every((s) => s.closedEarly) && upstream.active === 0);
    expect(upstream.seen).toHaveLength(20);
  });

  test('a stream that goes silent for longer than timeoutMs: the client stream ends with an error event, the upstream request is aborted', async () => {
    const g = await gateway(upstream.url, { timeoutMs: 300 });
    upstream.behaviour = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"n":0}\n\n');
      fault('silent mid-stream');
      // and nothing more
    };
    const results = await burst(g, 5, 'silent-stream');
    track(() => {
      for (const r of results) {
        expect([r.status, r.ended, r.body.toString()]).toEqual([200, 'end', `data: {"n":0}\n\n\n\n${BREAK_EVENT}`]);
        expect(r.ms).toBeGreaterThanOrEqual(290);
      }
      expectNothingMarked(g);
    });
    await until('the silent upstream requests to be aborted', () => upstream.seen.every((s) => s.closedEarly));
  });
});

describe('malformed and huge upstream heads', () => {
  const heads: [string, string | Buffer][] = [
    ['header line without a colon', 'HTTP/1.1 200 OK\r\nBad Header Line\r\ncontent-length: 2\r\n\r\n{}'],
    ['status that is not a number', 'HTTP/1.1 abc OK\r\ncontent-length: 2\r\n\r\n{}'],
    ['status 099', 'HTTP/1.1 099 Weird\r\ncontent-length: 2\r\n\r\n{}'],
    ['a 100 KiB header value', 'HTTP/1.1 200 OK\r\nx-huge: ' + 'a'.repeat(100 * 1024) + '\r\ncontent-length: 2\r\n\r\n{}'],
    [
      '5 000 headers',
      'HTTP/1.1 200 OK\r\n' + Array.from({ length: 5000 }, (_, i) => `x-h${i}: v`).join('\r\n') + '\r\ncontent-length: 2\r\n\r\n{}',
    ],
    ['two different Content-Lengths', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}x'],
    [
      'Transfer-Encoding and Content-Length',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n',
    ],
    ['negative Content-Length', 'HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n{}'],
    ['NUL in a header value', 'HTTP/1.1 200 OK\r\nx-nul: a\x00b\r\ncontent-length: 2\r\n\r\n{}'],
    ['DEL in a header value', 'HTTP/1.1 200 OK\r\nx-del: a\x7fb\r\ncontent-length: 2\r\n\r\n{}'],
    ['bare CR in a header value', 'HTTP/1.1 200 OK\r\nx-cr: a\rb\r\ncontent-length: 2\r\n\r\n{}'],
    ['control character in a header name', 'HTTP/1.1 200 OK\r\nx-bad\x01name: v\r\ncontent-length: 2\r\n\r\n{}'],
    ['space in a header name', 'HTTP/1.1 200 OK\r\nx-bad name: v\r\ncontent-length: 2\r\n\r\n{}'],
    ['empty header name', 'HTTP/1.1 200 OK\r\n: v\r\ncontent-length: 2\r\n\r\n{}'],
    ['obsolete line folding', 'HTTP/1.1 200 OK\r\nx-fold: a\r\n  b\r\ncontent-length: 2\r\n\r\n{}'],
    ['LF-only line ends', 'HTTP/1.1 200 OK\ncontent-length: 2\n\n{}'],
    ['101 Switching Protocols to a POST', 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n'],
    ['not HTTP at all', 'garbage\r\n\r\n'],
    ['an HTTP/0.9-style bare body', '{"raw":true}'],
  ];

  test.each(heads)('%s: clean 502, one attempt, no key marked', async (_name, head) => {
    const g = await gateway(raw.url);
    raw.seen.length = 0;
    raw.answer = (socket) => {
      fault('malformed head');
      socket.end(head);
    };
    const results = await burst(g, 2, 'malformed');
    track(() => {
      for (const r of results) expect([r.status, r.ended, errorCode(r.body)]).toEqual([502, 'end', 'upstream_unreachable']);
      expect(raw.seen).toHaveLength(2);
      expectNothingMarked(g);
    });
  });

  test.each([
    [
      'obs-text (bytes 0x80-0xff) in a header value',
      Buffer.concat([
        Buffer.from('HTTP/1.1 200 OK\r\nx-obs: a'),
        Buffer.from([0xff, 0xfe]),
        Buffer.from('b\r\ncontent-length: 2\r\n\r\n{}'),
      ]),
    ],
    ['a 100 KiB reason phrase', 'HTTP/1.1 200 ' + 'O'.repeat(100 * 1024) + '\r\ncontent-length: 2\r\n\r\n{}'],
    ['a 103 Early Hints before the 200', 'HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}'],
    ['a body delimited by close (HTTP/1.0)', 'HTTP/1.0 200 OK\r\n\r\n{}'],
  ])('%s (tolerated by the parser): relayed complete, no key marked', async (_name, head) => {
    const g = await gateway(raw.url);
    raw.answer = (socket) => {
      fault('odd but valid head');
      socket.end(head);
    };
    const results = await burst(g, 2, 'odd-head');
    track(() => {
      for (const r of results) expect([r.status, r.ended, r.body.toString()]).toEqual([200, 'end', '{}']);
      expectNothingMarked(g);
    });
  });
});

describe('the client goes away', () => {
  /** Starts a request over its own socket; `abort()` destroys it; `response` settles with what arrived. */
  function startRequest(
    url: string,
    { id, body = JSON.stringify({ model: 'm', stream: true }), partialBody = false }: { id: string; body?: string; partialBody?: boolean },
  ): { abort: () => void; firstByte: Promise<void>; done: Promise<void> } {
    let firstByte!: () => void;
    const first = new Promise<void>((resolve) => (firstByte = resolve));
    const req = http.request(url + CHAT, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'x-load-id': id, ...(partialBody ? { 'content-length': 10_000 } : {}) },
    });
    const done = new Promise<void>((resolve) => {
      req.on('error', () => resolve());
      req.on('close', () => resolve());
      req.on('response', (res) => {
        res.on('data', (chunk: Buffer) => {
          capture.add('client-abort chunk', chunk);
          firstByte();
        });
        res.on('error', () => {});
      });
    });
    if (partialBody) req.write(body.slice(0, 5));
    else req.end(body);
    figures.requests++;
    return { abort: () => req.destroy(), firstByte: first, done };
  }

  async function settled(g: Gateway): Promise<void> {
    await until('the gateway to drop the client socket', () => g.server.sockets.size === 0);
    await until('every upstream answer to be finished or aborted', () => upstream.active === 0);
  }

  test('while still sending the body: the upstream is never contacted', async () => {
    const g = await gateway();
    const arrived: string[] = [];
    const onRequest = (req: http.IncomingMessage): void => void arrived.push(String(req.headers['x-load-id']));
    g.server.server.prependListener('request', onRequest);
    const c = startRequest(g.url, { id: 'abort-body', partialBody: true });
    await until('the gateway to get the request head', () => arrived.includes('abort-body'));
    g.server.server.off('request', onRequest);
    fault('client abort while sending');
    c.abort();
    await c.done;
    await settled(g);
    await sleep(100);
    track(() => {
      expect(upstream.seen).toHaveLength(0);
      expectNothingMarked(g);
    });
  });

  test('while the upstream holds its head: the upstream request is aborted, no key marked', async () => {
    const g = await gateway();
    upstream.behaviour = () => new Promise(() => {});
    const c = startRequest(g.url, { id: 'abort-waiting' });
    await until('the upstream to get the request', () => upstream.seen.length === 1);
    fault('client abort before head');
    c.abort();
    await settled(g);
    track(() => {
      expect(upstream.seen[0]!.closedEarly).toBe(true);
      expectNothingMarked(g);
    });
  });

  test('during failover (key-0 said 429, key-1 is thinking): key-1 is aborted, key-2 never tried, only key-0 cools', async () => {
    const g = await gateway();
    upstream.behaviour = (req, res) => {
      if (req.keyId === 'key-0') return json(res, 429, { error: { message: 'slow down' } }, { 'retry-after': '30' });
      return new Promise(() => {});
    };
    const c = startRequest(g.url, { id: 'abort-failover' });
    await until('key-1 to get the request', () => upstream.seen.some((s) => s.keyId === 'key-1'));
    fault('client abort during failover');
    c.abort();
    await settled(g);
    await sleep(100);
    track(() => {
      expect(upstream.seen.map((s) => [s.keyId, s.status ?? null, s.closedEarly])).toEqual([
        ['key-0', 429, false],
        ['key-1', null, true],
      ]);
      expect(g.states()).toEqual(['cooling', 'available', 'available']);
    });
  });

  test('mid-stream (SSE): the upstream stream is aborted, no key marked', async () => {
    const g = await gateway();
    upstream.behaviour = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"n":0}\n\n');
    };
    const c = startRequest(g.url, { id: 'abort-stream' });
    await c.firstByte;
    fault('client abort mid-stream');
    c.abort();
    await settled(g);
    track(() => {
      expect(upstream.seen[0]!.closedEarly).toBe(true);
      expectNothingMarked(g);
    });
  });

  test('mid-body of a large JSON answer: the upstream answer is aborted, no key marked', async () => {
    const g = await gateway();
    upstream.behaviour = async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 64 * 1024 * 40 });
      for (let i = 0; i < 40 && !res.destroyed; i++) {
        res.write('x'.repeat(64 * 1024));
        await sleep(50);
      }
    };
    const c = startRequest(g.url, { id: 'abort-body-relay', body: '{}' });
    await c.firstByte;
    fault('client abort mid-body');
    c.abort();
    await settled(g);
    track(() => {
      expect(upstream.seen[0]!.closedEarly).toBe(true);
      expect(sentBody(upstream.seen[0]!).length).toBeLessThan(64 * 1024 * 40);
      expectNothingMarked(g);
    });
  });

  test('while the gateway holds a skipped 403 (slow body): the upstream request is aborted promptly, no other key tried', async () => {
    const g = await gateway(upstream.url, { timeoutMs: 10_000 });
    let written = 0;
    upstream.behaviour = async (req, res) => {
      if (req.keyId !== 'key-0') return json(res, 200, { ok: true });
      res.writeHead(403, { 'content-type': 'application/json' });
      // A 403 body trickling in for 3 s.
      for (let i = 0; i < 30 && !res.destroyed; i++) {
        res.write(`{"pad":${i}}`);
        written++;
        await sleep(100);
      }
      if (!res.destroyed) res.end();
    };
    const c = startRequest(g.url, { id: 'abort-held' });
    await until('the 403 body to start', () => written >= 2);
    fault('client abort while a 403 is held');
    const abortedAt = Date.now();
    c.abort();
    await until('the gateway to drop the client socket', () => g.server.sockets.size === 0);
    let abortedWithin: number | undefined;
    try {
      await until('the held 403 to be aborted upstream', () => upstream.seen[0]!.closedEarly, 1000);
      abortedWithin = Date.now() - abortedAt;
    } catch {
      abortedWithin = undefined;
    }
    await until('the 403 to end one way or the other', () => upstream.active === 0, 5000);
    await sleep(50);
    track(() => {
      expect({ abortedWithinOneSecond: abortedWithin !== undefined, keysTried: upstream.seen.map((s) => s.keyId) }).toEqual({
        abortedWithinOneSecond: true,
        keysTried: ['key-0'],
      });
      expectNothingMarked(g);
    });
  });
});

describe('upstream closes keep-alive sockets under load', () => {
  test.each([
    ['the upstream destroys 30% of its sockets 0-3 ms after an answer', 'destroy'],
    ['the upstream keep-alive timeout is 5 ms', 'idle-timeout'],
  ])('%s: every answer complete, or a clean 502 for an attempt the upstream never answered; no key marked', async (_name, mode) => {
    const random = prng(mode === 'destroy' ? 7 : 8);
    const g = await gateway();
    if (mode === 'idle-timeout') upstream.server.keepAliveTimeout = 5;
    upstream.behaviour = async (req, res) => {
      await sleep(random() * 5);
      json(res, 200, { id: req.loadId, ok: true });
      if (mode === 'destroy' && random() < 0.3) {
        fault('keep-alive socket closed');
        const socket = res.socket;
        res.once('finish', () => setTimeout(() => socket?.destroy(), random() * 3));
      }
    };
    const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
    const results: ClientResult[] = [];
    const total = 600;
    try {
      await runConcurrently(total, 50, async (i) => {
        results[i] = await send(g.url, { agent, headers: { 'x-load-id': `ka-${i}` } });
        if (mode === 'idle-timeout' && i % 25 === 0) await sleep(10); // let sockets idle past the timeout
      });
    } finally {
      agent.destroy();
      upstream.server.keepAliveTimeout = 5000;
    }
    figures.requests += total;
    const byId = new Map<string, Seen>(upstream.seen.map((s) => [s.loadId!, s]));
    const problems: string[] = [];
    let races = 0;
    results.forEach((r, i) => {
      capture.response('keep-alive', r);
      const seen = byId.get(`ka-${i}`);
      if (r.status === 200 && r.ended === 'end' && seen && r.body.equals(sentBody(seen))) return;
      if (r.status === 502 && r.ended === 'end' && errorCode(r.body) === 'upstream_unreachable' && seen?.status === undefined) {
        races++;
        return;
      }
      problems.push(`ka-${i}: ${r.status} ${r.ended} ${r.body.toString().slice(0, 80)} (upstream: ${seen?.status ?? 'no head'})`);
    });
    if (mode === 'idle-timeout')
      fault('keep-alive socket closed', upstream.seen.length > 0 ? new Set(upstream.seen.map((s) => s.remotePort)).size : 0);
    figures.keepAliveRaces502 += races;
    track(() => {
      expect(problems).toEqual([]);
      expectNothingMarked(g);
    });
  });
});

describe('long-lived client sockets', () => {
  test('300 requests over one keep-alive socket (answers, failovers, pool errors): no listener piles up on it', async () => {
    const g = await gateway(upstream.url, {}, { minCooldownMs: 0 });
    let n = 0;
    upstream.behaviour = (req, res) => {
      n++;
      if (req.keyId === 'key-0' && n % 3 === 0) return json(res, 429, { error: { message: 'x' } }, { 'retry-after-ms': '1' });
      if (n % 7 === 0) return void res.socket?.destroy();
      return json(res, 200, { ok: n });
    };
    const gatewaySockets: import('node:net').Socket[] = [];
    const onConnection = (socket: import('node:net').Socket): void => void gatewaySockets.push(socket);
    g.server.server.on('connection', onConnection);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const listenerCounts: Record<string, number>[] = [];
    const count = (s: import('node:net').Socket): Record<string, number> =>
      Object.fromEntries(s.eventNames().map((e) => [String(e), s.listenerCount(e)]));
    try {
      for (let i = 0; i < 300; i++) {
        const r = await send(g.url, { agent });
        capture.response('one-socket', r);
        if (i === 5 || i === 299) listenerCounts.push(count(gatewaySockets[0]!));
      }
    } finally {
      agent.destroy();
      g.server.server.off('connection', onConnection);
    }
    figures.requests += 300;
    fault('upstream reset', Math.floor(n / 7));
    track(() => {
      expect(gatewaySockets).toHaveLength(1);
      expect(listenerCounts[1]).toEqual(listenerCounts[0]);
      expect(processWarnings).toEqual([]);
    });
  });
});

describe('after all the faults', () => {
  test('no socket, server, timer or listener is left once the gateways and upstreams are closed', async () => {
    const listenersNow = gateways.map(listenersOf);
    const listenersAtStart = gateways.map((g) => initialListeners.get(g));
    capture.add('pool snapshots', JSON.stringify(gateways.map((g) => g.pool.snapshot())));
    capture.add(
      'pool inspect',
      inspect(
        gateways.map((g) => g.pool),
        { depth: 6, showHidden: true },
      ),
    );
    capture.add('warnings', gateways.flatMap((g) => g.warnings).join('\n'));
    capture.add('express errors', gateways.flatMap((g) => g.errors).join('\n'));
    capture.add(
      'upstream requests (headers as relayed, minus keys)',
      JSON.stringify(upstream.seen.map((s) => ({ ...s.headers, authorization: undefined }))),
    );

    await Promise.all(gateways.map((g) => g.close()));
    await upstream.close();
    await raw.close();
    const leftover = await leftoverResources(baseline);
    track(() => {
      expect(leftover).toEqual({});
      // Listeners on each gateway server: the same as before its first request.
      expect(listenersNow).toEqual(listenersAtStart);
      expect(processWarnings).toEqual([]);
    });
  });

  test('secrets: nothing the fault runs let out contains a key value', () => {
    const hits = capture.findKeys();
    (figures as Record<string, unknown>).secretScan = { items: capture.count, bytes: capture.bytes, hits: hits.length };
    expect(capture.count).toBeGreaterThan(100);
    expect(hits).toEqual([]);
  });
});
