/**
 * Where key state lives. Shaped like express-rate-limit's Store: a small
 * interface, a memory default, other stores (Redis) as separate modules.
 *
 * Reads are synchronous on purpose: selection runs on every request and must
 * not wait on I/O, so a shared store keeps a local view and reads from it.
 * The store applies the rules (a longer cooldown wins; a disabled key ignores
 * cooldowns) so that a shared store can apply them atomically.
 *
 * The pool addresses a key's state by its state id (the key's id and a short
 * fingerprint of its value, never the value): a rotated value starts with a
 * state of its own, and a late answer for the old value marks nothing live.
 * A group of keys has a state of its own too, `<name>@group`, kept the same way.
 *
 * A cooldown that ended stays readable (its end, in the past) until an answer
 * says the key is healthy again (`markHealthy`), for RECOVERY_WINDOW_MS at
 * most: the pool lets one probe at a time try such a key.
 */
/** How long after its end a cooldown still takes a probe: past it, nobody was waiting to rush back. */
export const RECOVERY_WINDOW_MS = 60_000;

/** Why a key is out of the pool: its credential was refused, or its account is out of money. */
export type DisabledReason = 'auth' | 'quota';

export interface KeyState {
  /** Epoch milliseconds until which the key is cooling down for every model; 0 when it is not. */
  cooldownUntil: number;
  /** Out of the pool. */
  disabled: boolean;
  /** With `disabled`: epoch ms when the key may be tried again; absent when only `enable` brings it back. */
  disabledUntil?: number;
  /** With `disabled`: why. Absent means 'auth'. */
  disabledReason?: DisabledReason;
  /** @internal When a shared store's state was made (its Redis-time stamp): the newer of two changes wins. */
  stamp?: number;
}

/** A cooldown that holds for one model scope (a model, or the bucket `modelScope` maps it to). */
export interface ScopedCooldown {
  scope: string;
  /** Epoch ms. */
  until: number;
}

export interface KeyStateStore {
  /** The state of a key, or undefined for a key the store holds nothing about (available). */
  get(id: string): KeyState | undefined;
  /**
   * Cool the key until `until` (epoch ms) unless it already cools longer or is disabled: for every
   * model, or with `scope` for that model scope only (a store without `scopedUntil` may cool the whole key).
   */
  markRateLimited(id: string, until: number, scope?: string): void;
  /** Take the key out of the pool, until `enable(id)` or, when given, until `until` (epoch ms). */
  markDisabled(id: string, until?: number, reason?: DisabledReason): void;
  /** Put the key back: not disabled, not cooling (its scoped cooldowns go too). */
  enable(id: string): void;
  /** Optional: epoch ms until which the key cools for `scope`; 0 when it does not. */
  scopedUntil?(id: string, scope: string): number;
  /** Optional: the key's scoped cooldowns, for snapshots. */
  scopes?(id: string): ScopedCooldown[];
  /** Optional: how many scoped cooldowns the store holds (expired ones may count); 0 lets selection skip the request's model. */
  readonly scopedCount?: number;
  /** Optional: drop what this process holds about `id` (a key removed or rotated away) without telling anyone else. */
  forget?(id: string): void;
  /** Optional: the pool hands its clock to the store, so that both measure time alike. */
  useClock?(now: () => number): void;
  /**
   * Optional: a number that changes whenever any key's state changes. With it,
   * an 'ordered' pool remembers the run of unavailable keys at its head and
   * skips it in one step until something changes.
   */
  readonly generation?: number;
  /** Optional: the group key `id` was learned to belong to (from an upstream answer); shared stores share it. */
  groupOf?(id: string): string | undefined;
  /** Optional: remembers that key `id` belongs to `group`. The first group learned stays; true when this one is new. */
  learnGroup?(id: string, group: string): boolean;
  /**
   * Optional: an answer said the key is healthy again: its cooldowns that already ended (for `scope`, and
   * for every model) are dropped, so that no more probes are needed. A cooldown still running stays.
   */
  markHealthy?(id: string, scope?: string): void;
  /**
   * Optional, for stores shared by processes: takes the lease on probing `entry` (a state id and a scope)
   * for `ms`; resolves to 0 when this process holds it, else to the ms left on the lease another holds.
   */
  leaseProbe?(entry: string, ms: number): Promise<number>;
  /** Optional: gives a lease taken with `leaseProbe` back. */
  releaseProbe?(entry: string): void;
  /** Optional: remembers that the key with state id `id` created upstream object `object`, until `until` (epoch ms). */
  rememberObject?(object: string, id: string, until: number): void;
  /** Optional: the state id of the key that created `object`, while remembered. */
  objectOwner?(object: string): string | undefined;
}

/** Unambiguous whatever the id and scope hold: the id's length comes first. */
export function orderKey(id: string, scope: string): string {
  return `${id.length}:${id}${scope}`;
}
