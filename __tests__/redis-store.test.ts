import type { Express } from 'express';
import { Redis } from 'ioredis';
import request from 'supertest';
import type { KeyPoolOptions } from '../lib/index.js';
import { RedisStateStore, type RedisStateStoreOptions } from '../lib/redis.js';
import { CHAT, FakeClock, K0, K1, K2, KEYS, chatBody, gateway, stateId } from './support/gateway.js';
import { byKey, ok } from './support/mock-upstream.js';
import { openai, organizationOf } from './support/provider-answers.js';
import { redisReplicaSuite } from './support/redis-suite.js';

/**
 * Two gateway replicas (two Express apps, two pools, two RedisStateStores)
 * sharing one real redis-server, each with its own injected clock.
 */

const suite = redisReplicaSuite('test');
const { test } = suite;

const T0 = Date.parse('2026-01-01T00:00:00Z');

function replica(
  options: {
    offsetMs?: number;
    logs?: string[];
    infos?: string[];
    pool?: Partial<KeyPoolOptions>;
    store?: Partial<RedisStateStoreOptions>;
  } = {},
) {
  const clock = new FakeClock(T0 + (options.offsetMs ?? 0));
  const logger = options.logs
    ? { warn: (message: string) => options.logs!.push(message), info: (message: string) => options.infos?.push(message) }
    : false;
  const store = new RedisStateStore({ url: suite.redis.url, prefix: suite.prefix, now: clock.now, logger, ...options.store });
  suite.track(store);
  const { app, pool } = gateway(suite.upstream.url, {}, { store, now: clock.now, ...options.pool });
  return { app, pool, clock, store };
}
type Replica = ReturnType<typeof replica>;

const post = (app: Express) => request(app).post(CHAT).send(chatBody).timeout(3000);
const stateOf = (r: Replica, id: string) => r.pool.snapshot().find((k) => k.id === id)!;
const remaining = (r: Replica, id: string) => (stateOf(r, id).cooldownUntil ?? 0) - r.clock.now();
/** What is left of key `id`'s cooldown for `model` on replica `r` (0: none). */
const modelLeft = (r: Replica, id: string, model = chatBody.model) =>
  Math.max(0, (stateOf(r, id).models?.find((m) => m.model === model)?.cooldownUntil ?? 0) - r.clock.now());
const IDS = new Map(KEYS.map((key, i) => [`key-${i}`, stateId(`key-${i}`, key)]));
/** The Redis key of a pool key's state: by its id and a fingerprint of its value, never the value. */
const rk = (kind: string, id: string) => `${suite.prefix}${kind}:${IDS.get(id)}`;
/**
 * The state id of the group of key `id`: each key's answers name an organization of its own (the mock's), and
 * a rate limit is its organization's, so that is where its cooldowns live.
 */
const groupOf = (id: string) => `${organizationOf(KEYS[Number(id.slice(4))])}@group`;
/** What is left, in Redis, of key `id`'s (its group's) cooldown for `model`. */
async function scopedLeftInRedis(id: string, model = chatBody.model): Promise<number> {
  const sid = groupOf(id);
  const [score, [seconds, micros]] = await Promise.all([
    suite.inspector.zscore(`${suite.prefix}scoped`, `${sid.length}:${sid}${model}`),
    suite.inspector.time(),
  ]);
  return score === null ? 0 : Number(score) - (Number(seconds) * 1000 + Math.floor(Number(micros) / 1000));
}
/** Fake clocks stand still while Redis's TTLs run: a value read back from Redis is a few ms short. */
const near = (actual: number, expected: number, tolerance = 200) => Math.abs(actual - expected) <= tolerance;

/**
 * Wraps the next resync of a store that was given `redisClient` (the store calls the script by name
 * on it): `around` decides what happens before and after the script runs. Settles once the store has
 * had the answer.
 */
function interceptNextResync(redisClient: Redis, around: (run: () => Promise<unknown>) => Promise<unknown>): Promise<void> {
  const scripts = redisClient as unknown as { ekfKeyStateResync: (...args: unknown[]) => Promise<unknown> };
  const original = scripts.ekfKeyStateResync;
  return new Promise((resolve, reject) => {
    scripts.ekfKeyStateResync = (...args) => {
      scripts.ekfKeyStateResync = original;
      const answer = around(() => original.apply(redisClient, args));
      answer.then(() => setTimeout(resolve, 20), reject);
      return answer;
    };
  });
}

async function eventually(check: () => boolean | Promise<boolean>, what: string, ms = 5000): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return Date.now() - started;
}

test('a 429 seen by replica A makes replica B skip that key for that model on its next request; in Redis the cooldown expires by itself', async () => {
  const a = replica();
  const b = replica();
  suite.upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '30' }) }, ok());

  expect((await post(a.app)).status).toBe(200);
  expect(suite.upstream.keysSeen()).toEqual([K0, K1]);
  const ms = await eventually(() => modelLeft(b, 'key-0') > 0, "B's view of key-0 for gpt-4o-mini");
  console.log(`B saw A's 429 after ${ms} ms`);
  expect(near(modelLeft(b, 'key-0'), 30_000)).toBe(true);
  expect(stateOf(b, 'key-0').state).toBe('available');

  suite.upstream.seen.length = 0;
  expect((await post(b.app)).status).toBe(200);
  expect(suite.upstream.keysSeen()).toEqual([K1]);
  // Another model is not limited on key-0: B still sends it there.
  suite.upstream.behaviour = ok();
  expect(
    (
      await request(b.app)
        .post(CHAT)
        .send({ ...chatBody, model: 'gpt-4o' })
    ).status,
  ).toBe(200);
  expect(suite.upstream.keysSeen()).toEqual([K1, K0]);

  const left = await scopedLeftInRedis('key-0');
  expect(left).toBeGreaterThan(29_000);
  expect(left).toBeLessThanOrEqual(30_000);
  const pttl = await suite.inspector.pttl(`${suite.prefix}scoped:${groupOf('key-0')}`);
  expect(pttl).toBeGreaterThan(29_000);
  expect(pttl).toBeLessThanOrEqual(30_000);
});

test('a 401 on A disables the key on B; pool.enable() on B brings it back on A', async () => {
  const a = replica();
  const b = replica();
  suite.upstream.behaviour = byKey({ [K0]: openai.invalidKey() }, ok());

  expect((await post(a.app)).status).toBe(200);
  await eventually(() => stateOf(b, 'key-0').state === 'disabled', "B's view of key-0");
  suite.upstream.seen.length = 0;
  expect((await post(b.app)).status).toBe(200);
  expect(suite.upstream.keysSeen()).toEqual([K1]);
  expect(await suite.inspector.pttl(`${rk('disabled', 'key-0')}`)).toBe(-1); // no expiry: until enable()

  b.pool.enable('key-0');
  await eventually(() => stateOf(a, 'key-0').state === 'available', "A's view of key-0");
  suite.upstream.reset();
  expect((await post(a.app)).status).toBe(200);
  expect(suite.upstream.keysSeen()).toEqual([K0]);
  expect(await suite.inspector.exists(`${rk('disabled', 'key-0')}`)).toBe(0);
});

test('an authCooldownMs disable expires in Redis by itself and is seen with its deadline on both', async () => {
  const a = replica({ pool: { authCooldownMs: 60_000 } });
  const b = replica({ pool: { authCooldownMs: 60_000 } });
  a.pool.markDisabled('key-1');
  await eventually(() => stateOf(b, 'key-1').state === 'disabled', "B's view of key-1");
  expect(near(stateOf(b, 'key-1').disabledUntil! - b.clock.now(), 60_000)).toBe(true);
  const pttl = await suite.inspector.pttl(`${rk('disabled', 'key-1')}`);
  expect(pttl).toBeGreaterThan(59_000);
  expect(pttl).toBeLessThanOrEqual(60_000);
});

test('concurrent marks from both replicas keep the longer cooldown, in either order', async () => {
  const a = replica();
  const b = replica();
  await eventually(() => suite.inspector.exists(`${suite.prefix}epoch`).then((n) => n === 1), 'both replicas connected');
  a.pool.markRateLimited('key-0', 10_000); // same tick: both scripts are in flight at once
  b.pool.markRateLimited('key-0', 30_000);
  b.pool.markRateLimited('key-1', 10_000);
  a.pool.markRateLimited('key-1', 30_000);

  for (const id of ['key-0', 'key-1']) {
    await eventually(() => near(remaining(a, id), 30_000) && near(remaining(b, id), 30_000), `both views of ${id} at 30 s`);
    expect(await suite.inspector.pttl(`${rk('cooldown', id)}`)).toBeGreaterThan(29_000);
  }
});

test('30 s then 10 s keeps 30 s, also for a replica that has not heard of the 30 s yet', async () => {
  const a = replica();
  a.pool.markRateLimited('key-2', 30_000);
  await eventually(() => suite.inspector.pttl(`${rk('cooldown', 'key-2')}`).then((ms) => ms > 0), 'the 30 s mark in Redis');
  // A replica just starting: its 10 s mark is made before it has synced, and goes to Redis when it connects.
  const c = replica();
  c.pool.markRateLimited('key-2', 10_000);
  expect(remaining(c, 'key-2')).toBe(10_000);
  await eventually(() => remaining(c, 'key-2') > 29_000, "C's view corrected to 30 s");
  expect(await suite.inspector.pttl(`${rk('cooldown', 'key-2')}`)).toBeGreaterThan(29_000);
});

test('clock skew: a replica whose clock is 5 s ahead sees the same remaining cooldown', async () => {
  const a = replica();
  const b = replica({ offsetMs: 5000 });
  a.pool.markRateLimited('key-0', 20_000);
  await eventually(() => stateOf(b, 'key-0').state === 'cooling', "B's view of key-0");
  expect(near(remaining(b, 'key-0'), 20_000)).toBe(true);
  expect(near(stateOf(b, 'key-0').cooldownUntil!, T0 + 5000 + 20_000)).toBe(true); // not T0 + 20 000: that would be 15 s on B's clock
  // A replica starting later reads it by resync, also on its own clock.
  const c = replica({ offsetMs: -3000 });
  await eventually(() => stateOf(c, 'key-0').state === 'cooling', "C's view of key-0");
  expect(near(remaining(c, 'key-0'), 20_000)).toBe(true);
});

test('a client you give is used and left open; the store subscribes on a duplicate; its keyPrefix is honoured', async () => {
  const mine = suite.client({ keyPrefix: 'app:' });
  const store = new RedisStateStore({ client: mine, prefix: suite.prefix, logger: false });
  suite.track(store);
  store.markDisabled('key-2');
  await eventually(
    () => suite.inspector.exists(`app:${suite.prefix}disabled:key-2`).then((n) => n === 1),
    'the disable in Redis, under the keyPrefix',
  );
  // Another replica, started later, with the same kind of client: it learns the state by resync.
  const other = suite.client({ keyPrefix: 'app:' });
  const late = new RedisStateStore({ client: other, prefix: suite.prefix, logger: false });
  suite.track(late);
  await eventually(() => late.get('key-2')?.disabled === true, "the late replica's view of key-2");
  await Promise.all([store.close(), late.close()]);
  expect([mine.status, other.status]).toEqual(['ready', 'ready']);
});

test('no key value is ever stored in Redis or published', async () => {
  const messages: string[] = [];
  const sniffer = suite.client();
  await sniffer.psubscribe('*');
  sniffer.on('pmessage', (_pattern: string, channel: string, message: string) => messages.push(channel + ' ' + message));
  const a = replica({ pool: { authCooldownMs: 60_000 } });
  const b = replica();
  suite.upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini'), [K1]: openai.insufficientQuota() }, ok());
  expect((await post(a.app)).status).toBe(200);
  await eventually(() => stateOf(b, 'key-1').state === 'disabled', "B's view of key-1");
  expect(stateOf(b, 'key-1').disabledReason).toBe('quota');
  a.pool.markRateLimited('key-2', 5_000);
  b.pool.enable('key-1');
  await eventually(() => messages.length >= 4, 'four events');

  const stored: string[] = [];
  for (const key of await suite.inspector.keys('*')) {
    const type = await suite.inspector.type(key);
    const values =
      type === 'string'
        ? [(await suite.inspector.get(key))!]
        : type === 'set'
          ? await suite.inspector.smembers(key)
          : type === 'zset'
            ? await suite.inspector.zrange(key, 0, -1)
            : type === 'hash'
              ? Object.entries(await suite.inspector.hgetall(key)).flat()
              : [type];
    stored.push(key, ...values);
  }
  expect(stored).toEqual(
    expect.arrayContaining([
      rk('cooldown', 'key-2'),
      `${suite.prefix}scoped:${groupOf('key-0')}`,
      rk('enabled', 'key-1'),
      `${suite.prefix}groups`,
      IDS.get('key-0'),
      organizationOf(K0),
      'gpt-4o-mini',
    ]),
  );
  // The empty account is its organization's: key-1's group is out.
  expect(messages.some((m) => m.includes(`"id":"${groupOf('key-1')}"`) && m.includes('"reason":"quota"'))).toBe(true);
  expect(messages.some((m) => m.includes('"scope":"gpt-4o-mini"'))).toBe(true);
  for (const text of [...stored, ...messages]) for (const key of KEYS) expect(text).not.toContain(key);
});

test('Redis hanging: requests do not wait, one warning, and the marks arrive once it answers again', async () => {
  const logsA: string[] = [];
  const infosA: string[] = [];
  const a = replica({ logs: logsA, infos: infosA, store: { operationTimeoutMs: 200 } });
  const b = replica({ store: { operationTimeoutMs: 200 } });
  await eventually(() => suite.inspector.exists(`${suite.prefix}epoch`).then((n) => n === 1), 'both replicas connected');
  suite.redis.pause();
  try {
    suite.upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '30' }) }, ok());
    const started = Date.now();
    expect((await post(a.app)).status).toBe(200);
    expect((await post(a.app)).status).toBe(200);
    expect(Date.now() - started).toBeLessThan(1500); // a request that waited on the hung Redis would not come back at all
    expect(suite.upstream.keysSeen()).toEqual([K0, K1, K1]);
    await eventually(() => logsA.length === 1, 'the outage noticed by A (its mark timed out)');
  } finally {
    suite.redis.resume();
  }
  await eventually(() => modelLeft(b, 'key-0') > 0, "B's view of A's mark", 5000);
  await eventually(() => infosA.length === 1, "A's recovery noticed", 5000);
  expect(infosA).toEqual([expect.stringMatching(/Redis is reachable again/)]);
  expect(logsA).toHaveLength(1);
});

// Last: the tests from here on kill and restart the server (same port, empty database).
test('Redis down mid-test: both replicas keep answering, warn once, and reconverge when it is back', async () => {
  const logsA: string[] = [];
  const logsB: string[] = [];
  const infosB: string[] = [];
  const a = replica({ logs: logsA });
  const b = replica({ logs: logsB, infos: infosB });
  suite.upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '30' }) }, ok());
  expect((await post(a.app)).status).toBe(200);
  await eventually(() => modelLeft(b, 'key-0') > 0, "B's view of key-0");

  await suite.redis.kill();
  await eventually(() => logsA.length === 1 && logsB.length === 1, 'one warning from each replica');

  // During the outage: marks stay local, answers come at once from the local views.
  a.pool.markDisabled('key-1');
  for (let i = 0; i < 3; i++) {
    suite.upstream.seen.length = 0;
    const started = Date.now();
    expect((await post(a.app)).status).toBe(200);
    expect((await post(b.app)).status).toBe(200);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(suite.upstream.keysSeen()).toEqual([K2, K1]);
  }
  b.pool.markRateLimited('key-2', 45_000);
  expect(stateOf(b, 'key-1').state).toBe('available');
  expect(stateOf(a, 'key-2').state).toBe('available');

  await suite.redis.start(); // same port, empty database: each replica gives back what it knows
  await eventually(
    () => stateOf(b, 'key-1').state === 'disabled' && stateOf(a, 'key-2').state === 'cooling',
    'both outage-time marks on the other replica',
    10_000,
  );
  expect(modelLeft(a, 'key-0')).toBeGreaterThan(25_000);
  expect(remaining(a, 'key-2')).toBeGreaterThan(40_000);
  expect(await scopedLeftInRedis('key-0')).toBeGreaterThan(25_000);
  expect(await suite.inspector.pttl(`${rk('disabled', 'key-1')}`)).toBe(-1); // marked by hand: the key's own
  suite.upstream.seen.length = 0;
  const res = await post(b.app);
  expect(res.status).toBe(429); // every key out on B too: key-0 and key-2 cooling, key-1 disabled
  expect(suite.upstream.keysSeen()).toEqual([]);

  expect(logsA).toEqual([expect.stringMatching(/Redis is unreachable.*serving key state from this process/)]);
  expect(logsB).toHaveLength(1);
  // B's view is back before its subscriber may be: that reconnects on its own schedule, and B says it is back only then.
  await eventually(() => infosB.length > 0, "B's recovery noticed", 10_000);
  expect(infosB).toHaveLength(1); // and one line when it came back
  for (const line of [...logsA, ...logsB]) for (const key of KEYS) expect(line).not.toContain(key);
}, 30_000);

test('a resync that reaches Redis only after it restarted does not empty the view: the replica gives its mark back', async () => {
  const logs: string[] = [];
  const infos: string[] = [];
  // A client of the user's, with ioredis's defaults: a command sent as the server dies is resent once it is back
  // (the store's own clients do the same), and one sent while it is away waits in the offline queue.
  const mine = suite.client().on('error', () => {});
  const a = replica({ logs, infos, store: { client: mine, url: undefined, operationTimeoutMs: 10_000, resyncIntervalMs: 200 } });
  a.pool.markRateLimited('key-0', 30_000);
  await eventually(() => suite.inspector.pttl(`${rk('cooldown', 'key-0')}`).then((ms) => ms > 0), 'the mark in Redis');

  // A periodic catch-up: its replay reads the epoch of this server, then Redis restarts before the resync gets there.
  await interceptNextResync(mine, async (run) => {
    await suite.redis.kill();
    await suite.redis.start();
    return run(); // answered by the new, empty server
  });
  await eventually(() => infos.length === 1, 'A caught up with the new server', 10_000);
  expect(remaining(a, 'key-0')).toBeGreaterThan(25_000);
  expect(await suite.inspector.pttl(`${rk('cooldown', 'key-0')}`)).toBeGreaterThan(25_000);
  expect(logs).toHaveLength(1);
}, 30_000);

test('a replica whose catch-up never succeeded gives back, after a restart, the marks it made and those it heard of', async () => {
  // An epoch key of the wrong type fails every catch-up (like a first one that timed out on a loaded machine),
  // while writes and events go through: the replicas never learn the epoch of this server.
  await suite.inspector.hset(`${suite.prefix}epoch`, 'not', 'a string');
  const logsA: string[] = [];
  const logsB: string[] = [];
  const infosB: string[] = [];
  const a = replica({ logs: logsA });
  const b = replica({ logs: logsB, infos: infosB });
  await eventually(() => logsA.length === 1 && logsB.length === 1, 'both first catch-ups failed');
  await eventually(
    () => suite.inspector.call('PUBSUB', 'NUMSUB', `${suite.prefix}events`).then((reply) => Number((reply as unknown[])[1]) === 2),
    'both replicas subscribed',
  );
  a.pool.markRateLimited('key-0', 30_000);
  b.pool.markDisabled('key-1');
  await eventually(
    () => stateOf(b, 'key-0').state === 'cooling' && stateOf(a, 'key-1').state === 'disabled',
    'each mark heard by the other replica',
  );
  await a.store.close(); // the replica that made key-0's mark goes away: only B knows of it now

  await suite.redis.kill();
  await suite.redis.start(); // empty, without the bad epoch key: B's next catch-up succeeds
  await eventually(() => infosB.length === 1, 'B caught up with the new server', 10_000);
  expect(remaining(b, 'key-0')).toBeGreaterThan(25_000);
  expect(stateOf(b, 'key-1').state).toBe('disabled');
  expect(await suite.inspector.pttl(`${rk('cooldown', 'key-0')}`)).toBeGreaterThan(25_000);
  expect(await suite.inspector.pttl(`${rk('disabled', 'key-1')}`)).toBe(-1); // marked by hand: the key's own
  expect(logsB).toHaveLength(1);
}, 30_000);

test("changes heard while a resync is on its way are not undone by that resync's older answer", async () => {
  const mine = suite.client().on('error', () => {});
  const a = replica({ store: { client: mine, url: undefined, resyncIntervalMs: 300 } });
  const b = replica();
  await eventually(
    () => suite.inspector.call('PUBSUB', 'NUMSUB', `${suite.prefix}events`).then((reply) => Number((reply as unknown[])[1]) === 2),
    'both replicas subscribed',
  );
  b.pool.markRateLimited('key-2', 10_000);
  await eventually(() => stateOf(a, 'key-2').state === 'cooling', "A's view of key-2");

  // A's next periodic resync is answered before B's changes, and A hears of them before it reads that answer.
  await interceptNextResync(mine, async (run) => {
    const answer = await run();
    b.pool.markDisabled('key-1');
    b.pool.enable('key-2');
    await eventually(() => stateOf(a, 'key-1').state === 'disabled' && stateOf(a, 'key-2').state === 'available', "A hears B's changes");
    return answer;
  });
  expect(stateOf(a, 'key-1').state).toBe('disabled'); // not removed by an answer older than the disable
  expect(stateOf(a, 'key-2').state).toBe('available'); // and not cooling again
});
