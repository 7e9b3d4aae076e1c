/** Every target the bench measures, in table order; bench/profile.ts takes the same ids. */

export interface Target {
  /** Short id: the table's first column, the profile's argument, and the file name under targets/. */
  id: string;
  name: string;
  /** Under bench/; none for direct (the load goes to the mock itself). */
  file?: string;
  /** False for express-json, which answers by itself: no streams, no key to swap. */
  upstream: boolean;
  /** A repeat of this target in another process, to show the noise. */
  controlOf?: string;
  /** Memory passes that measure it: every one (the pair the memory checks compare) or only the first. */
  memory?: 'every' | 'first';
  /** The row may be n/a on this branch: what it needs, shown when its self-check fails. */
  needs?: string;
  /** The mock must answer one 429 per answer (key 0 always rate limited). */
  failsOverOnce?: boolean;
  /** A CPU check compares it: SETTINGS.rounds throughput runs per pass (the others: one). */
  cpuChecked?: boolean;
  /**
   * Its 50-connection runs are held to this many requests per second (autocannon's overallRate). For the two
   * node:http rows that the kf-node check compares: unbounded, they saturate the machine (load generator, mock
   * and target together), and node-dispatch's CPU per request then came out ~48 µs in some processes (at
   * ~20 000 req/s, more requests per event-loop turn) and ~75 in others (~14 000): a mode, not a cost.
   */
  rate?: number;
  /** Only its latency counts (the failover cost's extra round trip): no streams timed. */
  latencyOnly?: boolean;
  /** The failover check compares its p50 at 1 connection: SETTINGS.rounds latency runs per pass (the others: one). */
  latencyChecked?: boolean;
}

/** The floors every target's CPU per request is divided by. */
export const FLOORS = { A: 'express-json', B: 'express-relay', C: 'node-dispatch' } as const;

/**
 * Table and measurement order (reversed every other pass and round). Each pair a check compares is measured
 * back to back, seconds apart: node-dispatch and kf-node, express-relay and kf-3, kf-3 and kf-10k,
 * kf-10k and kf-scoped (kf-scoped one step from kf-3), kf-3 and control; kf-429, relay-buffered and relay-retry.
 */
export const TARGETS: Target[] = [
  { id: 'direct', name: 'direct to the mock (CPU: the mock)', upstream: true },
  { id: 'pipe', name: 'node:http keep-alive pipe proxy', file: 'targets/pipe.ts', upstream: true, memory: 'first' },
  { id: 'hpm', name: 'Express + http-proxy-middleware', file: 'targets/hpm.ts', upstream: true, memory: 'first' },
  { id: 'express-json', name: 'floor A: Express answering by itself', file: 'targets/express-json.ts', upstream: false },
  {
    id: 'node-dispatch',
    name: 'floor C: node:http + minimal undici dispatch()',
    file: 'targets/node-dispatch.ts',
    upstream: true,
    cpuChecked: true,
    rate: 10_000,
    memory: 'first',
  },
  {
    id: 'kf-node',
    name: 'node:http + keyFailover, 3 keys',
    file: 'targets/kf-node.ts',
    upstream: true,
    cpuChecked: true,
    rate: 10_000,
    memory: 'first',
    needs: 'mount not supported',
  },
  {
    id: 'express-relay',
    name: 'floor B: Express + minimal undici request()',
    file: 'targets/express-relay.ts',
    upstream: true,
    cpuChecked: true,
    memory: 'every',
  },
  {
    id: 'kf-3',
    name: 'Express + keyFailover, 3 keys',
    file: 'targets/kf-3.ts',
    upstream: true,
    memory: 'every',
    cpuChecked: true,
    latencyChecked: true,
  },
  { id: 'kf-10k', name: 'keyFailover, 10 000 keys, first 1 000 cooling', file: 'targets/kf-10k.ts', upstream: true, cpuChecked: true },
  {
    id: 'kf-scoped',
    name: 'keyFailover, 3 keys, key 0 cooling for gpt-4o',
    file: 'targets/kf-scoped.ts',
    upstream: true,
    cpuChecked: true,
    needs: 'needs scoped cooldowns',
  },
  {
    id: 'control',
    name: 'control: kf-3 again, own process',
    file: 'targets/kf-3.ts',
    upstream: true,
    controlOf: 'kf-3',
    cpuChecked: true,
  },
  {
    id: 'kf-429',
    name: 'keyFailover, key 0 always 429',
    file: 'targets/kf-429.ts',
    upstream: true,
    failsOverOnce: true,
    latencyChecked: true,
  },
  {
    id: 'relay-buffered',
    name: 'Express + minimal undici request(), body buffered',
    file: 'targets/relay-buffered.ts',
    upstream: true,
    latencyOnly: true,
    latencyChecked: true,
  },
  {
    id: 'relay-retry',
    name: 'the same, first key always 429: one retry',
    file: 'targets/relay-retry.ts',
    upstream: true,
    failsOverOnce: true,
    latencyOnly: true,
    latencyChecked: true,
  },
];

export function targetById(id: string): Target {
  const target = TARGETS.find((t) => t.id === id);
  if (!target) throw new Error(`no target ${id}; targets: ${TARGETS.map((t) => t.id).join(', ')}`);
  return target;
}
