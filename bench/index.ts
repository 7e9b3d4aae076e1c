/**
 * npm run bench: side-by-side load figures for express-key-failover against a
 * zero-delay mock upstream, everything on 127.0.0.1. See bench/README.md.
 * BENCH_QUICK=1 shortens every phase (for trying the bench, not for figures).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { jsonRequest, runLoad, warm, type LoadResult } from './driver/load.js';
import { ROOT, cpuMs, killAll, liveChildren, machineBusyMs, rssKb, startChild, stopChild, type Child } from './driver/processes.js';
import {
  MEMORY_KINDS,
  Passes,
  STREAM_KINDS,
  check,
  checkLines,
  cpuTable,
  latencyTable,
  median,
  memoryTable,
  type Check,
  type MemoryFigure,
  type MemoryFigures,
  type MemoryKind,
  type PassFigures,
  type ThroughputRound,
  type TargetFigures,
} from './driver/report.js';
import { bearer, selfCheck, startEndpoint, type Endpoint } from './driver/endpoints.js';
import { firstContent, mockStats, openHeldStreams } from './driver/streams.js';
import { FLOORS, TARGETS } from './driver/targets.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const log = (line: string): void => void process.stderr.write(`${line}\n`);

const QUICK = process.env['BENCH_QUICK'] === '1';
const SETTINGS = {
  passes: QUICK ? 2 : 4,
  // Throughput runs per pass of each target whose CPU a check compares (the others: one), interleaved; the pass
  // takes the median.
  rounds: QUICK ? 1 : 3,
  // Load right before each measured run: a target that sat idle while the others ran has had its heap shrunk
  // by V8's memory reducer, and spends its next second growing it back (up to half more CPU per request, in
  // some runs and not others; see bench/README.md, "Passes, noise and verdicts").
  prewarmMs: 300,
  memoryPasses: QUICK ? 1 : 3,
  warmupSeconds: 2,
  // Short runs, many of them: this machine's speed drifts within seconds. Whole seconds: autocannon's unit.
  throughputSeconds: 1,
  throughputConnections: 50,
  latencySeconds: 1,
  streamSamples: QUICK ? 10 : 25,
  streamWarmup: QUICK ? 2 : 5,
  openStreams: QUICK ? 500 : 1000,
  fillStreams: QUICK ? 100 : 250,
};
const HARD_LIMIT_MS = 600_000;
// The load passes: no memory reducer. While a target sits idle (up to half a minute, while the others run), V8's
// memory reducer collects and shrinks its heap, and its next second of load cost up to a third more CPU per
// request (after 12 s idle, express-relay: 228, 263, 200, 183 µs; with the flag: 230, 181, 177, 177), more than
// a 0.3 s prewarm gives back. A gateway under steady load never idles that long.
const LOAD_NODE_FLAGS = ['--no-memory-reducer'];
// The memory passes: a GC on request; young generation kept small, so that its empty pages do not hide what the streams add to RSS.
const MEMORY_NODE_FLAGS = ['--expose-gc', '--max-semi-space-size=1', '--min-semi-space-size=1'];
// One malloc arena: glibc gives each thread that allocates (V8's GC and compiler workers) an arena of its own, whose
// free but unreturned pages added ~5 KB of RSS per stream to every row, by ±1-2 KB from one process to the next.
const MEMORY_ENV = { MALLOC_ARENA_MAX: '1' };

/** Load at `connections` for prewarmMs, then a pause for what is still in flight to finish. */
async function prewarm(e: Endpoint, connections: number): Promise<void> {
  await warm(e.port, connections, SETTINGS.prewarmMs, jsonRequest(bearer(e)));
  await sleep(50);
}

/** One 50-connection run of `e`, just after a prewarm: its req/s and the target's CPU time per request. */
async function measureThroughput(e: Endpoint, mock: Child): Promise<ThroughputRound> {
  // Ours: the driver (load generator), the mock and the target. Whatever else the machine did is someone else's.
  const pids = [...new Set([process.pid, mock.pid, e.pid])];
  const oursMs = (): number => pids.reduce((sum, pid) => sum + cpuMs(pid), 0);
  const rejected = async (): Promise<number> => (await mockStats(mock.port)).answered['429'] ?? 0;
  await prewarm(e, SETTINGS.throughputConnections);
  const rejectedBefore = await rejected();
  const [cpuBefore, oursBefore, machineBefore, started] = [cpuMs(e.pid), oursMs(), machineBusyMs(), performance.now()];
  const throughput = await runLoad(
    e.port,
    SETTINGS.throughputConnections,
    SETTINGS.throughputSeconds,
    jsonRequest(bearer(e)),
    e.target.rate,
  );
  const cpuUsPerRequest = ((cpuMs(e.pid) - cpuBefore) * 1000) / Math.max(1, throughput.ok + throughput.non2xx);
  const foreignMs = machineBusyMs() - machineBefore - (oursMs() - oursBefore);
  const otherLoad = Math.max(0, foreignMs / ((performance.now() - started) * os.cpus().length));
  // kf-429 must fail over on every request: the mock must have rejected key 0 at least once per answer.
  const rejections = (await rejected()) - rejectedBefore;
  if (e.target.failsOverOnce && rejections < throughput.ok)
    throw new Error(`${e.target.id}: ${throughput.ok} answers but only ${rejections} 429s from the mock`);
  if (throughput.non2xx || throughput.errors || throughput.timeouts)
    throw new Error(`${e.target.id} 50c: non2xx ${throughput.non2xx}, errors ${throughput.errors}, timeouts ${throughput.timeouts}`);
  return { throughput, cpuUsPerRequest, otherLoad };
}

/** One run at 1 connection, just after a prewarm at 1 connection. */
async function measureLatency(e: Endpoint): Promise<LoadResult> {
  await prewarm(e, 1);
  const latency = await runLoad(e.port, 1, SETTINGS.latencySeconds, jsonRequest(bearer(e)));
  if (latency.non2xx || latency.errors || latency.timeouts)
    throw new Error(`${e.target.id} 1c: non2xx ${latency.non2xx}, errors ${latency.errors}, timeouts ${latency.timeouts}`);
  return latency;
}

/**
 * A target's figures in one pass: its throughput rounds (the median round's CPU per request, the median req/s),
 * its latency rounds (the run of median p50), then the streams.
 */
async function measurePass(e: Endpoint, rounds: ThroughputRound[], latencies: LoadResult[], pass: number): Promise<PassFigures> {
  const byCpu = [...rounds].sort((a, b) => a.cpuUsPerRequest - b.cpuUsPerRequest);
  const middle = byCpu[(byCpu.length - 1) >> 1]!;
  const throughput = { ...middle.throughput, rps: median(rounds.map((r) => r.throughput.rps)) };
  const cpuUsPerRequest = median(rounds.map((r) => r.cpuUsPerRequest));
  const otherLoad = Math.max(...rounds.map((r) => r.otherLoad));
  const latency = [...latencies].sort((a, b) => a.p50 - b.p50)[(latencies.length - 1) >> 1]!;
  let content: PassFigures['firstContent'];
  if (e.target.upstream && !e.target.latencyOnly) {
    content = {} as NonNullable<PassFigures['firstContent']>;
    for (const kind of STREAM_KINDS) content[kind] = await firstContent(e.port, kind, e.key, SETTINGS.streamSamples, SETTINGS.streamWarmup);
  }
  log(
    `  pass ${pass} ${e.target.id.padEnd(13)} ${throughput.rps.toFixed(0).padStart(5)} req/s @50c, ${cpuUsPerRequest.toFixed(0).padStart(4)} µs CPU/req ` +
      `(rounds ${rounds.map((r) => r.cpuUsPerRequest.toFixed(0)).join(', ')}), other processes ${(otherLoad * 100).toFixed(0).padStart(2)}%; ` +
      `@1c p50 ${latency.p50.toFixed(3)} ms${latencies.length > 1 ? ` (rounds ${latencies.map((l) => l.p50.toFixed(3)).join(', ')})` : ''}` +
      (content ? `; 1st content p50 ${STREAM_KINDS.map((k) => `${k} ${content[k].p50.toFixed(3)}`).join(', ')} ms` : ''),
  );
  return { pass, throughput, cpuUsPerRequest, rounds, otherLoad, latency, ...(content ? { firstContent: content } : {}) };
}

/** VmRSS and the JS heap in use (heapUsed + external) right after a full GC: the target runs with --expose-gc and collects on SIGUSR2. */
async function afterGc(e: Endpoint): Promise<{ rssKb: number; retainedKb: number }> {
  const line = e.child!.nextLine('GC ', 30_000);
  process.kill(e.pid, 'SIGUSR2');
  const usage = JSON.parse((await line).slice(3)) as NodeJS.MemoryUsage;
  await sleep(100);
  return { rssKb: rssKb(e.pid), retainedKb: (usage.heapUsed + usage.external) / 1024 };
}

/**
 * In a fresh process: what `openStreams` more streams of `kind`, held open by the mock after their
 * first content, add to RSS and to the heap in use, each read after a full GC. The baseline is taken
 * with `fillStreams` already open, so that the heap a warm process has free does not absorb the first ones.
 */
async function measureMemory(e: Endpoint, mock: Child, kind: MemoryKind, pass: number): Promise<MemoryFigures> {
  await runLoad(e.port, 10, 1, jsonRequest(bearer(e)));
  for (const k of STREAM_KINDS) await firstContent(e.port, k, e.key, 5, 0);
  const fill = await openHeldStreams(e.port, mock.port, kind, e.key, SETTINGS.fillStreams);
  await sleep(200);
  const before = await afterGc(e);
  const streams = await openHeldStreams(e.port, mock.port, kind, e.key, SETTINGS.openStreams);
  await sleep(300);
  const after = await afterGc(e);
  await Promise.all([fill.release(), streams.release()]);
  const kbPerStream = (after.rssKb - before.rssKb) / SETTINGS.openStreams;
  const retainedKbPerStream = (after.retainedKb - before.retainedKb) / SETTINGS.openStreams;
  log(
    `  memory pass ${pass} ${e.target.id.padEnd(13)} ${kind.padEnd(9)} RSS ${before.rssKb} KB -> ${after.rssKb} KB with ${SETTINGS.openStreams} more open streams: ` +
      `${kbPerStream.toFixed(1)} KB/stream RSS, ${retainedKbPerStream.toFixed(1)} KB/stream heap in use`,
  );
  return {
    pass,
    kind,
    streams: SETTINGS.openStreams,
    rssBeforeKb: before.rssKb,
    rssAfterKb: after.rssKb,
    kbPerStream,
    retainedKbPerStream,
  };
}

/** The issue's acceptance, each computed within each pass (targets measured seconds apart), then the median judged. */
function checks(passes: Passes): Check[] {
  const na = (...ids: string[]): string | undefined =>
    ids.map((id) => passes.byId(id).na).find((reason) => reason !== undefined) ?? (passes.available(...ids) ? undefined : 'not measured');
  const cpu = (id: string, floor: string): number[] =>
    na(id, floor) ? [] : passes.each((of) => of(id).cpuUsPerRequest / of(floor).cpuUsPerRequest);
  const content = (kind: (typeof STREAM_KINDS)[number]): number[] =>
    na('kf-3', FLOORS.B) ? [] : passes.each((of) => of('kf-3').firstContent![kind].p50 - of(FLOORS.B).firstContent![kind].p50);
  const kb = (kind: MemoryKind, figure: MemoryFigure): number[] => passes.eachMemory(kind, figure, (v) => v('kf-3') - v(FLOORS.B));
  return [
    check(`kf-3 / ${FLOORS.B}: CPU µs per request`, '×', '≤', 1.05, cpu('kf-3', FLOORS.B), na('kf-3', FLOORS.B)),
    check(`kf-3 - ${FLOORS.B}: KB RSS per open stream (chat)`, 'KB', '≤', 2, kb('chat', 'kbPerStream'), na('kf-3', FLOORS.B)),
    check(`kf-3 - ${FLOORS.B}: KB heap per open stream (chat)`, 'KB', '≤', 2, kb('chat', 'retainedKbPerStream'), na('kf-3', FLOORS.B)),
    check(
      `kf-3 - ${FLOORS.B}: KB RSS per open stream (Responses, after its preamble and first text)`,
      'KB',
      '≤',
      2,
      kb('responses', 'kbPerStream'),
      na('kf-3', FLOORS.B),
    ),
    check(
      `kf-3 - ${FLOORS.B}: KB heap per open stream (Responses, after its preamble and first text)`,
      'KB',
      '≤',
      2,
      kb('responses', 'retainedKbPerStream'),
      na('kf-3', FLOORS.B),
    ),
    check('kf-10k / kf-3: CPU µs per request (pool size must not matter)', '×', '≤', 1.03, cpu('kf-10k', 'kf-3'), na('kf-10k', 'kf-3')),
    check(`kf-node / ${FLOORS.C}: CPU µs per request`, '×', '≤', 1.15, cpu('kf-node', FLOORS.C), na('kf-node', FLOORS.C)),
    check(`kf-3 - ${FLOORS.B}: chat SSE first event, p50`, 'ms', '≤', 0.3, content('chat'), na('kf-3', FLOORS.B)),
    check(`kf-3 - ${FLOORS.B}: Responses first text delta, p50`, 'ms', '≤', 0.3, content('responses'), na('kf-3', FLOORS.B)),
    check(`kf-3 - ${FLOORS.B}: Messages first text delta, p50`, 'ms', '≤', 0.3, content('messages'), na('kf-3', FLOORS.B)),
    check(
      'failover cost beyond the extra round trip: p50(kf-429) - p50(kf-3) - (p50(relay-retry) - p50(relay-buffered)) @1c',
      'ms',
      '≤',
      0.1,
      na('kf-429', 'kf-3', 'relay-retry', 'relay-buffered') ? [] : failoverCost(passes),
      na('kf-429', 'kf-3', 'relay-retry', 'relay-buffered'),
    ),
    check(
      'kf-scoped / kf-3: CPU µs per request (a scoped cooldown for another model)',
      '×',
      '≤',
      1.03,
      cpu('kf-scoped', 'kf-3'),
      na('kf-scoped', 'kf-3'),
    ),
  ];
}

/**
 * What failing over adds beyond the extra round trip itself, at 1 connection: kf-429's second attempt
 * (kf-429 - kf-3) less what the same extra round trip costs the least relay that retries (relay-retry -
 * relay-buffered: an undici request from the gateway, its 429 read and dropped, the body sent again).
 */
function failoverCost(passes: Passes): number[] {
  return passes.each(
    (of) => of('kf-429').latency.p50 - of('kf-3').latency.p50 - (of('relay-retry').latency.p50 - of('relay-buffered').latency.p50),
  );
}

/**
 * Informative, not a check: the same against a round trip straight from the load generator to the mock
 * (autocannon's client, not undici: about half of what a gateway pays for one).
 */
function failoverCostBeyondDirect(passes: Passes): number[] {
  return passes.each((of) => of('kf-429').latency.p50 - of('kf-3').latency.p50 - of('direct').latency.p50);
}

function versions(): Record<string, string> {
  const version = (dir: string): string =>
    (JSON.parse(readFileSync(path.join(ROOT, dir, 'package.json'), 'utf8')) as { version: string }).version;
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

async function loadPasses(mock: Child, figures: TargetFigures[]): Promise<void> {
  const own = (id: string): TargetFigures => figures.find((t) => t.id === id)!;
  for (let pass = 1; pass <= SETTINGS.passes; pass++) {
    // Fresh processes every pass: two processes of the same code can differ by a third for their whole life
    // (see the control row), so a process's luck must not follow a target through all passes.
    const started = await Promise.all(TARGETS.filter((t) => !own(t.id).na).map((target) => startEndpoint(target, mock, LOAD_NODE_FLAGS)));
    const endpoints: Endpoint[] = [];
    try {
      for (const e of started) {
        const na = await selfCheck(e, mock);
        if (na === undefined) {
          endpoints.push(e);
          continue;
        }
        if (pass > 1) throw new Error(`${e.target.id} passed its self-check in pass 1 but not in pass ${pass}: ${na}`);
        own(e.target.id).na = na;
        log(`  ${e.target.id}: n/a (${na})`);
        if (e.child) await stopChild(e.child);
      }
      // One at a time, each with the machine to itself: warmed up all at once (2 s, 10 connections each), the
      // processes were still getting faster through the three rounds (~210, ~185, ~160 µs per request).
      for (const e of endpoints) await runLoad(e.port, SETTINGS.throughputConnections, SETTINGS.warmupSeconds, jsonRequest(bearer(e)));
      // Requests still in flight in a target when autocannon stops must not land in the next target's window.
      await sleep(250);
      log(
        `pass ${pass}: ${SETTINGS.rounds} × (or 1 ×) ${SETTINGS.throughputSeconds} s at ${SETTINGS.throughputConnections} connections, ${SETTINGS.latencySeconds} s at 1, ` +
          `${SETTINGS.streamSamples} streams of each kind`,
      );
      // Alternate the order, round by round, so that drift in the machine's speed does not favour one end of the list.
      const rounds = new Map<string, ThroughputRound[]>(endpoints.map((e) => [e.target.id, []]));
      for (let round = 0; round < SETTINGS.rounds; round++) {
        for (const e of (pass + round) % 2 === 1 ? endpoints : [...endpoints].reverse()) {
          if (round === 0 || e.target.cpuChecked) rounds.get(e.target.id)!.push(await measureThroughput(e, mock));
        }
      }
      const latencies = new Map<string, LoadResult[]>(endpoints.map((e) => [e.target.id, []]));
      for (let round = 0; round < SETTINGS.rounds; round++) {
        for (const e of (pass + round) % 2 === 1 ? endpoints : [...endpoints].reverse()) {
          if (round === 0 || e.target.latencyChecked) latencies.get(e.target.id)!.push(await measureLatency(e));
        }
      }
      for (const e of pass % 2 === 1 ? endpoints : [...endpoints].reverse())
        own(e.target.id).passes.push(await measurePass(e, rounds.get(e.target.id)!, latencies.get(e.target.id)!, pass));
    } finally {
      for (const e of started) if (e.child) await stopChild(e.child);
    }
  }
}

async function memoryPasses(mock: Child, figures: TargetFigures[]): Promise<void> {
  const own = (id: string): TargetFigures => figures.find((t) => t.id === id)!;
  for (let pass = 1; pass <= SETTINGS.memoryPasses; pass++) {
    const targets = TARGETS.filter((t) => !own(t.id).na && (t.memory === 'every' || (t.memory === 'first' && pass === 1)));
    log(`memory pass ${pass}: ${SETTINGS.openStreams} open streams through each proxy, each kind in a fresh process`);
    const runs = targets.flatMap((target) => MEMORY_KINDS.map((kind) => ({ target, kind })));
    const started = await Promise.all(
      runs.map(async (run) => ({ ...run, e: await startEndpoint(run.target, mock, MEMORY_NODE_FLAGS, MEMORY_ENV) })),
    );
    try {
      for (const { target, kind, e } of pass % 2 === 1 ? started : [...started].reverse()) {
        own(target.id).memory.push(await measureMemory(e, mock, kind, pass));
        await stopChild(e.child!);
      }
    } finally {
      for (const { e } of started) await stopChild(e.child!);
    }
  }
}

async function main(): Promise<number> {
  const started = Date.now();
  const loadBefore = os.loadavg();
  const info = versions();
  log(
    Object.entries(info)
      .map(([k, v]) => `${k} ${v}`)
      .join(' | '),
  );
  log(
    `${os.cpus().length} CPUs, load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}${QUICK ? ' | BENCH_QUICK: figures not meaningful' : ''}`,
  );
  const mock = await startChild('mock upstream', 'mock-upstream.ts');
  const figures: TargetFigures[] = TARGETS.map((t) => ({ id: t.id, name: t.name, passes: [], memory: [] }));
  try {
    await loadPasses(mock, figures);
    await memoryPasses(mock, figures);
  } finally {
    await stopChild(mock);
  }

  const passes = new Passes(figures);
  const list = checks(passes);
  const cost = passes.available('kf-429', 'kf-3', 'relay-retry', 'relay-buffered') ? failoverCost(passes) : [];
  const retryTrip = passes.available('relay-retry', 'relay-buffered')
    ? passes.each((of) => of('relay-retry').latency.p50 - of('relay-buffered').latency.p50)
    : [];
  const costBeyondDirect = passes.available('kf-429', 'kf-3', 'direct') ? failoverCostBeyondDirect(passes) : [];
  const noiseCpu = passes.each((of) => of('control').cpuUsPerRequest / of('kf-3').cpuUsPerRequest);
  const noiseRps = passes.each((of) => of('control').throughput.rps / of('kf-3').throughput.rps);
  const elapsed = (Date.now() - started) / 1000;
  const otherLoads = figures.flatMap((t) => t.passes.map((p) => p.otherLoad));
  const values = (v: number[], digits: number): string => v.map((x) => x.toFixed(digits)).join(', ');
  const memoryIds = new Set(TARGETS.filter((t) => t.memory).map((t) => t.id));
  const report = [
    '',
    cpuTable(figures, passes),
    '',
    latencyTable(figures, passes),
    '',
    memoryTable(figures, memoryIds),
    '',
    `Floors: A ${FLOORS.A}, B ${FLOORS.B}, C ${FLOORS.C}. Every ratio and difference is computed within each pass, then the median over the passes.`,
    `${SETTINGS.passes} passes; each starts every target in a fresh process, self-checks and warms up each (${SETTINGS.warmupSeconds} s), then runs every target ` +
      `${SETTINGS.throughputSeconds} s at ${SETTINGS.throughputConnections} connections (${SETTINGS.rounds} interleaved rounds for those a CPU check compares, the median counts), ` +
      `then ${SETTINGS.latencySeconds} s at 1 connection and ${SETTINGS.streamSamples} sequential streams of each kind (order alternates). Added = minus direct.`,
    `1st content: time from sending to the whole first text delta (chat: the first event), median of the passes' p50s. ` +
      `Memory: what ${SETTINGS.openStreams} more held-open streams add (after ${SETTINGS.fillStreams} already open), read after V8's last-resort GC, / ${SETTINGS.openStreams}: ` +
      `VmRSS, and the JS heap in use (heapUsed + external); fresh process per target and kind, ${SETTINGS.memoryPasses} memory passes.`,
    `Failover cost: p50(kf-429) - p50(kf-3) - (p50(relay-retry) - p50(relay-buffered)) = ${median(cost).toFixed(3)} ms (passes: ${values(cost, 3)}); ` +
      `the extra round trip, p50(relay-retry) - p50(relay-buffered) = ${median(retryTrip).toFixed(3)} ms (passes: ${values(retryTrip, 3)}); ` +
      `against the direct round trip from the load generator instead, p50(kf-429) - p50(kf-3) - p50(direct) = ${median(costBeyondDirect).toFixed(3)} ms ` +
      `(passes: ${values(costBeyondDirect, 3)}).`,
    `Other processes used ${(100 * median(otherLoads)).toFixed(0)}% of the CPUs during the 50-connection runs (median; max ${(100 * Math.max(...otherLoads)).toFixed(0)}%)` +
      (median(otherLoads) > 0.1 ? ': the machine was busy, treat every ratio below with suspicion.' : '.'),
    `Noise (control): control / kf-3, the same code in two processes: CPU per request ${median(noiseCpu).toFixed(3)}× (passes: ${values(noiseCpu, 3)}), ` +
      `req/s ${median(noiseRps).toFixed(2)}× (passes: ${values(noiseRps, 2)}); a ratio inside that spread is not a difference.`,
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
    schema: 3,
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
    floors: FLOORS,
    targets: figures.map((t) => ({
      ...t,
      median: t.na
        ? undefined
        : {
            rps: median(t.passes.map((p) => p.throughput.rps)),
            cpuUsPerRequest: median(t.passes.map((p) => p.cpuUsPerRequest)),
            cpuVsFloor: Object.fromEntries(Object.entries(FLOORS).map(([name, floor]) => [name, passes.cpuRatio(t.id, floor)])),
            p50: median(t.passes.map((p) => p.latency.p50)),
            p99: median(t.passes.map((p) => p.latency.p99)),
            firstContentP50: t.passes[0]?.firstContent
              ? Object.fromEntries(STREAM_KINDS.map((k) => [k, median(t.passes.map((p) => p.firstContent![k].p50))]))
              : undefined,
            firstContentVsB: t.passes[0]?.firstContent
              ? Object.fromEntries(STREAM_KINDS.map((k) => [k, passes.contentDelta(t.id, FLOORS.B, k)]))
              : undefined,
            kbPerStream: Object.fromEntries(
              MEMORY_KINDS.map((k) => [k, median(t.memory.filter((m) => m.kind === k).map((m) => m.kbPerStream))]),
            ),
            retainedKbPerStream: Object.fromEntries(
              MEMORY_KINDS.map((k) => [k, median(t.memory.filter((m) => m.kind === k).map((m) => m.retainedKbPerStream))]),
            ),
          },
    })),
    failoverCostMs: { median: median(cost), passes: cost },
    extraRoundTripMs: { median: median(retryTrip), passes: retryTrip },
    failoverCostBeyondDirectMs: { median: median(costBeyondDirect), passes: costBeyondDirect },
    noiseControl: { cpu: { median: median(noiseCpu), passes: noiseCpu }, rps: { median: median(noiseRps), passes: noiseRps } },
    checks: list,
  };
  const file = path.join(ROOT, 'bench', 'results.json');
  writeFileSync(
    `${file}.tmp`,
    `${JSON.stringify(results, (_, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`,
  );
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
