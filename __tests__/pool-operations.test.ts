import { performance } from 'node:perf_hooks';
import request from 'supertest';
import { KeyPool, type KeyPoolEvents } from '../lib/index.js';
import { CHAT, FakeClock, K0, K1, K2, KEYS, chatBody, closeGateways, gateway, useMockUpstream } from './support/gateway.js';
import { MockUpstream, byKey } from './support/mock-upstream.js';
import { openai, organizationOf } from './support/provider-answers.js';

const walk = (pool: KeyPool): string[] => {
  const ids: string[] = [];
  for (let w = pool.walker(), k = w.next(); k; k = w.next()) ids.push(k.id);
  return ids;
};

describe('strategies', () => {
  test('ordered (default): every walk starts at the first key', () => {
    const pool = new KeyPool([K0, K1, K2]);
    expect([walk(pool), walk(pool)]).toEqual([
      ['key-0', 'key-1', 'key-2'],
      ['key-0', 'key-1', 'key-2'],
    ]);
  });

  test('round-robin: each walk starts at the next key, wraps, visits each key once, skips unavailable ones', () => {
    const pool = new KeyPool({ keys: [K0, K1, K2], strategy: 'round-robin' });
    expect([walk(pool), walk(pool), walk(pool), walk(pool)]).toEqual([
      ['key-0', 'key-1', 'key-2'],
      ['key-1', 'key-2', 'key-0'],
      ['key-2', 'key-0', 'key-1'],
      ['key-0', 'key-1', 'key-2'],
    ]);
    pool.markDisabled('key-2');
    expect(walk(pool)).toEqual(['key-1', 'key-0']);
  });

  test('weighted: the first key is drawn by weight, then the walk wraps; the draw is the injected random', () => {
    const draws = [0.0, 0.15, 0.2, 0.99];
    const pool = new KeyPool({
      keys: [
        { key: K0, weight: 1 },
        { key: K1, weight: 3 },
        { key: K2, weight: 1 },
      ],
      strategy: 'weighted',
      random: () => draws.shift()!,
    });
    // cumulative weights 1, 4, 5 over a total of 5: [0, 0.2) -> key-0, [0.2, 0.8) -> key-1, [0.8, 1) -> key-2
    expect([walk(pool)[0], walk(pool)[0], walk(pool), walk(pool)]).toEqual([
      'key-0',
      'key-0',
      ['key-1', 'key-2', 'key-0'],
      ['key-2', 'key-0', 'key-1'],
    ]);
  });

  test('weighted: over many draws, starts follow the weights', () => {
    const pool = new KeyPool({
      keys: [
        { key: K0, weight: 1 },
        { key: K1, weight: 3 },
      ],
      strategy: 'weighted',
    });
    const counts = { 'key-0': 0, 'key-1': 0 } as Record<string, number>;
    for (let i = 0; i < 4000; i++) counts[pool.walker().next()!.id]!++;
    expect(counts['key-1']! / 4000).toBeGreaterThan(0.7);
    expect(counts['key-1']! / 4000).toBeLessThan(0.8);
  });

  test('round-robin spreads requests over the keys through the middleware', async () => {
    const upstream = await MockUpstream.start();
    try {
      const { app } = gateway(upstream.url, {}, { strategy: 'round-robin' });
      for (let i = 0; i < 4; i++) await request(app).post(CHAT).send(chatBody);
      expect(upstream.keysSeen()).toEqual([K0, K1, K2, K0]);
    } finally {
      await closeGateways();
      await upstream.close();
    }
  });

  test('selection in a 10 000-key pool with 10% cooling takes microseconds, for every strategy', () => {
    const clock = new FakeClock();
    const keys = Array.from({ length: 10_000 }, (_, i) => ({
      key: `sk-test-large-pool-${String(i).padStart(8, '0')}`,
      weight: 1 + (i % 3),
    }));
    for (const strategy of ['ordered', 'round-robin', 'weighted'] as const) {
      const pool = new KeyPool({ keys, strategy, now: clock.now });
      for (let i = 0; i < 10_000; i += 10) pool.markRateLimited(`key-${i}`, 60_000);
      const rounds = 20_000;
      const started = performance.now();
      for (let i = 0; i < rounds; i++) pool.walker().next();
      const microsPerSelection = ((performance.now() - started) * 1000) / rounds;
      // Generous for a shared 2-core machine; a linear scan of 10 000 keys would take ~50 µs or more.
      expect([strategy, microsPerSelection < 10]).toEqual([strategy, true]);
    }
  });

  test('an ordered pool skips its unavailable head in one step, and notices at once when it changes', () => {
    const clock = new FakeClock();
    const keys = Array.from({ length: 2_000 }, (_, i) => `sk-test-head-run-${String(i).padStart(8, '0')}`);
    const pool = new KeyPool({ keys, now: clock.now });
    for (let i = 0; i < 1_000; i++) pool.markRateLimited(`key-${i}`, 10_000 + i);
    pool.markDisabled('key-500');
    expect(pool.walker().next()?.id).toBe('key-1000'); // learns the head run
    expect(pool.walker().next()?.id).toBe('key-1000'); // uses it

    pool.enable('key-500'); // a change in the run: seen by the very next walk
    expect(pool.walker().next()?.id).toBe('key-500');
    pool.markDisabled('key-500');
    expect(pool.walker().next()?.id).toBe('key-1000');

    clock.advance(10_000); // key-0's cooldown ends: the remembered run is no longer valid
    expect(pool.walker().next()?.id).toBe('key-0');

    pool.replace(keys.slice(1_500)); // a new list starts without a remembered run
    expect(pool.walker().next()?.id).toBe('key-0');
  });

  test('bad strategy and weights are refused', () => {
    expect(() => new KeyPool({ keys: [K0], strategy: 'random' as never })).toThrow(
      /option "strategy" must be one of 'ordered', 'round-robin', 'weighted', got "random"/,
    );
    expect(() => new KeyPool({ keys: [{ key: K0, weight: 0 }] })).toThrow(/index 0 has a "weight" that is not a positive number \(0\)/);
  });
});

describe('runtime management', () => {
  test('add puts a key at the end; its id is never a reused one; duplicates are refused', () => {
    const pool = new KeyPool([K0, K1]);
    pool.remove('key-1');
    expect(pool.add(K2)).toBe('key-2');
    expect(pool.add({ id: 'spare', key: K1 })).toBe('spare');
    expect(pool.ids()).toEqual(['key-0', 'key-2', 'spare']);
    expect(() => pool.add(K0)).toThrow(/pool.add\(\): the key at index 4 is the same key as a key already in the pool/);
    expect(() => pool.add({ id: 'spare', key: 'sk-test-another-key-000000' })).toThrow(
      /has the id "spare", which a key already in the pool has/,
    );
  });

  test('remove takes a key out; a walk in progress finishes with the list it started with', () => {
    const pool = new KeyPool([K0, K1, K2]);
    const walker = pool.walker();
    expect(walker.next()?.id).toBe('key-0');
    pool.remove('key-1');
    expect(walker.next()?.id).toBe('key-1');
    expect(walk(pool)).toEqual(['key-0', 'key-2']);
    expect(() => pool.remove('key-1')).toThrow(/no key has this id/);
    pool.remove('key-2');
    expect(() => pool.remove('key-0')).toThrow(/a pool keeps at least one key/);
  });

  test('replace keeps the state of keys that stay; a rotated key (same id, new value) starts fresh', () => {
    const clock = new FakeClock();
    const pool = new KeyPool({
      keys: [
        { id: 'a', key: K0 },
        { id: 'b', key: K1 },
        { id: 'c', key: K2 },
      ],
      now: clock.now,
    });
    pool.markRateLimited('a', 30_000);
    pool.markDisabled('b');
    pool.markDisabled('c');
    const rotated = 'sk-test-rotated-b-000000000000';
    pool.replace([
      { id: 'a', key: K0 },
      { id: 'b', key: rotated },
      { id: 'd', key: K2 },
    ]);
    expect(pool.snapshot()).toEqual([
      { id: 'a', hint: K0.slice(-4), state: 'cooling', cooldownUntil: clock.time + 30_000 },
      { id: 'b', hint: rotated.slice(-4), state: 'available' },
      { id: 'd', hint: K2.slice(-4), state: 'available' },
    ]);
    expect(() => pool.replace([])).toThrow(/pool.replace\(\): "keys" must be a non-empty array/);
  });

  test('authCooldownMs: a disabled key comes back by itself after that long', () => {
    const clock = new FakeClock();
    const pool = new KeyPool({ keys: [K0, K1], now: clock.now, authCooldownMs: 300_000 });
    const enabled: unknown[] = [];
    pool.on('enabled', (e) => enabled.push(e));
    pool.markDisabled('key-0');
    expect(pool.snapshot()[0]).toEqual({
      id: 'key-0',
      hint: K0.slice(-4),
      state: 'disabled',
      disabledReason: 'auth',
      disabledUntil: clock.time + 300_000,
    });
    clock.advance(299_999);
    expect(walk(pool)).toEqual(['key-1']);
    clock.advance(1);
    expect(walk(pool)).toEqual(['key-0', 'key-1']);
    expect(enabled).toEqual([{ id: 'key-0', hint: K0.slice(-4), reason: 'authCooldown' }]);
  });
});

describe('events', () => {
  test('only real changes are events: a shorter cooldown under a longer one, or disabling a disabled key, emits nothing', () => {
    const pool = new KeyPool([K0, K1]);
    const seen: string[] = [];
    pool.on('rateLimited', (e) => seen.push(`rateLimited ${e.id} ${e.cooldownMs}`));
    pool.on('disabled', (e) => seen.push(`disabled ${e.id}`));
    pool.markRateLimited('key-0', 30_000);
    pool.markRateLimited('key-0', 10_000);
    pool.markRateLimited('key-0', 40_000);
    pool.markDisabled('key-1');
    pool.markDisabled('key-1');
    pool.markRateLimited('key-1', 5_000);
    expect(seen).toEqual(['rateLimited key-0 30000', 'rateLimited key-0 40000', 'disabled key-1']);
  });

  const upstream = useMockUpstream();

  test('rateLimited, disabled, failover, exhausted and attempt carry id, hint, status and request id, never a key', async () => {
    const { app, pool, clock } = gateway(upstream.url);
    const events: [string, unknown][] = [];
    for (const name of ['rateLimited', 'disabled', 'enabled', 'failover', 'exhausted', 'attempt'] as (keyof KeyPoolEvents)[]) {
      pool.on(name, (event: unknown) => events.push([name, event]));
    }
    upstream.behaviour = byKey(
      { [K0]: openai.rateLimited('gpt-4o-mini', { 'retry-after': '12' }), [K1]: openai.invalidKey() },
      openai.unsupportedRegion(),
    );

    const res = await request(app).post(CHAT).set('x-request-id', 'req-42').send(chatBody);
    expect(res.status).toBe(403);
    pool.enable('key-1');

    const hint = (k: string) => k.slice(-4);
    const withoutDurations = events.map(([name, e]) => [
      name,
      name === 'attempt' ? { ...(e as object), durationMs: typeof (e as { durationMs: unknown }).durationMs } : e,
    ]);
    const request42 = { requestId: 'req-42' };
    const model = 'gpt-4o-mini';
    expect(withoutDurations).toEqual([
      [
        'attempt',
        {
          id: 'key-0',
          hint: hint(K0),
          attempt: 1,
          status: 429,
          outcome: 'cooldown',
          cause: 'rate_limited',
          model,
          durationMs: 'number',
          ...request42,
        },
      ],
      [
        'rateLimited',
        {
          id: 'key-0',
          hint: hint(K0),
          cooldownMs: 12_000,
          cooldownUntil: clock.time + 12_000,
          model: 'gpt-4o-mini',
          group: organizationOf(K0), // a rate limit is its organization's
          status: 429,
          cause: 'rate_limited',
          ...request42,
        },
      ],
      ['failover', { id: 'key-0', hint: hint(K0), status: 429, action: 'cooldown', cause: 'rate_limited', ...request42 }],
      [
        'attempt',
        {
          id: 'key-1',
          hint: hint(K1),
          attempt: 2,
          status: 401,
          outcome: 'disable',
          cause: 'invalid_key',
          model,
          durationMs: 'number',
          ...request42,
        },
      ],
      ['disabled', { id: 'key-1', hint: hint(K1), reason: 'auth', status: 401, cause: 'invalid_key', ...request42 }],
      ['failover', { id: 'key-1', hint: hint(K1), status: 401, action: 'disable', cause: 'invalid_key', ...request42 }],
      [
        'attempt',
        {
          id: 'key-2',
          hint: hint(K2),
          attempt: 3,
          status: 403,
          outcome: 'skip',
          cause: 'request_not_allowed',
          model,
          durationMs: 'number',
          ...request42,
        },
      ],
      ['failover', { id: 'key-2', hint: hint(K2), status: 403, action: 'skip', cause: 'request_not_allowed', ...request42 }],
      ['enabled', { id: 'key-1', hint: hint(K1), reason: 'manual' }],
    ]);

    events.length = 0;
    upstream.behaviour = openai.rateLimited('gpt-4o-mini', { 'retry-after': '3' });
    await request(app).post(CHAT).set('x-request-id', 'not a token <script>').send(chatBody);
    expect(events.at(-1)).toEqual(['exhausted', { reason: 'rate_limited', retryAfterMs: 3_000 }]);

    const everything = JSON.stringify(events) + JSON.stringify(withoutDurations);
    for (const key of KEYS) expect(everything).not.toContain(key);
  });
});
