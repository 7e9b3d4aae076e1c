/**
 * kf-429: as kf-3, but key 0 always answers 429 with `retry-after-ms: 0`, and
 * the pool's minimum cooldown is 0 (its default is 1 s), so that key 0 is
 * available again at once and every request fails over exactly once. The
 * driver checks with the mock that there is one 429 per answer.
 */
import { KEYS, REJECTED_KEY } from '../shared.js';
import { serveFailover } from './failover-app.js';

serveFailover({ keys: [REJECTED_KEY, ...KEYS], minCooldownMs: 0 });
