import { readFileSync } from 'node:fs';
import path from 'node:path';
import { KeyFailoverError } from '../lib/index.js';
import { RedisStateStore } from '../lib/redis.js';

/** What the Redis store checks without a Redis: its options, and that the main entry never loads it. */

describe('option validation', () => {
  test.each([
    [{}, 'ERR_EKF_INVALID_OPTION', /exactly one of option "client".*"url".*got neither/],
    [{ url: 'redis://127.0.0.1:1', client: {} }, 'ERR_EKF_INVALID_OPTION', /exactly one of option "client".*got both/],
    [{ url: 42 }, 'ERR_EKF_INVALID_OPTION', /"url" must be a redis:\/\/ or rediss:\/\/ URL string, got 42/],
    [{ url: 'http://:hunter2@127.0.0.1' }, 'ERR_EKF_INVALID_OPTION', /"url" must be .* got another string/],
    [{ client: {} }, 'ERR_EKF_INVALID_OPTION', /"client" must be an ioredis client/],
    [{ url: 'redis://127.0.0.1:1', prefix: '' }, 'ERR_EKF_INVALID_OPTION', /"prefix" must be a non-empty string/],
    [{ url: 'redis://127.0.0.1:1', now: 5 }, 'ERR_EKF_INVALID_OPTION', /"now" must be a function/],
    [{ url: 'redis://127.0.0.1:1', logger: 'yes' }, 'ERR_EKF_INVALID_OPTION', /"logger" must be an object with a warn/],
    [
      { url: 'redis://127.0.0.1:1', operationTimeoutMs: 0 },
      'ERR_EKF_INVALID_OPTION',
      /"operationTimeoutMs" must be a positive integer, got 0/,
    ],
    [{ url: 'redis://127.0.0.1:1', resyncIntervalMs: -1 }, 'ERR_EKF_INVALID_OPTION', /"resyncIntervalMs" must be a non-negative integer/],
    [{ url: 'redis://127.0.0.1:1', host: 'x' }, 'ERR_EKF_UNKNOWN_OPTION', /unknown option "host"/],
    [null, 'ERR_EKF_INVALID_OPTION', /expected an options object/],
  ])('rejects %p', (input, code, message) => {
    let error: unknown;
    try {
      new RedisStateStore(input as never);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KeyFailoverError);
    expect((error as KeyFailoverError).code).toBe(code);
    expect((error as KeyFailoverError).message).toMatch(message);
    expect((error as KeyFailoverError).message).toMatch(/^new RedisStateStore\(\)/);
    expect((error as KeyFailoverError).message).not.toContain('hunter2');
  });
});

test('the main entry does not import ioredis, even indirectly: only ./redis does', () => {
  const seen = new Set<string>();
  const visit = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const [, spec] of readFileSync(file, 'utf8').matchAll(/^(?:import|export)[^'"]*from '([^']+)'/gm)) {
      if (spec!.startsWith('.')) visit(path.resolve(path.dirname(file), spec!.replace(/\.js$/, '.ts')));
      else seen.add(spec!);
    }
  };
  visit(path.join(__dirname, '..', 'lib', 'index.ts'));
  expect([...seen].filter((f) => /ioredis|redis-store/.test(f))).toEqual([]);
  expect(seen.size).toBeGreaterThan(10);
});
