/**
 * What upstream answers teach the pool besides their verdict: the group a key
 * belongs to (the organization an answer names), how much of its limits is
 * left (route ahead of the 429), and which key created an upstream object
 * (affinity). The walk reads the answers (lib/walk/); this is the pool's side.
 */
import type { EventEmitter } from 'node:events';
import type { KeyPoolEvents, RemainingLimit } from './events.js';
import type { Group, KeyGroups } from './groups.js';
import type { PoolKey } from './keys.js';
import { AheadMarks, SendCounters, type Sent } from './remaining.js';
import type { KeyStateStore } from './store.js';

export type { Sent };

export interface LessonsHost {
  readonly store: KeyStateStore;
  readonly groups: KeyGroups;
  now(): number;
  readonly maxCooldownMs: number;
  readonly affinityTtlMs: number;
  /** Whether `key` (that id with that value) is still in the pool. */
  holds(key: PoolKey): boolean;
  byState(stateId: string): PoolKey | undefined;
  keys(): readonly PoolKey[];
  emit: EventEmitter<KeyPoolEvents>['emit'];
}

export class Lessons {
  private readonly sends = new SendCounters();
  private readonly ahead = new AheadMarks();

  constructor(private readonly host: LessonsHost) {}

  /** The key's group, configured or learned. */
  groupOf(key: PoolKey): Group | undefined {
    return this.host.groups.of(key);
  }

  /**
   * An answer named the key's organization: its group, unless it has one already. A name that holds the
   * key's own value (an upstream that echoes the request) teaches nothing: group names are shown everywhere.
   */
  learnGroup(key: PoolKey, name: string): void {
    const { groups } = this.host;
    if (!this.host.holds(key) || groups.of(key) !== undefined || name.includes(key.value) || !groups.learn(key, name)) return;
    this.host.emit('grouped', { id: key.id, hint: key.hint, group: name });
    groups.checkOneGroup(this.host.keys());
  }

  /**
   * Counts a send with `key` against its group's state (else its own), for the request's model scope when
   * known (null: not read), into `sent`: the walk's own record, reused, so that a send allocates nothing.
   */
  countSend(key: PoolKey, scope: string | undefined | null, sent: Sent): void {
    this.sends.count(this.host.groups.of(key)?.stateId ?? key.stateId, scope, sent);
  }

  /** How many sends that take from the same limit (for `scope`) followed `sent`. */
  sentSince(sent: Sent, scope: string | undefined): number {
    return this.sends.since(sent, scope);
  }

  /**
   * Ahead of a 429: the answer said `key` (its group) has nothing left of `limit` for `scope`, for `ms`
   * more (the limit's reset). Passed over until then, never longer than the reset nor maxCooldownMs.
   */
  markDepleted(
    key: PoolKey,
    ms: number,
    scope: string | undefined,
    details: { limit: RemainingLimit; remaining: number; requestId?: string | undefined },
  ): void {
    const { store, groups } = this.host;
    if (!this.host.holds(key) || !(ms > 0)) return;
    const group = groups.of(key);
    const entity = group?.stateId ?? key.stateId;
    const now = this.host.now();
    // Rounded down, never up: a reset is an upper bound on when the limit is back.
    const until = Math.floor(now + Math.min(ms, this.host.maxCooldownMs));
    if (until <= now) return;
    const read = (): number | undefined =>
      scope === undefined ? store.get(entity)?.cooldownUntil : (store.scopedUntil?.(entity, scope) ?? store.get(entity)?.cooldownUntil);
    const before = read();
    store.markRateLimited(entity, until, scope);
    const after = read();
    if (after === undefined || after === before || store.get(entity)?.disabled) return;
    this.ahead.set(entity, scope, after, now);
    this.host.emit('depleted', {
      id: key.id,
      hint: key.hint,
      limit: details.limit,
      remaining: details.remaining,
      cooldownMs: until - now,
      cooldownUntil: after,
      ...(scope === undefined ? {} : { model: scope }),
      ...(group === undefined ? {} : { group: group.name }),
      ...(details.requestId === undefined ? {} : { requestId: details.requestId }),
    });
  }

  /** The end of the pool's own remaining-based cooldown of `entity` for `scope`, when that is what it cools (or cooled) for. */
  aheadUntil(entity: string, scope: string | undefined): number | undefined {
    return this.ahead.until(entity, scope);
  }

  /** The key that created upstream object `object`, while remembered and in the pool. */
  ownerOf(object: string): PoolKey | undefined {
    if (this.host.affinityTtlMs === 0) return undefined;
    const stateId = this.host.store.objectOwner?.(object);
    return stateId === undefined ? undefined : this.host.byState(stateId);
  }

  /** `key` created upstream object `object` (of kind `kind`): the requests that name it go to `key`. */
  rememberObject(object: string, kind: string, key: PoolKey, requestId?: string): void {
    const { store, affinityTtlMs } = this.host;
    // An id that holds the key's own value (an echoing upstream) is not kept: ids go to the store, and to Redis.
    if (affinityTtlMs === 0 || !this.host.holds(key) || !store.rememberObject || object.includes(key.value)) return;
    store.rememberObject(object, key.stateId, this.host.now() + affinityTtlMs);
    this.host.emit('affinity', {
      id: key.id,
      hint: key.hint,
      outcome: 'learned',
      object: kind,
      ...(requestId === undefined ? {} : { requestId }),
    });
  }
}
