/**
 * Profiles one target under load: `npx tsx bench/profile.ts <2-6 | targets/file.ts> [seconds]`.
 * Starts the mock and the target (node --cpu-prof), runs 50 connections for
 * `seconds` (default 10), stops the target so that it writes its profile, and
 * prints where the target's CPU went: by package, the hottest functions (self
 * time) and every function of lib/ with its inclusive time.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runLoad } from './driver/load.js';
import { ROOT, cpuMs, killAll, startChild, stopChild } from './driver/processes.js';
import { CLIENT_KEY } from './shared.js';

const FILES: Record<string, string> = {
  '2': 'targets/2-node-pipe.ts',
  '3': 'targets/3-express-hpm.ts',
  '4': 'targets/4-failover-3-keys.ts',
  '5': 'targets/5-failover-429.ts',
  '6': 'targets/6-failover-10k-keys.ts',
};

const LIB = `${ROOT}/lib/`;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount: number;
  children?: number[];
}

function category(url: string, name: string): string {
  if (!url) return name.startsWith('(') ? name : '(native)';
  if (url.includes(LIB)) return 'lib/ (this package)';
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

function analyse(file: string, window: [number, number], requests: number, targetCpuMs: number): void {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  keepWindow(profile, ...window);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const total = profile.nodes.reduce((sum, n) => sum + n.hitCount, 0);
  const busy = total - profile.nodes.filter((n) => n.callFrame.functionName === '(idle)').reduce((s, n) => s + n.hitCount, 0);
  // tsx emits each module on few lines: the column tells functions apart.
  const key = (n: ProfileNode): string => {
    const { functionName, url, lineNumber, columnNumber } = n.callFrame;
    return `${functionName || '(anonymous)'} ${url.replace(`file://${ROOT}/`, '').replace(/^.*node_modules\//, '')}:${lineNumber + 1}:${columnNumber + 1}`;
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
    `\n${busy} busy samples of ${total}; ${requests} requests; target CPU ${targetCpuMs} ms = ${((targetCpuMs * 1000) / requests).toFixed(0)} µs/request`,
  );
  console.log(`shares of busy (non-idle) samples; µs/req = share x target CPU / requests\n\nby package (self time):`);
  for (const [name, hits] of top(categories, 14)) console.log(`  ${pct(hits)} ${usPerReq(hits)} µs/req  ${name}`);
  console.log('\nhottest functions (self time):');
  for (const [name, hits] of top(self, 25)) console.log(`  ${pct(hits)} ${usPerReq(hits)} µs/req  ${name}`);
  const ours = new Map([...inclusive].filter(([k]) => k.startsWith('lib/', k.indexOf(' ') + 1)));
  console.log('\nlib/ functions (inclusive time, callees included):');
  for (const [name, hits] of top(ours, 20)) console.log(`  ${pct(hits)} ${usPerReq(hits)} µs/req  ${name}`);
  const generic = /^\((root|program|idle|garbage collector)\)|^(processTicksAndRejections|runMicrotasks|emit|listOnTimeout|processTimers) /;
  console.log('\nall functions (inclusive time, top 30, event-loop plumbing left out):');
  for (const [name, hits] of top(new Map([...inclusive].filter(([k]) => !generic.test(k))), 30))
    console.log(`  ${pct(hits)} ${usPerReq(hits)} µs/req  ${name}`);
}

async function main(): Promise<void> {
  const id = process.argv[2] ?? '4';
  const seconds = Number(process.argv[3] ?? 10);
  // A target number, or any target file under bench/ (for trying a variant).
  const file = FILES[id] ?? (id.endsWith('.ts') ? id : undefined);
  if (!file) throw new Error(`usage: npx tsx bench/profile.ts <${Object.keys(FILES).join('|')}|targets/file.ts> [seconds]`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ekf-profile-'));
  const mock = await startChild('mock upstream', 'mock-upstream.ts');
  try {
    const target = await startChild(
      `target ${id}`,
      file,
      [`http://127.0.0.1:${mock.port}`],
      ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--cpu-prof-interval=200'],
    );
    const authorization = `Bearer ${CLIENT_KEY}`;
    await runLoad(target.port, 50, 2, authorization);
    const micros = (): number => Number(process.hrtime.bigint() / 1000n);
    const before = cpuMs(target.pid);
    const from = micros();
    const load = await runLoad(target.port, 50, seconds, authorization);
    const window: [number, number] = [from, micros()];
    const targetCpuMs = cpuMs(target.pid) - before;
    await stopChild(target, 20_000);
    console.log(
      `target ${id}: ${load.rps.toFixed(0)} req/s at 50 connections (non2xx ${load.non2xx}, errors ${load.errors}); profile in ${dir}`,
    );
    const profile = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (!profile) throw new Error('no profile written');
    // Only the samples of the measured run count: start-up and warm-up are left out.
    analyse(path.join(dir, profile), window, load.ok, targetCpuMs);
  } finally {
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
