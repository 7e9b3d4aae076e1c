import type { LoadResult } from './load.js';

/** One slice of a round: the throughput run, then the latency run, of one target. */
export interface RoundFigures {
  round: number;
  throughput: LoadResult;
  /** CPU time the target process (the mock for target 1) spent per request at 50 connections, in µs. */
  cpuUsPerRequest: number;
  /** Share of all CPUs used by processes other than the driver, the mock and the target during the throughput run. */
  otherLoad: number;
  latency: LoadResult;
}

export interface MemoryFigures {
  streams: number;
  rssBeforeKb: number;
  rssAfterKb: number;
  kbPerStream: number;
}

export interface TargetFigures {
  id: number;
  name: string;
  rounds: RoundFigures[];
  /** p50/p99 time to the first SSE byte (ms), one entry per round. */
  sse: { p50: number; p99: number }[];
  memory?: MemoryFigures;
}

/** A target's figures in one view: the median of its rounds, or one round alone. */
export interface View {
  rps: number;
  cpuUsPerRequest: number;
  p50: number;
  p99: number;
  ttfbP50: number;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function medianView(t: TargetFigures): View {
  return {
    rps: median(t.rounds.map((r) => r.throughput.rps)),
    cpuUsPerRequest: median(t.rounds.map((r) => r.cpuUsPerRequest)),
    p50: median(t.rounds.map((r) => r.latency.p50)),
    p99: median(t.rounds.map((r) => r.latency.p99)),
    ttfbP50: median(t.sse.map((s) => s.p50)),
  };
}

/** Round `i` alone. */
export function roundView(t: TargetFigures, i: number): View {
  const r = t.rounds[i]!;
  return { rps: r.throughput.rps, cpuUsPerRequest: r.cpuUsPerRequest, p50: r.latency.p50, p99: r.latency.p99, ttfbP50: t.sse[i]!.p50 };
}

export interface Check {
  name: string;
  /** Median of the per-round values: each round compares targets measured minutes apart at most. */
  value: number;
  unit: '×' | 'ms' | 'KB';
  op: '≥' | '≤';
  limit: number;
  pass: boolean;
  /** The value computed within each round; absent for a single measurement. */
  perRound?: number[];
  /** How many rounds pass on their own. */
  roundsPassing?: number;
  /** At least a third of the rounds disagree with the verdict: it is within this machine's noise. */
  unstable: boolean;
}

export function check(name: string, unit: Check['unit'], op: Check['op'], limit: number, perRound: number[]): Check {
  const passes = (v: number): boolean => (op === '≥' ? v >= limit : v <= limit);
  const value = median(perRound);
  const pass = passes(value);
  if (perRound.length === 1) return { name, value, unit, op, limit, pass, unstable: false };
  const roundsPassing = perRound.filter(passes).length;
  const disagreeing = pass ? perRound.length - roundsPassing : roundsPassing;
  return { name, value, unit, op, limit, pass, perRound, roundsPassing, unstable: disagreeing * 3 >= perRound.length };
}

const f = (n: number | undefined, digits: number): string => (n === undefined || Number.isNaN(n) ? '—' : n.toFixed(digits));
const signed = (n: number, digits: number): string => (n >= 0 ? '+' : '') + n.toFixed(digits);

export function table(targets: TargetFigures[]): string {
  const direct = medianView(targets.find((t) => t.id === 1)!);
  const pipe = medianView(targets.find((t) => t.id === 2)!);
  const header = [
    '#',
    'target',
    'req/s @50c',
    'min-max',
    'CPU µs/req',
    'p50 @1c ms',
    'p99 @1c ms',
    'added p50',
    'added p99',
    'SSE 1st byte p50',
    'vs 2',
    'RSS KB/stream',
  ];
  const rows = targets.map((t) => {
    const v = medianView(t);
    const rps = t.rounds.map((r) => r.throughput.rps);
    return [
      String(t.id),
      t.name,
      f(v.rps, 0),
      `${f(Math.min(...rps), 0)}-${f(Math.max(...rps), 0)}`,
      f(v.cpuUsPerRequest, 0),
      f(v.p50, 3),
      f(v.p99, 3),
      t.id === 1 ? '—' : signed(v.p50 - direct.p50, 3),
      t.id === 1 ? '—' : signed(v.p99 - direct.p99, 3),
      f(v.ttfbP50, 3),
      t.id <= 2 ? '—' : signed(v.ttfbP50 - pipe.ttfbP50, 3),
      f(t.memory?.kbPerStream, 1),
    ];
  });
  return markdown(header, rows);
}

export function checkLines(checks: Check[]): string {
  return checks
    .map((c) => {
      const unit = c.unit === '×' ? '×' : ` ${c.unit}`;
      const digits = c.unit === '×' ? 2 : c.unit === 'KB' ? 1 : 3;
      const rounds = c.perRound
        ? `  [${c.roundsPassing}/${c.perRound.length} rounds pass: ${c.perRound.map((v) => v.toFixed(digits)).join(', ')}]`
        : '';
      return `${c.pass ? 'PASS' : 'MISS'}  ${c.name}: ${c.value.toFixed(digits)}${unit} (target ${c.op} ${c.limit}${unit})${rounds}${c.unstable ? '  UNSTABLE' : ''}`;
    })
    .join('\n');
}

function markdown(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}
