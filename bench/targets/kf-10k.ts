/**
 * kf-10k: as kf-3 with a 10 000-key pool, 10% cooling. The cooling keys are the
 * first 1 000: with primary-with-fallback order that is how a pool ends up when
 * its first keys hit their limits, and it makes every walk skip 1 000 keys.
 */
import { KEYS } from '../shared.js';
import { serveFailover } from './failover-app.js';

const SIZE = 10_000;
const COOLING = SIZE / 10;
// The mock accepts any key but REJECTED_KEY and the client's; the bench's own KEYS come last.
const keys = Array.from({ length: SIZE - KEYS.length }, (_, i) => ({
  id: `pool-${i}`,
  key: `sk-bench-pool-${String(i).padStart(8, '0')}-xxxxxxxx`,
}));
keys.push(...KEYS.map((key, i) => ({ id: `bench-${i}`, key })));

serveFailover({ keys }, (pool) => {
  for (let i = 0; i < COOLING; i++) pool.markRateLimited(`pool-${i}`, 3_600_000);
});
