import type { PoolKey } from './keys.js';

/** How each walk picks its first key. */
export type Strategy = 'ordered' | 'round-robin' | 'weighted';

export interface WalkerSource {
  now(): number;
  /** @internal */
  isAvailable(id: string, now: number): boolean;
}

/**
 * One request's way through the pool: starts at `start` and hands out the
 * first available key at or after its position, wrapping around, each key at
 * most once. The key list is the pool's at creation: keys added or removed
 * later do not disturb a walk in progress.
 */
export class KeyWalker {
  private visited = 0;

  constructor(
    private readonly source: WalkerSource,
    private readonly keys: readonly PoolKey[],
    private readonly start: number,
  ) {}

  next(): PoolKey | undefined {
    const { keys } = this;
    const now = this.source.now();
    while (this.visited < keys.length) {
      let index = this.start + this.visited++;
      if (index >= keys.length) index -= keys.length;
      const key = keys[index]!;
      if (this.source.isAvailable(key.id, now)) return key;
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
