/**
 * Profiles one target under the bench's load:
 *   npx tsx bench/profile.ts <id | targets/file.ts> [seconds] [--load json|chat|responses|messages] [--connections N] [--top N]
 * `id` is any row of the bench (bench/driver/targets.ts; `direct` profiles the
 * mock itself). Starts the mock and the target, the profiled one under
 * `node --cpu-prof`, runs the same self-check as the bench (an n/a row is
 * refused), warms it up, runs 50 connections (or N) for `seconds` (default 10) of the
 * bench's 1 KB JSON request or of one kind of stream, stops the process so
 * that it writes its profile, and prints where its CPU went: by package, the
 * hottest functions (self time), every function of lib/ with its inclusive
 * time, and the top inclusive entries.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bearer, selfCheck, startEndpoint, type Endpoint } from './driver/endpoints.js';
import { jsonRequest, runLoad, type LoadRequest } from './driver/load.js';
import { BUILD_DIR, cpuMs, killAll, startChild, stopChild, type Child } from './driver/processes.js';
import { targetById, type Target } from './driver/targets.js';
import type { StreamKind } from './provider-streams.js';
import { STREAM_REQUESTS } from './shared.js';

const PROFILE_FLAGS = (dir: string): string[] => ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--cpu-prof-interval=200'];

const LIB = `${BUILD_DIR}/lib/`;
const BENCH = `${BUILD_DIR}/bench/`;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount: number;
  children?: number[];
}

function category(url: string, name: string): string {
  if (!url) return name.startsWith('(') ? name : '(native)';
  if (url.includes(LIB)) return 'lib/ (this package)';
  if (url.includes(BENCH)) return 'bench/';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[1] ?? url.slice(5)}`.replace(/^node:internal$/, 'node:internal');
  return url.includes('/bench/') ? 'bench/' : url;
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Counts only the samples taken in [from, to] (µs, CLOCK_MONOTONIC like the profile's own clock). */
function keepWindow(profile: Profile, from: number, to: number): void {
  const hits = new Map<number, number>();
  let time = profile.startTime;
  profile.samples.forEach((id, i) => {
    time += profile.timeDeltas[i]!;
    if (time >= from && time <= to) hits.set(id, (hits.get(id) ?? 0) + 1);
  });
  for (const node of profile.nodes) node.hitCount = hits.get(node.id) ?? 0;
}

function analyse(file: string, window: [number, number], requests: number, targetCpuMs: number, topN: number): void {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  keepWindow(profile, ...window);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const total = profile.nodes.reduce((sum, n) => sum + n.hitCount, 0);
  const busy = total - profile.nodes.filter((n) => n.callFrame.functionName === '(idle)').reduce((s, n) => s + n.hitCount, 0);
  // Lines and columns are the compiled file's (esbuild keeps the source's layout, near enough to find a function).
  const key = (n: ProfileNode): string => {
    const { functionName, url, lineNumber, columnNumber } = n.callFrame;
    const where = url.replace(`file://${BUILD_DIR}/`, '').replace(/^.*node_modules\//, '');
    return `${functionName || '(anonymous)'} ${where}:${lineNumber + 1}:${columnNumber + 1}`;
  };
  const self = new Map<string, number>();
  const categories = new Map<string, number>();
  const inclusive = new Map<string, number>();
  // Inclusive time: count a subtree once per function, however deep the recursion.
  const subtree = (node: ProfileNode, open: Map<string, number>): number => {
    const k = key(node);
    open.set(k, (open.get(k) ?? 0) + 1);
    let sum = node.hitCount;
    for (const child of node.children ?? []) sum += subtree(byId.get(child)!, open);
    open.set(k, open.get(k)! - 1);
    if (open.get(k) === 0) inclusive.set(k, (inclusive.get(k) ?? 0) + sum);
    return sum;
  };
  subtree(profile.nodes[0]!, new Map());
  for (const n of profile.nodes) {
    if (n.callFrame.functionName === '(idle)') continue;
    self.set(key(n), (self.get(key(n)) ?? 0) + n.hitCount);
    const c = category(n.callFrame.url, n.callFrame.functionName);
    categories.set(c, (categories.get(c) ?? 0) + n.hitCount);
  }
  const usPerReq = (hits: number): string => ((((hits / busy) * targetCpuMs) / requests) * 1000).toFixed(1).padStart(7);
  const pct = (hits: number): string => `${((100 * hits) / busy).toFixed(1).padStart(5)}%`;
  const top = (map: Map<string, number>, n: number): [string, number][] => [...map].sort((a, b) => b[1] - a[1]).slice(0, n);
  console.log(
    `\n${busy} busy samples of ${total}; ${requests} requests; target CPU ${targetCpuMs.toFixed(0)} ms = ${((targetCpuMs * 1000) / requests).toFixed(0)} µs/request`,
  );
  console.log(`shares of busy (non-idle) samples; µs/req = share x target CPU / requests\n\nby package (self time):`);
  for (const [name, hits] of top(categories, 14)) console.log(`  ${pct(hits)} ${usPerReq(hits)} µs/req  ${name}`);
  console.log('\nhottest functions (self time):');
  for (const [name, hits] of top(self, topN)) console.log(`  ${pct(hits)} ${usPerReq(hits)} µs/req  ${name}`);
  const ours = new Map([...inclusive].filter(([k]) => k.startsWith('lib/', k.indexOf(' ') + 1)));
  console.log('\nlib/ functions (inclusive time, callees included):');
  for (const [name, hits] of top(ours, 20)) console.log(`  ${pct(hits)} ${usPerReq(hits)} µs/req  ${name}`);
  const generic = /^\((root|program|idle|garbage collector)\)|^(processTicksAndRejections|runMicrotasks|emit|listOnTimeout|processTimers) /;
  console.log('\nall functions (inclusive time, top 30, event-loop plumbing left out):');
  for (const [name, hits] of top(new Map([...inclusive].filter(([k]) => !generic.test(k))), 30))
    console.log(`  ${pct(hits)} ${usPerReq(hits)} µs/req  ${name}`);
}

function loadRequest(kind: string, e: Endpoint): LoadRequest {
  if (kind === 'json') return jsonRequest(bearer(e));
  if (!(kind in STREAM_REQUESTS)) throw new Error(`--load: json, chat, responses or messages, not ${kind}`);
  const request = STREAM_REQUESTS[kind as StreamKind];
  return { path: request.path, body: request.body({}), headers: { 'content-type': 'application/json', ...request.headers(e.key) } };
}

function parseArgs(argv: string[]): { target: Target; seconds: number; load: string; topN: number; connections: number } {
  const positional: string[] = [];
  let load = 'json';
  let topN = 25;
  let connections = 50;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--load') load = argv[++i] ?? '';
    else if (argv[i] === '--top') topN = Number(argv[++i]);
    else if (argv[i] === '--connections') connections = Number(argv[++i]);
    else positional.push(argv[i]!);
  }
  const [id = 'kf-3', seconds = '10'] = positional;
  // A row of the bench, or any target file under bench/ (for trying a variant).
  const target: Target = id.endsWith('.ts') ? { id: path.basename(id, '.ts'), name: id, file: id, upstream: true } : targetById(id);
  if (!Number.isInteger(connections) || connections < 1) throw new Error(`--connections: a whole number of at least 1, not ${connections}`);
  if (!Number.isInteger(Number(seconds)) || Number(seconds) < 1)
    throw new Error(`seconds: whole seconds (autocannon's unit), not ${seconds}`);
  return { target, seconds: Number(seconds), load, topN, connections };
}

async function main(): Promise<void> {
  const { target, seconds, load, topN, connections } = parseArgs(process.argv.slice(2));
  if (!target.upstream && load !== 'json') throw new Error(`${target.id} answers by itself: --load json only`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ekf-profile-'));
  // Direct: the mock is the process under the profiler.
  const mock = await startChild('mock upstream', 'mock-upstream.ts', [], target.file ? [] : PROFILE_FLAGS(dir));
  let profiled: Child = mock;
  try {
    const e = await startEndpoint(target, mock, PROFILE_FLAGS(dir));
    if (e.child) profiled = e.child;
    const na = await selfCheck(e, mock);
    if (na !== undefined) throw new Error(`${target.id} is n/a on this branch (${na}): nothing to profile`);
    const request = loadRequest(load, e);
    await runLoad(e.port, connections, 2, request);
    const micros = (): number => Number(process.hrtime.bigint() / 1000n);
    const before = cpuMs(e.pid);
    const from = micros();
    const result = await runLoad(e.port, connections, seconds, request);
    const window: [number, number] = [from, micros()];
    const targetCpuMs = cpuMs(e.pid) - before;
    await stopChild(profiled, 20_000);
    console.log(
      `${target.id} (${load}): ${result.rps.toFixed(0)} req/s at ${connections} connection(s) (non2xx ${result.non2xx}, errors ${result.errors}); profile in ${dir}`,
    );
    const profile = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (!profile) throw new Error('no profile written');
    // Only the samples of the measured run count: start-up, self-check and warm-up are left out.
    analyse(path.join(dir, profile), window, result.ok, targetCpuMs, topN);
  } finally {
    if (profiled !== mock && profiled.process.exitCode === null) await stopChild(profiled);
    await stopChild(mock);
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    killAll();
    process.exit(1);
  },
);
