/**
 * RedisStateStore with the cause and scope of each state: per-model cooldowns
 * and out-of-money keys shared by two replicas on a real redis-server, the
 * bound on scoped states in Redis, the newer of an enable and a disable
 * winning after an outage, the pool's clock, ready(), and a refused password.
 */
import type { Express } from 'express';
import { Redis } from 'ioredis';
import request from 'supertest';
import { KeyPool } from '../lib/index.js';
import { RedisStateStore, type RedisStateStoreOptions } from '../lib/redis.js';
import { CHAT, FakeClock, K0, K1, K2, KEYS, chatBody, gateway, stateId, statesFor } from './support/gateway.js';
import { byKey, ok } from './support/mock-upstream.js';
import { openai } from './support/provider-answers.js';
import { redisReplicaSuite } from './support/redis-suite.js';

const suite = redisReplicaSuite('scopes');
const { test } = suite;

const T0 = Date.parse('2026-01-01T00:00:00Z');

function replica(options: { store?: Partial<RedisStateStoreOptions>; logs?: string[] } = {}) {
  const clock = new FakeClock(T0);
  const logger = options.logs ? { warn: (message: string) => options.logs!.push(message) } : false;
  const store = new RedisStateStore({ url: suite.redis.url, prefix: suite.prefix, logger, ...options.store });
  suite.track(store);
  const { app, pool } = gateway(suite.upstream.url, {}, { store, now: clock.now });
  return { app, pool, clock, store };
}

const post = (app: Express, model = chatBody.model) =>
  request(app)
    .post(CHAT)
    .send({ ...chatBody, model })
    .timeout(3000);

async function eventually(check: () => boolean | Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('a per-model cooldown and an out-of-money key on A are the same on B: scope, cause and reason', async () => {
  const a = replica();
  const b = replica();
  suite.upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o', { 'retry-after': '30' }), [K1]: openai.insufficientQuota() }, ok());
  expect((await post(a.app, 'gpt-4o')).status).toBe(200);
  expect(suite.upstream.keysSeen()).toEqual([K0, K1, K2]);

  await eventually(() => statesFor(b.pool, 'gpt-4o')[0] === 'cooling' && statesFor(b.pool)[1] === 'disabled', "B's view of both");
  expect(b.pool.snapshot()[1]).toMatchObject({ state: 'disabled', disabledReason: 'quota' });
  expect(statesFor(b.pool, 'gpt-4o-mini')).toEqual(['available', 'disabled', 'available']);

  suite.upstream.seen.length = 0;
  suite.upstream.behaviour = ok();
  await post(b.app, 'gpt-4o');
  await post(b.app, 'gpt-4o-mini');
  expect(suite.upstream.keysSeen()).toEqual([K2, K0]);
});

test('100 000 distinct model strings keep the Redis key count and the scoped set bounded', async () => {
  const a = replica({ store: { maxScopedStates: 500 } });
  await a.store.ready();
  for (let i = 0; i < 100_000; i++) {
    a.pool.markRateLimited(`key-${i % 3}`, 60_000, { model: `m-${i}` });
    // Let the store's writes and their replies go every 1 000 marks: 100 000 queued at once outgrew a 4 GB heap on a loaded CI machine.
    if (i % 1000 === 999) await new Promise((resolve) => setImmediate(resolve));
  }
  expect(a.store.scopedCount).toBeLessThanOrEqual(500);
  await eventually(async () => (await suite.inspector.zcard(`${suite.prefix}scoped`)) > 0, 'the marks in Redis');
  // Let the writes drain: the last one is in Redis once its member is.
  await eventually(
    async () => (await suite.inspector.zscore(`${suite.prefix}scoped`, memberOf('key-0', K0, 'm-99999'))) !== null,
    'the last mark',
    30_000,
  );
  // Read in one script, so that a write still on its way (a retry after a local timeout, on a loaded
  // machine) cannot land between the reads: the set and the per-key fields as they stand at one instant.
  const [members, fields, keyCount] = (await suite.inspector.eval(
    `local out, fields = redis.call('ZRANGE', KEYS[1], 0, -1), {}
     local keys = redis.call('KEYS', ARGV[1] .. '*')
     for _, key in ipairs(keys) do
       local id = string.match(key, '^' .. ARGV[1]:gsub('%p', '%%%0') .. 'scoped:(.+)$')
       if id then for _, scope in ipairs(redis.call('HKEYS', key)) do fields[#fields + 1] = #id .. ':' .. id .. scope end end
     end
     return { out, fields, #keys }`,
    1,
    `${suite.prefix}scoped`,
    suite.prefix,
  )) as [string[], string[], number];
  expect(members.length).toBeLessThanOrEqual(500);
  expect(keyCount).toBeLessThanOrEqual(10); // epoch, ids, scoped, and one scoped:<id> per pool key
  // Every per-key field stands for a member of the bounded set: nothing is left behind by an eviction.
  const memberSet = new Set(members);
  expect(fields.filter((field) => !memberSet.has(field))).toEqual([]);
  expect(fields.length).toBeLessThanOrEqual(500);
}, 60_000);

test('an enable made during an outage survives replicas replaying their older disable after Redis comes back empty', async () => {
  // A replica reconnects slowly: the others replay first. Then the other order.
  for (const slow of ['enabler', 'others'] as const) {
    suite.nextPrefix();
    const delay = (who: 'enabler' | 'others') => ({ retryStrategy: () => (who === slow ? 1500 : 50) });
    const enabler = replica({ store: { url: undefined, client: ownClient(delay('enabler')) } });
    const others = [
      replica({ store: { url: undefined, client: ownClient(delay('others')) } }),
      replica({ store: { url: undefined, client: ownClient(delay('others')) } }),
    ];
    await Promise.all([enabler, ...others].map((r) => r.store.ready()));
    enabler.pool.markDisabled('key-0');
    await eventually(() => others.every((r) => r.pool.snapshot()[0]!.state === 'disabled'), 'every replica sees key-0 disabled');

    await suite.redis.kill();
    enabler.pool.enable('key-0'); // during the outage: only the enabler knows
    await suite.redis.start();
    await eventually(
      async () =>
        [enabler, ...others].every((r) => r.pool.snapshot()[0]!.state === 'available') &&
        (await suite.inspector.exists(`${suite.prefix}enabled:${stateId('key-0', K0)}`)) === 1,
      `every replica sees key-0 available (${slow} slow)`,
      15_000,
    );
    // And it stays so: the replays are over.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect([enabler, ...others].map((r) => r.pool.snapshot()[0]!.state)).toEqual(['available', 'available', 'available']);
    expect(await suite.inspector.exists(`${suite.prefix}disabled:${stateId('key-0', K0)}`)).toBe(0);
    await suite.closeStores();
  }
}, 60_000);

test('a disable made after hearing of an enable wins over it, also when replayed after an outage', async () => {
  const a = replica();
  const b = replica();
  await Promise.all([a.store.ready(), b.store.ready()]);
  a.pool.markDisabled('key-1');
  await eventually(() => b.pool.snapshot()[1]!.state === 'disabled', "B's view");
  b.pool.enable('key-1');
  await eventually(() => a.pool.snapshot()[1]!.state === 'available', "A hears of B's enable");
  // The pools' clocks are frozen: only the order in which the replicas heard of the changes can tell them apart.
  await suite.redis.kill();
  a.pool.markDisabled('key-1', { reason: 'quota' }); // the newer change, made during an outage
  await suite.redis.start();
  await eventually(
    () => a.pool.snapshot()[1]!.disabledReason === 'quota' && b.pool.snapshot()[1]!.disabledReason === 'quota',
    'both end disabled (quota)',
  );
});

test('the store measures with the pool clock; a different now given to the store is refused', () => {
  const store = new RedisStateStore({ url: suite.redis.url, prefix: suite.prefix, logger: false, now: () => 5 });
  suite.track(store);
  expect(() => new KeyPool({ keys: [K0], store, now: new FakeClock().now })).toThrow(
    /option "now" is not the clock of the KeyPool that uses this store; give "now" to the KeyPool only/,
  );
});

test('ready() resolves once a new replica has caught up: its first request already skips what another cooled', async () => {
  const a = replica();
  await a.store.ready();
  a.pool.markRateLimited('key-0', 30_000);
  await eventually(
    async () => (await suite.inspector.exists(`${suite.prefix}cooldown:${stateId('key-0', K0)}`)) === 1,
    'the mark in Redis',
  );
  const late = replica();
  await late.store.ready();
  suite.upstream.behaviour = ok();
  await post(late.app);
  expect(suite.upstream.keysSeen()).toEqual([K1]);
});

test('ready() gives up after its bound when Redis is down, and says nothing of the password', async () => {
  const logs: string[] = [];
  const store = new RedisStateStore({ url: 'redis://:hunter2@127.0.0.1:1', prefix: suite.prefix, logger: { warn: (m) => logs.push(m) } });
  suite.track(store);
  const started = Date.now();
  await store.ready(300);
  expect(Date.now() - started).toBeLessThan(1500);
  await eventually(() => logs.length === 1, 'the outage warning');
  expect(logs[0]).toMatch(/Redis is unreachable/);
  expect(logs.join('\n')).not.toContain('hunter2');
});

test('a refused password is reported as such, once, with the server message and never the password; no ioredis noise', async () => {
  const errors: unknown[] = [];
  const consoleError = jest.spyOn(console, 'error').mockImplementation((...args) => void errors.push(args));
  await suite.inspector.config('SET', 'requirepass', 'right-password');
  await suite.inspector.auth('right-password');
  try {
    const logs: string[] = [];
    const store = new RedisStateStore({
      url: `redis://:wrong-password@127.0.0.1:${suite.redis.port}`,
      prefix: suite.prefix,
      logger: { warn: (m) => logs.push(m) },
    });
    suite.track(store);
    await eventually(() => logs.length === 1, 'one warning');
    await new Promise((resolve) => setTimeout(resolve, 700)); // several reconnects
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/Redis refused the store's credentials: authentication failed \((WRONGPASS|NOAUTH)[^)]*\)/);

    // A client of the user's: the store listens for its errors, so ioredis prints nothing at each retry either.
    const theirs = new Redis(`redis://:wrong-password@127.0.0.1:${suite.redis.port}`, {
      retryStrategy: () => 100,
      maxRetriesPerRequest: 1,
      disconnectTimeout: 100,
    });
    const theirLogs: string[] = [];
    const withClient = new RedisStateStore({ client: theirs, prefix: suite.prefix, logger: { warn: (m) => theirLogs.push(m) } });
    suite.track(withClient);
    await eventually(() => theirLogs.length === 1, 'one warning for the given client');
    await new Promise((resolve) => setTimeout(resolve, 500));
    theirs.disconnect(); // theirs to stop; once the store is closed, its errors are theirs to hear again
    await withClient.close();
    expect(theirLogs[0]).toMatch(/authentication failed/);
    for (const line of [...logs, ...theirLogs]) expect(line).not.toMatch(/wrong-password|right-password/);
    expect(errors.filter((e) => String(e).includes('Unhandled error event'))).toEqual([]);
  } finally {
    await suite.inspector.config('SET', 'requirepass', '');
    consoleError.mockRestore();
  }
});

test('no key value in anything the scoped states put in Redis or publish', async () => {
  const messages: string[] = [];
  const sniffer = new Redis(suite.redis.url);
  await sniffer.psubscribe(`${suite.prefix}*`);
  sniffer.on('pmessage', (_p: string, _c: string, message: string) => messages.push(message));
  try {
    const a = replica();
    await a.store.ready();
    suite.upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini'), [K1]: openai.insufficientQuota() }, ok());
    await post(a.app);
    await eventually(() => messages.length >= 2, 'two events');
    const dump: string[] = [...messages];
    for (const key of await suite.inspector.keys(`${suite.prefix}*`)) {
      const type = await suite.inspector.type(key);
      dump.push(key);
      if (type === 'zset') dump.push(...(await suite.inspector.zrange(key, 0, -1)));
      if (type === 'hash') dump.push(...Object.entries(await suite.inspector.hgetall(key)).flat());
      if (type === 'string') dump.push((await suite.inspector.get(key)) ?? '');
      if (type === 'set') dump.push(...(await suite.inspector.smembers(key)));
    }
    for (const text of dump) for (const key of KEYS) expect(text).not.toContain(key);
  } finally {
    sniffer.disconnect();
  }
});

function ownClient(options: { retryStrategy: () => number }): Redis {
  const client = new Redis(suite.redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, ...options });
  client.on('error', () => {});
  afterCleanup.push(client);
  return client;
}
const afterCleanup: Redis[] = [];
afterEach(() => {
  for (const client of afterCleanup.splice(0)) client.disconnect();
});

function memberOf(id: string, key: string, scope: string): string {
  const sid = stateId(id, key);
  return `${sid.length}:${sid}${scope}`;
}
