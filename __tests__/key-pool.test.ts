import { inspect } from 'node:util';
import { KeyFailoverError, KeyPool, MemoryKeyStateStore } from '../lib/index.js';
import { FakeClock, K0, K1, K2, stateId } from './support/gateway.js';

const thrown = (fn: () => unknown): KeyFailoverError => {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(KeyFailoverError);
    return error as KeyFailoverError;
  }
  throw new Error('expected a throw');
};

describe('new KeyPool()', () => {
  test('takes an array of strings or { keys }, with ids key-0, key-1, ... or given ones', () => {
    expect(new KeyPool([K0, K1]).snapshot().map((k) => k.id)).toEqual(['key-0', 'key-1']);
    const pool = new KeyPool({ keys: [{ id: 'primary', key: K0 }, K1, { key: K2 }] });
    expect(pool.snapshot()).toEqual([
      { id: 'primary', hint: K0.slice(-4), state: 'available' },
      { id: 'key-1', hint: K1.slice(-4), state: 'available' },
      { id: 'key-2', hint: K2.slice(-4), state: 'available' },
    ]);
    expect(pool.size).toBe(3);
  });

  test('a key shorter than 16 characters gets an empty hint, so the hint never is the key', () => {
    expect(new KeyPool(['sk-a', 'sk-b']).snapshot().map((k) => k.hint)).toEqual(['', '']);
  });

  test.each([
    [[], 'ERR_EKF_INVALID_KEYS', /non-empty array.*an empty array/],
    ['sk-a', 'ERR_EKF_INVALID_KEYS', /array of keys or an options object/],
    [{ keys: 'sk-a' }, 'ERR_EKF_INVALID_KEYS', /"keys" must be a non-empty array/],
    [[K0, ''], 'ERR_EKF_INVALID_KEYS', /index 1 must be a non-empty string/],
    [[K0, 42], 'ERR_EKF_INVALID_KEYS', /index 1 must be a non-empty string or \{ id, key \}, got 42/],
    [[{ id: 'a' }], 'ERR_EKF_INVALID_KEYS', /index 0 needs a non-empty string "key"/],
    [[{ id: '', key: K0 }], 'ERR_EKF_INVALID_KEYS', /index 0 has an "id" that is not a non-empty string/],
    [[K0, K1 + '\n'], 'ERR_EKF_INVALID_KEYS', /index 1 contains whitespace/],
    [[K0, K1, K0], 'ERR_EKF_DUPLICATE_KEY', /index 2 is the same key as the one at index 0/],
    [
      [
        { id: 'a', key: K0 },
        { id: 'a', key: K1 },
      ],
      'ERR_EKF_DUPLICATE_KEY',
      /index 0 and 1 both have the id "a"/,
    ],
    [[{ id: 'key-1', key: K0 }, K1], 'ERR_EKF_DUPLICATE_KEY', /both have the id "key-1"/],
    [{ keys: [K0], defaultCooldownMs: -5 }, 'ERR_EKF_INVALID_OPTION', /"defaultCooldownMs" must be a positive integer, got -5/],
    [{ keys: [K0], now: 5 }, 'ERR_EKF_INVALID_OPTION', /"now" must be a function/],
    [{ keys: [K0], minCooldownMs: -1 }, 'ERR_EKF_INVALID_OPTION', /"minCooldownMs" must be a non-negative integer, got -1/],
    [{ keys: [K0], maxCooldownMs: '1h' }, 'ERR_EKF_INVALID_OPTION', /"maxCooldownMs" must be a positive integer, got a string/],
    [
      { keys: [K0], minCooldownMs: 5000, maxCooldownMs: 4000 },
      'ERR_EKF_INVALID_OPTION',
      /"minCooldownMs" \(5000\) must not be larger than "maxCooldownMs" \(4000\)/,
    ],
    [{ keys: [K0], store: {} }, 'ERR_EKF_INVALID_OPTION', /"store" must implement KeyStateStore/],
    // Durations of a key's state: at most one year (past it a deadline is soon no printable date).
    [
      { keys: [K0], maxCooldownMs: Number.MAX_SAFE_INTEGER },
      'ERR_EKF_INVALID_OPTION',
      /option "maxCooldownMs" must be at most one year \(31536000000 ms\), got 9007199254740991/,
    ],
    [{ keys: [K0], defaultCooldownMs: 31_536_000_001 }, 'ERR_EKF_INVALID_OPTION', /option "defaultCooldownMs" must be at most one year/],
    [{ keys: [K0], minCooldownMs: 40_000_000_000 }, 'ERR_EKF_INVALID_OPTION', /option "minCooldownMs" must be at most one year/],
    [{ keys: [K0], authCooldownMs: 1e15 }, 'ERR_EKF_INVALID_OPTION', /option "authCooldownMs" must be at most one year/],
    [{ keys: [K0], cooldown: 5 }, 'ERR_EKF_UNKNOWN_OPTION', /unknown option "cooldown"/],
    // Avoiding the 429 (issue 21).
    [{ keys: [K0], cooldownJitter: -0.1 }, 'ERR_EKF_INVALID_OPTION', /option "cooldownJitter" must be a number from 0 to 1, got -0.1/],
    [{ keys: [K0], cooldownJitter: '10%' }, 'ERR_EKF_INVALID_OPTION', /option "cooldownJitter" must be a number from 0 to 1, got a string/],
    [{ keys: [K0], minRemainingTokens: 1.5 }, 'ERR_EKF_INVALID_OPTION', /option "minRemainingTokens" must be a non-negative integer/],
    [{ keys: [K0], probeTimeoutMs: 0 }, 'ERR_EKF_INVALID_OPTION', /option "probeTimeoutMs" must be a positive integer, got 0/],
    [{ keys: [K0], probeTimeoutMs: 1e12 }, 'ERR_EKF_INVALID_OPTION', /option "probeTimeoutMs" must be at most one year/],
    [{ keys: [K0], affinityTtlMs: -1 }, 'ERR_EKF_INVALID_OPTION', /option "affinityTtlMs" must be a non-negative integer, got -1/],
    [{ keys: [K0], affinityTtlMs: 1e12 }, 'ERR_EKF_INVALID_OPTION', /option "affinityTtlMs" must be at most one year/],
    [{ keys: [K0], logger: 'console' }, 'ERR_EKF_INVALID_OPTION', /option "logger" must be an object with a warn\(message\) method/],
    [{ keys: [{ key: K0, group: 'bad group' }] }, 'ERR_EKF_INVALID_KEYS', /index 0 has a "group" that is not/],
  ])('rejects %p with %s', (input, code, message) => {
    const error = thrown(() => new KeyPool(input as never));
    expect(error.code).toBe(code);
    expect(error.message).toMatch(message);
    expect(error.message).toMatch(/^new KeyPool\(\)/);
    // Never the key value, even when the key is what is wrong.
    for (const key of [K0, K1, K2]) expect(error.message).not.toContain(key);
  });
});

test('one year exactly is accepted for every key-state duration', () => {
  const year = 365 * 24 * 60 * 60 * 1000;
  const pool = new KeyPool({ keys: [K0], defaultCooldownMs: year, minCooldownMs: year, maxCooldownMs: year, authCooldownMs: year });
  expect([pool.defaultCooldownMs, pool.cooldownBounds, pool.authCooldownMs]).toEqual([year, { minMs: year, maxMs: year }, year]);
});

describe('walker', () => {
  test('starts at the first key, skips cooling and disabled keys, visits each key once', () => {
    const clock = new FakeClock();
    const pool = new KeyPool({ keys: [K0, K1, K2], now: clock.now });
    pool.markRateLimited('key-0', 1000);
    pool.markDisabled('key-2');

    const walker = pool.walker();
    expect(walker.next()?.id).toBe('key-1');
    expect(walker.next()).toBeUndefined();
    expect(walker.next()).toBeUndefined();

    clock.advance(1000);
    const ids: string[] = [];
    for (let w = pool.walker(), k = w.next(); k; k = w.next()) ids.push(k.id);
    expect(ids).toEqual(['key-0', 'key-1']);
  });

  test('two walkers are independent', () => {
    const pool = new KeyPool([K0, K1]);
    const a = pool.walker();
    const b = pool.walker();
    expect(a.next()?.id).toBe('key-0');
    expect(a.next()?.id).toBe('key-1');
    expect(b.next()?.id).toBe('key-0');
  });

  test('a key the walker already passed does not come back even when it recovers', () => {
    const clock = new FakeClock();
    const pool = new KeyPool({ keys: [K0, K1], now: clock.now });
    const walker = pool.walker();
    expect(walker.next()?.id).toBe('key-0');
    pool.markRateLimited('key-0', 10);
    clock.advance(10);
    expect(walker.next()?.id).toBe('key-1');
    expect(walker.next()).toBeUndefined();
  });

  test('a key handed out hides its value from JSON and inspect', () => {
    const key = new KeyPool([K0]).walker().next()!;
    expect(key.value).toBe(K0);
    expect(JSON.stringify(key)).toBe(JSON.stringify({ id: 'key-0', hint: K0.slice(-4) }));
    expect(inspect(key)).not.toContain(K0);
    expect(inspect({ nested: [key] }, { depth: 5, showHidden: true })).not.toContain(K0);
    expect(Object.keys(key)).not.toContain('value');
  });
});

describe('marking', () => {
  test('markRateLimited: longer wins, no-op on a disabled key; enable clears both', () => {
    const clock = new FakeClock();
    const pool = new KeyPool({ keys: [K0, K1], now: clock.now });
    pool.markRateLimited('key-0', 5000);
    pool.markRateLimited('key-0', 1000);
    expect(pool.snapshot()[0]).toMatchObject({ state: 'cooling', cooldownUntil: clock.time + 5000 });
    pool.markRateLimited('key-0', 8000);
    expect(pool.snapshot()[0]!.cooldownUntil).toBe(clock.time + 8000);

    pool.markDisabled('key-1');
    pool.markRateLimited('key-1', 5000);
    expect(pool.snapshot()[1]).toEqual({ id: 'key-1', hint: K1.slice(-4), state: 'disabled', disabledReason: 'auth' });

    pool.enable('key-0');
    pool.enable('key-1');
    expect(pool.snapshot().map((k) => k.state)).toEqual(['available', 'available']);
  });

  test('unknown ids and bad durations are refused with a clear error', () => {
    const pool = new KeyPool([K0]);
    expect(thrown(() => pool.markDisabled('nope')).message).toMatch(
      /pool.markDisabled\("nope"\): no key has this id. Ids in this pool: key-0/,
    );
    expect(thrown(() => pool.enable('nope')).code).toBe('ERR_EKF_UNKNOWN_KEY');
    expect(thrown(() => pool.markRateLimited('key-0', -1)).message).toMatch(/non-negative finite number/);
    expect(thrown(() => pool.markRateLimited('key-0', NaN)).message).toMatch(/got NaN/);
  });

  test('exhaustion: every key disabled, or the smallest remaining cooldown', () => {
    const clock = new FakeClock();
    const pool = new KeyPool({ keys: [K0, K1, K2], now: clock.now });
    pool.markDisabled('key-0');
    pool.markRateLimited('key-1', 9000);
    pool.markRateLimited('key-2', 4000);
    expect(pool.exhaustion()).toEqual({ reason: 'rate_limited', retryAfterMs: 4000 });
    clock.advance(1500);
    expect(pool.exhaustion()).toEqual({ reason: 'rate_limited', retryAfterMs: 2500 });
    pool.markDisabled('key-1');
    pool.markDisabled('key-2');
    expect(pool.exhaustion()).toEqual({ reason: 'disabled' });
  });

  test('a store passed in holds the state', () => {
    const store = new MemoryKeyStateStore();
    const clock = new FakeClock();
    const a = new KeyPool({ keys: [K0, K1], now: clock.now, store });
    const b = new KeyPool({ keys: [K0, K1], now: clock.now, store });
    a.markRateLimited('key-0', 1000);
    expect(b.walker().next()?.id).toBe('key-1');
    expect(store.get('key-0')).toBeUndefined(); // state is kept by id and a fingerprint of the value, never by id alone
    expect(store.get(stateId('key-0', K0))).toEqual({ cooldownUntil: clock.time + 1000, disabled: false });
  });
});
