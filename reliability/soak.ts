/**
 * `npm run soak`: avoiding the 429, measured. An upstream that enforces
 * OpenAI-like limits per organization and per model (support/limited-upstream.ts:
 * rolling windows that replenish continuously, rejected requests counting
 * against the limit, the real `x-ratelimit-*` headers and 429 bodies on every
 * answer), three organizations holding 3, 2 and 1 keys, two models with
 * different limits; a gateway (keyFailover, one pool of the six keys, the
 * default 'ordered' strategy, no groups configured) driven open-loop at 80% of
 * the total capacity (Poisson arrivals, the same sequence for each run), after
 * a warm-up that is not counted. Run twice in
 * one go: with lib/ of the commit this branch started from ("before"), then
 * with this tree's ("after"), each gateway in its own process; prints upstream
 * 429s and client-visible errors per 1 000 client requests, writes
 * reliability/last-run/soak.json, and exits 1 when "after" misses the targets
 * (at most 10 upstream 429s and 20 client errors per 1 000).
 *
 * SOAK_BEFORE_REF (default: the merge base with main; on main, main before the commit that brought
 * this file in), SOAK_SECONDS (25),
 * SOAK_WARMUP_SECONDS (10), SOAK_LOAD (0.8), SOAK_STRATEGY (ordered),
 * SOAK_WINDOW_MS (6000), SOAK_LATENCY_MS ([200, 1000]), SOAK_SEED.
 */
import { execFileSync } from 'node:child_process';
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { prng } from './support/common.js';
import { LimitedUpstream, type LimitedCounts, type ModelLimit } from './support/limited-upstream.js';

const ROOT = path.join(__dirname, '..');
const SECONDS = Number(process.env['SOAK_SECONDS'] ?? 25);
const LOAD = Number(process.env['SOAK_LOAD'] ?? 0.8);
const STRATEGY = (process.env['SOAK_STRATEGY'] ?? 'ordered') as 'ordered' | 'round-robin';
/** Not counted: the organizations' limits reach the state the load keeps them in (a fresh limit starts full). */
const WARMUP_SECONDS = Number(process.env['SOAK_WARMUP_SECONDS'] ?? 10);
const SEED = Number(process.env['SOAK_SEED'] ?? 20260221);
const WINDOW_MS = Number(process.env['SOAK_WINDOW_MS'] ?? 6_000);
const LATENCY: [number, number] = JSON.parse(process.env['SOAK_LATENCY_MS'] ?? '[200, 1000]') as [number, number];
/** Every organization's limits (the same tier), per model: requests per second, times the window. */
const LIMITS: Record<string, ModelLimit> = {
  'gpt-4o': { requests: Math.round(10 * (WINDOW_MS / 1000)), tokens: 200_000 * (WINDOW_MS / 1000) },
  'gpt-4o-mini': { requests: Math.round(20 * (WINDOW_MS / 1000)), tokens: 500_000 * (WINDOW_MS / 1000) },
};
const ORGANIZATIONS = { 'org-soakA00000000001': 3, 'org-soakB00000000002': 2, 'org-soakC00000000003': 1 };
const KEYS: { key: string; org: string }[] = Object.entries(ORGANIZATIONS).flatMap(([org, n]) =>
  Array.from({ length: n }, (_, i) => ({ key: `sk-soak-${org.slice(8, 9)}${i}-${'x'.repeat(20)}${org.slice(-2)}${i}`, org })),
);
const TARGETS = { upstream429PerThousand: 10, clientErrorsPerThousand: 20 };

interface RunFigures {
  variant: string;
  lib: string;
  clientRequests: number;
  clientStatuses: Record<string, number>;
  clientErrors: number;
  upstream: LimitedCounts;
  upstream429PerThousand: number;
  clientErrorsPerThousand: number;
  upstreamCallsPerRequest: number;
  /** Share of the capacity the upstream served, per organization and model. */
  served: Record<string, number>;
  poolEvents: Record<string, number>;
  seconds: number;
}

async function main(): Promise<void> {
  const ref = process.env['SOAK_BEFORE_REF'] ?? defaultBeforeRef();
  const before = extractLib(ref);
  const capacityPerSecond =
    Object.keys(ORGANIZATIONS).length * Object.values(LIMITS).reduce((sum, l) => sum + l.requests, 0) * (1000 / WINDOW_MS);
  const rate = capacityPerSecond * LOAD;
  console.log(
    `soak: ${KEYS.length} keys in ${Object.keys(ORGANIZATIONS).length} organizations (${Object.values(ORGANIZATIONS).join(', ')} keys), ` +
      `limits per organization and ${WINDOW_MS / 1000} s window ${Object.entries(LIMITS)
        .map(([m, l]) => `${m} ${l.requests}`)
        .join(', ')}, ` +
      `answers in ${LATENCY[0]}-${LATENCY[1]} ms; ` +
      `capacity ${capacityPerSecond} req/s, offered ${rate.toFixed(1)} req/s (${LOAD * 100}%) open-loop for ${SECONDS} s, strategy ${STRATEGY}`,
  );
  const upstream = new LimitedUpstream({
    organizationOf: (key) => KEYS.find((k) => k.key === key)?.org,
    limits: LIMITS,
    windowMs: WINDOW_MS,
    tokensPerRequest: 1_000,
    latencyMs: LATENCY,
    seed: SEED,
  });
  const target = await upstream.listen();
  const runs: RunFigures[] = [];
  try {
    for (const [variant, lib] of [
      ['before', path.join(before, 'lib')],
      ['after', path.join(ROOT, 'lib')],
    ] as const) {
      upstream.reset();
      const gateway = await startGateway(lib, target);
      try {
        const started = Date.now();
        const client = await drive(gateway.url, rate, SECONDS * 1000, SEED, () => upstream.resetCounts());
        const counts = upstream.counts;
        const total = client.total;
        runs.push({
          variant,
          lib: variant === 'before' ? `${git('rev-parse', '--short', ref)} (${lib})` : 'this tree',
          clientRequests: total,
          clientStatuses: client.statuses,
          clientErrors: total - (client.statuses['200'] ?? 0),
          upstream: structuredClone(counts),
          upstream429PerThousand: round((counts.rejected * 1000) / total),
          clientErrorsPerThousand: round(((total - (client.statuses['200'] ?? 0)) * 1000) / total),
          upstreamCallsPerRequest: round(counts.requests / total, 3),
          served: Object.fromEntries(
            Object.entries(counts.served).map(([name, n]) => {
              const model = name.split(' ')[1]!;
              return [name, round(n / ((LIMITS[model]!.requests * client.seconds * 1000) / WINDOW_MS), 3)];
            }),
          ),
          poolEvents: await gateway.counts(),
          seconds: round((Date.now() - started) / 1000, 1),
        });
      } finally {
        gateway.stop();
      }
    }
  } finally {
    await upstream.close();
  }

  const [b, a] = runs as [RunFigures, RunFigures];
  const rows: [string, string, string][] = [
    ['client requests', String(b.clientRequests), String(a.clientRequests)],
    ['upstream calls per client request', String(b.upstreamCallsPerRequest), String(a.upstreamCallsPerRequest)],
    ['upstream 429s per 1 000 client requests', String(b.upstream429PerThousand), String(a.upstream429PerThousand)],
    ['client errors per 1 000 client requests', String(b.clientErrorsPerThousand), String(a.clientErrorsPerThousand)],
    ['client statuses', JSON.stringify(b.clientStatuses), JSON.stringify(a.clientStatuses)],
    ['pool events', JSON.stringify(b.poolEvents), JSON.stringify(a.poolEvents)],
  ];
  const width = [Math.max(...rows.map((r) => r[0].length)), Math.max(6, ...rows.map((r) => r[1].length))];
  console.log(`\n${'figure'.padEnd(width[0]!)} | ${`before ${b.lib}`.padEnd(width[1]!)} | after (this tree)`);
  for (const [name, x, y] of rows) console.log(`${name.padEnd(width[0]!)} | ${x.padEnd(width[1]!)} | ${y}`);
  console.log('\nshare of each organization x model capacity served (before / after):');
  for (const name of Object.keys({ ...b.served, ...a.served }).sort())
    console.log(`  ${name}: ${b.served[name] ?? 0} / ${a.served[name] ?? 0}`);

  const pass = a.upstream429PerThousand <= TARGETS.upstream429PerThousand && a.clientErrorsPerThousand <= TARGETS.clientErrorsPerThousand;
  console.log(
    `\n${pass ? 'PASS' : 'MISS'}  after: ${a.upstream429PerThousand} upstream 429s (target <= ${TARGETS.upstream429PerThousand}) and ` +
      `${a.clientErrorsPerThousand} client errors (target <= ${TARGETS.clientErrorsPerThousand}) per 1 000 client requests`,
  );
  const dir = path.join(ROOT, 'reliability', 'last-run');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'soak.json'),
    JSON.stringify(
      {
        at: new Date().toISOString(),
        load: LOAD,
        strategy: STRATEGY,
        seconds: SECONDS,
        limits: LIMITS,
        windowMs: WINDOW_MS,
        organizations: ORGANIZATIONS,
        targets: TARGETS,
        pass,
        runs,
      },
      null,
      2,
    ) + '\n',
  );
  if (!pass && process.env['SOAK_NO_CHECK'] !== '1') process.exitCode = 1;
}

/** The package's lib/ at `ref`, extracted (not checked out) under /tmp, with this tree's node_modules. */
function extractLib(ref: string): string {
  const sha = git('rev-parse', '--short=12', ref);
  const dir = path.join('/tmp', `ekf-soak-${sha}`);
  if (!fs.existsSync(path.join(dir, 'lib', 'index.ts'))) {
    fs.mkdirSync(dir, { recursive: true });
    const archive = execFileSync('git', ['archive', '--format=tar', sha, 'lib'], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
    execFileSync('tar', ['-x', '-C', dir], { input: archive });
  }
  const modules = path.join(dir, 'node_modules');
  if (!fs.existsSync(modules)) fs.symlinkSync(path.join(ROOT, 'node_modules'), modules);
  return dir;
}

/**
 * "Before" is the tree this change started from: on a branch, its merge base with main; on main itself
 * (where that is HEAD), main before the commit that brought this soak in (along main's first parents:
 * the merge of issue 21), i.e. main as it was before issue 21.
 */
function defaultBeforeRef(): string {
  const base = git('merge-base', 'HEAD', 'main');
  if (base !== git('rev-parse', 'HEAD')) return base;
  const added = git('log', '--first-parent', '--diff-filter=A', '--format=%H', '--', 'reliability/soak.ts').split('\n').at(-1);
  if (!added) throw new Error('soak: no commit adds reliability/soak.ts; set SOAK_BEFORE_REF');
  return `${added}^1`;
}

function git(...args: string[]): string {
  return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
}

interface Gateway {
  url: string;
  counts(): Promise<Record<string, number>>;
  stop(): void;
}

function startGateway(lib: string, target: string): Promise<Gateway> {
  const pool = { keys: KEYS.map((k) => k.key), strategy: STRATEGY };
  const child: ChildProcess = fork(path.join(__dirname, 'support', 'soak-gateway.ts'), [lib, target, JSON.stringify(pool)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error('the soak gateway did not start within 30 s'));
    }, 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the soak gateway exited with ${code}`));
    });
    child.on('message', (message: { type: string; url: string }) => {
      if (message.type !== 'ready') return;
      clearTimeout(timer);
      resolve({
        url: message.url,
        counts: async () => (await (await fetch(`${message.url}/__counts`)).json()) as Record<string, number>,
        stop: () => void (child.pid !== undefined && process.kill(child.pid, 'SIGTERM')),
      });
    });
  });
}

/**
 * Open-loop: requests leave at their Poisson arrival times whatever the answers do; each model in proportion
 * to its capacity. The first WARMUP_SECONDS are not counted (`warmedUp` is called at their end).
 */
async function drive(
  url: string,
  rate: number,
  durationMs: number,
  seed: number,
  warmedUp: () => void,
): Promise<{ total: number; statuses: Record<string, number>; seconds: number }> {
  const random = prng(seed);
  const models = Object.entries(LIMITS);
  const totalLimit = models.reduce((sum, [, l]) => sum + l.requests, 0);
  const warmupMs = WARMUP_SECONDS * 1000;
  const arrivals: { at: number; model: string; counted: boolean }[] = [];
  for (let at = -Math.log(1 - random()) * (1000 / rate); at < warmupMs + durationMs; at += -Math.log(1 - random()) * (1000 / rate)) {
    let pick = random() * totalLimit;
    const model = models.find(([, l]) => (pick -= l.requests) < 0)?.[0] ?? models[0]![0];
    arrivals.push({ at, model, counted: at >= warmupMs });
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const statuses: Record<string, number> = {};
  const ignored: Record<string, number> = {};
  const pending: Promise<void>[] = [];
  const started = Date.now();
  const warmup = setTimeout(warmedUp, warmupMs);
  let next = 0;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = Date.now() - started;
      while (next < arrivals.length && arrivals[next]!.at <= now) {
        const arrival = arrivals[next++]!;
        pending.push(send(url, agent, arrival.model, arrival.counted ? statuses : ignored));
      }
      if (next < arrivals.length) setTimeout(tick, Math.min(5, Math.max(0, arrivals[next]!.at - now)));
      else resolve();
    };
    tick();
  });
  await Promise.all(pending);
  clearTimeout(warmup);
  agent.destroy();
  return { total: arrivals.filter((a) => a.counted).length, statuses, seconds: durationMs / 1000 };
}

function send(url: string, agent: http.Agent, model: string, statuses: Record<string, number>): Promise<void> {
  const body = JSON.stringify({ model, messages: [{ role: 'user', content: 'soak' }], max_tokens: 20 });
  return new Promise((resolve) => {
    const count = (status: string): void => {
      statuses[status] = (statuses[status] ?? 0) + 1;
      resolve();
    };
    const req = http.request(
      `${url}/v1/chat/completions`,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: 15_000,
      },
      (res) => {
        res.resume();
        res.on('end', () => count(String(res.statusCode)));
        res.on('error', () => count('error'));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => count('error'));
    req.end(body);
  });
}

function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
