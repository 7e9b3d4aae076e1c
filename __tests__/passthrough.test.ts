import { randomBytes } from 'node:crypto';
import http from 'node:http';
import express, { type Express } from 'express';
import request from 'supertest';
import { keyFailover, keyPassthrough, KeyPool, type KeyFailoverMiddleware } from '../lib/index.js';
import { FakeClock, K0, K1, K2, KEYS, listen, statesFor } from './support/gateway.js';
import { gate } from './support/client.js';
import { MockUpstream, byKey, json, ok, status } from './support/mock-upstream.js';

let upstream: MockUpstream;
const opened: KeyFailoverMiddleware[] = [];
beforeAll(async () => {
  upstream = await MockUpstream.start();
});
afterEach(() => upstream.reset());
afterAll(async () => {
  await Promise.all(opened.map((m) => m.close()));
  await upstream.close();
});

/** The usual mount: failover for the model calls, passthrough for the rest of the API. */
function app(options: Parameters<typeof keyPassthrough>[0] = {}, setup?: (a: Express) => void): { app: Express; pool: KeyPool } {
  const clock = new FakeClock();
  const a = express();
  const pool = new KeyPool({ keys: [...KEYS], now: clock.now });
  a.locals['keyPool'] = pool;
  setup?.(a);
  const failover = keyFailover({ target: upstream.url, logger: false });
  const passthrough = keyPassthrough({ target: upstream.url, logger: false, ...options });
  opened.push(failover, passthrough);
  a.use(failover, passthrough);
  return { app: a, pool };
}

test('GET /v1/models fails over like an intercepted route and marks keys', async () => {
  const { app: a, pool } = app();
  upstream.behaviour = byKey({ [K0]: status(429, { 'retry-after': '5' }), [K1]: status(401) }, ok({ data: [{ id: 'gpt-4o' }] }));

  const res = await request(a).get('/v1/models?limit=2').set('authorization', 'Bearer gateway-user-token');

  expect(res.status).toBe(200);
  expect(res.body).toEqual({ data: [{ id: 'gpt-4o' }] });
  expect(upstream.seen.map((r) => [r.method, r.url, r.key])).toEqual([
    ['GET', '/v1/models?limit=2', K0],
    ['GET', '/v1/models?limit=2', K1],
    ['GET', '/v1/models?limit=2', K2],
  ]);
  // No model to read: the 429 cools key-0 for this resource (/v1/models), not for the model calls.
  expect(statesFor(pool, '/v1/models')).toEqual(['cooling', 'disabled', 'available']);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'disabled', 'available']);
});

test('DELETE fails over on 403; the same 403 from a second key is relayed', async () => {
  const { app: a, pool } = app({ allow: '/' }); // the operator allows the account's stored objects
  upstream.behaviour = status(403, {}, { error: { message: 'not yours' } });

  const res = await request(a).delete('/v1/files/file-abc');

  expect(res.status).toBe(403);
  expect(res.body).toEqual({ error: { message: 'not yours' } });
  expect(upstream.seen.map((r) => [r.method, r.url])).toEqual([
    ['DELETE', '/v1/files/file-abc'],
    ['DELETE', '/v1/files/file-abc'],
  ]);
  expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
});

test('a POST with a body is streamed once with the first available key; its 429 still cools that key', async () => {
  const { app: a, pool } = app();
  upstream.behaviour = byKey({ [K0]: status(429, { 'retry-after': '20' }, { error: 'limited' }) }, ok({ object: 'list' }));

  const first = await request(a).post('/v1/embeddings').send({ input: 'hello', model: 'text-embedding-3-small' });
  expect(first.status).toBe(429);
  expect(first.body).toEqual({ error: 'limited' });
  expect(statesFor(pool, '/v1/embeddings')).toEqual(['cooling', 'available', 'available']); // its route, not the whole key
  expect(pool.snapshot()[0]!.state).toBe('available');

  const second = await request(a).post('/v1/embeddings').send({ input: 'hello', model: 'text-embedding-3-small' });
  expect(second.status).toBe(200);
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  for (const seen of upstream.seen) expect(JSON.parse(seen.body.toString())).toEqual({ input: 'hello', model: 'text-embedding-3-small' });
});

test('a large chunked upload is streamed to the upstream, not buffered, and arrives intact', async () => {
  const { app: a } = app();
  const server = await listen(a);
  const body = randomBytes(5 * 1024 * 1024);
  const started = gate('the upload to reach the upstream before the client finished sending it');
  upstream.onRequestStart = started.open;
  upstream.behaviour = (req, res) => json(res, 200, { bytes: req.body.length, sha: req.body.equals(body) });

  const answer = await new Promise<string>((resolve, reject) => {
    const req = http.request(
      server.url + '/v1/files',
      { method: 'POST', headers: { 'content-type': 'application/octet-stream' } },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve(text));
      },
    );
    req.on('error', reject);
    req.write(body.subarray(0, 256 * 1024));
    // The rest goes only once the upstream saw the request: a buffering proxy would deadlock here.
    void started.promise.then(() => req.end(body.subarray(256 * 1024)), reject);
  });
  await server.close();

  expect(JSON.parse(answer)).toEqual({ bytes: body.length, sha: true });
  expect(upstream.seen[0]!.headers['transfer-encoding']).toBe('chunked');
  expect(upstream.keysSeen()).toEqual([K0]);
});

test('after a body parser ran, the body is rebuilt and fails over', async () => {
  const { app: a } = app({}, (x) => x.use(express.json()));
  upstream.behaviour = byKey({ [K0]: status(429) }, ok());

  const res = await request(a).post('/v1/embeddings').send({ input: 'x' });

  expect(res.status).toBe(200);
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  expect(upstream.seen.map((r) => r.body.toString())).toEqual(['{"input":"x"}', '{"input":"x"}']);
});

test('pool exhausted: the provider-shaped 429, upstream not contacted', async () => {
  const { app: a, pool } = app();
  for (const id of ['key-0', 'key-1', 'key-2']) pool.markRateLimited(id, 4_000);
  const get = await request(a).get('/v1/models');
  const post = await request(a).post('/v1/embeddings').send({ input: 'x' });
  for (const res of [get, post]) {
    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('4');
    expect(res.body.error.code).toBe('rate_limit_exceeded');
  }
  expect(upstream.seen).toHaveLength(0);
});

test('dot segments in the path are refused; the upstream is never contacted', async () => {
  const { app: a } = app();
  const server = await listen(a);
  const port = new URL(server.url).port;
  const statuses: (number | undefined)[] = [];
  for (const path of ['/v1/../admin', '/v1/%2e%2e/admin', '/v1/./models', '/v1/files/%2E%2E']) {
    statuses.push(
      await new Promise((resolve, reject) =>
        http
          .request({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
            res.resume();
            resolve(res.statusCode);
          })
          .on('error', reject)
          .end(),
      ),
    );
  }
  await server.close();
  expect(statuses).toEqual([400, 400, 400, 400]);
  expect(upstream.seen).toHaveLength(0);
});

test('anthropic passthrough: x-api-key, Anthropic envelope', async () => {
  const { app: a, pool } = app({ provider: 'anthropic' });
  upstream.behaviour = byKey({ [K0]: status(401) }, ok({ data: [] }));
  const res = await request(a).get('/v1/models').set('x-api-key', 'gateway-user-token');
  expect(res.status).toBe(200);
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  expect(upstream.seen[1]!.headers['x-api-key']).toBe(K1);
  pool.markDisabled('key-1');
  pool.markDisabled('key-2');
  const exhausted = await request(a).get('/v1/models');
  expect(exhausted.status).toBe(502);
  expect(exhausted.body).toEqual({
    type: 'error',
    error: { type: 'api_error', message: 'All configured keys failed authentication with the upstream.' },
  });
});

test('keyPassthrough rejects options it does not take', () => {
  expect(() => keyPassthrough({ maxBodyBytes: 10 } as never)).toThrow(/keyPassthrough\(\): unknown option "maxBodyBytes"/);
});
