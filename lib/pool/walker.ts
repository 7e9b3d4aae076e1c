import type { PoolKey } from './keys.js';

/** How each walk picks its first key. */
export type Strategy = 'ordered' | 'round-robin' | 'weighted';

export interface WalkerSource {
  now(): number;
  /** @internal 0 when the key is available at `now`, else when it may be again (Infinity: not by itself). */
  unavailableUntil(id: string, now: number): number;
  /** @internal keys [0, end) were all unavailable, and stay so until `until` unless the store changes. */
  rememberHead(end: number, until: number): void;
}

/**
 * One request's way through the pool: starts at `start` and hands out the
 * first available key at or after its position, wrapping around, each key at
 * most once. The key list is the pool's at creation: keys added or removed
 * later do not disturb a walk in progress.
 */
export class KeyWalker {
  constructor(
    private readonly source: WalkerSource,
    private readonly keys: readonly PoolKey[],
    private readonly start: number,
    /** Keys at the start already known to be unavailable: counted as visited. */
    private visited = 0,
  ) {}

  next(): PoolKey | undefined {
    const { keys } = this;
    const now = this.source.now();
    // A walk from the first key notes how long the unavailable run it starts with stays so.
    const atHead = this.start === 0 && this.visited === 0;
    let headUntil = Infinity;
    while (this.visited < keys.length) {
      let index = this.start + this.visited++;
      if (index >= keys.length) index -= keys.length;
      const key = keys[index]!;
      const until = this.source.unavailableUntil(key.id, now);
      if (until <= now) {
        if (atHead && index > 0) this.source.rememberHead(index, headUntil);
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
