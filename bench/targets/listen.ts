import http, { type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';

/** The mock upstream's base URL, given by the driver as the first argument. */
export const upstream = process.argv[2] ?? 'http://127.0.0.1:1';

/**
 * Serves `handler` on 127.0.0.1 with the same server settings for every target,
 * prints `PORT <n>`, and exits on SIGTERM (so that --cpu-prof can write its profile).
 * Started with --expose-gc (the memory runs), SIGUSR2 runs a full GC and prints
 * `GC <process.memoryUsage() as JSON>`.
 */
export function listen(handler: RequestListener): void {
  const server = http.createServer(handler);
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`PORT ${(server.address() as AddressInfo).port}\n`);
  });
  process.on('SIGTERM', () => process.exit(0));
  const { gc } = globalThis as { gc?: (options?: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void };
  if (gc) {
    process.on('SIGUSR2', () => {
      // V8's last-resort collection: full GCs until nothing more is freed, compacting, and the freed pages given back.
      // After a plain gc() RSS keeps whatever pages V8's heap sizing decided to keep committed (tens of KB per stream, at random).
      gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
      process.stdout.write(`GC ${JSON.stringify(process.memoryUsage())}\n`);
    });
  }
}
