import type { StreamKind } from '../provider-streams.js';
import type { LoadResult } from './load.js';
import { FLOORS } from './targets.js';

export const STREAM_KINDS: readonly StreamKind[] = ['chat', 'responses', 'messages'];
/** The kinds held open by the memory runs: the old one-event stream, and the Responses stream after its preamble. */
export const MEMORY_KINDS = ['chat', 'responses'] as const;
export type MemoryKind = (typeof MEMORY_KINDS)[number];

/** One 50-connection run of one target. */
export interface ThroughputRound {
  throughput: LoadResult;
  /** CPU time the target process (the mock, for direct) spent per request, in µs. */
  cpuUsPerRequest: number;
  /** Share of all CPUs used by processes other than the driver, the mock and the target during the run. */
  otherLoad: number;
}

/** One target in one pass: its throughput rounds (interleaved with the other targets'), the latency run and the streams. */
export interface PassFigures {
  pass: number;
  /** The round of median CPU per request, with the median req/s of the rounds. */
  throughput: LoadResult;
  /** Median over the rounds of the CPU time the target process (the mock, for direct) spent per request at 50 connections, in µs. */
  cpuUsPerRequest: number;
  rounds: ThroughputRound[];
  /** The highest share of all CPUs used by processes other than the driver, the mock and the target in one of the rounds. */
  otherLoad: number;
  latency: LoadResult;
  /** Time to the first content (ms) per kind of stream; absent for a target without an upstream. */
  firstContent?: Record<StreamKind, { p50: number; p99: number }>;
}

export interface MemoryFigures {
  pass: number;
  kind: MemoryKind;
  streams: number;
  rssBeforeKb: number;
  rssAfterKb: number;
  /** VmRSS added per open stream. */
  kbPerStream: number;
  /** JS heap in use (heapUsed + external, after a full GC) added per open stream. */
  retainedKbPerStream: number;
}

export type MemoryFigure = 'kbPerStream' | 'retainedKbPerStream';

export interface TargetFigures {
  id: string;
  name: string;
  /** Why the row has no figures (its self-check failed on this branch). */
  na?: string;
  passes: PassFigures[];
  memory: MemoryFigures[];
}

export function median(values: number[]): number {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Values computed within each pass from targets measured seconds apart; the figures' passes line up by index. */
export class Passes {
  constructor(private readonly figures: TargetFigures[]) {}

  byId(id: string): TargetFigures {
    return this.figures.find((t) => t.id === id)!;
  }

  available(...ids: string[]): boolean {
    return ids.every((id) => this.byId(id).na === undefined && this.byId(id).passes.length > 0);
  }

  /** `compute` once per pass, with each target's figures of that pass. */
  each(compute: (of: (id: string) => PassFigures) => number): number[] {
    const count = Math.max(...this.figures.map((t) => t.passes.length));
    return Array.from({ length: count }, (_, i) => compute((id) => this.byId(id).passes[i]!));
  }

  /** `compute` once per memory pass in which every target it reads was measured. */
  eachMemory(kind: MemoryKind, figure: MemoryFigure, compute: (kb: (id: string) => number) => number): number[] {
    const passes = [...new Set(this.figures.flatMap((t) => t.memory.map((m) => m.pass)))].sort((a, b) => a - b);
    const out: number[] = [];
    for (const pass of passes) {
      const kb = (id: string): number => this.byId(id).memory.find((m) => m.pass === pass && m.kind === kind)?.[figure] ?? NaN;
      const value = compute(kb);
      if (!Number.isNaN(value)) out.push(value);
    }
    return out;
  }

  cpuRatio(id: string, floor: string): number {
    return this.available(id, floor) ? median(this.each((of) => of(id).cpuUsPerRequest / of(floor).cpuUsPerRequest)) : NaN;
  }

  contentDelta(id: string, floor: string, kind: StreamKind): number {
    if (!this.available(id, floor) || !this.byId(id).passes[0]?.firstContent || !this.byId(floor).passes[0]?.firstContent) return NaN;
    return median(this.each((of) => of(id).firstContent![kind].p50 - of(floor).firstContent![kind].p50));
  }
}

export interface Check {
  name: string;
  /** Median of the per-pass values. */
  value: number;
  unit: '×' | 'ms' | 'KB';
  op: '≥' | '≤';
  limit: number;
  pass: boolean;
  /** The value computed within each pass. */
  perPass: number[];
  /** How many passes pass on their own. */
  passesPassing: number;
  /** At least a third of the passes disagree with the verdict: it is within this machine's noise. */
  unstable: boolean;
  /** The check could not be made: what the rows it compares need. */
  na?: string;
}

export function check(name: string, unit: Check['unit'], op: Check['op'], limit: number, perPass: number[], na?: string): Check {
  if (na !== undefined || perPass.length === 0)
    return { name, value: NaN, unit, op, limit, pass: false, perPass: [], passesPassing: 0, unstable: false, na: na ?? 'no figures' };
  const passes = (v: number): boolean => (op === '≥' ? v >= limit : v <= limit);
  const value = median(perPass);
  const pass = passes(value);
  const passesPassing = perPass.filter(passes).length;
  const disagreeing = pass ? perPass.length - passesPassing : passesPassing;
  return { name, value, unit, op, limit, pass, perPass, passesPassing, unstable: perPass.length > 1 && disagreeing * 3 >= perPass.length };
}

const f = (n: number | undefined, digits: number): string => (n === undefined || Number.isNaN(n) ? '—' : n.toFixed(digits));
const signed = (n: number, digits: number): string => (Number.isNaN(n) ? '—' : (n >= 0 ? '+' : '') + n.toFixed(digits));
const med = (t: TargetFigures, pick: (p: PassFigures) => number | undefined): number => median(t.passes.map((p) => pick(p) ?? NaN));

/** CPU and throughput: every target's CPU per request as a ratio to each floor, per pass, then the median. */
export function cpuTable(targets: TargetFigures[], passes: Passes): string {
  const header = ['id', 'target', 'req/s @50c', 'min-max', 'CPU µs/req', `× A ${FLOORS.A}`, `× B ${FLOORS.B}`, `× C ${FLOORS.C}`];
  const rows = targets.map((t) => {
    if (t.na) return [t.id, t.name, `n/a (${t.na})`, '', '', '', '', ''];
    const rps = t.passes.map((p) => p.throughput.rps);
    return [
      t.id,
      t.name,
      f(
        med(t, (p) => p.throughput.rps),
        0,
      ),
      `${f(Math.min(...rps), 0)}-${f(Math.max(...rps), 0)}`,
      f(
        med(t, (p) => p.cpuUsPerRequest),
        0,
      ),
      ...[FLOORS.A, FLOORS.B, FLOORS.C].map((floor) => f(passes.cpuRatio(t.id, floor), 2)),
    ];
  });
  return markdown(header, rows);
}

/** Latency at one connection, and the time to the first content of each kind of stream, with its difference to floor B. */
export function latencyTable(targets: TargetFigures[], passes: Passes): string {
  const direct = targets.find((t) => t.id === 'direct')!;
  const header = [
    'id',
    'p50 @1c ms',
    'p99 @1c ms',
    'added p50',
    'chat SSE 1st ms',
    'vs B',
    'Responses 1st text',
    'vs B',
    'Messages 1st text',
    'vs B',
  ];
  const rows = targets.map((t) => {
    if (t.na) return [t.id, `n/a (${t.na})`, '', '', '', '', '', '', '', ''];
    const content = STREAM_KINDS.flatMap((kind) => [
      f(
        med(t, (p) => p.firstContent?.[kind].p50),
        3,
      ),
      t.id === FLOORS.B ? '—' : signed(passes.contentDelta(t.id, FLOORS.B, kind), 3),
    ]);
    return [
      t.id,
      f(
        med(t, (p) => p.latency.p50),
        3,
      ),
      f(
        med(t, (p) => p.latency.p99),
        3,
      ),
      t.id === 'direct' ? '—' : signed(median(passes.each((of) => of(t.id).latency.p50 - of(direct.id).latency.p50)), 3),
      ...content,
    ];
  });
  return markdown(header, rows);
}

/** Memory per open stream, each memory pass in its own fresh processes; `ids`: the targets with memory runs. */
export function memoryTable(targets: TargetFigures[], ids: ReadonlySet<string>): string {
  const header = [
    'id',
    'chat: KB RSS/stream (passes)',
    'chat: KB heap/stream',
    'Responses: KB RSS/stream (passes)',
    'Responses: KB heap/stream',
  ];
  const rows = targets
    .filter((t) => ids.has(t.id))
    .map((t) => {
      if (t.na) return [t.id, `n/a (${t.na})`, '', '', ''];
      const cells = MEMORY_KINDS.flatMap((kind) => {
        const runs = t.memory.filter((m) => m.kind === kind);
        const rss = runs.map((m) => m.kbPerStream);
        return [
          `${f(median(rss), 1)}${rss.length > 1 ? ` (${rss.map((v) => v.toFixed(1)).join(', ')})` : ''}`,
          f(median(runs.map((m) => m.retainedKbPerStream)), 1),
        ];
      });
      return [t.id, ...cells];
    });
  return markdown(header, rows);
}

export function checkLines(checks: Check[]): string {
  return checks
    .map((c) => {
      const unit = c.unit === '×' ? '×' : ` ${c.unit}`;
      const digits = c.unit === '×' ? 3 : c.unit === 'KB' ? 1 : 3;
      if (c.na) return `n/a   ${c.name}: ${c.na} (target ${c.op} ${c.limit}${unit})`;
      const passes = `  [${c.passesPassing}/${c.perPass.length} passes pass: ${c.perPass.map((v) => v.toFixed(digits)).join(', ')}]`;
      return `${c.pass ? 'PASS' : 'MISS'}  ${c.name}: ${c.value.toFixed(digits)}${unit} (target ${c.op} ${c.limit}${unit})${passes}${c.unstable ? '  UNSTABLE' : ''}`;
    })
    .join('\n');
}

export function markdown(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}
