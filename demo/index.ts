import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { KeyPool } from '../lib/index.js';
import { FAKE_KEYS, RETRY_AFTER_SECONDS, startFakeUpstream, type FakeUpstream } from './fake-upstream.js';
import { BYOK_HEADER, DEMO_USER_TOKEN, createGateway } from './gateway.js';
import { bold, cyan, dim, keyNamer, keysTried, snapshotSummary, status } from './print.js';
import { runScenarios } from './scenarios.js';

/**
 * npm run demo: a gateway with keyFailover in front of a fake OpenAI upstream
 * (or the real one, with OPENAI_API_KEYS set), a few scripted requests, then
 * the gateway stays up for curl until Ctrl-C.
 */

const DEFAULT_PORT = 8787;
const write = (text: string): void => void process.stdout.write(text);

async function main(): Promise<void> {
  const env = process.env;
  const port = parsePort(env['PORT']);
  const realKeys = (env['OPENAI_API_KEYS'] ?? '')
    .split(',')
    .map((key) => key.trim())
    .filter(Boolean);
  const model = env['OPENAI_MODEL'] || 'gpt-4o-mini';

  let upstream: FakeUpstream | undefined;
  let target: string;
  let keys: string[];
  if (realKeys.length > 0) {
    target = upstreamBase(env['OPENAI_BASE_URL'] || 'https://api.openai.com');
    keys = realKeys;
  } else {
    upstream = await startFakeUpstream();
    target = upstream.url;
    keys = FAKE_KEYS.map((k) => k.key);
  }
  // Ids key-0, key-1, ... in the order given; values stay inside the pool.
  const pool = new KeyPool({ keys });
  const name = keyNamer(new Map(pool.snapshot().map((k, index) => [keys[index]!, k.id])));

  let interactive = false;
  const { app, middleware } = createGateway({
    target,
    pool,
    forwardRequestId: upstream !== undefined,
    onResponse: ({ requestId, method, path, status: code, byok }) => {
      if (!interactive) return;
      const time = new Date().toTimeString().slice(0, 8);
      const calls = upstream?.calls.filter((call) => call.requestId === requestId);
      const detail = calls
        ? `keys tried: ${keysTried(calls, name, pool.snapshot())}`
        : byok
          ? 'client key (pool not used)'
          : `pool: ${snapshotSummary(pool.snapshot())}`;
      write(`${dim(time)} ${method} ${path} -> ${status(code)}  ${detail}\n`);
    },
  });
  const server = http.createServer(app);

  let stopping = false;
  const stop = (signal: string): void => {
    // Ctrl-C reaches npm, tsx and this process alike, and they pass it on: act once.
    if (stopping) return;
    stopping = true;
    write(`\n${signal}: stopping the gateway${upstream ? ' and the fake upstream' : ''}...\n`);
    setTimeout(() => {
      write('still busy after 5 s; exiting anyway\n');
      process.exit(1);
    }, 5000).unref();
    server.closeAllConnections();
    Promise.all([new Promise((resolve) => server.close(resolve)), middleware.close(), upstream?.close()]).then(
      () => {
        write('stopped.\n');
        process.exit(0);
      },
      (error: unknown) => {
        write(`error while stopping: ${(error as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));

  const bound = await listen(server, port);
  const gatewayUrl = `http://127.0.0.1:${bound}`;

  write(`${bold('express-key-failover demo')}\n`);
  if (upstream) {
    const roles = FAKE_KEYS.map((k, index) => `${pool.snapshot()[index]!.id} ${k.behaviour}`).join(', ');
    write(`  upstream  ${cyan(upstream.url)}  fake OpenAI API; keys: ${roles}\n`);
    write(dim(`            (the rate-limited key answers 429 with Retry-After: ${RETRY_AFTER_SECONDS})\n`));
  } else {
    write(`  upstream  ${cyan(target)}  real API; ${keys.length} key(s) from OPENAI_API_KEYS\n`);
  }
  if (port !== 0 && bound !== port) write(`  port ${port} is busy: the gateway took ${bound} instead\n`);
  write(`  gateway   ${cyan(gatewayUrl)}  keyFailover behind a toy auth; pool on app.locals.keyPool\n`);

  await runScenarios({ gatewayUrl, pool, model, upstream, name, write });
  if (stopping) return;

  const auth = `-H 'authorization: Bearer ${DEMO_USER_TOKEN}'`;
  const chat = (flags: string, extra = '', header = ''): string =>
    `  curl ${flags} ${gatewayUrl}/v1/chat/completions ${auth}${header} \\\n` +
    `    -H 'content-type: application/json' -d '{"model":"${model}","messages":[{"role":"user","content":"Hi"}]${extra}}'\n`;
  const byokKey = upstream ? 'sk-byok-any-key-you-like' : '$YOUR_OWN_OPENAI_KEY';
  write(`\n${bold('Try it yourself')}  ${dim('(each request is logged below)')}\n`);
  write(dim('  # a normal request\n') + chat('-s'));
  write(dim('  # a streaming one\n') + chat('-sN', ',"stream":true'));
  write(dim('  # BYOK: your own key, the pool is not used\n') + chat('-s', '', ` -H "${BYOK_HEADER}: ${byokKey}"`));
  write(dim('  # the pool snapshot (ids and hints only)\n') + `  curl -s ${gatewayUrl}/pool ${auth}\n`);
  write(`\nCtrl-C to stop.\n`);
  interactive = true;
}

function parsePort(value: string | undefined): number {
  if (value === undefined || value === '') return DEFAULT_PORT;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`PORT must be a port number from 0 to 65535 (0: any free port), got ${JSON.stringify(value)}.`);
  }
  return port;
}

/** The OpenAI SDKs' OPENAI_BASE_URL ends in /v1; keyFailover's target is the origin the /v1 paths hang off. */
function upstreamBase(url: string): string {
  return url.replace(/\/+$/, '').replace(/\/v1$/, '');
}

/** Listens on 127.0.0.1:port, or on any free port when that one is taken. Returns the port. */
async function listen(server: http.Server, port: number): Promise<number> {
  const attempt = (p: number): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  try {
    await attempt(port);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port === 0) throw error;
    await attempt(0);
  }
  return (server.address() as AddressInfo).port;
}

main().catch((error: unknown) => {
  // Messages from KeyPool and keyFailover name keys by index, never by value.
  process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
