/**
 * Rate limits are per model: a 429 cools a key for the request's model (or the
 * bucket `modelScope` maps it to), never for the others; model strings are the
 * clients', so their length and number are bounded.
 */
import express, { type Express } from 'express';
import request from 'supertest';
import { KeyPool, MemoryKeyStateStore, keyPassthrough } from '../lib/index.js';
import { readModel } from '../lib/request/model.js';
import { CHAT, FakeClock, K0, K1, K2, chatBody, gateway, statesFor, useMockUpstream } from './support/gateway.js';
import { byKey, ok } from './support/mock-upstream.js';
import { openai, organizationOf } from './support/provider-answers.js';

const upstream = useMockUpstream();

const post = (app: Express, model: string) =>
  request(app)
    .post(CHAT)
    .send({ ...chatBody, model });

describe('a rate limit is scoped to the model', () => {
  test('a gpt-4o limit leaves gpt-4o-mini on key 0, and every key limited for gpt-4o still serves gpt-4o-mini', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey(
      {
        [K0]: openai.rateLimited('gpt-4o', { 'retry-after': '40' }),
        [K1]: openai.rateLimited('gpt-4o', { 'retry-after': '25' }),
        [K2]: openai.rateLimited('gpt-4o', { 'retry-after': '60' }),
      },
      ok(),
    );
    const limited = await post(g.app, 'gpt-4o');
    expect(limited.status).toBe(429);
    expect(limited.headers['retry-after']).toBe('25'); // the soonest key back for gpt-4o
    expect(upstream.keysSeen()).toEqual([K0, K1, K2]);

    upstream.behaviour = ok({ by: 'any' });
    const other = await post(g.app, 'gpt-4o-mini');
    expect(other.status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1, K2, K0]);
    expect(statesFor(g.pool, 'gpt-4o-mini')).toEqual(['available', 'available', 'available']);
    expect(statesFor(g.pool, 'gpt-4o')).toEqual(['cooling', 'cooling', 'cooling']);

    // The pool's 429 for gpt-4o comes without an upstream call; gpt-4o-mini is never answered with it.
    expect((await post(g.app, 'gpt-4o')).status).toBe(429);
    expect(upstream.seen).toHaveLength(4);
    g.clock.advance(25_000);
    await post(g.app, 'gpt-4o');
    expect(upstream.keysSeen().at(-1)).toBe(K1);
  });

  test('modelScope maps models to a shared bucket: a dated snapshot and its alias share one limit', async () => {
    const g = gateway(upstream.url, {}, { modelScope: (model) => model.replace(/-\d{4}-\d{2}-\d{2}$/, '') });
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-2024-08-06', { 'retry-after': '30' }) }, ok());
    await post(g.app, 'gpt-4o-2024-08-06');
    expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'gpt-4o', cooldownUntil: g.clock.time + 30_000 }]);
    upstream.behaviour = ok();
    await post(g.app, 'gpt-4o');
    await post(g.app, 'gpt-4o-mini');
    expect(upstream.keysSeen()).toEqual([K0, K1, K1, K0]);
  });

  test('modelScope returning undefined cools the whole key', async () => {
    const g = gateway(upstream.url, {}, { modelScope: () => undefined });
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o', { 'retry-after': '30' }) }, ok());
    await post(g.app, 'gpt-4o');
    expect(g.pool.snapshot()[0]).toEqual({
      id: 'key-0',
      hint: K0.slice(-4),
      state: 'cooling',
      cooldownUntil: g.clock.time + 30_000,
      group: organizationOf(K0),
    });
  });

  test('a request without a model (keyPassthrough GET /v1/models) that gets a 429 cools the key for its route, not the whole key', async () => {
    const clock = new FakeClock();
    const pool = new KeyPool({ keys: [K0, K1], now: clock.now, cooldownJitter: 0 });
    const { app, close } = passthroughApp(pool);
    upstream.behaviour = byKey({ [K0]: openai.rateLimitedNoCode({ 'retry-after': '12' }) }, ok({ object: 'list', data: [] }));
    const res = await request(app).get('/v1/models');
    expect(res.status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(pool.snapshot()[0]).toEqual({
      id: 'key-0',
      hint: K0.slice(-4),
      state: 'available',
      models: [{ model: '/v1/models', cooldownUntil: clock.time + 12_000 }],
      group: organizationOf(K0),
    });
    upstream.reset();
    upstream.behaviour = ok({ object: 'list', data: [] });
    expect((await request(app).get('/v1/models')).status).toBe(200);
    expect((await request(app).post('/v1/chat/completions').send(chatBody)).status).toBe(200);
    expect(upstream.keysSeen()).toEqual([K1, K0]); // the same route skips key-0; a model call does not
    await close();
  });

  test('pool.markRateLimited(id, ms, { model }) scopes a cooldown by hand; exhaustion(model) answers for that model', () => {
    const clock = new FakeClock();
    const pool = new KeyPool({ keys: [K0, K1], now: clock.now });
    pool.markRateLimited('key-0', 10_000, { model: 'o3' });
    pool.markRateLimited('key-1', 4_000, { model: 'o3' });
    expect(pool.exhaustion('o3')).toEqual({ reason: 'rate_limited', retryAfterMs: 4_000 });
    expect(pool.exhaustion('gpt-4o')).toEqual({ reason: 'rate_limited', retryAfterMs: 0 });
    expect(pool.walker('o3').next()).toBeUndefined();
    expect(pool.walker('gpt-4o').next()?.id).toBe('key-0');
    expect(() => pool.markRateLimited('key-0', 1, { model: 5 as never })).toThrow(/details.model must be a string, got 5/);
  });
});

describe('the model is read only when needed, and cheaply', () => {
  test('a walk reads the model only while some key cools for a single model, and once per walk', () => {
    const pool = new KeyPool([K0, K1, K2]);
    let reads = 0;
    const model = () => {
      reads++;
      return 'gpt-4o';
    };
    const first = pool.walker(model);
    first.next();
    first.next();
    expect(reads).toBe(0);

    pool.markRateLimited('key-0', 60_000, { model: 'o3' });
    const second = pool.walker(model);
    expect(second.next()?.id).toBe('key-0');
    expect(second.next()?.id).toBe('key-1');
    expect(reads).toBe(1);

    pool.enable('key-0');
    pool.walker(model).next();
    expect(reads).toBe(1);
  });

  test('readModel scans the top level only, and skips everything else', () => {
    const json = (value: unknown) => Buffer.from(JSON.stringify(value));
    expect(readModel(json({ model: 'gpt-4o', messages: [] }))).toBe('gpt-4o');
    expect(readModel(json({ messages: [{ role: 'user', content: 'say "model": "x"', model: 'nested' }], model: 'gpt-4o' }))).toBe('gpt-4o');
    expect(readModel(json({ tools: [{ function: { parameters: { model: { type: 'string' } } } }], model: 'last' }))).toBe('last');
    expect(readModel(json({ model: 'a\u00e9\\"b' }))).toBe('a\u00e9\\"b');
    expect(readModel(Buffer.from(' \r\n { "temperature" : 0.5 , "stream":true,"n":null, "model" : "m1" } '))).toBe('m1');
    expect(readModel(Buffer.from('{"a":"}\\"{","model":"m2"}'))).toBe('m2');
    expect(readModel(json({ model: 42 }))).toBeUndefined();
    expect(readModel(json({ messages: [] }))).toBeUndefined();
    expect(readModel(json(['model', 'gpt-4o']))).toBeUndefined();
    expect(readModel(Buffer.from('model=gpt-4o'))).toBeUndefined();
    expect(readModel(Buffer.from('{"model": "unterminated'))).toBeUndefined();
    expect(readModel(Buffer.from('{"messages": [1, 2'))).toBeUndefined();
    expect(readModel(Buffer.alloc(0))).toBeUndefined();
    // As JSON.parse reads it: the last of duplicated keys wins, escaped key names are the names they decode to.
    for (const text of [
      '{"model": null, "model": "gpt-4o"}',
      '{"model": "gpt-4o-mini", "mod\\u0065l": "gpt-4o"}',
      '{"\\u006d\\u006f\\u0064\\u0065\\u006c": "gpt-4o", "messages": []}',
      '{"model": "gpt-4o-mini", "messages": [], "model": "gpt-4o"}',
    ]) {
      expect(readModel(Buffer.from(text))).toBe((JSON.parse(text) as { model: string }).model);
    }
    expect(readModel(Buffer.from('{"model": "gpt-4o", "model": null}'))).toBeUndefined();
    expect(readModel(Buffer.from('{"model": "gpt-4o", "models": "x", "mode": "y", "mod\\"el": "z"}'))).toBe('gpt-4o');
    expect(readModel(Buffer.from('{"model": "gpt-4o", "messages": [1, 2'))).toBeUndefined(); // not JSON: the provider refuses it
    expect(readModel(null)).toBeUndefined();
  });

  test('a multi-megabyte body with the model last is read in one pass, without a JSON parse', () => {
    const big = Buffer.from(
      JSON.stringify({
        messages: Array.from({ length: 4000 }, (_, i) => ({ role: 'user', content: `${'x'.repeat(1000)} ${i}` })),
        model: 'gpt-4o',
      }),
    );
    expect(big.length).toBeGreaterThan(4_000_000);
    const started = process.hrtime.bigint();
    expect(readModel(big)).toBe('gpt-4o');
    const scanMs = Number(process.hrtime.bigint() - started) / 1e6;
    const parseStarted = process.hrtime.bigint();
    JSON.parse(big.toString());
    const parseMs = Number(process.hrtime.bigint() - parseStarted) / 1e6;
    console.log(
      `readModel on ${(big.length / 1e6).toFixed(1)} MB, model last: ${scanMs.toFixed(1)} ms (JSON.parse: ${parseMs.toFixed(1)} ms)`,
    );
    expect(scanMs).toBeLessThan(500);
  });
});

describe('no client can grow the pool state without limit', () => {
  test('100 000 distinct model strings: the scoped states stay within maxScopedStates, oldest out first', () => {
    const clock = new FakeClock();
    const store = new MemoryKeyStateStore({ maxScopedStates: 1_000 });
    const pool = new KeyPool({ keys: [K0, K1], now: clock.now, store });
    for (let i = 0; i < 100_000; i++) pool.markRateLimited(i % 2 ? 'key-1' : 'key-0', 60_000 + i, { model: `model-${i}` });
    expect(store.scopedCount).toBe(1_000);
    const models = pool.snapshot().flatMap((k) => k.models ?? []);
    expect(models).toHaveLength(1_000);
    expect(models.map((m) => Number(m.model.slice(6))).sort((a, b) => a - b)[0]).toBe(99_000); // the last 1 000 marks are kept
  });

  test('the default bound is 10 000, and expired states go before live ones', () => {
    const clock = new FakeClock();
    const store = new MemoryKeyStateStore();
    const pool = new KeyPool({ keys: [K0], now: clock.now, store });
    for (let i = 0; i < 10_000; i++) pool.markRateLimited('key-0', 1_000, { model: `short-${i}` });
    pool.markRateLimited('key-0', 600_000, { model: 'long' });
    clock.advance(2_000); // every short one has expired
    for (let i = 0; i < 9_000; i++) pool.markRateLimited('key-0', 60_000, { model: `new-${i}` });
    expect(store.scopedCount).toBeLessThanOrEqual(10_000);
    const models = pool.snapshot()[0]!.models!;
    expect(models).toHaveLength(9_001); // every live one: only expired ones made room
    expect(models.some((m) => m.model === 'long')).toBe(true);
  });

  test('a model name longer than 128 characters is cut to 128 for its scope', async () => {
    const g = gateway(upstream.url);
    const long = 'gpt-4o-' + 'x'.repeat(5_000);
    upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o', { 'retry-after': '30' }) }, ok());
    await post(g.app, long);
    expect(g.pool.snapshot()[0]!.models).toEqual([{ model: long.slice(0, 128), cooldownUntil: g.clock.time + 30_000 }]);
  });

  test('a bad maxScopedStates is refused', () => {
    expect(() => new MemoryKeyStateStore({ maxScopedStates: 0 })).toThrow(/"maxScopedStates" must be a positive integer, got 0/);
  });
});

function passthroughApp(pool: KeyPool) {
  const middleware = keyPassthrough({ target: upstream.url, pool, logger: false });
  const app = express();
  app.use(middleware);
  return { app, close: () => middleware.close() };
}
