/**
 * Only the memory figures, for a few targets, repeated: what N more held-open
 * streams add to the JS heap in use and to RSS (after V8's last-resort GC), per stream.
 *   npx tsx bench/memory.ts [kind=chat|responses] [passes] [id ...]   (default: chat 3 express-relay kf-3)
 * For working on the per-stream figure; `npm run bench` measures it with everything else.
 */
import { startEndpoint, type Endpoint } from './driver/endpoints.js';
import { jsonRequest, runLoad } from './driver/load.js';
import { killAll, rssKb, startChild, stopChild } from './driver/processes.js';
import { median } from './driver/report.js';
import { openHeldStreams } from './driver/streams.js';
import { bearer } from './driver/endpoints.js';
import { targetById } from './driver/targets.js';
import type { StreamKind } from './provider-streams.js';

const [kindArg = 'chat', passesArg = '3', ...ids] = process.argv.slice(2);
const kind = kindArg as StreamKind;
const targets = (ids.length > 0 ? ids : ['express-relay', 'kf-3']).map(targetById);
const FILL = 250;
const OPEN = 1000;

async function afterGc(e: Endpoint): Promise<{ heap: number; rss: number }> {
  const line = e.child!.nextLine('GC ', 10_000);
  process.kill(e.pid, 'SIGUSR2');
  const usage = JSON.parse((await line).slice(3)) as NodeJS.MemoryUsage;
  await new Promise((r) => setTimeout(r, 100));
  return { heap: (usage.heapUsed + usage.external) / 1024, rss: rssKb(e.pid) };
}

async function main(): Promise<void> {
  const mock = await startChild('mock upstream', 'mock-upstream.ts');
  try {
    const results = new Map<string, number[]>(targets.map((t) => [t.id, []]));
    const rss = new Map<string, number[]>(targets.map((t) => [t.id, []]));
    for (let pass = 0; pass < Number(passesArg); pass++) {
      for (const target of pass % 2 === 0 ? targets : [...targets].reverse()) {
        const e = await startEndpoint(target, mock, ['--expose-gc', '--max-semi-space-size=1', '--min-semi-space-size=1'], {
          MALLOC_ARENA_MAX: '1',
        });
        try {
          await runLoad(e.port, 10, 1, jsonRequest(bearer(e)));
          const fill = await openHeldStreams(e.port, mock.port, kind, e.key, FILL);
          await new Promise((r) => setTimeout(r, 200));
          const before = await afterGc(e);
          const streams = await openHeldStreams(e.port, mock.port, kind, e.key, OPEN);
          await new Promise((r) => setTimeout(r, 300));
          const after = await afterGc(e);
          await Promise.all([fill.release(), streams.release()]);
          results.get(target.id)!.push((after.heap - before.heap) / OPEN);
          rss.get(target.id)!.push((after.rss - before.rss) / OPEN);
        } finally {
          await stopChild(e.child!);
        }
      }
    }
    for (const [id, kb] of results)
      console.log(
        `${id.padEnd(14)} ${kind}: ${median(kb).toFixed(2)} KB heap/stream (passes ${kb.map((k) => k.toFixed(2)).join(', ')}), ` +
          `${median(rss.get(id)!).toFixed(2)} KB RSS/stream (passes ${rss
            .get(id)!
            .map((k) => k.toFixed(2))
            .join(', ')})`,
      );
  } finally {
    await stopChild(mock);
    killAll();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  killAll();
  process.exit(1);
});
