/**
 * kf-scoped: kf-3 with a scoped cooldown in the pool: key 0 cooling for
 * another model (gpt-4o) than the one the bench asks for (gpt-4o-mini), so
 * every request still goes to key 0 but selection has a scoped state to look
 * at. Needs `pool.markRateLimited(id, ms, { model })`. Where the pool does not
 * have it (the mark cools key 0 for every model), the mark is undone, the
 * target runs with no scoped state, and prints `NA needs scoped cooldowns`
 * before its port, so that the driver reports the row as n/a instead of a
 * figure that measures nothing scoped.
 */
import { KEYS, OTHER_MODEL } from '../shared.js';
import { serveFailover } from './failover-app.js';

serveFailover({ keys: KEYS }, (pool) => {
  const id = pool.ids()[0]!;
  pool.markRateLimited(id, 3_600_000, { model: OTHER_MODEL });
  if (pool.snapshot().find((key) => key.id === id)?.state !== 'available') {
    pool.enable(id);
    process.stdout.write('NA needs scoped cooldowns\n');
  }
});
