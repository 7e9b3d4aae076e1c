/**
 * npm run bench: side-by-side load figures for express-key-failover against a
 * zero-delay mock upstream, everything on 127.0.0.1. See bench/README.md.
 * BENCH_QUICK=1 shortens every phase (for trying the bench, not for figures).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { runLoad } from './driver/load.js';
import { ROOT, cpuMs, killAll, liveChildren, machineBusyMs, rssKb, startChild, stopChild, type Child } from './driver/processes.js';
import {
  check,
  checkLines,
  median,
  medianView,
  roundView,
  table,
  type MemoryFigures,
  type RoundFigures,
  type TargetFigures,
  type View,
} from './driver/report.js';
import { get, openHeldStreams, postChat, sseFirstByte } from './driver/streams.js';
import { CLIENT_KEY, KEYS, STATS_PATH } from './shared.js';

const QUICK = process.env['BENCH_QUICK'] === '1';
const SETTINGS = {
  rounds: QUICK ? 2 : 4,
  warmupSeconds: QUICK ? 1 : 1.5,
  // Short runs, many of them: this machine's speed drifts within seconds.
  throughputSeconds: QUICK ? 1 : 1.5,
  throughputConnections: 50,
  latencySeconds: QUICK ? 0.5 : 0.75,
  sseSamples: QUICK ? 20 : 40,
  openStreams: 1000,
};
const HARD_LIMIT_MS = 290_000;

interface Target {
  id: number;
  name: string;
  /** Under bench/; none for the direct run against the mock. */
  file?: string;
  /** A repeat of another target, to show the noise: no memory run, no check. */
  control?: boolean;
}

const TARGETS: Target[] = [
  { id: 1, name: 'direct to the mock (floor)' },
  { id: 2, name: 'node:http keep-alive pipe proxy', file: 'targets/2-node-pipe.ts' },
  { id: 3, name: 'Express + http-proxy-middleware, 1 key', file: 'targets/3-express-hpm.ts' },
  { id: 4, name: 'Express + keyFailover, 3 keys healthy', file: 'targets/4-failover-3-keys.ts' },
  { id: 5, name: 'keyFailover, key 0 always 429', file: 'targets/5-failover-429.ts' },
  { id: 6, name: 'keyFailover, 10 000 keys, 10% cooling', file: 'targets/6-failover-10k-keys.ts' },
  // Not one of the issue's targets: 4 again in a second process. 7 vs 4 should be 1.00; how far it strays is this run's noise.
  { id: 7, name: 'control: 4 again, own process', file: 'targets/4-failover-3-keys.ts', control: true },
];

/** A running target: where to send, whose CPU to read, which key to send. */
interface Endpoint {
  target: Target;
  port: number;
  pid: number;
  authorization: string;
  child?: Child;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const log = (line: string): void => void process.stderr.write(`${line}\n`);

async function startEndpoint(target: Target, mock: Child): Promise<Endpoint> {
  // Direct: the client must carry a key the mock accepts. Proxies get the client's key and must swap it.
  if (!target.file) return { target, port: mock.port, pid: mock.pid, authorization: `Bearer ${KEYS[0]}` };
  const child = await startChild(`target ${target.id}`, target.file, [`http://127.0.0.1:${mock.port}`]);
  return { target, port: child.port, pid: child.pid, authorization: `Bearer ${CLIENT_KEY}`, child };
}

/** One request of each kind before any load: a target that answers wrongly is not worth measuring. */
async function checkEndpoint({ target, port, authorization }: Endpoint, mock: Child): Promise<void> {
  const agent = new http.Agent({ keepAlive: false });
  const json = await postChat(port, { agent, body: '{"model":"gpt-4o-mini","messages":[]}', authorization });
  agent.destroy();
  if (json.status !== 200 || !json.body.includes('chat.completion'))
    throw new Error(`target ${target.id}: JSON check got ${json.status} ${json.body}`);
  // The mock holds this stream after its first event: the first byte arrives only if the target streams.
  const stream = await openHeldStreams(port, mock.port, authorization, 1).catch((error: Error) => {
    throw new Error(`target ${target.id}: SSE check: ${error.message}`);
  });
  await stream.release();
}

async function rejectedByMock(mock: Child): Promise<number> {
  return (JSON.parse(await get(mock.port, STATS_PATH)) as Record<string, number>)['429'] ?? 0;
}

async function measureRound(e: Endpoint, mock: Child, round: number): Promise<RoundFigures> {
  // Ours: the driver (load generator), the mock and the target. Whatever else the machine did is someone else's.
  const pids = [...new Set([process.pid, mock.pid, e.pid])];
  const oursMs = (): number => pids.reduce((sum, pid) => sum + cpuMs(pid), 0);
  const [cpuBefore, oursBefore, machineBefore, started] = [cpuMs(e.pid), oursMs(), machineBusyMs(), performance.now()];
  const rejectedBefore = await rejectedByMock(mock);
  const throughput = await runLoad(e.port, SETTINGS.throughputConnections, SETTINGS.throughputSeconds, e.authorization);
  // Target 5 must fail over on every request: the mock must have rejected key 0 at least once per answer.
  const rejected = (await rejectedByMock(mock)) - rejectedBefore;
  if (e.target.id === 5 && rejected < throughput.ok)
    throw new Error(`target 5: ${throughput.ok} answers but only ${rejected} 429s from the mock`);
  if (e.target.id !== 5 && rejected > 0) throw new Error(`target ${e.target.id}: the mock answered ${rejected} 429s`);
  const cpuUsPerRequest = ((cpuMs(e.pid) - cpuBefore) * 1000) / Math.max(1, throughput.ok + throughput.non2xx);
  const foreignMs = machineBusyMs() - machineBefore - (oursMs() - oursBefore);
  const otherLoad = Math.max(0, foreignMs / ((performance.now() - started) * os.cpus().length));
  const latency = await runLoad(e.port, 1, SETTINGS.latencySeconds, e.authorization);
  for (const [what, r] of [
    ['50c', throughput],
    ['1c', latency],
  ] as const) {
    if (r.non2xx || r.errors || r.timeouts)
      throw new Error(`target ${e.target.id} ${what}: non2xx ${r.non2xx}, errors ${r.errors}, timeouts ${r.timeouts}`);
  }
  log(
    `  round ${round} target ${e.target.id}: ${throughput.rps.toFixed(0).padStart(5)} req/s @50c, ${cpuUsPerRequest.toFixed(0).padStart(4)} µs CPU/req, ` +
      `other processes ${(otherLoad * 100).toFixed(0).padStart(2)}% of the CPUs; @1c p50 ${latency.p50.toFixed(3)} ms, p99 ${latency.p99.toFixed(3)} ms`,
  );
  return { round, throughput, cpuUsPerRequest, otherLoad, latency };
}

/** In a fresh process: RSS before and with `openStreams` SSE streams held open by the mock. */
async function measureMemory(target: Target, mock: Child): Promise<MemoryFigures> {
  const e = await startEndpoint(target, mock);
  try {
    // Warm every code path once, then let the process settle before the baseline.
    await runLoad(e.port, 10, 1, e.authorization);
    await sseFirstByte(e.port, e.authorization, 20, 0);
    await sleep(500);
    const rssBeforeKb = rssKb(e.pid);
    const streams = await openHeldStreams(e.port, mock.port, e.authorization, SETTINGS.openStreams);
    await sleep(500);
    const rssAfterKb = rssKb(e.pid);
    await streams.release();
    const kbPerStream = (rssAfterKb - rssBeforeKb) / SETTINGS.openStreams;
    log(
      `  target ${target.id}: RSS ${rssBeforeKb} KB -> ${rssAfterKb} KB with ${SETTINGS.openStreams} open streams = ${kbPerStream.toFixed(1)} KB/stream`,
    );
    return { streams: SETTINGS.openStreams, rssBeforeKb, rssAfterKb, kbPerStream };
  } finally {
    if (e.child) await stopChild(e.child);
  }
}

/** Every check is computed within each round (targets measured seconds apart), then the median is judged. */
function checks(figures: TargetFigures[]) {
  const byId = (id: number): TargetFigures => figures.find((t) => t.id === id)!;
  const perRound = (compute: (v: (id: number) => View) => number): number[] =>
    byId(1).rounds.map((_, i) => compute((id) => roundView(byId(id), i)));
  const failoverCost = perRound((v) => v(5).p50 - v(4).p50 - v(1).p50);
  return {
    failoverCost,
    noise: perRound((v) => v(7).rps / v(4).rps),
    list: [
      check(
        '4 vs 3 throughput (failover must cost less than the naive proxy)',
        '×',
        '≥',
        1.2,
        perRound((v) => v(4).rps / v(3).rps),
      ),
      check(
        '4 vs 2 throughput',
        '×',
        '≥',
        0.6,
        perRound((v) => v(4).rps / v(2).rps),
      ),
      check(
        '4 vs 2 added p50 latency at c=1',
        'ms',
        '≤',
        0.3,
        perRound((v) => v(4).p50 - v(2).p50),
      ),
      check(
        '6 vs 4 throughput (pool size must not matter)',
        '×',
        '≥',
        0.95,
        perRound((v) => v(6).rps / v(4).rps),
      ),
      check('5 failover cost beyond the extra upstream round trip: p50(5) - p50(4) - p50(1)', 'ms', '≤', 0.2, failoverCost),
      check('4 RSS per open stream', 'KB', '≤', 64, [byId(4).memory!.kbPerStream]),
      check(
        '4 vs 2 SSE first byte p50 overhead',
        'ms',
        '≤',
        0.5,
        perRound((v) => v(4).ttfbP50 - v(2).ttfbP50),
      ),
    ],
  };
}

function versions(): Record<string, string> {
  const version = (dir: string): string => JSON.parse(readFileSync(path.join(ROOT, dir, 'package.json'), 'utf8')).version;
  const git = (...args: string[]): string => {
    try {
      return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return 'unknown';
    }
  };
  const out: Record<string, string> = { node: process.version, 'express-key-failover': version('.') };
  for (const name of ['express', 'undici', 'http-proxy-middleware', 'httpxy', 'autocannon', 'tsx'])
    out[name] = version(`node_modules/${name}`);
  out['git commit'] =
    git('rev-parse', '--short', 'HEAD') + (git('status', '--porcelain', '--', 'lib') ? ' + uncommitted lib/ changes' : '');
  return out;
}

async function main(): Promise<number> {
  const started = Date.now();
  const loadBefore = os.loadavg();
  const info = versions();
  log(
    `${Object.entries(info)
      .map(([k, v]) => `${k} ${v}`)
      .join(' | ')}`,
  );
  log(
    `${os.cpus().length} CPUs, load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}${QUICK ? ' | BENCH_QUICK: figures not meaningful' : ''}`,
  );
  const mock = await startChild('mock upstream', 'mock-upstream.ts');
  const figures: TargetFigures[] = TARGETS.map((t) => ({ id: t.id, name: t.name, rounds: [], sse: [] }));
  try {
    for (let round = 1; round <= SETTINGS.rounds; round++) {
      // Fresh processes every round: two processes of the same code can differ by a third for their whole life
      // (see the control row), so a process's luck must not follow a target through all rounds.
      const endpoints = await Promise.all(TARGETS.map((target) => startEndpoint(target, mock)));
      try {
        for (const e of endpoints) await checkEndpoint(e, mock);
        for (const e of endpoints) await runLoad(e.port, SETTINGS.throughputConnections, SETTINGS.warmupSeconds, e.authorization);
        log(
          `round ${round}: ${SETTINGS.throughputSeconds} s at ${SETTINGS.throughputConnections} connections, ${SETTINGS.latencySeconds} s at 1, ${SETTINGS.sseSamples} SSE streams`,
        );
        // Alternate the order so that drift in the machine's speed does not favour one end of the list.
        for (const e of round % 2 === 1 ? endpoints : [...endpoints].reverse()) {
          const own = figures[e.target.id - 1]!;
          own.rounds.push(await measureRound(e, mock, round));
          own.sse.push(await sseFirstByte(e.port, e.authorization, SETTINGS.sseSamples, 10));
        }
      } finally {
        for (const e of endpoints) if (e.child) await stopChild(e.child);
      }
    }
    log(`memory: ${SETTINGS.openStreams} open SSE streams through each proxy, each in a fresh process`);
    for (const target of TARGETS.filter((t) => t.file && !t.control)) figures[target.id - 1]!.memory = await measureMemory(target, mock);
  } finally {
    await stopChild(mock);
  }

  const { list, failoverCost, noise } = checks(figures);
  const elapsed = (Date.now() - started) / 1000;
  const otherLoads = figures.flatMap((t) => t.rounds.map((r) => r.otherLoad));
  const report = [
    '',
    table(figures),
    '',
    `Medians of ${SETTINGS.rounds} rounds; each round starts fresh processes, warms each up, then runs every target ` +
      `${SETTINGS.throughputSeconds} s at ${SETTINGS.throughputConnections} connections, ${SETTINGS.latencySeconds} s at 1 connection ` +
      `and ${SETTINGS.sseSamples} sequential SSE streams (order alternates). Added = minus target 1.`,
    `SSE 1st byte: median of the rounds' p50s; ` +
      `RSS: (VmRSS with ${SETTINGS.openStreams} open streams - before) / ${SETTINGS.openStreams}, fresh process.`,
    `Failover cost (5): p50(5) - p50(4) - p50(1) = ${median(failoverCost).toFixed(3)} ms (rounds: ${failoverCost.map((v) => v.toFixed(3)).join(', ')}).`,
    `Other processes used ${(100 * median(otherLoads)).toFixed(0)}% of the CPUs during the 50-connection runs (median; max ${(100 * Math.max(...otherLoads)).toFixed(0)}%)` +
      (median(otherLoads) > 0.1 ? ': the machine was busy, treat every ratio below with suspicion.' : '.'),
    `Noise (control): 7 vs 4 throughput, the same code in two processes = ${median(noise).toFixed(2)}× ` +
      `(rounds: ${noise.map((v) => v.toFixed(2)).join(', ')}); a throughput ratio inside that spread is not a difference.`,
    '',
    checkLines(list),
    '',
    `${elapsed.toFixed(0)} s; load average at the end ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  ].join('\n');
  process.stdout.write(`${report}\n`);

  const results = {
    date: new Date().toISOString(),
    quick: QUICK,
    versions: info,
    machine: {
      platform: `${os.platform()} ${os.release()}`,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      loadBefore,
      loadAfter: os.loadavg(),
    },
    settings: SETTINGS,
    elapsedSeconds: elapsed,
    targets: figures.map((t) => ({ ...t, median: medianView(t) })),
    failoverCostMs: { median: median(failoverCost), rounds: failoverCost },
    noiseControlRatio: { median: median(noise), rounds: noise },
    checks: list,
  };
  const file = path.join(ROOT, 'bench', 'results.json');
  writeFileSync(`${file}.tmp`, `${JSON.stringify(results, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
  process.stdout.write(`results written to bench/results.json\n`);
  return 0;
}

const watchdog = setTimeout(() => {
  log(`bench: hard limit of ${HARD_LIMIT_MS / 1000} s reached; stopping`);
  killAll();
  process.exit(2);
}, HARD_LIMIT_MS);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}
process.on('exit', killAll);

main().then(
  (code) => {
    clearTimeout(watchdog);
    if (liveChildren() > 0) log(`bench: ${liveChildren()} child process(es) still alive; killing`);
    killAll();
    process.exit(code);
  },
  (error: unknown) => {
    log(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    killAll();
    process.exit(1);
  },
);
