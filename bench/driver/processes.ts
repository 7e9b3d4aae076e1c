import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';

/** A target or mock process started by the driver; always stopped by its own pid. */
export interface Child {
  name: string;
  pid: number;
  port: number;
  process: ChildProcess;
  /** Lines it printed before `PORT <n>`, such as kf-scoped's `NA <reason>`. */
  notes: string[];
  /** Resolves with the next line it prints that starts with `prefix`. */
  nextLine(prefix: string, timeoutMs: number): Promise<string>;
}

export const ROOT = path.resolve(__dirname, '..', '..');
/** Where lib/ and bench/ are compiled for the children: inside ROOT, so that they find ROOT/node_modules. */
export const BUILD_DIR = path.join(ROOT, 'node_modules', '.cache', 'ekf-bench');
const live = new Set<ChildProcess>();
let built = false;

/**
 * The children (mock, targets) run as plain JavaScript, as the published package does: lib/ and bench/
 * compiled by esbuild, once per run, without keepNames. Under tsx, every function expression is wrapped in
 * a `__name()` call that runs each time the closure is made; for lib/, which makes closures per request,
 * that cost kf-3 3-20 µs per request that no user pays (the floors, with little code of their own, paid
 * almost none of it). Returns the compiled path of `file` (relative to bench/).
 */
export function compiled(file: string): string {
  if (!built) {
    rmSync(BUILD_DIR, { recursive: true, force: true });
    const sources = ['lib', 'bench'].flatMap((dir) =>
      readdirSync(path.join(ROOT, dir), { recursive: true, encoding: 'utf8' })
        .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
        .map((f) => path.join(ROOT, dir, f)),
    );
    buildSync({
      entryPoints: sources,
      outdir: BUILD_DIR,
      outbase: ROOT,
      format: 'esm',
      platform: 'node',
      target: 'node22',
      logLevel: 'warning',
    });
    writeFileSync(path.join(BUILD_DIR, 'package.json'), '{ "type": "module" }\n');
    built = true;
  }
  return path.join(BUILD_DIR, 'bench', file.replace(/\.ts$/, '.js'));
}

/**
 * Starts `file` (relative to bench/) in a fresh Node process, compiled (see `compiled`; no tsx CLI
 * or loader between us and the target to skew its CPU or RSS), and waits for the `PORT <n>` line.
 */
export function startChild(
  name: string,
  file: string,
  args: string[] = [],
  nodeFlags: string[] = [],
  env: Record<string, string> = {},
): Promise<Child> {
  const child = spawn(process.execPath, [...nodeFlags, compiled(file), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  live.add(child);
  child.once('exit', () => live.delete(child));
  const waiting = new Map<string, ((line: string) => void)[]>();
  const notes: string[] = [];
  return new Promise((resolve, reject) => {
    let output = '';
    let port = 0;
    const timer = setTimeout(() => fail(new Error(`${name} did not print its port within 20 s`)), 20_000);
    const fail = (error: Error): void => {
      clearTimeout(timer);
      if (child.pid) kill(child, 'SIGKILL');
      reject(error);
    };
    const onExit = (code: number | null, signal: string | null): void =>
      fail(new Error(`${name} exited before listening (${code ?? signal})`));
    child.once('exit', onExit);
    child.stdout!.on('data', (data: Buffer) => {
      output += data.toString();
      let end;
      while ((end = output.indexOf('\n')) !== -1) {
        const line = output.slice(0, end).trim();
        output = output.slice(end + 1);
        const match = /^PORT (\d+)$/.exec(line);
        if (port === 0 && match && child.pid) {
          port = Number(match[1]);
          clearTimeout(timer);
          child.off('exit', onExit);
          resolve({ name, pid: child.pid, port, process: child, notes, nextLine });
        } else if (port === 0) {
          notes.push(line);
        } else {
          for (const [prefix, resolvers] of waiting) {
            if (!line.startsWith(prefix)) continue;
            waiting.delete(prefix);
            for (const resolveLine of resolvers) resolveLine(line);
          }
        }
      }
    });
  });

  function nextLine(prefix: string, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} did not print ${prefix}... within ${timeoutMs} ms`)), timeoutMs);
      waiting.set(prefix, [
        ...(waiting.get(prefix) ?? []),
        (line) => {
          clearTimeout(timer);
          resolve(line);
        },
      ]);
    });
  }
}

function kill(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid) process.kill(child.pid, signal);
  } catch {
    // already gone
  }
}

/** SIGTERM (targets exit on it, so that --cpu-prof writes its file), SIGKILL after `graceMs`. */
export async function stopChild(child: Child, graceMs = 5_000): Promise<void> {
  const proc = child.process;
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  kill(proc, 'SIGTERM');
  const timer = setTimeout(() => kill(proc, 'SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Last resort, synchronous: SIGKILL every child still alive, each by its pid. */
export function killAll(): void {
  for (const child of live) kill(child, 'SIGKILL');
  live.clear();
}

export function liveChildren(): number {
  return live.size;
}

/** Resident set size of a process, in KB, from /proc. */
export function rssKb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]);
}

/**
 * CPU time a process has run so far, in ms: the sum over its threads of the
 * scheduler's run time (/proc/<pid>/task/<tid>/schedstat, in ns), which has
 * none of /proc/<pid>/stat's 10 ms granularity. Falls back to stat's user +
 * system time where schedstat is missing.
 */
export function cpuMs(pid: number): number {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // a thread that ended between the listing and the read
      }
    }
    if (ns > 0) return ns / 1e6;
  } catch {
    // no schedstat: below
  }
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * CPU time the whole machine spent in processes so far, in ms (all cores, from
 * /proc/stat), plus time stolen by the hypervisor. Interrupt time is left out:
 * loopback traffic is mostly softirq work that no process is charged for.
 */
export function machineBusyMs(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , , , steal = 0] = fields;
  return (user + nice + system + steal) * 10;
}
