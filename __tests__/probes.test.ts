/**
 * One probe when a cooldown ends: while one request tries the recovered key
 * (until its answer comes), every other request passes it over; its answer
 * ends that (healthy: the key is back for everyone; a 429: cooling again);
 * a probe that never answers holds the key out for probeTimeoutMs at most.
 * Cooldown ends carry jitter, so that keys cooled together do not come back
 * together. Real sockets, a mock upstream that holds the probe's answer, an
 * injected clock.
 */
import type { ServerResponse } from 'node:http';
import request from 'supertest';
import { KeyPool } from '../lib/index.js';
import { CHAT, K0, K1, K2, chatBody, gateway, listen, useMockUpstream, type Gateway } from './support/gateway.js';
import { byKey, type SeenRequest } from './support/mock-upstream.js';
import { openai, openaiOk } from './support/provider-answers.js';

const upstream = useMockUpstream();

const ok = (req: SeenRequest, res: ServerResponse) => openaiOk({ by: req.key })(req, res);

/** k0 cooled by a 429 (retry-after 10 s), then the clock moved past its end. */
async function recovered(options: Parameters<typeof gateway>[2] = {}): Promise<Gateway> {
  const g = gateway(upstream.url, {}, options);
  upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '10' }) }, ok);
  await request(g.app).post(CHAT).send(chatBody);
  g.clock.advance(10_000);
  upstream.seen.length = 0;
  return g;
}

/** k0's answers wait until released; the others answer at once. */
function holdK0(answer: (req: SeenRequest, res: ServerResponse) => void = ok) {
  const held: (() => void)[] = [];
  upstream.behaviour = byKey({ [K0]: (req, res) => void held.push(() => answer(req, res)) }, ok);
  return held;
}

async function concurrently(url: string, n: number): Promise<Promise<{ status: number; by: string | undefined }>[]> {
  return Array.from({ length: n }, async () => {
    const res = await fetch(`${url}${CHAT}`, {
      method: 'POST',
      body: JSON.stringify(chatBody),
      headers: { 'content-type': 'application/json' },
    });
    const body = (await res.json()) as { by?: string };
    return { status: res.status, by: body.by };
  });
}

const until = async (what: string, check: () => boolean, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};

test('50 concurrent requests after a cooldown ends: exactly one reaches the recovered key before its answer; then it is back for all', async () => {
  const g = await recovered();
  const probes: string[] = [];
  g.pool.on('probe', (e) => probes.push(`${e.id} ${e.outcome}`));
  const held = holdK0();
  const server = await listen(g.app);
  try {
    const answers = await concurrently(server.url, 50);
    await until('49 answers from k1 and k2, and the probe held at k0', () => upstream.seen.length === 50 && held.length === 1);
    expect(upstream.seen.filter((r) => r.key === K0)).toHaveLength(1);
    expect(g.pool.snapshot()[0]).toMatchObject({ state: 'available', probing: true });
    held[0]!(); // healthy
    const results = await Promise.all(answers);
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(results.filter((r) => r.by === K0)).toHaveLength(1);
    expect(probes).toEqual(['key-0 started', 'key-0 healthy']);
    expect(g.pool.snapshot()[0]!.probing).toBeUndefined();

    upstream.seen.length = 0;
    upstream.behaviour = ok;
    await Promise.all(await concurrently(server.url, 5));
    expect(upstream.keysSeen()).toEqual([K0, K0, K0, K0, K0]); // no probe needed any more
  } finally {
    await server.close();
  }
});

test('a probe answered with a 429 cools the key again: no other request reached it', async () => {
  const g = await recovered();
  const probes: string[] = [];
  g.pool.on('probe', (e) => probes.push(e.outcome));
  const held = holdK0(openai.rateLimited('gpt-4o-mini', { 'retry-after': '30' }));
  const server = await listen(g.app);
  try {
    const answers = await concurrently(server.url, 20);
    await until('the probe held', () => upstream.seen.length === 20 && held.length === 1);
    held[0]!();
    await Promise.all(answers);
    expect(upstream.seen.filter((r) => r.key === K0)).toHaveLength(1);
    expect(probes).toEqual(['started', 'cooled']);
    expect(g.pool.snapshot()[0]!.models).toEqual([{ model: 'gpt-4o-mini', cooldownUntil: g.clock.time + 30_000 }]);
  } finally {
    await server.close();
  }
});

test('a probe that never answers holds the key out for probeTimeoutMs at most; then the next request is the probe', async () => {
  const g = await recovered({ probeTimeoutMs: 5_000 });
  const held = holdK0();
  const server = await listen(g.app);
  try {
    const first = await concurrently(server.url, 3);
    await until('the probe held', () => upstream.seen.length === 3 && held.length === 1);
    g.clock.advance(4_999);
    await request(g.app).post(CHAT).send(chatBody);
    expect(upstream.seen.filter((r) => r.key === K0)).toHaveLength(1);
    g.clock.advance(1);
    const second = await concurrently(server.url, 1);
    await until('a second probe', () => held.length === 2);
    held.forEach((release) => release());
    await Promise.all([...first, ...second]);
  } finally {
    await server.close();
  }
});

test('a probe whose client leaves gives the key back at once: the next request probes', async () => {
  const g = await recovered();
  const probes: string[] = [];
  g.pool.on('probe', (e) => probes.push(e.outcome));
  const held = holdK0();
  const server = await listen(g.app);
  try {
    const controller = new AbortController();
    const gone = fetch(`${server.url}${CHAT}`, {
      method: 'POST',
      body: JSON.stringify(chatBody),
      headers: { 'content-type': 'application/json' },
      signal: controller.signal,
    }).catch(() => 'aborted');
    await until('the probe held', () => held.length === 1);
    controller.abort();
    await gone;
    await until('the probe released', () => probes.includes('released'));
    const next = await concurrently(server.url, 1);
    await until('a second probe', () => held.length === 2);
    held[1]!();
    expect((await next[0])!.by).toBe(K0);
  } finally {
    await server.close();
  }
});

test("while the only key is being probed, the pool's 429 says: retry in a second", async () => {
  const g = gateway(upstream.url, {}, { keys: [K0] });
  upstream.behaviour = openai.rateLimited('gpt-4o-mini', { 'retry-after': '10' });
  await request(g.app).post(CHAT).send(chatBody);
  g.clock.advance(10_000);
  const held = holdK0();
  const server = await listen(g.app);
  try {
    const probe = await concurrently(server.url, 1);
    await until('the probe held', () => held.length === 1);
    const other = await request(g.app).post(CHAT).send(chatBody);
    expect(other.status).toBe(429);
    expect(other.headers['retry-after']).toBe('1');
    expect(Number(other.headers['retry-after-ms'])).toBeLessThanOrEqual(1_000);
    held[0]!();
    await Promise.all(probe);
  } finally {
    await server.close();
  }
});

test('a key back from authCooldownMs takes one probe too', async () => {
  const g = gateway(upstream.url, {}, { authCooldownMs: 60_000 });
  upstream.behaviour = byKey({ [K0]: openai.invalidKey() }, ok);
  await request(g.app).post(CHAT).send(chatBody);
  g.clock.advance(60_000);
  upstream.seen.length = 0;
  const held = holdK0();
  const server = await listen(g.app);
  try {
    const answers = await concurrently(server.url, 10);
    await until('the probe held', () => upstream.seen.length === 10 && held.length === 1);
    held[0]!();
    await Promise.all(answers);
    expect(upstream.seen.filter((r) => r.key === K0)).toHaveLength(1);
  } finally {
    await server.close();
  }
});

describe('jitter', () => {
  test('keys cooled together by the same headers come back at different times, each within cooldownJitter of the headers, never past maxCooldownMs', async () => {
    const draws = [0, 0.5, 0.999];
    const g = gateway(upstream.url, {}, { cooldownJitter: 0.2, random: () => draws.shift() ?? 0 });
    upstream.behaviour = openai.rateLimited('gpt-4o-mini', { 'retry-after': '10' });
    await request(g.app).post(CHAT).send(chatBody);
    expect(g.pool.snapshot().map((k) => k.models![0]!.cooldownUntil - g.clock.time)).toEqual([10_000, 11_000, 11_998]);

    const capped = gateway(upstream.url, {}, { cooldownJitter: 0.2, random: () => 0.999, maxCooldownMs: 10_500 });
    await request(capped.app).post(CHAT).send(chatBody);
    expect(capped.pool.snapshot().map((k) => k.models![0]!.cooldownUntil - capped.clock.time)).toEqual([10_500, 10_500, 10_500]);
  });

  test('markRateLimited by hand is exact (the operator said how long); cooldownJitter is checked at creation', () => {
    const g = gateway(upstream.url, {}, { cooldownJitter: 0.5, random: () => 0.9 });
    g.pool.markRateLimited('key-1', 5_000);
    expect(g.pool.snapshot()[1]!.cooldownUntil).toBe(g.clock.time + 5_000);
    expect(() => gateway(upstream.url, {}, { cooldownJitter: 2 })).toThrow(/option "cooldownJitter" must be a number from 0 to 1, got 2/);
    expect(() => gateway(upstream.url, {}, { probeTimeoutMs: 0 })).toThrow(/option "probeTimeoutMs" must be a positive integer/);
  });
});

test('the default pool jitters by up to 10%', () => {
  const pool = new KeyPool({ keys: [K0, K1, K2], random: () => 0.5 });
  const events: number[] = [];
  pool.on('rateLimited', (e) => events.push(e.cooldownMs));
  pool.markAnswer(pool.walker().next()!, { cooldownMs: 10_000 }, {});
  expect(events).toEqual([10_500]);
});
