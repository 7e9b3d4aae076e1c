/**
 * Prometheus metrics for a KeyPool, through prom-client (an optional peer
 * dependency). This file is its own entry, `express-key-failover/metrics`, so
 * that the main entry never loads prom-client.
 *
 * Labels carry key ids, statuses and outcomes, never a key value or a hint.
 */
import { Counter, Gauge, Histogram, register as globalRegister, Registry } from 'prom-client';
import type { KeyPoolEvents } from './pool/events.js';
import type { KeyPool, KeyStateName } from './pool/key-pool.js';
import { KeyFailoverError, checkKnownOptions, describeValue } from './validations.js';
import { OPTIONS, WHERE, checkPool, checkPoolName, checkPrefix, checkRegistry, type PoolLike } from './observe/metrics-options.js';

export interface PoolMetricsOptions {
  /** Where the metrics are registered. Default: prom-client's global `register`. */
  register?: Registry;
  /** Prepended to every metric name. Default `'ekf_'`. */
  prefix?: string;
  /** The `pool` label, so that several pools can share one registry. Default `'default'`. */
  poolName?: string;
}

export interface PoolMetrics {
  /** Stops listening to the pool and drops its `key_state` series; counters keep their totals. */
  stop(): void;
}

/** Seconds to response headers: LLM calls range from tens of milliseconds (an error) to minutes (a long completion). */
export const LATENCY_BUCKETS: readonly number[] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120];

const STATES: readonly KeyStateName[] = ['available', 'cooling', 'disabled'];
const KEY_STATE_LABELS = ['pool', 'key_id', 'state'];

/**
 * The pools whose key states a (possibly shared) key_state gauge reports, by
 * pool name, kept on the gauge itself under a registered symbol so that the
 * ESM and CommonJS copies of this file, loaded side by side, share it.
 */
const SOURCES = Symbol.for('express-key-failover.metrics.keyStateSources');
type KeyStateGauge = Gauge & { [SOURCES]?: Map<string, PoolLike> };

/**
 * Counts what `pool` does into a prom-client registry. Metrics already in the
 * registry under the same names are reused, so several pools (each with its
 * own `poolName`) can report into one registry.
 */
export function poolMetrics(pool: KeyPool, options: PoolMetricsOptions = {}): PoolMetrics {
  checkPool(pool);
  if (typeof options !== 'object' || options === null) {
    throw new KeyFailoverError('ERR_EKF_INVALID_OPTION', `${WHERE}: options must be an object, got ${describeValue(options)}.`);
  }
  checkKnownOptions(WHERE, options, OPTIONS);
  const registry = checkRegistry(options.register ?? globalRegister);
  const prefix = checkPrefix(options.prefix ?? 'ekf_');
  const poolName = checkPoolName(options.poolName ?? 'default');

  const names = {
    keyState: `${prefix}key_state`,
    modelCooldowns: `${prefix}key_model_cooldowns`,
    attempts: `${prefix}attempts_total`,
    failovers: `${prefix}failovers_total`,
    transitions: `${prefix}key_transitions_total`,
    exhaustions: `${prefix}exhaustions_total`,
    latency: `${prefix}upstream_latency_seconds`,
    groups: `${prefix}key_group`,
    remainingSkips: `${prefix}remaining_skips_total`,
    probes: `${prefix}probes_total`,
    affinity: `${prefix}affinity_total`,
  };
  // Every name is checked before anything is registered, so that a refused call leaves the registry as it was.
  const existingKeyState = existing<KeyStateGauge>(registry, Gauge, names.keyState, KEY_STATE_LABELS);
  if (existingKeyState !== undefined && !existingKeyState[SOURCES]) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: the registry already has a metric named "${names.keyState}" that poolMetrics() did not create; choose another "prefix".`,
    );
  }
  if (existingKeyState?.[SOURCES]?.has(poolName)) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: option "poolName" ${JSON.stringify(poolName)} is already reported in this registry; give each pool its own poolName (or stop() the other one first).`,
    );
  }
  existing(registry, Gauge, names.modelCooldowns, ['pool', 'key_id']);
  existing(registry, Counter, names.attempts, ['pool', 'outcome']);
  existing(registry, Counter, names.failovers, ['pool', 'key_id', 'status', 'action', 'cause', 'in_stream']);
  existing(registry, Counter, names.transitions, ['pool', 'key_id', 'to', 'reason']);
  existing(registry, Counter, names.exhaustions, ['pool', 'reason']);
  existing(registry, Histogram, names.latency, ['pool', 'outcome']);
  existing(registry, Gauge, names.groups, ['pool', 'key_id', 'group']);
  existing(registry, Counter, names.remainingSkips, ['pool', 'key_id', 'limit']);
  existing(registry, Counter, names.probes, ['pool', 'key_id', 'outcome']);
  existing(registry, Counter, names.affinity, ['pool', 'key_id', 'outcome']);

  // key_state first: prom-client collects in registration order, and the gauge's
  // snapshot() may bring back a key whose authCooldownMs ran out (an 'enabled'
  // event); registered first, that transition is counted in the same scrape.
  const keyState: KeyStateGauge =
    existingKeyState ??
    new Gauge({
      name: names.keyState,
      help: 'Current state of each key: 1 for the state it is in, 0 for the others.',
      labelNames: KEY_STATE_LABELS,
      registers: [registry],
      collect(this: KeyStateGauge) {
        this.reset();
        for (const [name, source] of this[SOURCES] ?? []) {
          for (const key of source.snapshot()) {
            for (const state of STATES) this.set({ pool: name, key_id: key.id, state }, key.state === state ? 1 : 0);
          }
        }
      },
    });
  const sources = (keyState[SOURCES] ??= new Map());
  // How many models each key cools for (no model label: model names are the clients' strings).
  if (!existing(registry, Gauge, names.modelCooldowns, ['pool', 'key_id'])) {
    new Gauge({
      name: names.modelCooldowns,
      help: 'Number of models (model scopes) each key is cooling for, besides its own state.',
      labelNames: ['pool', 'key_id'],
      registers: [registry],
      collect(this: Gauge) {
        this.reset();
        for (const [name, source] of keyState[SOURCES] ?? []) {
          for (const key of source.snapshot()) this.set({ pool: name, key_id: key.id }, key.models?.length ?? 0);
        }
      },
    });
  }
  const attempts = orNew(
    registry,
    Counter,
    names.attempts,
    ['pool', 'outcome'],
    'Upstream attempts, by outcome (relayed, cooldown, disable, skip, unreachable, timeout, aborted).',
  );
  const failovers = orNew(
    registry,
    Counter,
    names.failovers,
    ['pool', 'key_id', 'status', 'action', 'cause', 'in_stream'],
    "Times a request moved past a key because of its answer, by key, upstream status, action, cause ('none' when the answer had none) and in_stream (an error frame inside a 200 stream, with the status it stands for).",
  );
  const transitions = orNew(
    registry,
    Counter,
    names.transitions,
    ['pool', 'key_id', 'to', 'reason'],
    'Key state changes: to cooling (every model), model_cooling (one model), disabled or available; reason is the cause (or the upstream status), manual, authCooldown or quotaCooldown.',
  );
  const exhaustions = orNew(
    registry,
    Counter,
    names.exhaustions,
    ['pool', 'reason'],
    'Requests that found no key left, by reason (rate_limited, disabled, quota; budget: its maxAttempts or maxWalkMs was spent).',
  );
  const latency =
    existing(registry, Histogram, names.latency, ['pool', 'outcome']) ??
    new Histogram({
      name: names.latency,
      help: 'Time from sending an attempt to its response headers (or its failure), in seconds.',
      labelNames: ['pool', 'outcome'],
      buckets: [...LATENCY_BUCKETS],
      registers: [registry],
    });
  // Each key's group (configured, or learned from the provider's answers): 1 per key that has one.
  if (!existing(registry, Gauge, names.groups, ['pool', 'key_id', 'group'])) {
    new Gauge({
      name: names.groups,
      help: "Each key's group (the organization whose limits it shares): 1 for the group it is in.",
      labelNames: ['pool', 'key_id', 'group'],
      registers: [registry],
      collect(this: Gauge) {
        this.reset();
        for (const [name, source] of keyState[SOURCES] ?? []) {
          for (const key of source.snapshot()) if (key.group !== undefined) this.set({ pool: name, key_id: key.id, group: key.group }, 1);
        }
      },
    });
  }
  const remainingSkips = orNew(
    registry,
    Counter,
    names.remainingSkips,
    ['pool', 'key_id', 'limit'],
    'Times the pool set a key (its group) aside ahead of a 429, because an answer said its requests (or tokens) were used up, by limit.',
  );
  const probes = orNew(
    registry,
    Counter,
    names.probes,
    ['pool', 'key_id', 'outcome'],
    'Probes after a cooldown ended, by outcome (started, healthy, cooled, released).',
  );
  const affinity = orNew(
    registry,
    Counter,
    names.affinity,
    ['pool', 'key_id', 'outcome'],
    'Stateful objects kept on the key that created them, by outcome (learned, routed, cooling, unavailable).',
  );
  sources.set(poolName, pool);

  const reasonOf = (e: { status?: number; cause?: string }): string => e.cause ?? (e.status === undefined ? 'manual' : String(e.status));
  const listeners: { [E in keyof KeyPoolEvents]: (...args: KeyPoolEvents[E]) => void } = {
    attempt: (e) => {
      attempts.inc({ pool: poolName, outcome: e.outcome });
      latency.observe({ pool: poolName, outcome: e.outcome }, e.durationMs / 1000);
    },
    failover: (e) =>
      failovers.inc({
        pool: poolName,
        key_id: e.id,
        status: String(e.status),
        action: e.action,
        cause: e.cause ?? 'none',
        in_stream: e.inStream ? 'true' : 'false',
      }),
    rateLimited: (e) =>
      transitions.inc({ pool: poolName, key_id: e.id, to: e.model === undefined ? 'cooling' : 'model_cooling', reason: reasonOf(e) }),
    disabled: (e) => transitions.inc({ pool: poolName, key_id: e.id, to: 'disabled', reason: reasonOf(e) }),
    enabled: (e) => transitions.inc({ pool: poolName, key_id: e.id, to: 'available', reason: e.reason }),
    exhausted: (e) => exhaustions.inc({ pool: poolName, reason: e.budget === undefined ? e.reason : 'budget' }),
    grouped: () => {}, // the key_group gauge shows it at the next scrape
    depleted: (e) => remainingSkips.inc({ pool: poolName, key_id: e.id, limit: e.limit }),
    probe: (e) => probes.inc({ pool: poolName, key_id: e.id, outcome: e.outcome }),
    affinity: (e) => affinity.inc({ pool: poolName, key_id: e.id, outcome: e.outcome }),
  };
  const events = Object.keys(listeners) as (keyof KeyPoolEvents)[];
  for (const name of events) pool.on(name, listeners[name]);

  let stopped = false;
  return {
    stop() {
      if (stopped) return;
      stopped = true;
      for (const name of events) pool.off(name, listeners[name]);
      if (sources.get(poolName) === pool) sources.delete(poolName);
    },
  };
}

/** The metric of that name in the registry, when there is one of the same kind with the same labels; throws for a clash. */
function existing<M extends Counter | Gauge | Histogram>(
  registry: Registry,
  kind: abstract new (...args: never[]) => M,
  name: string,
  labelNames: readonly string[],
): M | undefined {
  const metric = registry.getSingleMetric(name);
  if (metric === undefined) return undefined;
  const metricLabels = (metric as unknown as { labelNames?: readonly string[] }).labelNames ?? [];
  if (!(metric instanceof kind) || metricLabels.join(',') !== labelNames.join(',')) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${WHERE}: the registry already has a metric named "${name}" that is not a ${kind.name} with labels ${labelNames.join(', ')}; choose another "prefix".`,
    );
  }
  return metric;
}

function orNew(registry: Registry, kind: typeof Counter, name: string, labelNames: string[], help: string): Counter {
  return existing(registry, kind, name, labelNames) ?? new kind({ name, help, labelNames, registers: [registry] });
}
