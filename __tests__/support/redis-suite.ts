import { Redis, type RedisOptions } from 'ioredis';
import type { RedisStateStore } from '../../lib/redis.js';
import { closeGateways } from './gateway.js';
import { MockUpstream } from './mock-upstream.js';
import { RedisServer } from './redis-server.js';
import { needs } from './services.js';

/**
 * The shared frame of a suite of gateway replicas on one real redis-server: a mock upstream and a
 * redis-server for the file, an inspector client (reads what Redis holds), a fresh key prefix per test,
 * and the stores and clients a test made, closed after it even when it fails. Skipped, with one line at
 * the end of the run, where redis-server is missing (a failure in CI mode).
 */
export function redisReplicaSuite(name: string) {
  const hooks = needs('redis-server');
  const stores: RedisStateStore[] = [];
  const clients: Redis[] = [];
  let redis: RedisServer | undefined;
  let upstream: MockUpstream | undefined;
  let inspector: Redis | undefined;
  let tests = 0;
  let prefix = '';

  hooks.beforeAll(async () => {
    // One after the other, so that afterAll can stop whichever started when the other failed (a listening
    // mock upstream nobody closes keeps jest from exiting).
    upstream = await MockUpstream.start();
    redis = await RedisServer.start();
    inspector = new Redis(redis.url, { lazyConnect: true, enableOfflineQueue: true });
    inspector.on('error', () => {});
  });
  const nextPrefix = () => (prefix = `ekf-${name}-${++tests}:`);
  const closeStores = () => Promise.all(stores.splice(0).map((store) => store.close()));
  hooks.beforeEach(nextPrefix);
  hooks.afterEach(async () => {
    upstream?.reset();
    await closeStores();
    for (const c of clients.splice(0)) c.disconnect();
  });
  hooks.afterAll(async () => {
    inspector?.disconnect();
    await closeGateways();
    await upstream?.close();
    await redis?.stop();
  });

  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the suite has not started (beforeAll failed)');
    return value;
  };
  return {
    ...hooks,
    get redis() {
      return started(redis);
    },
    get upstream() {
      return started(upstream);
    },
    get inspector() {
      return started(inspector);
    },
    /** This test's key prefix (`ekf-<name>-<n>:`). */
    get prefix() {
      return prefix;
    },
    /** A fresh prefix within a test (a loop that wants a clean slate each round). */
    nextPrefix,
    /** Closes the stores tracked so far (the test goes on). */
    closeStores,
    /** Closes the store after the test. */
    track<S extends RedisStateStore>(store: S): S {
      stores.push(store);
      return store;
    },
    /** A client of the suite's redis-server, disconnected after the test. */
    client(options: RedisOptions = {}): Redis {
      const c = new Redis(started(redis).url, options);
      clients.push(c);
      return c;
    },
  };
}
