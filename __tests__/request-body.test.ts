import { randomBytes } from 'node:crypto';
import http from 'node:http';
import express from 'express';
import request from 'supertest';
import { keyFailover, KeyPool } from '../lib/index.js';
import { CHAT, K0, K1, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { byKey, json, ok, status } from './support/mock-upstream.js';

const upstream = useMockUpstream();

test('a body of several MB reaches k1 byte-identical to what k0 got, with the right Content-Length', async () => {
  const { app } = gateway(upstream.url);
  const body = randomBytes(6 * 1024 * 1024);
  upstream.behaviour = byKey({ [K0]: status(429) }, ok());

  const res = await request(app).post(CHAT).set('content-type', 'application/octet-stream').send(body);

  expect(res.status).toBe(200);
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  for (const seen of upstream.seen) {
    expect(seen.body.equals(body)).toBe(true);
    expect(seen.headers['content-length']).toBe(String(body.length));
    expect(seen.headers['transfer-encoding']).toBeUndefined();
  }
});

test('a chunked body (no Content-Length) is sent upstream with its length', async () => {
  const { app } = gateway(upstream.url);
  const server = await listen(app);
  const status = await new Promise<number | undefined>((resolve, reject) => {
    const req = http.request(server.url + CHAT, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
    req.write('{"model":"gpt-4o-mini",');
    req.end('"messages":[]}');
  });
  await server.close();

  expect(status).toBe(200);
  expect(upstream.seen[0]!.body.toString()).toBe('{"model":"gpt-4o-mini","messages":[]}');
  expect(upstream.seen[0]!.headers['content-length']).toBe('37');
});

test("the client's Authorization and cookies never reach the upstream; hop-by-hop headers are dropped both ways", async () => {
  const { app } = gateway(upstream.url);
  const server = await listen(app);
  upstream.behaviour = (_req, res) =>
    json(res, 200, { ok: true }, { connection: 'x-hop-response', 'x-hop-response': '1', 'proxy-authenticate': 'Basic', 'x-kept': 'yes' });

  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http
      .request(
        server.url + CHAT,
        {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            authorization: 'Bearer gateway-user-token',
            cookie: 'gateway_session=s3cr3t',
            connection: 'keep-alive, x-hop-request',
            'x-hop-request': '1',
            'proxy-authorization': 'Basic abc',
            te: 'trailers',
            'x-custom': 'passes',
          },
        },
        (r) => {
          r.resume();
          r.on('end', () => resolve(r));
        },
      )
      .on('error', reject)
      .end(JSON.stringify(chatBody));
  });
  await server.close();

  expect(res.statusCode).toBe(200);
  expect(res.headers['x-kept']).toBe('yes');
  expect(res.headers['x-hop-response']).toBeUndefined();
  expect(res.headers['proxy-authenticate']).toBeUndefined();
  const seen = upstream.seen[0]!.headers;
  expect(seen.authorization).toBe(`Bearer ${K0}`);
  expect(JSON.stringify(seen)).not.toContain('gateway-user-token');
  expect(seen.cookie).toBeUndefined();
  expect(seen['x-custom']).toBe('passes');
  expect(seen['x-hop-request']).toBeUndefined();
  expect(seen['proxy-authorization']).toBeUndefined();
  expect(seen.te).toBeUndefined();
  expect(seen.host).toBe(new URL(upstream.url).host);
});

describe('with a body parser in front', () => {
  test('express.json(): the body is rebuilt from req.body as JSON, Content-Length recomputed', async () => {
    const { app } = gateway(upstream.url, {}, {}, (a) => a.use(express.json()));
    upstream.behaviour = byKey({ [K0]: status(429) }, ok());

    const raw = '{ "model" : "gpt-4o-mini",\n  "messages": [ {"role":"user","content":"héllo"} ] }';
    const res = await request(app).post(CHAT).set('content-type', 'application/json').send(raw);

    expect(res.status).toBe(200);
    const expected = JSON.stringify(JSON.parse(raw));
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    for (const seen of upstream.seen) {
      expect(seen.body.toString()).toBe(expected);
      expect(seen.headers['content-length']).toBe(String(Buffer.byteLength(expected)));
      expect(seen.headers['content-type']).toBe('application/json');
    }
  });

  test('express.raw(): the Buffer in req.body is sent as is', async () => {
    const { app } = gateway(upstream.url, {}, {}, (a) => a.use(express.raw({ type: '*/*' })));
    const body = '{"model":"x",   "messages":[]}';
    await request(app).post(CHAT).set('content-type', 'application/json').send(body);
    expect(upstream.seen[0]!.body.toString()).toBe(body);
    expect(upstream.seen[0]!.headers['content-length']).toBe(String(body.length));
  });

  test('express.json() that did not match the content type leaves the stream for us to read', async () => {
    const { app } = gateway(upstream.url, {}, {}, (a) => a.use(express.json()));
    await request(app).post(CHAT).set('content-type', 'text/plain').send('plain text body');
    expect(upstream.seen[0]!.body.toString()).toBe('plain text body');
  });

  test('a parser that consumed the body and left nothing: 500 naming the problem, logged once', async () => {
    const warnings: string[] = [];
    const app = express();
    app.locals['keyPool'] = new KeyPool([K0, K1]);
    app.use((req, _res, next) => {
      req.resume();
      req.on('end', () => next());
    });
    const middleware = keyFailover({ target: upstream.url, logger: { warn: (m) => warnings.push(m) } });
    app.use(middleware);

    const first = await request(app).post(CHAT).send(chatBody);
    await request(app).post(CHAT).send(chatBody);
    await middleware.close();

    expect(first.status).toBe(500);
    expect(first.body.error.message).toMatch(/body parser consumed it/);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/ERR_EKF_BODY_CONSUMED/);
    expect(upstream.seen).toHaveLength(0);
  });
});

describe('body size limit', () => {
  test('a declared Content-Length over maxBodyBytes: 413 in OpenAI shape, upstream never contacted', async () => {
    const { app } = gateway(upstream.url, { maxBodyBytes: 1024 });
    const res = await request(app).post(CHAT).set('content-type', 'application/json').send('x'.repeat(4096));
    expect(res.status).toBe(413);
    expect(res.body).toEqual({
      error: {
        message: "The request body is larger than the gateway's limit of 1024 bytes.",
        type: 'invalid_request_error',
        param: null,
        code: 'request_too_large',
      },
    });
    expect(upstream.seen).toHaveLength(0);
  });

  test('a chunked body that grows past the limit: 413, upstream never contacted', async () => {
    const { app } = gateway(upstream.url, { maxBodyBytes: 100_000 });
    const server = await listen(app);
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const req = http.request(server.url + CHAT, { method: 'POST' }, (res) => {
        res.resume();
        resolve(res.statusCode);
      });
      req.on('error', reject);
      for (let i = 0; i < 30; i++) req.write(Buffer.alloc(10_000, 120));
      req.end();
    });
    await server.close();
    expect(status).toBe(413);
    expect(upstream.seen).toHaveLength(0);
  });

  test('a body exactly at the limit passes', async () => {
    const { app } = gateway(upstream.url, { maxBodyBytes: 2048 });
    const res = await request(app).post(CHAT).set('content-type', 'text/plain').send('y'.repeat(2048));
    expect(res.status).toBe(200);
    expect(upstream.seen[0]!.body.length).toBe(2048);
  });
});
