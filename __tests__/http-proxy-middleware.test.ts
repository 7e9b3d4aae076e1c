import express, { type Express } from 'express';
import { createProxyMiddleware, type Options } from 'http-proxy-middleware';
import http from 'node:http';
import request from 'supertest';
import { KeyFailoverError, KeyPool, type KeyPoolOptions } from '../lib/index.js';
import { keyFailoverPlugin, type KeyFailoverPluginOptions } from '../lib/http-proxy-middleware.js';
import { FakeClock, K0, K1, K2, KEYS, listen, statesFor, useMockUpstream } from './support/gateway.js';
import { gate } from './support/client.js';
import { byKey, json, ok, status, type Behaviour } from './support/mock-upstream.js';
import { ORG, anthropic as anthropicAnswers, oneOrganization, openai } from './support/provider-answers.js';

/**
 * http-proxy-middleware 4, as a gateway already uses it, with the plugin:
 * `createProxyMiddleware({ target, changeOrigin: true, plugins: [keyFailoverPlugin()] })`
 * mounted under /openai, against the mock upstream on a real socket.
 */
const upstream = useMockUpstream();
const GATEWAY_TOKEN = 'gateway-user-token-hpm-000000000';
/** Everything a client or a log could see, scanned for key values at the end. */
const seenByClients: string[] = [];
const logged: string[] = [];
const logger = {
  info: (...args: unknown[]) => logged.push(args.join(' ')),
  warn: (...args: unknown[]) => logged.push(args.join(' ')),
  error: (...args: unknown[]) => logged.push(args.join(' ')),
};

function proxyGateway(
  pluginOptions: KeyFailoverPluginOptions = {},
  proxyOptions: Options = {},
  poolOptions: Partial<KeyPoolOptions> = {},
): { app: Express; pool: KeyPool; clock: FakeClock } {
  const clock = new FakeClock();
  const app = express();
  const pool = new KeyPool({ keys: [...KEYS], now: clock.now, cooldownJitter: 0, ...poolOptions }); // exact deadlines
  app.locals['keyPool'] = pool;
  const plugin = keyFailoverPlugin({ logger: { warn: (m) => logged.push(m) }, ...pluginOptions });
  app.use('/openai', createProxyMiddleware({ target: upstream.url, changeOrigin: true, logger, plugins: [plugin], ...proxyOptions }));
  app.use((_req, res) => void res.status(404).json({ fellThrough: true }));
  return { app, pool, clock };
}

/** A supertest response, recorded for the secret scan. */
function seen<T extends request.Response>(res: T): T {
  seenByClients.push(JSON.stringify({ status: res.status, headers: res.headers, body: res.text ?? res.body }));
  return res;
}

const models = (_req: unknown, res: http.ServerResponse) =>
  json(res, 200, { object: 'list', data: [{ id: 'gpt-4o', object: 'model' }] }, { 'openai-organization': ORG, 'x-request-id': 'req_1' });

describe('body-less requests fail over', () => {
  test('GET /v1/models: a 429 and a 401 fail over; the client credential, cookie and account headers never travel', async () => {
    const { app, pool } = proxyGateway();
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o', { 'retry-after': '30' }), [K1]: openai.invalidKey() }, models);

    const res = seen(
      await request(app)
        .get('/openai/v1/models?limit=2')
        .set('authorization', `Bearer ${GATEWAY_TOKEN}`)
        .set('cookie', 'session=s3cr3t')
        .set('openai-organization', 'org-client')
        .set('x-http-method-override', 'DELETE')
        .set('proxy-authorization', 'Basic Zm9vOmJhcg=='),
    );

    expect(res.status).toBe(200);
    expect(res.body.data[0].id).toBe('gpt-4o');
    expect(res.headers['openai-organization']).toBeUndefined(); // not relayed unless relayAccountHeaders
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
    for (const seenRequest of upstream.seen) {
      expect(seenRequest.url).toBe('/v1/models?limit=2');
      expect(seenRequest.headers.authorization).toBe(`Bearer ${seenRequest.key}`);
      expect(seenRequest.headers.host).toBe(new URL(upstream.url).host); // changeOrigin, as the proxy says
      for (const name of ['cookie', 'openai-organization', 'x-http-method-override', 'proxy-authorization']) {
        expect(seenRequest.headers[name]).toBeUndefined();
      }
      expect(JSON.stringify(seenRequest.headers)).not.toContain(GATEWAY_TOKEN);
    }
    // The model of a proxied request is not read: key-0 cools for this resource (/v1/models), not for everything.
    expect(statesFor(pool, '/v1/models')).toEqual(['cooling', 'disabled', 'available']);
  });

  test('every key rate-limited: the pool answers 429 with Retry-After; then nothing reaches the upstream', async () => {
    const { app } = proxyGateway();
    upstream.behaviour = openai.rateLimited('gpt-4o', { 'retry-after': '20' });

    const first = seen(await request(app).get('/openai/v1/models'));
    const second = seen(await request(app).get('/openai/v1/models'));

    for (const res of [first, second]) {
      expect(res.status).toBe(429);
      expect(res.headers['retry-after']).toBe('20');
      expect(res.body.error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limit_exceeded' });
    }
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
  });

  test('every key revoked: 502 all_keys_unauthorized', async () => {
    const { app, pool } = proxyGateway();
    upstream.behaviour = openai.invalidKey();

    const res = seen(await request(app).get('/openai/v1/models'));

    expect(res.status).toBe(502);
    expect(res.body.error.code).toBe('all_keys_unauthorized');
    expect(res.headers['x-should-retry']).toBe('false');
    expect(pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'disabled', 'disabled']);
  });

  test('an answer about the request (403) is skipped; the same from a second key is relayed as it is', async () => {
    const { app, pool } = proxyGateway();
    upstream.behaviour = oneOrganization(openai.modelNotAllowed());

    const res = seen(await request(app).get('/openai/v1/models/gpt-4o'));

    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe('model_not_found');
    expect(upstream.keysSeen()).toEqual([K0, K1]); // one account: a third key would say the same
    expect(pool.snapshot().every((k) => k.state === 'available')).toBe(true);
  });

  test('DELETE fails over too; the proxy option `headers` keeps its other headers, its static key is replaced', async () => {
    // allow: the operator lets tenants reach the account's stored objects (refused by default).
    const { app } = proxyGateway(
      { allow: '/' },
      { headers: { Authorization: 'Bearer sk-static-key-of-the-old-proxy-0000', 'x-team': 'a' } },
    );
    upstream.behaviour = byKey({ [K0]: status(429) }, ok({ deleted: true }));

    const res = seen(await request(app).delete('/openai/v1/files/file-1'));

    expect(res.status).toBe(200);
    expect(upstream.seen.map((r) => [r.method, r.key, r.headers['x-team']])).toEqual([
      ['DELETE', K0, 'a'],
      ['DELETE', K1, 'a'],
    ]);
    expect(JSON.stringify(upstream.seen.map((r) => r.headers))).not.toContain('sk-static-key');
  });

  test('HEAD fails over and is answered without a body', async () => {
    const { app } = proxyGateway({ allow: '/' });
    upstream.behaviour = byKey({ [K0]: status(429) }, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '42' });
      res.end();
    });

    const res = seen(await request(app).head('/openai/v1/files/file-1'));

    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe('42');
    expect(upstream.seen.map((r) => [r.method, r.key])).toEqual([
      ['HEAD', K0],
      ['HEAD', K1],
    ]);
  });

  test('pathRewrite and a target with a base path are applied as the proxy says', async () => {
    const { app } = proxyGateway({}, { target: `${upstream.url}/openai`, pathRewrite: { '^/api/': '/v1/' } });
    upstream.behaviour = byKey({ [K0]: status(429) }, models);

    expect(seen(await request(app).get('/openai/api/models')).status).toBe(200);
    expect(upstream.seen.map((r) => r.url)).toEqual(['/openai/v1/models', '/openai/v1/models']);
  });

  test('a walk over twelve keys raises no listener-leak warning', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    const keys = Array.from({ length: 12 }, (_, i) => `sk-test-many-${String(i).padStart(2, '0')}-000000000000`);
    const { app } = proxyGateway({}, {}, { keys });
    upstream.behaviour = byKey({ [keys[11]!]: models }, status(429));

    const res = seen(await request(app).get('/openai/v1/models'));
    await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', onWarning);

    expect(res.status).toBe(200);
    expect(upstream.seen).toHaveLength(12);
    expect(warnings).not.toContain('MaxListenersExceededWarning');
  });
});

describe('requests with a body are sent once', () => {
  const chat = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };

  test('a POST is streamed to the first key; its 429 is relayed as the upstream sent it, and the key cools for the next request', async () => {
    const { app, pool } = proxyGateway();
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '30' }) }, ok({ id: 'chatcmpl-2' }));

    const first = seen(await request(app).post('/openai/v1/chat/completions').set('authorization', `Bearer ${GATEWAY_TOKEN}`).send(chat));
    const second = seen(await request(app).post('/openai/v1/chat/completions').send(chat));

    expect(first.status).toBe(429);
    expect(first.body.error.code).toBe('rate_limit_exceeded');
    expect(first.headers['retry-after']).toBe('30');
    expect(second.status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(upstream.seen.map((r) => JSON.parse(r.body.toString()))).toEqual([chat, chat]);
    expect(statesFor(pool, '/v1/chat')).toEqual(['cooling', 'available', 'available']); // its resource, the model unread
    expect(statesFor(pool, '/v1/models')).toEqual(['available', 'available', 'available']);
  });

  test('an unrecognised 401 on a request sent once marks nothing (no second key can confirm it)', async () => {
    const { app, pool } = proxyGateway();
    upstream.behaviour = openai.unknown401();

    const res = seen(await request(app).post('/openai/v1/embeddings').send({ model: 'text-embedding-3-small', input: 'x' }));

    expect(res.status).toBe(401);
    expect(pool.snapshot().every((k) => k.state === 'available')).toBe(true);
  });

  test('an SSE answer is relayed as it arrives', async () => {
    const { app } = proxyGateway();
    const server = await listen(app);
    const first = gate('first chunk at the client');
    upstream.behaviour = async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n');
      await first.promise;
      res.end('data: [DONE]\n\n');
    };

    const chunks: string[] = [];
    const statusCode = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        `${server.url}/openai/v1/chat/completions`,
        { method: 'POST', headers: { 'content-type': 'application/json' } },
        (res) => {
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            chunks.push(chunk);
            first.open();
          });
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ ...chat, stream: true }));
    });
    await server.close();

    expect(statusCode).toBe(200);
    expect(chunks.length).toBeGreaterThanOrEqual(2);
    expect(chunks.join('')).toBe('data: {"choices":[{"delta":{"content":"Hel"}}]}\n\ndata: [DONE]\n\n');
  });

  test('no key left: the body is drained and the pool answers', async () => {
    const { app, pool } = proxyGateway();
    for (const id of pool.ids()) pool.markDisabled(id);

    const res = seen(await request(app).post('/openai/v1/files').send({ purpose: 'batch' }));

    expect(res.status).toBe(502);
    expect(upstream.seen).toEqual([]);
  });

  test('both paths report attempts to the pool (metrics, tracing)', async () => {
    const { app, pool } = proxyGateway();
    const attempts: unknown[] = [];
    pool.on('attempt', ({ id, attempt, outcome, status: code }) => attempts.push([id, attempt, outcome, code]));
    upstream.behaviour = byKey({ [K0]: status(429) }, ok());

    await request(app).get('/openai/v1/models');
    await request(app).post('/openai/v1/chat/completions').send(chat);

    expect(attempts).toEqual([
      ['key-0', 1, 'cooldown', 429],
      ['key-1', 2, 'relayed', 200],
      ['key-0', 1, 'cooldown', 429], // key-0 cools for /v1/models only: the POST goes to it, and is refused
    ]);
  });
});

describe('network errors are answered as the proxy answers them', () => {
  const reset: Behaviour = (_req, res) => {
    res.socket!.destroy();
  };

  test("by http-proxy-middleware's error response (504 for a reset); no key marked, no other key tried", async () => {
    const { app, pool } = proxyGateway();
    upstream.behaviour = reset;

    const res = seen(await request(app).get('/openai/v1/models'));

    expect(res.status).toBe(504);
    expect(res.text).toMatch(/^Error occurred while trying to proxy/);
    expect(upstream.seen).toHaveLength(1);
    expect(pool.snapshot().every((k) => k.state === 'available')).toBe(true);
  });

  test('an on.error that writes nothing: the plugin answers 502 in the provider shape', async () => {
    const errors: string[] = [];
    const { app } = proxyGateway({}, { on: { error: (error) => void errors.push((error as NodeJS.ErrnoException).code ?? '') } });
    upstream.behaviour = reset;

    const res = seen(await request(app).get('/openai/v1/models'));

    expect(res.status).toBe(502);
    expect(res.body.error.code).toBe('upstream_unreachable');
    expect(errors).toEqual(['ECONNRESET']);
  });

  test("the proxy's proxyTimeout: its 504, no key marked, no other key tried", async () => {
    const { app, pool } = proxyGateway({}, { proxyTimeout: 100 });
    upstream.behaviour = () => undefined; // never answers

    const res = seen(await request(app).get('/openai/v1/models'));

    expect(res.status).toBe(504);
    expect(upstream.seen).toHaveLength(1);
    expect(pool.snapshot().every((k) => k.state === 'available')).toBe(true);
  });

  test('a WebSocket upgrade wired by hand (proxy.upgrade) is refused: the socket is closed, nothing reaches the upstream', async () => {
    const app = express();
    app.locals['keyPool'] = new KeyPool([K0]);
    const proxy = createProxyMiddleware({ target: upstream.url, plugins: [keyFailoverPlugin({ logger: false })] });
    app.use(proxy);
    const server = http.createServer(app);
    server.on('upgrade', proxy.upgrade);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };

    const outcome = await new Promise<string>((resolve) => {
      const req = http.request({
        host: '127.0.0.1',
        port,
        path: '/v1/realtime',
        headers: { connection: 'Upgrade', upgrade: 'websocket', authorization: `Bearer ${GATEWAY_TOKEN}` },
      });
      req.on('upgrade', () => resolve('upgraded'));
      req.on('response', (res) => resolve(`answered ${res.statusCode}`));
      req.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
      req.end();
    });
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));

    expect(outcome).toBe('ECONNRESET');
    expect(upstream.seen).toEqual([]);
  });

  test('a client that leaves aborts the upstream request and marks no key', async () => {
    const { app, pool } = proxyGateway();
    const server = await listen(app);
    const started = gate('upstream request started');
    upstream.behaviour = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {}\n\n');
      started.open();
    };
    const req = http.request(`${server.url}/openai/v1/models`);
    req.on('error', () => undefined);
    req.on('response', (res) => res.once('data', () => req.destroy()));
    req.end();
    await started.promise;
    for (let i = 0; i < 100 && upstream.aborted.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    await server.close();

    expect(upstream.aborted).toHaveLength(1);
    expect(pool.snapshot().every((k) => k.state === 'available')).toBe(true);
  });
});

describe('refused before any key is used', () => {
  test.each([
    ['TRACE', '/openai/v1/models', 405, 'method_not_allowed'],
    ['PROPFIND', '/openai/v1/models', 405, 'method_not_allowed'],
    ['GET', '/openai/v1/organization/admin_api_keys', 403, 'path_not_allowed'],
    ['GET', '/openai/v1//%6Frganization/users', 403, 'path_not_allowed'],
    ['GET', '/openai/v1/..%2f..%2fadmin', 400, 'invalid_path'],
    ['GET', '/openai/v1/models/..\\..\\admin', 400, 'invalid_path'],
    ['GET', '/openai/v1/%2e%2e/admin', 400, 'invalid_path'],
  ])('%s %s: %i %s, nothing sent', async (method, path, code, errorCode) => {
    const { app } = proxyGateway();
    const server = await listen(app);
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(server.url, { method, path }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    await server.close();
    seenByClients.push(JSON.stringify(answer));

    expect(answer.status).toBe(code);
    expect(JSON.parse(answer.body).error.code).toBe(errorCode);
    expect(upstream.seen).toEqual([]);
  });

  test('allow: only the listed paths get a pool key', async () => {
    const { app } = proxyGateway({ allow: ['/v1/models'] });
    upstream.behaviour = models;

    expect(seen(await request(app).get('/openai/v1/models')).status).toBe(200);
    expect(seen(await request(app).get('/openai/v1/files')).status).toBe(403);
    expect(upstream.seen.map((r) => r.url)).toEqual(['/v1/models']);
  });

  test('no pool: 500, logged once with its code', async () => {
    const warnings: string[] = [];
    const app = express();
    app.use(
      '/openai',
      createProxyMiddleware({ target: upstream.url, plugins: [keyFailoverPlugin({ logger: { warn: (m) => warnings.push(m) } })] }),
    );

    const res = seen(await request(app).get('/openai/v1/models'));
    await request(app).get('/openai/v1/models');

    expect(res.status).toBe(500);
    expect(res.body.error.code).toBe('gateway_misconfigured');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/ERR_EKF_NO_POOL/);
    expect(upstream.seen).toEqual([]);
  });
});

describe('options', () => {
  test.each([
    [{ followRedirects: true }, /option "followRedirects" cannot be used with it: a redirect would take the pool key/],
    [{ selfHandleResponse: true }, /option "selfHandleResponse" cannot be used with it/],
    [{ ws: true }, /option "ws" cannot be used with it: WebSocket upgrades/],
    [{ forward: 'http://127.0.0.1:9' }, /option "forward" cannot be used with it/],
    [{ cookieDomainRewrite: 'example.com' }, /option "cookieDomainRewrite" cannot be used with it/],
    [{ ignorePath: true }, /option "ignorePath" cannot be used with it/],
  ] as [Options, RegExp][])('http-proxy-middleware %p is refused at creation', (proxyOptions, message) => {
    const make = () => createProxyMiddleware({ target: upstream.url, plugins: [keyFailoverPlugin()], ...proxyOptions });
    expect(make).toThrow(KeyFailoverError);
    expect(make).toThrow(message);
  });

  test.each([
    [{ target: 'https://x' }, /keyFailoverPlugin\(\): unknown option "target"/],
    [{ failover: { 429: 'retry' } }, /option "failover" maps 429 to "retry"/],
    [{ deny: 'v1/x' }, /option "deny" must be a path prefix/],
    [{ pool: [K0] }, /option "pool" must be a KeyPool/],
  ])('keyFailoverPlugin(%p) throws naming the option', (options, message) => {
    expect(() => keyFailoverPlugin(options as never)).toThrow(KeyFailoverError);
    expect(() => keyFailoverPlugin(options as never)).toThrow(message);
  });

  test('relayAccountHeaders: true relays openai-organization', async () => {
    const { app } = proxyGateway({ relayAccountHeaders: true });
    upstream.behaviour = models;
    expect((await request(app).get('/openai/v1/models')).headers['openai-organization']).toBe(ORG);
  });

  test("anthropic: the pool key in x-api-key, the client's x-api-key and bearer token dropped", async () => {
    const { app, pool } = proxyGateway({ provider: 'anthropic' });
    upstream.behaviour = byKey({ [K0]: anthropicAnswers.rateLimited() }, ok({ type: 'model' }));

    const res = seen(
      await request(app)
        .get('/openai/v1/models/claude-sonnet-4-5')
        .set('x-api-key', GATEWAY_TOKEN)
        .set('authorization', `Bearer ${GATEWAY_TOKEN}`)
        .set('anthropic-version', '2023-06-01'),
    );

    expect(res.status).toBe(200);
    expect(upstream.seen.map((r) => [r.headers['x-api-key'], r.headers.authorization, r.headers['anthropic-version']])).toEqual([
      [K0, undefined, '2023-06-01'],
      [K1, undefined, '2023-06-01'],
    ]);
    expect(statesFor(pool, '/v1/models')[0]).toBe('cooling');
  });

  test('Expect: 100-continue is not forwarded, and the request still gets its pool key', async () => {
    const { app } = proxyGateway();
    const server = await listen(app);
    upstream.behaviour = models;
    const statusCode = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${server.url}/openai/v1/models`, {
        headers: { expect: '100-continue', authorization: `Bearer ${GATEWAY_TOKEN}` },
      });
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
    await server.close();

    expect(statusCode).toBe(200);
    expect(upstream.seen.map((r) => [r.key, r.headers.expect])).toEqual([[K0, undefined]]);
  });

  test('one plugin in two proxies: each server is wrapped once, both get keys', async () => {
    const app = express();
    app.locals['keyPool'] = new KeyPool([K0]);
    const plugin = keyFailoverPlugin({ logger: false });
    app.use('/a', createProxyMiddleware({ target: upstream.url, plugins: [plugin] }));
    app.use('/b', createProxyMiddleware({ target: upstream.url, plugins: [plugin] }));
    upstream.behaviour = models;

    expect((await request(app).get('/a/v1/models')).status).toBe(200);
    expect((await request(app).get('/b/v1/models')).status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K0]);
  });
});

test('no key value in any answer, header or log line of this file', () => {
  expect(seenByClients.length).toBeGreaterThan(20);
  const everything = [...seenByClients, ...logged].join('\n');
  for (const key of KEYS) {
    expect(everything).not.toContain(key);
    expect(everything).not.toContain(key.slice(3)); // without its "sk-" prefix
  }
  expect(logged.some((line) => line.startsWith('[HPM]'))).toBe(true); // the proxy's own logger did log
});
