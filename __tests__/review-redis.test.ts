/**
 * Review findings for RedisStateStore ("review (fixed): ...": what happened before the fix is in the comments).
 */
import { Redis } from 'ioredis';
import { KeyPool } from '../lib/index.js';
import { RedisStateStore } from '../lib/redis.js';
import { KEYS } from './support/gateway.js';
import { RedisServer } from './support/redis-server.js';
import { needs } from './support/services.js';

const { test, beforeAll, afterAll, afterEach } = needs('redis-server');

let redis: RedisServer;
const stores: RedisStateStore[] = [];
const clients: Redis[] = [];
beforeAll(async () => {
  redis = await RedisServer.start();
});
afterEach(async () => {
  await Promise.all(stores.splice(0).map((store) => store.close()));
  for (const c of clients.splice(0)) c.disconnect();
});
afterAll(async () => {
  await redis?.stop();
});

const eventually = async (check: () => boolean, ms = 1500): Promise<boolean> => {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > ms) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
};

test("review (fixed): an ioredis keyPrefix separates the store's keys but not its channel: a disable in one app reaches another app's pool", async () => {
  // Two deployments (say staging and production, or two teams) on one Redis, kept apart the ioredis way: a keyPrefix each.
  // Same key list, the default store prefix ('ekf:'), as the README's example writes it.
  const staging = new Redis(redis.url, { keyPrefix: 'staging:' });
  const production = new Redis(redis.url, { keyPrefix: 'production:' });
  clients.push(staging, production);
  const stagingStore = new RedisStateStore({ client: staging, logger: false });
  const productionStore = new RedisStateStore({ client: production, logger: false });
  stores.push(stagingStore, productionStore);
  const stagingPool = new KeyPool({ keys: [...KEYS], store: stagingStore });
  const productionPool = new KeyPool({ keys: [...KEYS], store: productionStore });
  await Promise.all([stagingStore.ready(), productionStore.ready()]);
  // ready() is the first resync; the subscription may come a moment later (it resyncs again then).
  const subscribed = (store: RedisStateStore) => (store as unknown as { subscribed: boolean }).subscribed;
  expect(await eventually(() => subscribed(stagingStore) && subscribed(productionStore))).toBe(true);

  stagingPool.markDisabled('key-0'); // staging's own business
  const inspector = new Redis(redis.url);
  clients.push(inspector);
  // Before the fix: production's pool shows key-0 disabled within milliseconds (the event comes on the shared channel
  // 'ekf:events'), until its next resync (30 s) reads its own keys and brings it back.
  const crossed = await eventually(() => productionPool.snapshot()[0]!.state === 'disabled');
  expect((await inspector.keys('staging:ekf:disabled:*')).length).toBe(1); // staging's Redis keys have it
  expect((await inspector.keys('production:*disabled*')).length).toBe(0); // production's have not
  expect(crossed).toBe(false);
});
