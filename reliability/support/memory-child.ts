/**
 * Run by memory.test.ts as `node --expose-gc --import tsx memory-child.ts <upstream url>`:
 * a gateway and its clients alone in a process, so that its memory is the
 * gateway's. Measures memory after a full GC cold and after each of three
 * rounds of ROUND requests (the first two bring V8's young generation and the
 * allocator to their working size); prints one JSON line.
 */
import express from 'express';
import http from 'node:http';
import { keyFailover, KeyPool } from '../../lib/index.js';
import { KEYS, listen, runConcurrently, send } from './common.js';

const ROUND = 10_000;
const CONCURRENCY = 50;

interface Memory {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

async function measure(): Promise<Memory> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const { rss, heapTotal, heapUsed, external, arrayBuffers } = process.memoryUsage();
  return { rss, heapTotal, heapUsed, external, arrayBuffers };
}

async function main(): Promise<void> {
  const target = process.argv[2]!;
  const pool = new KeyPool({ keys: [...KEYS], minCooldownMs: 0 });
  const middleware = keyFailover({ target, pool, logger: false, timeoutMs: 10_000 });
  const app = express();
  app.use(middleware);
  const gateway = await listen(app);
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

  const statuses: Record<string, number> = {};
  const failures: string[] = [];
  let sent = 0;
  const round = (n: number): Promise<void> =>
    runConcurrently(n, CONCURRENCY, async () => {
      const i = sent++;
      const stream = i % 4 === 0;
      const r = await send(gateway.url, {
        agent,
        body: JSON.stringify({ model: 'm', stream, messages: [{ role: 'user', content: `request ${i}` }] }),
        headers: { 'x-load-id': String(i) },
      });
      statuses[r.status] = (statuses[r.status] ?? 0) + 1;
      const expected = stream
        ? `data: {"n":0,"id":${i}}\n\ndata: {"n":1,"id":${i}}\n\ndata: [DONE]\n\n`
        : JSON.stringify({ id: i, ok: true });
      if (r.status !== 200 || r.ended !== 'end' || r.body.toString() !== expected) {
        if (failures.length < 20) failures.push(`${i}: ${r.status} ${r.ended} ${r.body.toString().slice(0, 80)}`);
      }
    });

  const started = Date.now();
  const cold = await measure();
  const rounds: Memory[] = [];
  for (let r = 0; r < 3; r++) {
    await round(ROUND);
    rounds.push(await measure());
  }
  const seconds = (Date.now() - started) / 1000;

  agent.destroy();
  await gateway.close();
  await middleware.close();
  process.stdout.write(JSON.stringify({ requests: sent, seconds, statuses, failures, cold, rounds, snapshot: pool.snapshot() }) + '\n');
}

main().catch((error: unknown) => {
  process.stdout.write(JSON.stringify({ error: String(error) }) + '\n');
  process.exitCode = 1;
});
