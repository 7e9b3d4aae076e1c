import type { Express } from 'express';
import http from 'node:http';
import request from 'supertest';
import { CHAT, K0, K1, K2, KEYS, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { byKey, ok, status } from './support/mock-upstream.js';
import { openai, organizationOf } from './support/provider-answers.js';

/** When key `index` stops cooling for the request's model (gpt-4o-mini), or undefined. */
const modelCooldown = (pool: { snapshot(): { models?: { model: string; cooldownUntil: number }[] }[] }, index: number) =>
  pool.snapshot()[index]!.models?.find((m) => m.model === chatBody.model)?.cooldownUntil;

const upstream = useMockUpstream();

const post = (app: Express, path = CHAT) => request(app).post(path).set('authorization', 'Bearer gateway-user-token').send(chatBody);

describe('walking the pool', () => {
  test('a single valid key: the answer is relayed and the pool is untouched', async () => {
    const { app, pool } = gateway(upstream.url);
    upstream.behaviour = ok({ id: 'chatcmpl-42' });

    const res = await post(app);

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ id: 'chatcmpl-42' });
    expect(upstream.keysSeen()).toEqual([K0]);
    expect(upstream.seen[0]!.url).toBe(CHAT);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('the responses route is intercepted too', async () => {
    const { app } = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: status(429) }, ok({ object: 'response' }));

    const res = await post(app, '/v1/responses');

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ object: 'response' });
    expect(upstream.seen.map((r) => [r.url, r.key])).toEqual([
      ['/v1/responses', K0],
      ['/v1/responses', K1],
    ]);
  });

  test('429 on k0: k0 cools down for the request model, k1 answers', async () => {
    const { app, pool, clock } = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '20' }) }, ok({ by: 'k1' }));

    const res = await post(app);

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ by: 'k1' });
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(pool.snapshot()).toEqual([
      {
        id: 'key-0',
        hint: K0.slice(-4),
        state: 'available',
        models: [{ model: 'gpt-4o-mini', cooldownUntil: clock.time + 20_000 }],
        group: organizationOf(K0),
      },
      { id: 'key-1', hint: K1.slice(-4), state: 'available' },
      { id: 'key-2', hint: K2.slice(-4), state: 'available' },
    ]);
  });

  test('401 on k0: k0 is disabled, k1 answers, later requests never send k0', async () => {
    const { app, pool, clock } = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: openai.invalidKey() }, ok());

    expect((await post(app)).status).toBe(200);
    clock.advance(24 * 3600 * 1000);
    expect((await post(app)).status).toBe(200);

    expect(upstream.keysSeen()).toEqual([K0, K1, K1]);
    expect(pool.snapshot()[0]).toEqual({
      id: 'key-0',
      hint: K0.slice(-4),
      state: 'disabled',
      disabledReason: 'auth',
      group: organizationOf(K0),
    });

    pool.enable('key-0');
    upstream.behaviour = ok();
    expect((await post(app)).status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1, K1, K0]);
  });

  test('403 on k0: k1 answers, k0 stays available and is tried first by the next request', async () => {
    const { app, pool } = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: status(403) }, ok({ by: 'k1' }));

    const first = await post(app);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ by: 'k1' });
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);

    upstream.behaviour = ok({ by: 'k0' });
    const second = await post(app);
    expect(second.body).toEqual({ by: 'k0' });
    expect(upstream.keysSeen()).toEqual([K0, K1, K0]);
  });

  test('the same 403 from two keys: the second is relayed as is (a third would say it again)', async () => {
    const { app, pool } = gateway(upstream.url);
    upstream.behaviour = (req, res) => {
      const body = JSON.stringify({
        error: { message: `model not allowed for ${KEYS.indexOf(req.key as never)}`, code: 'model_not_found' },
      });
      res.writeHead(403, { 'content-type': 'application/json', 'x-request-id': `req-${req.key?.slice(8, 10)}` });
      res.end(body);
    };

    const res = await post(app);

    expect(res.status).toBe(403);
    expect(res.body).toEqual({ error: { message: 'model not allowed for 1', code: 'model_not_found' } });
    expect(res.headers['x-request-id']).toBe('req-k1');
    expect(res.headers['content-length']).toBe(String(Buffer.byteLength(res.text)));
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test("failover: { 403: 'disable' } disables k0", async () => {
    const { app, pool } = gateway(upstream.url, { failover: { 403: 'disable' } });
    upstream.behaviour = byKey({ [K0]: status(403) }, ok());

    expect((await post(app)).status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'available', 'available']);
  });

  test("failover: { 529: 'skip' } fails over on overloaded, { 403: 'relay' } relays a 403", async () => {
    const { app } = gateway(upstream.url, { failover: { 529: 'skip', 403: 'relay' } });
    upstream.behaviour = byKey({ [K0]: status(529), [K1]: status(403, {}, { error: 'forbidden model' }) }, ok());

    const res = await post(app);

    expect(res.status).toBe(403);
    expect(res.body).toEqual({ error: 'forbidden model' });
    expect(upstream.keysSeen()).toEqual([K0, K1]);
  });

  test('every key rate-limited: 429 with Retry-After = ceil of the smallest remaining cooldown', async () => {
    const { app, pool } = gateway(upstream.url);
    upstream.behaviour = byKey({
      [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '30' }),
      [K1]: openai.rateLimited('gpt-4o-mini', { 'retry-after-ms': '12300' }),
      [K2]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '45' }),
    });

    const res = await post(app);

    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('13');
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.body).toEqual({
      error: {
        message: 'All configured keys are rate-limited; retry after the time in the Retry-After header.',
        type: 'rate_limit_error',
        param: null,
        code: 'rate_limit_exceeded',
      },
    });
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
    expect([0, 1, 2].map((i) => modelCooldown(pool, i)! > 0)).toEqual([true, true, true]);

    // The next request (same model) finds nothing available and never reaches the upstream.
    const again = await post(app);
    expect(again.status).toBe(429);
    expect(again.headers['retry-after']).toBe('13');
    expect(upstream.seen).toHaveLength(3);
  });

  test('every key unauthorized: 502', async () => {
    const { app, pool } = gateway(upstream.url);
    upstream.behaviour = openai.invalidKey();

    const res = await post(app);

    expect(res.status).toBe(502);
    expect(res.headers['retry-after']).toBeUndefined();
    expect(res.body.error).toEqual({
      message: 'All configured keys failed authentication with the upstream.',
      type: 'upstream_error',
      param: null,
      code: 'all_keys_unauthorized',
    });
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'disabled', 'disabled']);
  });

  test('disabled and cooling keys exhausted together: 429', async () => {
    const { app, pool } = gateway(upstream.url);
    upstream.behaviour = byKey({
      [K0]: openai.invalidKey(),
      [K1]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '5' }),
      [K2]: openai.accountDeactivated(),
    });

    const res = await post(app);

    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('5');
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['disabled', 'available', 'disabled']);
    expect(modelCooldown(pool, 1)).toBeGreaterThan(0);
  });

  test.each([500, 400, 404, 422, 503])('%i from the upstream is relayed unchanged, no failover, no marking', async (code) => {
    const { app, pool } = gateway(upstream.url);
    upstream.behaviour = status(code, { 'x-upstream': 'yes', 'retry-after': '7' }, { error: { message: `upstream said ${code}` } });

    const res = await post(app);

    expect(res.status).toBe(code);
    expect(res.body).toEqual({ error: { message: `upstream said ${code}` } });
    expect(res.headers['x-upstream']).toBe('yes');
    expect(res.headers['retry-after']).toBe('7');
    expect(upstream.keysSeen()).toEqual([K0]);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('a cooling key is skipped until its cooldown passes (clock moved, not slept), then used again', async () => {
    const { app, pool, clock } = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '10' }) }, ok());
    await post(app);
    upstream.behaviour = ok();

    clock.advance(9_999);
    await post(app);
    expect(upstream.keysSeen()).toEqual([K0, K1, K1]);
    expect(modelCooldown(pool, 0)).toBe(clock.time + 1);

    clock.advance(1);
    await post(app);
    expect(upstream.keysSeen()).toEqual([K0, K1, K1, K0]);
    expect(pool.snapshot()[0]).toEqual({ id: 'key-0', hint: K0.slice(-4), state: 'available', group: organizationOf(K0) });
  });

  test("cooldowns come from the provider's reset headers, within the pool's floor and cap", async () => {
    const { app, pool, clock } = gateway(upstream.url, {}, { minCooldownMs: 2_000, maxCooldownMs: 120_000 });
    upstream.behaviour = byKey({
      [K0]: openai.rateLimited('gpt-4o-mini', {
        'x-ratelimit-reset-requests': '1s',
        'x-ratelimit-reset-tokens': '6m0s',
        'x-ratelimit-remaining-tokens': '0',
      }),
      [K1]: openai.rateLimited('gpt-4o-mini', { 'x-ratelimit-reset-requests': '20ms', 'x-ratelimit-remaining-requests': '0' }),
      [K2]: openai.rateLimited('gpt-4o-mini', { 'anthropic-ratelimit-tokens-reset': new Date(clock.time + 45_500).toISOString() }),
    });

    const res = await post(app);

    expect(res.status).toBe(429);
    expect([0, 1, 2].map((i) => modelCooldown(pool, i)! - clock.time)).toEqual([120_000, 2_000, 45_500]);
    expect(res.headers['retry-after']).toBe('2');
  });

  test('a 429 without a usable header cools for defaultCooldownMs', async () => {
    const { app, pool, clock } = gateway(upstream.url, {}, { defaultCooldownMs: 7_000 });
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': 'whenever' }) }, ok());
    await post(app);
    expect(modelCooldown(pool, 0)).toBe(clock.time + 7_000);
  });

  test('a longer cooldown already set wins over a shorter one', async () => {
    const { app, pool, clock } = gateway(upstream.url);
    pool.markRateLimited('key-0', 100_000, { model: 'gpt-4o-mini' });
    pool.enable('key-0');
    pool.markRateLimited('key-1', 100_000, { model: 'gpt-4o-mini' });
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '1' }) }, ok());

    await post(app);

    // k1 was cooling (skipped), k0 got a 1 s cooldown, k2 answered.
    expect(upstream.keysSeen()).toEqual([K0, K2]);
    expect(modelCooldown(pool, 0)).toBe(clock.time + 1_000);
    expect(modelCooldown(pool, 1)).toBe(clock.time + 100_000);
    pool.markRateLimited('key-1', 5_000, { model: 'gpt-4o-mini' });
    expect(modelCooldown(pool, 1)).toBe(clock.time + 100_000);
  });
});

describe('bring your own key', () => {
  test('BYOK 429: one attempt with the client key, upstream Retry-After relayed, pool untouched', async () => {
    const clientKey = 'sk-client-own-key-0000000000zz';
    const { app, pool } = gateway(upstream.url, {
      byok: (req) => req.get('x-client-api-key'),
    });
    upstream.behaviour = status(429, { 'retry-after': '17' }, { error: { message: 'client key limited' } });

    const res = await request(app).post(CHAT).set('x-client-api-key', clientKey).send(chatBody);

    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('17');
    expect(res.body).toEqual({ error: { message: 'client key limited' } });
    expect(upstream.keysSeen()).toEqual([clientKey]);
    expect(upstream.seen[0]!.headers['x-client-api-key']).toBeUndefined();
    expect(upstream.seen[0]!.headers.authorization).toBe(`Bearer ${clientKey}`);
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available', 'available']);
  });

  test('a request without a client key still uses the pool', async () => {
    const { app } = gateway(upstream.url, { byok: (req) => req.get('x-client-api-key') });
    const res = await request(app).post(CHAT).send(chatBody);
    expect(res.status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0]);
  });

  test('a client key that is not a valid header value: 400, nothing sent upstream', async () => {
    const { app } = gateway(upstream.url, { byok: () => 'sk-evil\r\nx-injected: 1' });
    const res = await request(app).post(CHAT).send(chatBody);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('invalid_api_key');
    expect(JSON.stringify(res.body)).not.toContain('evil');
    expect(upstream.seen).toHaveLength(0);
  });
});

describe('routing', () => {
  test('other routes and methods go to next()', async () => {
    const { app } = gateway(upstream.url);
    app.use((req, res) => {
      res.status(418).json({ fellThrough: `${req.method} ${req.path}` });
    });

    const get = await request(app).get(CHAT);
    const models = await request(app).post('/v1/models').send({});
    expect(get.body).toEqual({ fellThrough: `GET ${CHAT}` });
    expect(models.body).toEqual({ fellThrough: 'POST /v1/models' });

    // Raw request lines, which a URL-normalising client would never send.
    const server = await listen(app);
    const port = new URL(server.url).port;
    try {
      for (const path of ['/v1/chat/completions/../../admin', '/v1/chat%2Fcompletions', '/v1/chat/completions/']) {
        const status = await new Promise<number | undefined>((resolve, reject) => {
          http
            .request({ host: '127.0.0.1', port, method: 'POST', path, headers: { 'content-type': 'application/json' } }, (res) => {
              res.resume();
              resolve(res.statusCode);
            })
            .on('error', reject)
            .end(JSON.stringify(chatBody));
        });
        expect([path, status]).toEqual([path, 418]);
      }
    } finally {
      await server.close();
    }
    expect(upstream.seen).toHaveLength(0);
  });

  test('a path in the target is kept, and the query string is passed on', async () => {
    const { app } = gateway(`${upstream.url}/openai/`);
    await request(app).post(`${CHAT}?api-version=2024-10-21`).send(chatBody);
    expect(upstream.seen[0]!.url).toBe(`/openai${CHAT}?api-version=2024-10-21`);
  });
});
