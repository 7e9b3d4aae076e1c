import express from 'express';
import http from 'node:http';
import net from 'node:net';
import { keyFailover, keyPassthrough, KeyPool, MemoryKeyStateStore, type KeyPoolEvents } from '../lib/index.js';
import { CHAT, Capture, KEYS, listen, send, sleep, until, writeFigures } from './support/common.js';
import { errorCode, startGateway, type Gateway } from './support/gateway.js';
import { Upstream, json } from './support/upstream.js';

/**
 * Hostile input: bodies over the limit, chunked bodies, invalid JSON, header
 * injection through BYOK values, request smuggling and path tricks. The
 * upstream is a recording mock; a decoy server on another loopback port
 * stands for "anywhere else" and must never see a request.
 */

const LIMIT = 64 * 1024;
let upstream: Upstream;
let decoy: Upstream;
let g: Gateway;
let adminHits = 0;
const capture = new Capture();
const figures = { requests: 0, faultsInjected: 0, failuresSeen: 0, cases: {} as Record<string, number> };
const gateways: Gateway[] = [];

beforeAll(async () => {
  upstream = await Upstream.start();
  decoy = await Upstream.start();
  g = await startGateway(upstream.url, { maxBodyBytes: LIMIT, byok: byokFromHeaderOrQuery }, {}, (app) => {
    // A route the gateway app has besides the middleware: no path trick may reach it.
    app.all('/admin', (_req, res) => {
      adminHits++;
      res.status(200).send('admin');
    });
  });
  gateways.push(g);
});
beforeEach(() => upstream.reset());
afterAll(async () => {
  await Promise.all(gateways.map((x) => x.close()));
  await upstream.close();
  await decoy.close();
  writeFigures('hostile', figures);
});

function byokFromHeaderOrQuery(req: express.Request): string | undefined {
  const fromQuery = req.query['key'];
  if (fromQuery !== undefined) return fromQuery as string;
  return req.get('x-openai-key');
}

function hostile(kind: string): void {
  figures.faultsInjected++;
  figures.requests++;
  figures.cases[kind] = (figures.cases[kind] ?? 0) + 1;
}

function track(check: () => void): void {
  try {
    check();
  } catch (error) {
    figures.failuresSeen++;
    throw error;
  }
}

interface RawResponse {
  status: number;
  head: string;
  body: Buffer;
  closed: boolean;
}

/** Writes `request` bytes on a fresh socket to `port` and reads until the server closes or `ms` pass. */
function rawRequest(
  port: number,
  request: string | Buffer,
  { ms = 3000, keepSending }: { ms?: number; keepSending?: (s: net.Socket) => void } = {},
): Promise<RawResponse> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    const finish = (): void => {
      clearTimeout(timer);
      socket.destroy();
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, end === -1 ? all.length : end).toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      capture.add('raw response', all);
      resolve({ status, head, body: end === -1 ? Buffer.alloc(0) : all.subarray(end + 4), closed });
    };
    const timer = setTimeout(finish, ms);
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      // A complete response with a Content-Length is enough; no need to wait for the close.
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: (\d+)/i.exec(all.subarray(0, end).toString('latin1'))?.[1];
      if (end !== -1 && length !== undefined && all.length >= end + 4 + Number(length)) finish();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      closed = true;
      finish();
    });
    socket.write(request);
    keepSending?.(socket);
  });
}

const post = (target: string, body = '{}', extra = ''): string =>
  `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`;

describe('bodies over the limit', () => {
  test('Content-Length over maxBodyBytes: 413, the upstream is never contacted', async () => {
    hostile('body over limit (declared)');
    const r = await send(g.url, { body: 'x'.repeat(LIMIT + 1) });
    capture.response('413', r);
    track(() => {
      expect([r.status, errorCode(r.body)]).toEqual([413, 'request_too_large']);
      expect(upstream.seen).toHaveLength(0);
    });
  });

  test('a chunked body (no Content-Length) that grows past maxBodyBytes: 413, the upstream is never contacted', async () => {
    hostile('body over limit (chunked)');
    const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(
        g.url + CHAT,
        { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
        (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        },
      );
      req.on('error', reject);
      for (let i = 0; i < 64; i++) req.write('y'.repeat(16 * 1024)); // 1 MiB in 16 KiB chunks
      req.end();
    });
    capture.add('chunked 413', r.body);
    track(() => {
      expect([r.status, errorCode(Buffer.from(r.body))]).toEqual([413, 'request_too_large']);
      expect(upstream.seen).toHaveLength(0);
    });
  });

  test('a declared 1 GiB body: the 413 comes at once, while the client is still sending; the upstream is never contacted', async () => {
    hostile('body over limit (1 GiB declared)');
    const started = Date.now();
    let sending = true;
    const r = await rawRequest(
      g.server.port,
      `POST ${CHAT} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n`,
      {
        keepSending: (socket) => {
          const pump = (): void => {
            if (!sending || socket.destroyed) return;
            socket.write(Buffer.alloc(64 * 1024, 0x7a), () => setImmediate(pump));
          };
          pump();
        },
      },
    );
    sending = false;
    track(() => {
      expect(r.status).toBe(413);
      expect(errorCode(r.body)).toBe('request_too_large');
      expect(Date.now() - started).toBeLessThan(2500);
      expect(upstream.seen).toHaveLength(0);
    });
  });

  test('a body of exactly maxBodyBytes is relayed byte for byte', async () => {
    hostile('body at the limit');
    upstream.behaviour = (_req, res) => json(res, 200, { ok: true });
    const body = Buffer.alloc(LIMIT, 0x61);
    const r = await send(g.url, { body });
    track(() => {
      expect(r.status).toBe(200);
      expect(upstream.seen).toHaveLength(1);
      expect(upstream.seen[0]!.body.equals(body)).toBe(true);
      expect(upstream.seen[0]!.headers['content-length']).toBe(String(LIMIT));
    });
  });
});

describe('chunked and odd bodies', () => {
  test('a chunked body of 2 000 small chunks, some of them late: relayed whole with a Content-Length, no Transfer-Encoding', async () => {
    hostile('chunked body');
    const parts = Array.from({ length: 2000 }, (_, i) => `${i},`);
    const r = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        g.url + CHAT,
        { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        },
      );
      req.on('error', reject);
      void (async () => {
        for (const [i, part] of parts.entries()) {
          req.write(part);
          if (i % 500 === 0) await sleep(20);
        }
        req.end();
      })();
    });
    track(() => {
      expect(r).toBe(200);
      const seen = upstream.seen[0]!;
      expect(seen.body.toString()).toBe(parts.join(''));
      expect(seen.headers['content-length']).toBe(String(Buffer.byteLength(parts.join(''))));
      expect(seen.headers['transfer-encoding']).toBeUndefined();
    });
  });

  test('a chunked body with trailers: the body is relayed, the trailers are not', async () => {
    hostile('chunked body with trailers');
    const r = await rawRequest(
      g.server.port,
      `POST ${CHAT} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\ntrailer: x-trailer\r\nconnection: close\r\n\r\n` +
        `7\r\n{"a":1}\r\n0\r\nx-trailer: smuggled\r\n\r\n`,
    );
    track(() => {
      expect(r.status).toBe(200);
      expect(upstream.seen[0]!.body.toString()).toBe('{"a":1}');
      expect(upstream.seen[0]!.rawHeaders.join('\n')).not.toMatch(/smuggled/);
    });
  });

  test('Content-Length shorter than the bytes sent: exactly the declared bytes go upstream; the rest is not a second upstream request', async () => {
    hostile('content-length shorter than body');
    const r = await rawRequest(
      g.server.port,
      `POST ${CHAT} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{"a":1}POST ${CHAT} HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\n\r\n{}`,
    );
    await sleep(100);
    track(() => {
      expect(r.status).toBe(200);
      // The trailing bytes are a second, well-formed request on the same connection: the gateway
      // answers it on its own (and sends it upstream on its own), never glued to the first.
      expect(upstream.seen.map((s) => s.body.toString())).toEqual(expect.arrayContaining(['{"a":1}']));
      for (const s of upstream.seen) expect(['{"a":1}', '{}']).toContain(s.body.toString());
    });
  });

  test.each([
    [
      'Transfer-Encoding and Content-Length together',
      `POST ${CHAT} HTTP/1.1\r\nHost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`,
    ],
    ['two different Content-Lengths', `POST ${CHAT} HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}x`],
    ['a bare LF in a header', `POST ${CHAT} HTTP/1.1\r\nHost: x\r\nx-a: 1\nx-b: 2\r\ncontent-length: 2\r\n\r\n{}`],
    ['a header without a colon', `POST ${CHAT} HTTP/1.1\r\nHost: x\r\nno colon here\r\ncontent-length: 2\r\n\r\n{}`],
    ['a NUL in a header value', `POST ${CHAT} HTTP/1.1\r\nHost: x\r\nx-a: a\x00b\r\ncontent-length: 2\r\n\r\n{}`],
    ['a space inside the request target', `POST /v1/chat/ completions HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\n\r\n{}`],
  ])('request smuggling shape (%s): refused with a 400 by the HTTP parser, nothing sent upstream', async (_name, request) => {
    hostile('malformed request');
    const r = await rawRequest(g.server.port, request);
    track(() => {
      expect(r.status).toBe(400);
      expect(upstream.seen).toHaveLength(0);
    });
  });
});

describe('invalid JSON', () => {
  // Documented behaviour: the middleware never parses the body; what the client sent is what the
  // upstream gets, byte for byte, with the client's Content-Type, and the upstream's answer
  // (typically its own 400) is relayed.
  test.each([
    ['truncated JSON', Buffer.from('{"model":"gpt-4o-mini","messages":[')],
    ['not JSON at all', Buffer.from('hello, upstream')],
    ['binary with NUL and invalid UTF-8', Buffer.from([0x7b, 0x00, 0xff, 0xfe, 0xc3, 0x28, 0x7d])],
    ['an empty body', Buffer.alloc(0)],
    [
      'JSON with a duplicate key and a 10 000-deep nesting',
      Buffer.from('{"a":1,"a":2,"n":' + '['.repeat(10_000) + ']'.repeat(10_000) + '}'),
    ],
  ])('%s: relayed to the upstream as is; its 400 relayed back', async (_name, body) => {
    hostile('invalid JSON');
    upstream.behaviour = (_req, res) =>
      json(res, 400, { error: { message: 'We could not parse the JSON body of your request.', type: 'invalid_request_error' } });
    const r = await send(g.url, { body, headers: { 'content-type': 'application/json' } });
    capture.response('invalid json', r);
    track(() => {
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body.toString()).error.message).toMatch(/could not parse/);
      expect(upstream.seen).toHaveLength(1);
      expect(upstream.seen[0]!.body.equals(body)).toBe(true);
      expect(upstream.seen[0]!.headers['content-type']).toBe('application/json');
      expect(g.states()).toEqual(['available', 'available', 'available']);
    });
  });

  test('with express.json() mounted before it: the parser answers 400 and the upstream is never contacted', async () => {
    hostile('invalid JSON behind express.json()');
    const parsed = await startGateway(upstream.url, { maxBodyBytes: LIMIT }, {}, (app) => app.use(express.json()));
    gateways.push(parsed);
    const r = await send(parsed.url, { body: '{"model":' });
    capture.response('express.json 400', r);
    track(() => {
      expect(r.status).toBe(400);
      expect(upstream.seen).toHaveLength(0);
      // The parser's own error went to Express's error handler; the middleware never ran.
      expect(parsed.errors).toEqual(['SyntaxError: Unexpected end of JSON input']);
    });
  });
});

describe('header injection through BYOK values', () => {
  const rejected: [string, string][] = [
    ['CR LF and a header, from the query', `?key=${encodeURIComponent('sk-byok-a\r\nX-Injected: 1')}`],
    ['a bare LF, from the query', `?key=${encodeURIComponent('sk-byok-a\nHost: 127.0.0.1')}`],
    ['a NUL, from the query', `?key=${encodeURIComponent('sk-byok-a\0b')}`],
    ['a space, from the query', `?key=${encodeURIComponent('sk-byok a')}`],
    ['a zero-width space, from the query', `?key=${encodeURIComponent('sk-byok-\u200ba')}`],
    ['non-ASCII letters, from the query', `?key=${encodeURIComponent('sk-ключ')}`],
    ['an empty value, from the query', '?key='],
    ['two values (an array), from the query', '?key=sk-byok-a&key=sk-byok-b'],
  ];

  test.each(rejected)('%s: 400 invalid_api_key, nothing sent upstream', async (_name, query) => {
    hostile('BYOK injection');
    const r = await send(g.url, { path: CHAT + query });
    capture.response('byok', r);
    track(() => {
      expect([r.status, errorCode(r.body)]).toEqual([400, 'invalid_api_key']);
      expect(upstream.seen).toHaveLength(0);
      expect(r.body.toString()).not.toMatch(/byok|X-Injected|ключ/);
    });
  });

  test.each([
    ['a tab inside the header value', 'x-openai-key: sk-byok-a\tb\r\n'],
    ['obs-text bytes inside the header value', 'x-openai-key: sk-byok-a\xff\xfeb\r\n'],
    ['a value that is only spaces', 'x-openai-key:    \r\n'],
  ])('%s: 400 invalid_api_key, nothing sent upstream', async (_name, header) => {
    hostile('BYOK injection');
    const r = await rawRequest(g.server.port, Buffer.from(post(CHAT, '{}', header), 'latin1'));
    track(() => {
      // Node trims the all-spaces value to '' (still refused); the others reach byok and are refused.
      expect([r.status, errorCode(r.body)]).toEqual([400, 'invalid_api_key']);
      expect(upstream.seen).toHaveLength(0);
    });
  });

  test('CR LF inside a header value never reaches byok: the HTTP parser splits or refuses it; whatever goes upstream is one Authorization line', async () => {
    hostile('BYOK injection');
    const r = await rawRequest(g.server.port, post(CHAT, '{}', 'x-openai-key: sk-byok-a\r\nX-Injected: 1\r\n'));
    track(() => {
      expect(r.status).toBe(200);
      expect(upstream.seen).toHaveLength(1);
      // The client sent two headers; the key is exactly the first, and the second is just a header.
      expect(upstream.seen[0]!.headers.authorization).toBe('Bearer sk-byok-a');
      expect(upstream.seen[0]!.rawHeaders.filter((h) => h.toLowerCase() === 'authorization')).toHaveLength(1);
    });
  });

  test('visible-ASCII look-alikes (%0d%0a, quotes, a 6 KiB key) are sent as one literal header value, never split', async () => {
    hostile('BYOK injection');
    const values = ['sk-byok-a%0d%0aX-Injected:1', 'sk-byok-"a",b;c=d', 'sk-' + 'k'.repeat(6 * 1024)];
    for (const value of values) {
      const r = await send(g.url, { headers: { 'x-openai-key': value } });
      expect(r.status).toBe(200);
    }
    track(() => {
      expect(upstream.seen.map((s) => s.headers.authorization)).toEqual(values.map((v) => `Bearer ${v}`));
      for (const s of upstream.seen) {
        expect(s.headers['x-injected']).toBeUndefined();
        expect(s.rawHeaders.filter((h) => h.toLowerCase() === 'authorization')).toHaveLength(1);
      }
      expect(g.states()).toEqual(['available', 'available', 'available']); // BYOK never touches the pool
    });
  });
});

describe('request headers that must not cross the gateway', () => {
  test('Host, hop-by-hop headers, Expect, Proxy-Authorization and the client Authorization do not reach the upstream', async () => {
    hostile('hop-by-hop headers');
    const plain = await startGateway(upstream.url);
    gateways.push(plain);
    const r = await rawRequest(
      plain.server.port,
      post(
        CHAT,
        '{"a":1}',
        `Host: 127.0.0.1:${decoy.port}\r\nauthorization: Bearer gateway-user-token\r\nproxy-authorization: Basic eDp5\r\n` +
          'x-hop: secret\r\nkeep-alive: timeout=5\r\nte: trailers\r\nupgrade: h2c\r\nx-forwarded-host: evil.invalid\r\n',
      ).replace('connection: close', 'connection: close, x-hop'),
    );
    track(() => {
      expect(r.status).toBe(200);
      const h = upstream.seen[0]!.headers;
      expect(h.host).toBe(`127.0.0.1:${upstream.port}`);
      expect(h.authorization).toBe(`Bearer ${KEYS[0]}`);
      for (const name of ['proxy-authorization', 'x-hop', 'keep-alive', 'te', 'upgrade', 'expect']) expect(h[name]).toBeUndefined();
      expect(decoy.seen).toHaveLength(0);
    });
  });

  test('Expect: 100-continue: the client gets its 100 and its answer; the upstream never sees Expect', async () => {
    hostile('expect 100-continue');
    const r = await new Promise<{ status: number; continued: boolean }>((resolve, reject) => {
      let continued = false;
      const req = http.request(g.url + CHAT, {
        method: 'POST',
        headers: { 'content-type': 'application/json', expect: '100-continue', 'content-length': 2 },
      });
      req.on('continue', () => {
        continued = true;
        req.end('{}');
      });
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode!, continued }));
      });
      req.on('error', reject);
    });
    track(() => {
      expect(r).toEqual({ status: 200, continued: true });
      expect(upstream.seen[0]!.headers.expect).toBeUndefined();
    });
  });
});

describe('path tricks', () => {
  // [request target, the upstream path it must produce, or null for "not intercepted"]
  const cases = (): [string, string | null][] => [
    ['/v1/chat/completions/../../admin', null],
    ['/v1/chat/completions/..', null],
    ['/v1/chat/completions/', null],
    ['/v1/./chat/completions', null],
    ['//v1/chat/completions', null],
    ['/V1/CHAT/COMPLETIONS', null],
    ['/v1/chat/completions%2F..%2F..%2Fadmin', null],
    ['/v1%2Fchat%2Fcompletions', null],
    ['/v1/chat/completions%00', null],
    ['/v1/chat/completions;x=1', null],
    ['/v1/chat/completions%3F/x', null],
    ['*', null],
    ['/v1/chat/completions?x=../../admin', '/v1/chat/completions?x=../../admin'],
    [`/v1/chat/completions?next=http://127.0.0.1:${decoy.port}/admin`, `/v1/chat/completions?next=http://127.0.0.1:${decoy.port}/admin`],
    [`/v1/chat/completions?@127.0.0.1:${decoy.port}/`, `/v1/chat/completions?@127.0.0.1:${decoy.port}/`],
    ['/v1/chat/completions#/../admin', '/v1/chat/completions'],
    [`http://127.0.0.1:${decoy.port}/v1/chat/completions`, '/v1/chat/completions'],
    [`http://127.0.0.1:${decoy.port}/v1/chat/completions?x=1`, '/v1/chat/completions?x=1'],
    [`http://user:pass@127.0.0.1:${decoy.port}/v1/responses`, '/v1/responses'],
    [`https://127.0.0.1:${decoy.port}/v1/chat/completions`, '/v1/chat/completions'],
    [`//127.0.0.1:${decoy.port}/v1/chat/completions`, null],
  ];

  test('no request target sends a request anywhere but the configured upstream, and none reaches another route', async () => {
    const outcomes: string[] = [];
    for (const [target, expected] of cases()) {
      hostile('path trick');
      upstream.seen.length = 0;
      const r = await rawRequest(g.server.port, post(target, '{}'));
      const seen = upstream.seen.map((s) => `${s.url} host=${s.headers.host}`);
      const expectedSeen = expected === null ? [] : [`${expected} host=127.0.0.1:${upstream.port}`];
      if (JSON.stringify(seen) !== JSON.stringify(expectedSeen) || (expected === null && r.status === 200)) {
        outcomes.push(`${target} -> ${r.status}, upstream saw ${JSON.stringify(seen)}, expected ${JSON.stringify(expectedSeen)}`);
      }
    }
    track(() => {
      expect(outcomes).toEqual([]);
      expect(decoy.seen).toHaveLength(0);
      expect(adminHits).toBe(0);
    });
  });

  test('CONNECT to another host is not tunnelled', async () => {
    hostile('path trick');
    const r = await rawRequest(g.server.port, `CONNECT 127.0.0.1:${decoy.port} HTTP/1.1\r\nHost: 127.0.0.1:${decoy.port}\r\n\r\n`, {
      ms: 1000,
    });
    await sleep(50);
    track(() => {
      expect(r.status).not.toBe(200);
      expect(decoy.server.listenerCount('connection')).toBeGreaterThan(0);
      expect(decoy.seen).toHaveLength(0);
      expect(upstream.seen).toHaveLength(0);
    });
  });

  test('mounted under a prefix with a target that has a path: tricks stay under both', async () => {
    const app = express();
    const mw = keyFailover({ target: `${upstream.url}/base`, pool: new KeyPool({ keys: KEYS.slice(0, 3) }), logger: false });
    app.use('/openai', mw);
    app.all('/admin', (_req, res) => {
      adminHits++;
      res.send('admin');
    });
    const server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const outcomes: string[] = [];
    try {
      for (const [target, expected] of [
        ['/openai/v1/chat/completions', '/base/v1/chat/completions'],
        ['/openai/../admin', null],
        ['/openai/../v1/chat/completions', null],
        ['/openai//v1/chat/completions', null],
        ['/openai/v1/chat/completions/../../../admin', null],
        ['/openai%2Fv1/chat/completions', null],
        [`http://127.0.0.1:${decoy.port}/openai/v1/chat/completions`, '/base/v1/chat/completions'],
      ] as [string, string | null][]) {
        hostile('path trick');
        upstream.seen.length = 0;
        const r = await rawRequest(port, post(target));
        const seen = upstream.seen.map((s) => s.url);
        if (JSON.stringify(seen) !== JSON.stringify(expected === null ? [] : [expected]) || (expected === null && r.status === 200)) {
          outcomes.push(`${target} -> ${r.status}, upstream saw ${JSON.stringify(seen)}`);
        }
      }
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await mw.close();
    }
    track(() => {
      expect(outcomes).toEqual([]);
      expect(decoy.seen).toHaveLength(0);
      expect(adminHits).toBe(0);
    });
  });
});

describe('keyPassthrough: a tenant reaching for the whole account', () => {
  let port = 0;
  let close: () => Promise<void> = async () => {};
  const errors: string[] = [];

  beforeAll(async () => {
    const app = express();
    const passthrough = keyPassthrough({
      target: upstream.url,
      pool: new KeyPool({ keys: KEYS.slice(0, 3) }),
      byok: byokFromHeaderOrQuery,
      logger: false,
    });
    app.use(passthrough);
    app.all('/admin', (_req, res) => {
      adminHits++;
      res.send('admin');
    });
    app.use(((error, _req, _res, next) => {
      errors.push(String(error));
      next(error);
    }) as express.ErrorRequestHandler);
    const server = await listen(app);
    port = server.port;
    close = async () => {
      await server.close();
      await passthrough.close();
    };
  });
  afterAll(() => close());

  const get = (target: string, method = 'GET', extra = ''): string =>
    `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${extra}connection: close\r\n\r\n`;

  test('methods the provider APIs do not have: 405 with Allow, never sent upstream, even to an upstream that echoes them', async () => {
    upstream.behaviour = (req, res) => {
      res.writeHead(200, { 'content-type': 'message/http' });
      res.end(`${req.method} ${req.url}\r\n${req.rawHeaders.join('\r\n')}`);
    };
    const outcomes: string[] = [];
    for (const method of [
      'TRACE',
      'PROPFIND',
      'PROPPATCH',
      'PURGE',
      'MKCOL',
      'LOCK',
      'UNLOCK',
      'COPY',
      'MOVE',
      'SEARCH',
      'REPORT',
      'LINK',
      'UNLINK',
      'MKCALENDAR',
      'SUBSCRIBE',
      'NOTIFY',
    ]) {
      hostile('passthrough method');
      const r = await rawRequest(port, get('/v1/models', method));
      capture.add(`passthrough ${method}`, Buffer.concat([Buffer.from(r.head), r.body]));
      if (r.status !== 405 || !/\r\nallow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n/i.test(`${r.head}\r\n`))
        outcomes.push(`${method} -> ${r.status}`);
    }
    track(() => {
      expect(outcomes).toEqual([]);
      expect(upstream.seen).toHaveLength(0);
    });
  });

  test('paths that resolve elsewhere, or reach the admin API: refused, nothing sent upstream or to another route', async () => {
    const refused: [string, number][] = [
      ['/v1/..\\..\\admin', 400],
      ['/v1\\..\\admin', 400],
      ['/v1/files\\..\\..\\..\\admin', 400],
      ['/v1/files%2f..%2f..%2fadmin', 400],
      ['/v1/files%2F..%2F..%2Fadmin', 400],
      ['/v1/files%5c..%5c..%5cadmin', 400],
      ['/v1/files%5C..%5Cadmin', 400],
      ['/v1/%2e%2e/admin', 400],
      ['/v1/.%2E/admin', 400],
      ['//127.0.0.1:9/v1/models', 400],
      ['/v1/files/%ff%fe%', 400],
      ['/v1/organization/users', 403],
      ['/v1/organization/admin_api_keys?limit=100', 403],
      ['/v1/organization', 403],
      ['/V1/ORGANIZATION/projects', 403],
      ['/v1//organization//users', 403],
      ['/v1/%6f%72%67anization/users', 403],
      ['/v1/organizations/api_keys', 403],
      [`http://127.0.0.1:${decoy.port}/v1/organization/users`, 403],
    ];
    const outcomes: string[] = [];
    for (const [target, expected] of refused) {
      hostile('passthrough path');
      upstream.seen.length = 0;
      const r = await rawRequest(port, get(target, 'GET', 'x-request-id: hostile\r\n'));
      capture.add(`passthrough ${target}`, Buffer.concat([Buffer.from(r.head), r.body]));
      const code = errorCode(r.body);
      const expectedCode = expected === 400 ? 'invalid_path' : 'path_not_allowed';
      if (r.status !== expected || code !== expectedCode || upstream.seen.length > 0 || !/\r\nx-should-retry: false/i.test(r.head)) {
        outcomes.push(`${target} -> ${r.status} ${code}, upstream saw ${upstream.seen.map((x) => x.url).join(' ')}`);
      }
    }
    track(() => {
      expect(outcomes).toEqual([]);
      expect(decoy.seen).toHaveLength(0);
      expect(adminHits).toBe(0);
      expect(errors).toEqual([]);
    });
  });

  test('method and path override headers do not travel; a client key in the query does not either', async () => {
    hostile('override headers');
    const r = await rawRequest(
      port,
      get(
        '/v1/models?key=sk-byok-query-000000000000&limit=1',
        'GET',
        'x-http-method-override: DELETE\r\nx-http-method: DELETE\r\nx-method-override: DELETE\r\nx-original-url: /v1/organization/users\r\nx-rewrite-url: /v1/organization/users\r\n',
      ),
    );
    track(() => {
      expect(r.status).toBe(200);
      expect(upstream.seen.map((x) => [x.method, x.url, x.key])).toEqual([['GET', '/v1/models?limit=1', 'sk-byok-query-000000000000']]);
      expect(upstream.seen[0]!.rawHeaders.join('\n')).not.toMatch(/override|x-http-method|original-url|rewrite-url/i);
    });
  });
});

describe('avoiding the 429: what one tenant could do to everyone else with the new rules', () => {
  const events: string[] = [];
  const watch = (pool: KeyPool): void => {
    for (const name of ['rateLimited', 'disabled', 'grouped', 'depleted', 'probe', 'affinity', 'exhausted'] as (keyof KeyPoolEvents)[]) {
      pool.on(name, (e: unknown) => void events.push(`${name} ${JSON.stringify(e)}`));
    }
  };
  afterAll(() => capture.add('avoid events', events.join('\n')));

  test('object ids: naming 2 000 made-up, oversized or malformed ids writes nothing; creating objects stays within maxObjects', async () => {
    const store = new MemoryKeyStateStore({ maxObjects: 50 });
    const gw = await startGateway(upstream.url, {}, { store, strategy: 'round-robin' });
    gateways.push(gw);
    watch(gw.pool);
    let made = 0;
    upstream.behaviour = (req, res) =>
      json(res, 200, {
        id: req.url.startsWith('/v1/responses') ? `resp_${(++made).toString(16).padStart(20, '0')}` : 'x',
        object: 'response',
      });
    for (let i = 0; i < 2000; i++) {
      hostile('named object');
      const id = i % 3 === 0 ? `resp_${i}`.padEnd(300, 'x') : i % 3 === 1 ? `resp_${i}"\\u0000;DROP` : `resp_made_up_${i}`;
      const r = await send(gw.url, {
        path: '/v1/responses',
        body: JSON.stringify({ model: 'gpt-4o', input: 'x', previous_response_id: id, store: false }),
      });
      if (i % 100 === 0) capture.response('named object', r);
    }
    track(() => expect(store.objectEntries()).toEqual([]));
    for (let i = 0; i < 200; i++) {
      hostile('created object');
      await send(gw.url, { path: '/v1/responses', body: JSON.stringify({ model: 'gpt-4o', input: `make ${i}` }) });
    }
    track(() => expect(store.objectEntries().length).toBe(50));
    // Another tenant's plain requests are not pinned to anything: they spread as the strategy says.
    upstream.reset();
    for (let i = 0; i < 6; i++) await send(gw.url);
    track(() => expect(new Set(upstream.seen.map((x) => x.keyId)).size).toBe(3));
  });

  test("groups: an upstream that echoes the request's key or the client's organization header teaches no group", async () => {
    const gw = await startGateway(upstream.url);
    gateways.push(gw);
    watch(gw.pool);
    upstream.behaviour = (req, res) =>
      json(
        res,
        200,
        { ok: true },
        { 'openai-organization': (req.headers['openai-organization'] as string | undefined) ?? `org-${req.key}` },
      );
    for (const org of ['org-attacker', undefined]) {
      hostile('group echo');
      const r = await send(gw.url, { headers: org === undefined ? {} : { 'openai-organization': org } });
      capture.response('group echo', r);
    }
    track(() => expect(gw.pool.snapshot().map((k) => k.group)).toEqual([undefined, undefined, undefined]));
  });

  test('remaining limits: a tenant exhausting 20 000 model names it made up sets the key aside for those only, within maxScopedStates', async () => {
    const gw = await startGateway(upstream.url, {}, { store: new MemoryKeyStateStore({ maxScopedStates: 500 }) });
    gateways.push(gw);
    watch(gw.pool);
    upstream.behaviour = (req, res) => {
      const own = !/gpt-4o-mini/.test(req.body.toString());
      json(res, 200, { ok: true }, own ? { 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': '59m0s' } : {});
    };
    for (let i = 0; i < 400; i++) {
      hostile('model flood');
      await send(gw.url, { body: JSON.stringify({ model: `made-up-${i}`, messages: [] }) });
    }
    for (let i = 0; i < 20_000; i++)
      gw.pool.lessons.markDepleted(gw.pool.walker().next()!, 60_000, `flood-${i}`, { limit: 'requests', remaining: 0 });
    const scoped = gw.pool.snapshot().reduce((n, k) => n + (k.models?.length ?? 0), 0);
    track(() => expect(scoped).toBeLessThanOrEqual(500));
    upstream.reset();
    const r = await send(gw.url);
    track(() => {
      expect(r.status).toBe(200);
      expect(upstream.seen.map((x) => x.keyId)).toEqual(['key-0']); // gpt-4o-mini was never set aside
    });
  });

  test('budget: a request every key refuses (403) costs maxAttempts upstream calls, however large the pool', async () => {
    const gw = await startGateway(upstream.url, { maxAttempts: 2 }, { keys: [...KEYS] });
    gateways.push(gw);
    watch(gw.pool);
    upstream.behaviour = (_req, res) =>
      json(res, 403, {
        error: {
          message: 'Country, region, or territory not supported',
          type: 'request_forbidden',
          code: 'unsupported_country_region_territory',
        },
      });
    for (let i = 0; i < 20; i++) {
      hostile('budget');
      const r = await send(gw.url);
      if (i === 0) capture.response('budget 403', r);
    }
    track(() => expect(upstream.seen).toHaveLength(40));
  });
});

describe('secrets', () => {
  test('nothing the hostile-input runs let out contains a pool key value', async () => {
    await until('nothing in flight', () => upstream.active === 0);
    capture.add('pool', JSON.stringify(gateways.map((x) => x.pool.snapshot())));
    capture.add('warnings', gateways.flatMap((x) => x.warnings).join('\n'));
    capture.add('errors', gateways.flatMap((x) => x.errors).join('\n'));
    const hits = capture.findKeys();
    (figures as Record<string, unknown>).secretScan = { items: capture.count, bytes: capture.bytes, hits: hits.length };
    expect(capture.count).toBeGreaterThan(30);
    expect(hits).toEqual([]);
  });
});
