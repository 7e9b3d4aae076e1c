/**
 * Route ahead of the 429: every answer, success included, says how much of
 * the key's limits is left (`x-ratelimit-remaining-*` / `-reset-*`, OpenAI;
 * `anthropic-ratelimit-*-remaining` / `-reset`, Anthropic). A key whose
 * requests are used up (less the sends that followed its answer's request) is
 * passed over until the limit resets, without an upstream call; so is one
 * with fewer tokens than `minRemainingTokens`. Never longer than the reset
 * says, never more than maxCooldownMs. Injected clock, real headers.
 */
import type { Express } from 'express';
import type { ServerResponse } from 'node:http';
import request from 'supertest';
import { CHAT, K0, K1, K2, chatBody, gateway, listen, useMockUpstream } from './support/gateway.js';
import { byKey, type Behaviour, type SeenRequest } from './support/mock-upstream.js';
import { anthropicOk, openaiOk, type OpenAILimits } from './support/provider-answers.js';

const upstream = useMockUpstream();

const post = (app: Express, model = chatBody.model) =>
  request(app)
    .post(CHAT)
    .send({ ...chatBody, model });
const answer =
  (limits: OpenAILimits): Behaviour =>
  (req, res) =>
    openaiOk({ by: req.key }, limits)(req, res);
const plenty: Behaviour = (req, res) => openaiOk({ by: req.key })(req, res);

test('a key whose answer says no requests are left is passed over until its reset, with no upstream call in between', async () => {
  const g = gateway(upstream.url);
  const depleted: unknown[] = [];
  g.pool.on('depleted', (e) => depleted.push(e));
  upstream.behaviour = byKey({ [K0]: answer({ remainingRequests: 0, resetRequests: '1.5s' }) }, plenty);
  expect((await post(g.app)).body).toEqual({ by: K0 }); // the answer itself is relayed: it was a success
  expect(depleted).toEqual([
    {
      id: 'key-0',
      hint: K0.slice(-4),
      limit: 'requests',
      remaining: 0,
      cooldownMs: 1_500,
      cooldownUntil: g.clock.time + 1_500,
      model: 'gpt-4o-mini',
      group: expect.any(String) as string,
    },
  ]);
  expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'gpt-4o-mini', cooldownUntil: g.clock.time + 1_500, reason: 'remaining' }]);

  for (let i = 0; i < 5; i++) await post(g.app);
  g.clock.advance(1_499);
  await post(g.app);
  expect(upstream.keysSeen()).toEqual([K0, K1, K1, K1, K1, K1, K1]); // zero calls to k0 until its reset

  g.clock.advance(1);
  upstream.behaviour = plenty;
  await post(g.app);
  expect(upstream.keysSeen().at(-1)).toBe(K0);
});

test('requests already sent count: "2 left" with 2 more on their way is none left', async () => {
  const g = gateway(upstream.url);
  const held: (() => void)[] = [];
  let n = 0;
  // k0's limit as the upstream counts it: each request let in takes one; 3 were left before these.
  upstream.behaviour = byKey(
    {
      [K0]: (req: SeenRequest, res: ServerResponse) => {
        const remaining = 2 - n++;
        held.push(() => openaiOk({ by: req.key }, { remainingRequests: remaining, resetRequests: '30s' })(req, res));
      },
    },
    plenty,
  );
  const server = await listen(g.app);
  try {
    const inFlight = [0, 1, 2].map(() =>
      fetch(`${server.url}${CHAT}`, { method: 'POST', body: JSON.stringify(chatBody), headers: { 'content-type': 'application/json' } }),
    );
    while (held.length < 3) await new Promise((resolve) => setTimeout(resolve, 5));
    held[0]!(); // "2 left", and two requests were sent after it
    await (await inFlight[0]!).json();
    expect(g.pool.snapshot()[0]!.models?.[0]).toMatchObject({ reason: 'remaining', cooldownUntil: g.clock.time + 30_000 });
    expect((await post(g.app)).body).toEqual({ by: K1 });
    held[1]!();
    held[2]!();
    await Promise.all(inFlight.slice(1).map(async (r) => (await r).json()));
    expect(upstream.keysSeen()).toEqual([K0, K0, K0, K1]);
  } finally {
    await server.close();
  }
});

test('never longer than the reset says (no minCooldownMs floor, no jitter), never more than maxCooldownMs', async () => {
  const g = gateway(upstream.url, {}, { maxCooldownMs: 60_000, cooldownJitter: 0.5, random: () => 0.99 });
  upstream.behaviour = byKey({ [K0]: answer({ remainingRequests: 0, resetRequests: '20ms' }) }, plenty);
  await post(g.app);
  expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'gpt-4o-mini', cooldownUntil: g.clock.time + 20, reason: 'remaining' }]);

  g.clock.advance(20);
  upstream.behaviour = byKey({ [K0]: answer({ remainingRequests: 0, resetRequests: '6m0s' }) }, plenty);
  await post(g.app);
  expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'gpt-4o-mini', cooldownUntil: g.clock.time + 60_000, reason: 'remaining' }]);
});

test('an answer without a usable reset sets nothing aside (the next 429, if any, says how long)', async () => {
  const g = gateway(upstream.url);
  upstream.behaviour = byKey({ [K0]: answer({ remainingRequests: 0, resetRequests: 'soon' }) }, plenty);
  await post(g.app);
  await post(g.app);
  expect(upstream.keysSeen()).toEqual([K0, K0]);
});

test('Anthropic: anthropic-ratelimit-requests-remaining 0 passes the key over until its RFC 3339 reset', async () => {
  const g = gateway(upstream.url, { provider: 'anthropic' });
  const reset = new Date(g.clock.time + 12_000);
  upstream.behaviour = byKey({ [K0]: anthropicOk({ type: 'message' }, { requests: { remaining: 0, reset } }) }, (req, res) =>
    anthropicOk({ by: req.key })(req, res),
  );
  const send = () =>
    request(g.app)
      .post('/v1/messages')
      .set('anthropic-version', '2023-06-01')
      .send({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [] });
  await send();
  await send();
  expect(upstream.keysSeen()).toEqual([K0, K1]);
  expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'claude-sonnet-4-5', cooldownUntil: reset.getTime(), reason: 'remaining' }]);
});

describe('minRemainingTokens', () => {
  test('off by default: tokens running low set nothing aside', async () => {
    const g = gateway(upstream.url);
    upstream.behaviour = byKey({ [K0]: answer({ remainingTokens: 10, resetTokens: '4s' }) }, plenty);
    await post(g.app);
    await post(g.app);
    expect(upstream.keysSeen()).toEqual([K0, K0]);
  });

  test('set: a key with fewer tokens left is passed over until the token limit resets (OpenAI and Anthropic)', async () => {
    const g = gateway(upstream.url, {}, { minRemainingTokens: 1_000 });
    const limits: string[] = [];
    g.pool.on('depleted', (e) => limits.push(`${e.limit} ${e.remaining}`));
    upstream.behaviour = byKey({ [K0]: answer({ remainingTokens: 500, resetTokens: '4s' }) }, plenty);
    await post(g.app);
    await post(g.app);
    expect(upstream.keysSeen()).toEqual([K0, K1]);
    expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'gpt-4o-mini', cooldownUntil: g.clock.time + 4_000, reason: 'remaining' }]);

    const a = gateway(upstream.url, { provider: 'anthropic' }, { minRemainingTokens: 1_000 });
    a.pool.on('depleted', (e) => limits.push(`${e.limit} ${e.remaining}`));
    const reset = new Date(a.clock.time + 9_000);
    upstream.behaviour = (req, res) => anthropicOk({}, { outputTokens: { remaining: 200, reset } })(req, res);
    await request(a.app).post('/v1/messages').send({ model: 'claude-haiku-4-5', max_tokens: 8, messages: [] });
    expect(a.pool.snapshot()[0]!.models).toEqual([{ model: 'claude-haiku-4-5', cooldownUntil: reset.getTime(), reason: 'remaining' }]);
    expect(limits).toEqual(['tokens 500', 'output-tokens 200']);
  });

  test('is checked at creation', () => {
    expect(() => gateway(upstream.url, {}, { minRemainingTokens: -1 })).toThrow(
      /option "minRemainingTokens" must be a non-negative integer/,
    );
  });
});

test("a key's group is set aside with it: k1 (same organization) is passed over too", async () => {
  const g = gateway(upstream.url, {}, { keys: [{ key: K0, group: 'acme' }, { key: K1, group: 'acme' }, K2] });
  upstream.behaviour = byKey({ [K0]: answer({ remainingRequests: 0, resetRequests: '10s' }) }, plenty);
  await post(g.app);
  expect((await post(g.app)).body).toEqual({ by: K2 });
  expect(upstream.keysSeen()).toEqual([K0, K2]);
});

test('hostile client: a model it alone uses up sets the key aside for that model only, never for the others', async () => {
  const g = gateway(upstream.url);
  upstream.behaviour = (req, res) => {
    const own = JSON.parse(req.body.toString()).model === 'attacker-model';
    return openaiOk({ by: req.key }, own ? { remainingRequests: 0, resetRequests: '10m0s' } : {})(req, res);
  };
  await post(g.app, 'attacker-model');
  for (let i = 0; i < 3; i++) await post(g.app, 'gpt-4o-mini');
  expect(upstream.keysSeen()).toEqual([K0, K0, K0, K0]);
  // And a wild reset is capped: maxCooldownMs (1 h by default), whatever the header says.
  upstream.behaviour = byKey({ [K0]: answer({ remainingRequests: 0, resetRequests: '99999h' }) }, plenty);
  await post(g.app, 'gpt-4o');
  expect(g.pool.snapshot()[0]!.models?.find((m) => m.model === 'gpt-4o')?.cooldownUntil).toBe(g.clock.time + 3_600_000);
});
