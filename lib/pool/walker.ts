import type { PoolKey } from './keys.js';
import type { RouteScope } from './scopes.js';
import type { Probe } from './probes.js';

/** How each walk picks its first key. */
export type Strategy = 'ordered' | 'round-robin' | 'weighted';

/** A request's model, or a function that reads it: called only when some key cools for a single model. */
export type ModelSource = string | (() => string | undefined) | undefined;

export interface WalkerSource {
  now(): number;
  /** @internal 0 when the key is available at `now` for `scope`, else when it may be again (Infinity: not by itself). */
  unavailableUntil(key: PoolKey, now: number, scope: string | undefined): number;
  /** @internal whether any key may be cooling for one model scope only */
  hasScopedStates(): boolean;
  /** @internal the scope a model's rate limits live in */
  readonly scopes: { of(model: string | undefined, route?: RouteScope): string | undefined };
  /** @internal how many keys at the head are known to be unavailable for `scope` */
  knownHead(scope: string | undefined): number;
  /** @internal keys [0, end) were all unavailable for `scope`, and stay so until `until` unless the store changes. */
  rememberHead(end: number, until: number, scope: string | undefined): void;
  /**
   * @internal A key whose cooldown ended at `until` (in the past): the probe to send with it, 0 when it
   * needs none, or when the probe another request holds gives it back.
   */
  claimProbe(key: PoolKey, until: number, now: number, scope: string | undefined): Probe | number;
}

const UNREAD = Symbol('unread');

/**
 * One request's way through the pool: starts at `start` and hands out the
 * first available key at or after its position, wrapping around, each key at
 * most once. The key list is the pool's at creation: keys added or removed
 * later do not disturb a walk in progress.
 */
export class KeyWalker {
  private visited = 0;
  private scopeRead: string | undefined | typeof UNREAD = UNREAD;
  /** @internal When the key `next()` last handed out is a probe (its cooldown just ended): which. */
  probe: Probe | undefined;

  constructor(
    private readonly source: WalkerSource,
    private readonly keys: readonly PoolKey[],
    private readonly start: number,
    private readonly model?: ModelSource,
    private readonly route?: RouteScope,
    /** A walk over some keys only (the one key that holds an object): the pool's head is not this list's. */
    private readonly partial = false,
  ) {}

  /** @internal The keys this walk goes through. */
  get list(): readonly PoolKey[] {
    return this.keys;
  }

  /** The request's scope (its model's, else its route's), read once, and only when some key cools for a single scope. */
  scope(): string | undefined {
    if (this.scopeRead === UNREAD) {
      const { model } = this;
      this.scopeRead = this.source.scopes.of(typeof model === 'function' ? model() : model, this.route);
    }
    return this.scopeRead;
  }

  /** @internal The request's model scope if it has been read already; null when it has not (it is not read here). */
  scopeIfRead(): string | undefined | null {
    return this.scopeRead === UNREAD ? null : this.scopeRead;
  }

  next(): PoolKey | undefined {
    const { keys, source } = this;
    this.probe = undefined;
    const now = source.now();
    const scope = source.hasScopedStates() ? this.scope() : undefined;
    // A walk from the first key skips the head known to be unavailable, and notes how long the run it starts with stays so.
    let atHead = !this.partial && this.start === 0 && this.visited === 0;
    if (atHead) {
      this.visited = source.knownHead(scope);
      atHead = this.visited === 0; // a head already known is not noted again
    }
    let headUntil = Infinity;
    while (this.visited < keys.length) {
      let index = this.start + this.visited++;
      if (index >= keys.length) index -= keys.length;
      const key = keys[index]!;
      let until = source.unavailableUntil(key, now, scope);
      if (until > 0 && until <= now) {
        // Its cooldown ended: one request at a time may try it; while another's probe is out, it is passed over.
        const probe = source.claimProbe(key, until, now, scope);
        if (typeof probe === 'number') until = probe;
        else {
          this.probe = probe;
          until = 0;
        }
      }
      if (until <= now) {
        if (atHead && index > 0) source.rememberHead(index, headUntil, scope);
        return key;
      }
      if (until < headUntil) headUntil = until;
    }
    return undefined;
  }
}

/** Cumulative weights, so that a weighted start is a binary search: O(log n) for any pool size. */
export function cumulativeWeights(keys: readonly PoolKey[]): Float64Array {
  const sums = new Float64Array(keys.length);
  let total = 0;
  keys.forEach((key, i) => (sums[i] = total += key.weight));
  return sums;
}

export function weightedIndex(sums: Float64Array, random: number): number {
  const target = random * sums[sums.length - 1]!;
  let low = 0;
  let high = sums.length - 1;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (sums[mid]! > target) high = mid;
    else low = mid + 1;
  }
  return low;
}
