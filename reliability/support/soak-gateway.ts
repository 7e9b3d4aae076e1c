/**
 * One soak gateway, in a process of its own (forked by reliability/soak.ts):
 * the package's lib/ from the directory given (this tree's, or the commit the
 * soak compares with, extracted under /tmp), keyFailover over a pool of the
 * soak's keys, mounted as a user would. Tells the parent its URL, then serves
 * until killed. Only options both versions know are used.
 */
import express from 'express';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

interface SoakPool {
  keys: string[];
  strategy: 'ordered' | 'round-robin';
}

async function main(): Promise<void> {
  const [libDir, target, poolJson] = process.argv.slice(2) as [string, string, string];
  const config = JSON.parse(poolJson) as SoakPool;
  // The lib under test is chosen at run time: this tree's, or the one the soak compares with.
  const lib = require(path.join(libDir, 'index.ts')) as typeof import('../../lib/index.js');
  const pool = new lib.KeyPool({ keys: config.keys, strategy: config.strategy });
  const counts: Record<string, number> = {};
  for (const name of ['rateLimited', 'depleted', 'probe', 'grouped', 'exhausted'] as const) {
    (pool as unknown as { on(event: string, listener: () => void): void }).on(name, () => void (counts[name] = (counts[name] ?? 0) + 1));
  }
  const app = express();
  app.get('/__counts', (_req, res) => void res.json(counts));
  app.use(lib.keyFailover({ target, pool, logger: false, timeoutMs: 10_000 }));
  const server = http.createServer(app);
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  process.send?.({ type: 'ready', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
