import type { Express } from 'express';
import { Counter, Registry, register as globalRegister } from 'prom-client';
import request from 'supertest';
import { KeyPool, type KeyFailoverOptions, type KeyPoolOptions } from '../lib/index.js';
import { LATENCY_BUCKETS, poolMetrics, type PoolMetrics, type PoolMetricsOptions } from '../lib/metrics.js';
import { CHAT, K0, K1, K2, KEYS, chatBody, gateway, type Gateway, useMockUpstream } from './support/gateway.js';
import { byKey, json, ok } from './support/mock-upstream.js';
import { openai, openaiOk } from './support/provider-answers.js';

const upstream = useMockUpstream();

/** A gateway as a user would write it, with GET /metrics serving `registry`. */
function gatewayWithMetrics(
  registry: Registry,
  metricsOptions: PoolMetricsOptions = {},
  options: Omit<KeyFailoverOptions, 'target'> = {},
  poolOptions: Partial<KeyPoolOptions> = {},
): Gateway & { metrics: PoolMetrics } {
  const gw = gateway(upstream.url, options, poolOptions, (app: Express) => {
    app.get('/metrics', async (_req, res) => {
      res.set('content-type', registry.contentType).send(await registry.metrics());
    });
  });
  return { ...gw, metrics: poolMetrics(gw.pool, { register: registry, ...metricsOptions }) };
}

/** Scrapes over HTTP, as Prometheus would; returns the sample lines (no comments). */
async function scrape(app: Express): Promise<string[]> {
  const res = await request(app).get('/metrics');
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toMatch(/^text\/plain;.*version=0\.0\.4/);
  for (const key of KEYS) expect(res.text).not.toContain(key);
  return res.text.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
}

const sample = (lines: string[], series: string): number | undefined => {
  const line = lines.find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

const keyState = (pool: string, key: string, state: string) => `ekf_key_state{pool="${pool}",key_id="${key}",state="${state}"}`;

test('a request that fails over on 429 and 401, then relays: attempts, failovers, transitions, key states, latency', async () => {
  const registry = new Registry();
  const { app } = gatewayWithMetrics(registry);
  upstream.behaviour = byKey({ [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '30' }), [K1]: openai.invalidKey() }, ok());

  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(200);
  const lines = await scrape(app);

  expect(lines).toEqual(
    expect.arrayContaining([
      'ekf_attempts_total{pool="default",outcome="cooldown"} 1',
      'ekf_attempts_total{pool="default",outcome="disable"} 1',
      'ekf_attempts_total{pool="default",outcome="relayed"} 1',
      'ekf_failovers_total{pool="default",key_id="key-0",status="429",action="cooldown",cause="rate_limited",in_stream="false"} 1',
      'ekf_failovers_total{pool="default",key_id="key-1",status="401",action="disable",cause="invalid_key",in_stream="false"} 1',
      'ekf_key_transitions_total{pool="default",key_id="key-0",to="model_cooling",reason="rate_limited"} 1',
      'ekf_key_transitions_total{pool="default",key_id="key-1",to="disabled",reason="invalid_key"} 1',
      `${keyState('default', 'key-0', 'available')} 1`,
      `${keyState('default', 'key-0', 'cooling')} 0`,
      `${keyState('default', 'key-0', 'disabled')} 0`,
      'ekf_key_model_cooldowns{pool="default",key_id="key-0"} 1',
      'ekf_key_model_cooldowns{pool="default",key_id="key-1"} 0',
      `${keyState('default', 'key-1', 'available')} 0`,
      `${keyState('default', 'key-1', 'cooling')} 0`,
      `${keyState('default', 'key-1', 'disabled')} 1`,
      `${keyState('default', 'key-2', 'available')} 1`,
      `${keyState('default', 'key-2', 'cooling')} 0`,
      `${keyState('default', 'key-2', 'disabled')} 0`,
      'ekf_upstream_latency_seconds_count{pool="default",outcome="cooldown"} 1',
      'ekf_upstream_latency_seconds_count{pool="default",outcome="disable"} 1',
      'ekf_upstream_latency_seconds_count{pool="default",outcome="relayed"} 1',
      'ekf_upstream_latency_seconds_bucket{le="+Inf",pool="default",outcome="relayed"} 1',
    ]),
  );
  // Nothing else counted: three attempts, two failovers, two transitions, no exhaustion.
  expect(lines.filter((l) => l.startsWith('ekf_attempts_total'))).toHaveLength(3);
  expect(lines.filter((l) => l.startsWith('ekf_failovers_total'))).toHaveLength(2);
  expect(lines.filter((l) => l.startsWith('ekf_key_transitions_total'))).toHaveLength(2);
  expect(lines.filter((l) => l.startsWith('ekf_exhaustions_total'))).toEqual([]);
  // Loopback answers take milliseconds; 5 s leaves room for a busy machine.
  const relayedSeconds = sample(lines, 'ekf_upstream_latency_seconds_sum{pool="default",outcome="relayed"}')!;
  expect(relayedSeconds).toBeGreaterThan(0);
  expect(relayedSeconds).toBeLessThan(5);
  expect(lines.filter((l) => l.startsWith('ekf_upstream_latency_seconds_bucket{') && l.includes('outcome="relayed"'))).toHaveLength(
    LATENCY_BUCKETS.length + 1,
  );
});

test('exhaustion while cooling, a cooldown running out (gauge only), manual enable: counted and shown', async () => {
  const registry = new Registry();
  const { app, pool, clock } = gatewayWithMetrics(registry, {}, { failover: { insufficient_quota: 'cooldown' } });
  // Out of quota, with a cooldown for every model instead of waiting for enable() (the failover option says so).
  upstream.behaviour = byKey({ [K1]: openai.invalidKey() }, (req, res) => {
    res.setHeader('retry-after', '30');
    return openai.insufficientQuota()(req, res);
  });

  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(429);
  let lines = await scrape(app);
  expect(lines).toEqual(
    expect.arrayContaining([
      'ekf_exhaustions_total{pool="default",reason="rate_limited"} 1',
      'ekf_attempts_total{pool="default",outcome="cooldown"} 2',
      'ekf_key_transitions_total{pool="default",key_id="key-0",to="cooling",reason="insufficient_quota"} 1',
      `${keyState('default', 'key-0', 'cooling')} 1`,
      `${keyState('default', 'key-1', 'disabled')} 1`,
      `${keyState('default', 'key-2', 'cooling')} 1`,
    ]),
  );

  // A second request finds every key out without calling the upstream: one more exhaustion, no attempt.
  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(429);
  expect(upstream.seen).toHaveLength(3);
  lines = await scrape(app);
  expect(sample(lines, 'ekf_exhaustions_total{pool="default",reason="rate_limited"}')).toBe(2);
  expect(sample(lines, 'ekf_attempts_total{pool="default",outcome="cooldown"}')).toBe(2);

  clock.advance(30_000);
  pool.enable('key-1');
  lines = await scrape(app);
  expect(lines).toEqual(
    expect.arrayContaining([
      `${keyState('default', 'key-0', 'available')} 1`,
      `${keyState('default', 'key-0', 'cooling')} 0`,
      `${keyState('default', 'key-1', 'available')} 1`,
      `${keyState('default', 'key-1', 'disabled')} 0`,
      `${keyState('default', 'key-2', 'available')} 1`,
      'ekf_key_transitions_total{pool="default",key_id="key-1",to="available",reason="manual"} 1',
    ]),
  );
  // A cooldown that runs out is not an event: only the gauge says so.
  expect(lines.filter((l) => l.includes('to="available"'))).toHaveLength(1);
});

test('two pools share one registry under their pool label; every key disabled is a "disabled" exhaustion', async () => {
  const registry = new Registry();
  const main = gatewayWithMetrics(registry);
  const backup = gatewayWithMetrics(registry, { poolName: 'backup' });
  upstream.behaviour = openai.invalidKey();

  expect((await request(backup.app).post(CHAT).send(chatBody)).status).toBe(502);
  const lines = await scrape(main.app);
  expect(lines).toEqual(
    expect.arrayContaining([
      'ekf_exhaustions_total{pool="backup",reason="disabled"} 1',
      'ekf_attempts_total{pool="backup",outcome="disable"} 3',
      'ekf_key_transitions_total{pool="backup",key_id="key-2",to="disabled",reason="invalid_key"} 1',
      `${keyState('backup', 'key-0', 'disabled')} 1`,
      `${keyState('default', 'key-0', 'available')} 1`,
    ]),
  );
  expect(lines.filter((l) => l.includes('pool="default"') && !/^ekf_key_(state|model_cooldowns)\{/.test(l))).toEqual([]);
  // One HELP/TYPE per metric: the pools share metric objects.
  const text = await registry.metrics();
  expect(text.match(/^# TYPE ekf_attempts_total counter$/gm)).toHaveLength(1);
});

test('authCooldownMs bringing a key back is counted in the same scrape that shows it available', async () => {
  const registry = new Registry();
  const { app, clock } = gatewayWithMetrics(registry, {}, {}, { authCooldownMs: 300_000 });
  upstream.behaviour = byKey({ [K0]: openai.invalidKey() }, ok());

  await request(app).post(CHAT).send(chatBody);
  clock.advance(300_000);
  const lines = await scrape(app);
  expect(lines).toEqual(
    expect.arrayContaining([
      `${keyState('default', 'key-0', 'available')} 1`,
      'ekf_key_transitions_total{pool="default",key_id="key-0",to="disabled",reason="invalid_key"} 1',
      'ekf_key_transitions_total{pool="default",key_id="key-0",to="available",reason="authCooldown"} 1',
    ]),
  );
});

test('unreachable and timeout attempts have their outcome, and a timeout lands in the right latency buckets', async () => {
  const registry = new Registry();
  const { app } = gatewayWithMetrics(registry, {}, { timeoutMs: 150 });
  upstream.behaviour = byKey({ [K0]: (_req, res) => void res.socket?.destroy() }, () => undefined /* never answers */);

  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(502);
  upstream.behaviour = () => undefined;
  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(504);

  const lines = await scrape(app);
  expect(lines).toEqual(
    expect.arrayContaining([
      'ekf_attempts_total{pool="default",outcome="unreachable"} 1',
      'ekf_attempts_total{pool="default",outcome="timeout"} 1',
      'ekf_upstream_latency_seconds_bucket{le="0.1",pool="default",outcome="timeout"} 0',
      'ekf_upstream_latency_seconds_bucket{le="120",pool="default",outcome="timeout"} 1',
      'ekf_upstream_latency_seconds_count{pool="default",outcome="timeout"} 1',
    ]),
  );
  expect(sample(lines, 'ekf_upstream_latency_seconds_sum{pool="default",outcome="timeout"}')).toBeGreaterThanOrEqual(0.15);
});

test('stop() unsubscribes and drops the pool from key_state; the name can then be used again', async () => {
  const registry = new Registry();
  const { app, pool, metrics } = gatewayWithMetrics(registry);
  upstream.behaviour = ok();
  await request(app).post(CHAT).send(chatBody);
  expect(() => poolMetrics(pool, { register: registry })).toThrow(/option "poolName" "default" is already reported in this registry/);

  metrics.stop();
  metrics.stop();
  await request(app).post(CHAT).send(chatBody);
  let lines = await scrape(app);
  expect(sample(lines, 'ekf_attempts_total{pool="default",outcome="relayed"}')).toBe(1);
  expect(lines.filter((l) => l.startsWith('ekf_key_state'))).toEqual([]);
  for (const event of ['attempt', 'failover', 'rateLimited', 'disabled', 'enabled', 'exhausted'] as const) {
    expect([event, pool.listenerCount(event)]).toEqual([event, 0]);
  }

  const again = poolMetrics(pool, { register: registry });
  await request(app).post(CHAT).send(chatBody);
  lines = await scrape(app);
  expect(sample(lines, 'ekf_attempts_total{pool="default",outcome="relayed"}')).toBe(2);
  expect(sample(lines, keyState('default', 'key-0', 'available'))).toBe(1);
  again.stop();
});

test('prefix and the global register; metric names are the documented ones', async () => {
  const pool = new KeyPool([K0, K1, K2]);
  const metrics = poolMetrics(pool, { prefix: 'gateway_' });
  try {
    pool.markRateLimited('key-0', 1000);
    const text = await globalRegister.metrics();
    expect(text).toContain('gateway_key_transitions_total{pool="default",key_id="key-0",to="cooling",reason="manual"} 1');
    expect(text.match(/^# TYPE \S+ \S+$/gm)).toEqual([
      '# TYPE gateway_key_state gauge',
      '# TYPE gateway_key_model_cooldowns gauge',
      '# TYPE gateway_attempts_total counter',
      '# TYPE gateway_failovers_total counter',
      '# TYPE gateway_key_transitions_total counter',
      '# TYPE gateway_exhaustions_total counter',
      '# TYPE gateway_upstream_latency_seconds histogram',
      '# TYPE gateway_key_group gauge',
      '# TYPE gateway_remaining_skips_total counter',
      '# TYPE gateway_probes_total counter',
      '# TYPE gateway_affinity_total counter',
    ]);
  } finally {
    metrics.stop();
    globalRegister.clear();
  }
});

test('bad options are refused with the option named, and leave the registry as it was', () => {
  const pool = new KeyPool([K0]);
  const registry = new Registry();
  expect(() => poolMetrics({} as KeyPool)).toThrow(/poolMetrics\(\): the first argument must be a KeyPool, got object/);
  expect(() => poolMetrics(pool, { register: {} as Registry })).toThrow(/option "register" must be a prom-client Registry/);
  expect(() => poolMetrics(pool, { register: registry, prefix: '1ekf' })).toThrow(/option "prefix" must be a string .* got "1ekf"/);
  expect(() => poolMetrics(pool, { register: registry, prefix: 'ekf-' })).toThrow(/option "prefix"/);
  expect(() => poolMetrics(pool, { register: registry, poolName: '' })).toThrow(/option "poolName" must be a non-empty string/);
  expect(() => poolMetrics(pool, { register: registry, pool: 'x' } as PoolMetricsOptions)).toThrow(/unknown option "pool"/);
  expect(thrown(() => poolMetrics(pool, { prefix: 3 as never }))).toMatchObject({
    name: 'KeyFailoverError',
    code: 'ERR_EKF_INVALID_OPTION',
  });

  new Counter({ name: 'ekf_failovers_total', help: 'someone else', registers: [registry] });
  expect(() => poolMetrics(pool, { register: registry })).toThrow(
    /already has a metric named "ekf_failovers_total" that is not a Counter with labels pool, key_id, status, action, cause, in_stream; choose another "prefix"/,
  );
  expect(registry.getMetricsAsArray().map((m) => m.name)).toEqual(['ekf_failovers_total']);
  expect(() => poolMetrics(pool, { register: registry, prefix: 'ekf_gw_' })).not.toThrow();
});

test('the main entry never loads prom-client', () => {
  jest.isolateModules(() => {
    jest.doMock('prom-client', () => {
      throw new Error('prom-client was loaded by express-key-failover (the main entry)');
    });
    expect(() => require('../lib/index.js')).not.toThrow();
    expect(() => require('../lib/metrics.js')).toThrow(/prom-client was loaded/); // the mock does catch a load
  });
});

// An upstream answer of a status not in the failover map is relayed and counted as such.
test('a relayed error status is a "relayed" attempt with no failover', async () => {
  const registry = new Registry();
  const { app } = gatewayWithMetrics(registry);
  upstream.behaviour = (_req, res) => json(res, 500, { error: { message: 'upstream broke' } });
  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(500);
  const lines = await scrape(app);
  expect(sample(lines, 'ekf_attempts_total{pool="default",outcome="relayed"}')).toBe(1);
  expect(lines.filter((l) => l.startsWith('ekf_failovers_total'))).toEqual([]);
});

test('groups, remaining-based skips, probes, affinity and a spent budget, scraped over HTTP', async () => {
  const registry = new Registry();
  const { app, pool, clock } = gatewayWithMetrics(registry, {}, { maxAttempts: 1 }, { keys: [{ key: K0, group: 'acme' }, K1, K2] });
  // key-1 learns its group; its answer says no requests are left for 5 s.
  upstream.behaviour = byKey(
    { [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '10' }) },
    openaiOk(
      { object: 'response', id: 'resp_metrics000000000001' },
      { organization: 'org-metrics0000000001', remainingRequests: 0, resetRequests: '5s' },
    ),
  );
  expect((await request(app).post(CHAT).send(chatBody)).status).toBe(429); // maxAttempts 1: k0's 429, the budget spent
  expect((await request(app).post('/v1/responses').send({ model: 'gpt-4o-mini', input: 'x' })).status).toBe(200); // key-1: key-0's group cools
  clock.advance(10_000); // key-0's cooldown ends: its next request is a probe
  upstream.behaviour = openaiOk();
  await request(app).post(CHAT).send(chatBody);
  await request(app).post('/v1/responses').send({ model: 'gpt-4o-mini', input: 'y', previous_response_id: 'resp_metrics000000000001' });
  const lines = await scrape(app);
  expect(lines).toEqual(
    expect.arrayContaining([
      'ekf_key_group{pool="default",key_id="key-0",group="acme"} 1',
      'ekf_key_group{pool="default",key_id="key-1",group="org-metrics0000000001"} 1',
      'ekf_remaining_skips_total{pool="default",key_id="key-1",limit="requests"} 1',
      'ekf_probes_total{pool="default",key_id="key-0",outcome="started"} 1',
      'ekf_probes_total{pool="default",key_id="key-0",outcome="healthy"} 1',
      'ekf_affinity_total{pool="default",key_id="key-1",outcome="learned"} 1',
      'ekf_affinity_total{pool="default",key_id="key-1",outcome="routed"} 1',
      'ekf_exhaustions_total{pool="default",reason="budget"} 1',
    ]),
  );
  expect(lines.some((l) => l.startsWith('ekf_key_group{pool="default",key_id="key-2"'))).toBe(false); // no group known
  expect(pool.snapshot()[1]!.group).toBe('org-metrics0000000001');
});
