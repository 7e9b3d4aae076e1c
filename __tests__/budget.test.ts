/**
 * A bounded retry budget per request: `maxAttempts` (default: every
 * available key) and `maxWalkMs` (total time across attempts), so that a
 * request-caused 403 or a slow upstream cannot turn one client request into
 * pool-size upstream calls or minutes of waiting.
 */
import express from 'express';
import request from 'supertest';
import { KeyFailoverError, KeyPool, createFailoverFetch, keyFailover, keyPassthrough } from '../lib/index.js';
import { CHAT, K0, K1, K2, chatBody, gateway, useMockUpstream } from './support/gateway.js';
import { byKey, type Behaviour } from './support/mock-upstream.js';
import { openai, openaiOk } from './support/provider-answers.js';

const upstream = useMockUpstream();
const slow =
  (ms: number, answer: Behaviour): Behaviour =>
  (req, res) =>
    void setTimeout(() => void answer(req, res), ms);

test('maxAttempts: a request-caused 403 from every key costs maxAttempts upstream calls, and the last 403 is relayed', async () => {
  const g = gateway(upstream.url, { maxAttempts: 2 });
  upstream.behaviour = openai.unsupportedRegion();
  const res = await request(g.app).post(CHAT).send(chatBody);
  expect(res.status).toBe(403);
  expect(res.body.error.code).toBe('unsupported_country_region_territory');
  expect(upstream.keysSeen()).toEqual([K0, K1]);
});

test("maxAttempts: 429s past the budget end in the pool's 429; the exhausted event says the budget was spent", async () => {
  const g = gateway(upstream.url, { maxAttempts: 1 });
  const exhausted: unknown[] = [];
  g.pool.on('exhausted', (e) => exhausted.push(e));
  upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '20' }) }, openaiOk());
  const res = await request(g.app).post(CHAT).set('x-request-id', 'req-1').send(chatBody);
  expect(res.status).toBe(429);
  expect(res.headers['retry-after']).toBe('1'); // other keys are there: retry at once, with a budget of its own
  expect(upstream.keysSeen()).toEqual([K0]);
  expect(exhausted).toEqual([{ reason: 'rate_limited', retryAfterMs: 0, budget: 'maxAttempts', requestId: 'req-1' }]);
  // The next request has a budget of its own, and k0 is cooling.
  expect((await request(g.app).post(CHAT).send(chatBody)).status).toBe(200);
  expect(upstream.keysSeen()).toEqual([K0, K1]);
});

test('maxWalkMs: no attempt after it, and the one in progress is cut when it runs out (504)', async () => {
  const g = gateway(upstream.url, { maxWalkMs: 250 });
  upstream.behaviour = slow(150, openai.rateLimited('gpt-4o-mini', { 'retry-after': '20' }));
  const started = Date.now();
  const res = await request(g.app).post(CHAT).send(chatBody);
  const took = Date.now() - started;
  expect(res.status).toBe(504);
  expect(res.body.error.code).toBe('upstream_timeout');
  expect(upstream.keysSeen()).toEqual([K0, K1]); // k2 never: the walk's time was up
  expect(took).toBeGreaterThanOrEqual(240);
  expect(took).toBeLessThan(1_000);
  for (const deadline = Date.now() + 2_000; upstream.aborted.length === 0 && Date.now() < deadline;) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  expect(upstream.aborted.map((r) => r.key)).toEqual([K1]); // the cut attempt's upstream request was aborted
});

test('keyPassthrough and createFailoverFetch take the same budget', async () => {
  const pool = new KeyPool([K0, K1, K2]);
  const app = express();
  app.use(keyPassthrough({ target: upstream.url, pool, logger: false, maxAttempts: 2 }));
  upstream.behaviour = openai.unsupportedRegion();
  expect((await request(app).get('/v1/models')).status).toBe(403);
  expect(upstream.keysSeen()).toEqual([K0, K1]);

  upstream.seen.length = 0;
  const fetch = createFailoverFetch(pool, { maxAttempts: 1, target: upstream.url });
  try {
    const res = await fetch(`${upstream.url}${CHAT}`, { method: 'POST', body: JSON.stringify(chatBody) });
    expect(res.status).toBe(403);
    expect(upstream.keysSeen()).toEqual([K0]);
  } finally {
    await fetch.close();
  }
});

test('each option is checked at creation, with the option named', () => {
  for (const [options, message] of [
    [{ maxAttempts: 0 }, /keyFailover\(\): option "maxAttempts" must be a positive integer, got 0/],
    [{ maxAttempts: 1.5 }, /option "maxAttempts" must be a positive integer, got 1.5/],
    [{ maxAttempts: '2' }, /option "maxAttempts" must be a positive integer, got a string/],
    [{ maxWalkMs: -1 }, /option "maxWalkMs" must be a positive integer, got -1/],
  ] as const) {
    expect(() => keyFailover(options as never)).toThrow(message);
    expect(() => keyFailover(options as never)).toThrow(KeyFailoverError);
  }
  expect(() => keyPassthrough({ maxWalkMs: 0 })).toThrow(/keyPassthrough\(\): option "maxWalkMs"/);
  expect(() => createFailoverFetch(new KeyPool([K0]), { maxAttempts: 0 })).toThrow(/createFailoverFetch\(\): option "maxAttempts"/);
});

test('by default every available key is tried (no budget)', async () => {
  const g = gateway(upstream.url);
  upstream.behaviour = openai.unsupportedRegion();
  await request(g.app).post(CHAT).send(chatBody);
  expect(upstream.keysSeen()).toEqual([K0, K1, K2]);
});
