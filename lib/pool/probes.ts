/**
 * One probe when a cooldown ends. While a key (or its group) cools, every
 * request that would have used it goes elsewhere; the moment the cooldown ends
 * they would all rush back at once, and a limit that is not quite back yet
 * answers each of them with a 429. So a cooldown that ended is "recovering"
 * until an answer says the key is healthy: one request at a time may try it
 * (the probe, under a lease), the others keep using the next keys. The probe's
 * answer ends it: healthy, or cooled again. A probe that never answers only
 * holds the key out until its lease ends.
 *
 * This is the local half (synchronous, per process); a shared store adds a
 * lease across replicas (`KeyStateStore.leaseProbe`), taken before the probe is sent.
 */
import type { ProbeOutcome } from './events.js';
import type { PoolKey } from './keys.js';
import { orderKey, type KeyStateStore } from './store.js';

export { RECOVERY_WINDOW_MS } from './store.js';
/** What a pool's 429 tells a client about a key that is being probed: try again shortly. */
export const PROBE_RETRY_MS = 1_000;
const MAX_LEASES = 10_000;

/** A probe handed out by a walker: the key, and the state whose ended cooldown it tries. */
export interface Probe {
  readonly key: PoolKey;
  /** The state id whose cooldown ended: the key's, or its group's. */
  readonly entity: string;
  /** The model scope of that cooldown; undefined for one that held for every model. */
  readonly scope: string | undefined;
  /** The lease's name: entity and scope. */
  readonly entry: string;
  /** The group's name, when the probe is for the key's group. */
  readonly group: string | undefined;
}

/** The leases of this process: who may probe which recovering state, until when (the pool's clock). */
export class ProbeGate {
  private readonly leases = new Map<string, { until: number; entity: string; scope: string | undefined }>();
  /** Changes whenever a lease is taken or given back: an ordered pool's remembered head is then stale. */
  generation = 0;

  /** When the lease on `entry` ends; 0 when there is none (a lapsed one is dropped here). */
  heldUntil(entry: string, now: number): number {
    const lease = this.leases.get(entry);
    if (lease === undefined) return 0;
    if (lease.until > now) return lease.until;
    this.leases.delete(entry);
    this.generation++;
    return 0;
  }

  /** Holds `probe`'s entry until `until`: for a probe of this process, or because another replica holds it. */
  hold(probe: Pick<Probe, 'entry' | 'entity' | 'scope'>, until: number): void {
    if (this.leases.size >= MAX_LEASES && !this.leases.has(probe.entry)) this.leases.clear(); // bounded; a lost lease costs one more probe
    this.leases.set(probe.entry, { until, entity: probe.entity, scope: probe.scope });
    this.generation++;
  }

  release(entry: string): void {
    if (this.leases.delete(entry)) this.generation++;
  }

  /**
   * Whether a lease on `entity` is out, for every model or for any one, on a state that is still
   * recovering (for snapshots: an answer heard from another replica may have ended it already).
   */
  holds(entity: string, now: number, recovering: (scope: string | undefined) => boolean): boolean {
    if (this.leases.size === 0) return false;
    for (const lease of this.leases.values()) if (lease.entity === entity && lease.until > now && recovering(lease.scope)) return true;
    return false;
  }

  get size(): number {
    return this.leases.size;
  }
}

/** The pieces of the pool a Probes needs. */
export interface ProbeHost {
  readonly store: KeyStateStore;
  now(): number;
  /** Which ended cooldown a probe of `key` (for `scope`) would try; undefined: none within the window. */
  ended(
    key: PoolKey,
    now: number,
    scope: string | undefined,
  ): { entity: string; scope: string | undefined; group: string | undefined } | undefined;
  emit(probe: Probe, outcome: ProbeOutcome, requestId: string | undefined): void;
  /** A key whose cooldown ended past the recovery window: what is left of it is dropped, so that it is not looked at again. */
  forgetEnded(key: PoolKey, scope: string | undefined): void;
}

/** Claims, confirms (across replicas, through the store) and settles probes. */
export class Probes {
  readonly gate = new ProbeGate();

  constructor(
    private readonly host: ProbeHost,
    private readonly timeoutMs: number,
  ) {}

  /** A key whose cooldown ended: the probe it goes as, 0 when none is needed, or when another's lease ends. */
  claim(key: PoolKey, now: number, scope: string | undefined): Probe | number {
    const ended = this.host.ended(key, now, scope);
    if (ended === undefined) {
      this.host.forgetEnded(key, scope); // past the recovery window: nobody was waiting
      return 0;
    }
    const entry = entryKey(ended.entity, ended.scope);
    const held = this.gate.heldUntil(entry, now);
    if (held > now) return held;
    const probe = { key, entity: ended.entity, scope: ended.scope, entry, group: ended.group };
    this.gate.hold(probe, now + this.timeoutMs);
    return probe;
  }

  /** Before a probe is sent: through a shared store, the lease across replicas. False when another replica holds it. */
  async confirm(probe: Probe, requestId: string | undefined): Promise<boolean> {
    const { store } = this.host;
    if (store.leaseProbe) {
      let left: number;
      try {
        left = await store.leaseProbe(probe.entry, this.timeoutMs);
      } catch {
        left = 0; // the store is unreachable: this process's lease is all there is (fail open)
      }
      if (left > 0) {
        this.gate.hold(probe, this.host.now() + left); // passed over here until the other's lease ends
        return false;
      }
    }
    this.host.emit(probe, 'started', requestId);
    return true;
  }

  /** A probe's answer came (healthy, or a rate limit that cooled the key again), or never will. */
  settle(probe: Probe, outcome: Exclude<ProbeOutcome, 'started'>, requestId: string | undefined): void {
    const { store } = this.host;
    this.gate.release(probe.entry);
    store.releaseProbe?.(probe.entry);
    if (outcome === 'healthy') {
      store.markHealthy?.(probe.key.stateId, probe.scope);
      if (probe.entity !== probe.key.stateId) store.markHealthy?.(probe.entity, probe.scope);
    }
    this.host.emit(probe, outcome, requestId);
  }

  /** When the lease of the probe that `key` (for `scope`) waits on ends; 0 when none is out. */
  endFor(key: PoolKey, now: number, scope: string | undefined): number {
    if (this.gate.size === 0) return 0;
    const ended = this.host.ended(key, now, scope);
    return ended === undefined ? 0 : this.gate.heldUntil(entryKey(ended.entity, ended.scope), now);
  }
}

/** The name of a state id's state for one scope (or for every model): unambiguous whatever the id and scope hold. */
export function entryKey(entity: string, scope: string | undefined): string {
  return scope === undefined ? entity : `\u0000${orderKey(entity, scope)}`;
}
