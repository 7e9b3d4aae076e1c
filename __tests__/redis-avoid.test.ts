/**
 * Avoiding the 429 across replicas, on a real redis-server: a group learned on
 * one replica holds on the others; one probe across replicas after a cooldown
 * ends (a lease in Redis), and its healthy answer reaches every replica; a
 * remaining-based skip and an object's owner are shared; a late replica reads
 * them all; Redis never holds a key value.
 */
import type { Express } from 'express';
import type { ServerResponse } from 'node:http';
import request from 'supertest';
import { RedisStateStore, type RedisStateStoreOptions } from '../lib/redis.js';
import type { KeyPoolOptions } from '../lib/index.js';
import { CHAT, FakeClock, K0, K1, K2, KEYS, chatBody, gateway, listen } from './support/gateway.js';
import { byKey, type SeenRequest } from './support/mock-upstream.js';
import { openai, openaiOk } from './support/provider-answers.js';
import { redisReplicaSuite } from './support/redis-suite.js';

const suite = redisReplicaSuite('avoid');
const { test } = suite;

const T0 = Date.parse('2026-01-01T00:00:00Z');
const ORG = 'org-SharedAcross0001';

function replica(pool: Partial<KeyPoolOptions> = {}, store: Partial<RedisStateStoreOptions> = {}) {
  const clock = new FakeClock(T0);
  const redisStore = new RedisStateStore({ url: suite.redis.url, prefix: suite.prefix, logger: false, ...store });
  suite.track(redisStore);
  const g = gateway(suite.upstream.url, {}, { store: redisStore, now: clock.now, ...pool });
  return { ...g, clock, store: redisStore };
}
type Replica = ReturnType<typeof replica>;

const post = (app: Express, body: object = chatBody) => request(app).post(CHAT).send(body).timeout(3000);
const ok = (req: SeenRequest, res: ServerResponse) =>
  openaiOk({ by: req.key }, { organization: req.key === K2 ? 'org-Other0000000002' : ORG })(req, res);

async function eventually(check: () => boolean | Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('a group learned on replica A holds on B: a 429 on k0 then keeps B off k1 too', async () => {
  const a = replica({ strategy: 'round-robin' });
  const b = replica();
  await Promise.all([a.store.ready(), b.store.ready()]);
  suite.upstream.behaviour = ok;
  for (let i = 0; i < 3; i++) await post(a.app);
  await eventually(
    () =>
      b.pool
        .snapshot()
        .map((k) => k.group)
        .join() === [ORG, ORG, 'org-Other0000000002'].join(),
    "B learns A's groups",
  );

  suite.upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '30', 'openai-organization': ORG }) }, ok);
  await post(a.app); // round-robin: k0 first
  await eventually(() => (b.pool.snapshot()[1]!.models?.length ?? 0) > 0, "B's view of the group's cooldown");
  suite.upstream.seen.length = 0;
  await post(b.app);
  expect(suite.upstream.keysSeen()).toEqual([K2]);
});

test('one probe across two replicas: of 50 concurrent requests, exactly one reaches the recovered key before its answer', async () => {
  const a = replica();
  const b = replica();
  await Promise.all([a.store.ready(), b.store.ready()]);
  suite.upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '10' }) }, ok);
  await post(a.app);
  await eventually(() => (b.pool.snapshot()[0]!.models?.length ?? 0) > 0, "B's view of k0's cooldown");
  a.clock.advance(10_000);
  b.clock.advance(10_000);
  suite.upstream.seen.length = 0;

  const held: (() => void)[] = [];
  suite.upstream.behaviour = byKey({ [K0]: (req, res) => void held.push(() => ok(req, res)) }, ok);
  const servers = await Promise.all([listen(a.app), listen(b.app)]);
  const probes: string[] = [];
  for (const r of [a, b]) r.pool.on('probe', (e) => probes.push(e.outcome));
  try {
    const answers = Array.from({ length: 50 }, async (_, i) => {
      const res = await fetch(`${servers[i % 2]!.url}${CHAT}`, {
        method: 'POST',
        body: JSON.stringify(chatBody),
        headers: { 'content-type': 'application/json' },
      });
      return ((await res.json()) as { by?: string }).by;
    });
    await eventually(() => suite.upstream.seen.length === 50 && held.length === 1, '49 answers elsewhere, the probe held');
    expect(suite.upstream.seen.filter((r) => r.key === K0)).toHaveLength(1);
    held[0]!();
    expect((await Promise.all(answers)).filter((by) => by === K0)).toHaveLength(1);
    expect(probes).toEqual(['started', 'healthy']);
    // The healthy answer reached both replicas: no more probes, k0 is back for everyone.
    await eventually(() => [a, b].every((r) => r.pool.snapshot()[0]!.probing === undefined), 'the lease gone on both');
    suite.upstream.seen.length = 0;
    suite.upstream.behaviour = ok;
    await Promise.all([post(a.app), post(b.app), post(a.app), post(b.app)]);
    expect(suite.upstream.keysSeen()).toEqual([K0, K0, K0, K0]);
    expect(await suite.inspector.keys(`${suite.prefix}probe:*`)).toEqual([]);
  } finally {
    await Promise.all(servers.map((s) => s.close()));
  }
});

test('a probe that never answers on A holds the key out on B only until its lease ends (probeTimeoutMs)', async () => {
  const a = replica({ probeTimeoutMs: 400 });
  const b = replica({ probeTimeoutMs: 400 });
  await Promise.all([a.store.ready(), b.store.ready()]);
  suite.upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '10' }) }, ok);
  await post(a.app);
  await eventually(() => (b.pool.snapshot()[0]!.models?.length ?? 0) > 0, "B's view");
  a.clock.advance(10_000);
  b.clock.advance(10_000);
  const held: (() => void)[] = [];
  suite.upstream.behaviour = byKey({ [K0]: (req, res) => void held.push(() => ok(req, res)) }, ok);
  const server = await listen(a.app);
  try {
    const stuck = fetch(`${server.url}${CHAT}`, {
      method: 'POST',
      body: JSON.stringify(chatBody),
      headers: { 'content-type': 'application/json' },
    });
    await eventually(() => held.length === 1, "A's probe out");
    suite.upstream.seen.length = 0;
    await post(b.app);
    expect(suite.upstream.keysSeen()).toEqual([K1]);
    await new Promise((resolve) => setTimeout(resolve, 450)); // the lease's PX in Redis
    b.clock.advance(400); // and B's note of it
    const second = post(b.app).then((res) => res); // sent now (supertest sends when awaited)
    await eventually(() => held.length === 2, "B's probe");
    held.forEach((release) => release());
    expect((await second).body.by).toBe(K0);
    await stuck;
  } finally {
    await server.close();
  }
});

test('a remaining-based skip on A and the owner of an object made on A hold on B, and on a replica that starts later', async () => {
  const a = replica({ strategy: 'round-robin' });
  const b = replica({ strategy: 'round-robin' });
  await Promise.all([a.store.ready(), b.store.ready()]);
  suite.upstream.behaviour = (req, res) =>
    req.url === '/v1/responses'
      ? openaiOk({ id: `resp_${req.key!.slice(8, 10)}00000000000000000`, object: 'response', by: req.key })(req, res)
      : byKey({ [K0]: (rq, rs) => openaiOk({ by: rq.key }, { remainingRequests: 0, resetRequests: '20s' })(rq, rs) }, ok)(req, res);
  await post(a.app); // k0: none left
  await request(a.app).post('/v1/responses').send({ model: 'gpt-4o', input: 'hi' }); // k1 makes a response
  await eventually(() => (b.pool.snapshot()[0]!.models?.length ?? 0) > 0, "B's view of k0 set aside");
  const late = replica();
  await late.store.ready();
  for (const r of [b, late] as Replica[]) {
    suite.upstream.seen.length = 0;
    await post(r.app);
    await request(r.app)
      .post('/v1/responses')
      .send({ model: 'gpt-4o', input: 'again', previous_response_id: `resp_${K1.slice(8, 10)}00000000000000000` });
    expect(suite.upstream.keysSeen()[0]).not.toBe(K0);
    expect(suite.upstream.keysSeen()[1]).toBe(K1);
  }
});

test('Redis holds groups, leases and objects by state id and object id only, never a key value; objects bounded by maxObjects', async () => {
  const a = replica({ strategy: 'round-robin' }, { maxObjects: 3 });
  await a.store.ready();
  suite.upstream.behaviour = (req, res) =>
    openaiOk({ id: `resp_${Math.random().toString(36).slice(2, 14)}`, object: 'response' }, { organization: ORG })(req, res);
  for (let i = 0; i < 10; i++)
    await request(a.app)
      .post('/v1/responses')
      .send({ model: 'gpt-4o', input: `hi ${i}` });
  await eventually(async () => (await suite.inspector.hlen(`${suite.prefix}groups`)) === 3, 'three groups in Redis');
  await eventually(async () => (await suite.inspector.zcard(`${suite.prefix}objects:ends`)) === 3, 'objects bounded');
  expect(await suite.inspector.hlen(`${suite.prefix}objects`)).toBe(3);
  const dump: string[] = [];
  for (const key of await suite.inspector.keys(`${suite.prefix}*`)) {
    const type = await suite.inspector.type(key);
    dump.push(key);
    if (type === 'hash') dump.push(...Object.entries(await suite.inspector.hgetall(key)).flat());
    if (type === 'zset') dump.push(...(await suite.inspector.zrange(key, 0, -1)));
    if (type === 'string') dump.push((await suite.inspector.get(key)) ?? '');
    if (type === 'set') dump.push(...(await suite.inspector.smembers(key)));
  }
  for (const text of dump) for (const key of KEYS) expect(text).not.toContain(key);
});
