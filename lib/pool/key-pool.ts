import { EventEmitter } from 'node:events';
import {
  KeyFailoverError,
  checkFunction,
  checkKeyStateDuration,
  checkKnownOptions,
  checkLogger,
  checkPositiveInteger,
  describeValue,
} from '../validations.js';
import {
  OPTIONS,
  WHERE,
  checkCooldownBounds,
  checkFraction,
  checkOptionsObject,
  checkStore,
  checkStrategy,
  optionalPositive,
  type KeyPoolOptions,
} from './pool-options.js';
import type { KeyPoolEvents, ProbeOutcome } from './events.js';
import { KeyGroups, type Group } from './groups.js';
import { buildKeys, PoolKey, type KeyInput } from './keys.js';
import { KeyStates, type EnabledReason, type KeySnapshot, type KeyStateName, type PoolExhaustion } from './key-states.js';
import { Probes, type Probe } from './probes.js';
import { Lessons } from './lessons.js';
import { ModelScopes, type ModelScopeFunction, type RouteScope } from './scopes.js';

export type { KeyPoolOptions, KeySnapshot, KeyStateName, PoolExhaustion };
import { MemoryKeyStateStore } from './memory-store.js';
import type { DisabledReason, KeyStateStore } from './store.js';
import { KeyWalker, cumulativeWeights, weightedIndex, type ModelSource, type Strategy } from './walker.js';

/** Where a mark came from, for the events, and which model a cooldown is for. */
export interface MarkDetails {
  status?: number;
  requestId?: string;
  /** For markRateLimited: the request's model; the cooldown holds for its model scope only. */
  model?: string;
  /** For markDisabled: 'quota' when the key's account is out of money (`quotaCooldownMs`). Default 'auth'. */
  reason?: DisabledReason;
  /** What the upstream's answer meant (set by the middleware). */
  cause?: string;
}

const REASONS: readonly DisabledReason[] = ['auth', 'quota'];
const DAY_MS = 24 * 3600 * 1000;

/**
 * The pool: keys, their states through the store, and the events of every change.
 *
 * Why one file past ~300 lines: every public method is the pool's API (marks, runtime key changes,
 * snapshots, exhaustion) and belongs on the class; what each method leans on lives beside it
 * (keys.ts, walker.ts, groups.ts, probes.ts, lessons.ts, key-states.ts, pool-options.ts).
 */
export class KeyPool extends EventEmitter<KeyPoolEvents> {
  readonly now: () => number;
  readonly strategy: Strategy;
  readonly defaultCooldownMs: number;
  /** Bounds for cooldowns read from response headers. */
  readonly cooldownBounds: { readonly minMs: number; readonly maxMs: number };
  readonly authCooldownMs: number | undefined;
  readonly quotaCooldownMs: number | undefined;
  /** @internal */
  readonly scopes: ModelScopes;
  /** @internal A key whose answers say fewer tokens are left is passed over; 0: off. */
  readonly minRemainingTokens: number;
  /** @internal How long the key that created an object is remembered; 0: off. */
  readonly affinityTtlMs: number;
  private readonly cooldownJitter: number;
  private readonly random: () => number;
  private readonly store: KeyStateStore;
  private readonly groups: KeyGroups;
  private readonly probes: Probes;
  private readonly states: KeyStates;
  /** @internal What upstream answers teach the pool besides their verdict: groups, remaining limits, object owners. */
  readonly lessons: Lessons;
  // Replaced, never mutated, so that a walk in progress keeps the list it started with.
  private keys: readonly PoolKey[] = [];
  private byId = new Map<string, PoolKey>();
  private byState = new Map<string, PoolKey>();
  private weights: Float64Array = new Float64Array(0);
  private nextStart = 0;
  // The run of unavailable keys at the head of an 'ordered' pool, per model scope, while the store (and the probes) are unchanged.
  private heads = new Map<string | undefined, { end: number; until: number; generation: number; probes: number }>();
  private keysCreated = 0;

  constructor(keysOrOptions: readonly KeyInput[] | KeyPoolOptions) {
    super();
    const options: KeyPoolOptions = Array.isArray(keysOrOptions) ? { keys: keysOrOptions } : checkOptionsObject(keysOrOptions);
    checkKnownOptions(WHERE, options, OPTIONS);
    this.strategy = checkStrategy(options.strategy ?? 'ordered');
    this.defaultCooldownMs = checkPositiveInteger(WHERE, 'defaultCooldownMs', options.defaultCooldownMs ?? 60_000);
    this.cooldownBounds = checkCooldownBounds(options.minCooldownMs ?? 1_000, options.maxCooldownMs ?? 3_600_000);
    this.authCooldownMs = optionalPositive('authCooldownMs', options.authCooldownMs);
    this.quotaCooldownMs = optionalPositive('quotaCooldownMs', options.quotaCooldownMs);
    this.scopes = new ModelScopes(
      options.modelScope === undefined ? undefined : checkFunction<ModelScopeFunction>(WHERE, 'modelScope', options.modelScope),
    );
    this.now = options.now === undefined ? Date.now : checkFunction<() => number>(WHERE, 'now', options.now);
    this.random = options.random === undefined ? Math.random : checkFunction<() => number>(WHERE, 'random', options.random);
    this.store = options.store === undefined ? new MemoryKeyStateStore() : checkStore(options.store);
    this.store.useClock?.(this.now);
    this.cooldownJitter = options.cooldownJitter === undefined ? 0.1 : checkFraction('cooldownJitter', options.cooldownJitter);
    this.minRemainingTokens = checkPositiveInteger(WHERE, 'minRemainingTokens', options.minRemainingTokens ?? 0, { allowZero: true });
    const probeTimeoutMs = checkPositiveInteger(WHERE, 'probeTimeoutMs', options.probeTimeoutMs ?? 30_000);
    checkKeyStateDuration(WHERE, 'probeTimeoutMs', probeTimeoutMs);
    this.affinityTtlMs = checkPositiveInteger(WHERE, 'affinityTtlMs', options.affinityTtlMs ?? DAY_MS, { allowZero: true });
    checkKeyStateDuration(WHERE, 'affinityTtlMs', this.affinityTtlMs);
    this.groups = new KeyGroups(this.store, checkLogger(WHERE, options.logger));
    this.states = new KeyStates(
      this.store,
      this.groups,
      (stateId, reason) => this.cameBack(stateId, reason),
      (entity, scope) => this.lessons.aheadUntil(entity, scope),
    );
    const store = this.store;
    this.probes = new Probes(
      {
        store,
        now: this.now,
        ended: (key, now, scope) => {
          const ended = this.states.ended(key, now, scope);
          return ended && { entity: ended.entity, scope: ended.scope, group: ended.group?.name };
        },
        emit: (probe, outcome, requestId) => this.probeEvent(probe, outcome, requestId),
        forgetEnded: (key, scope) => {
          const group = this.groups.of(key);
          store.markHealthy?.(key.stateId, scope);
          if (group !== undefined) store.markHealthy?.(group.stateId, scope);
        },
      },
      probeTimeoutMs,
    );
    this.lessons = new Lessons({
      store,
      groups: this.groups,
      now: this.now,
      maxCooldownMs: this.cooldownBounds.maxMs,
      affinityTtlMs: this.affinityTtlMs,
      holds: (key) => this.holds(key),
      byState: (stateId) => this.byState.get(stateId),
      keys: () => this.keys,
      emit: (...args) => this.emit(...args),
    });
    this.setKeys(buildKeys(WHERE, options.keys));
    this.keysCreated = this.keys.length;
    this.groups.checkOneGroup(this.keys);
  }

  get size(): number {
    return this.keys.length;
  }

  /** The ids, in walking order. */
  ids(): string[] {
    return this.keys.map((key) => key.id);
  }

  /**
   * A fresh walker for one upstream call. Never share one between requests.
   * `model` (the request's model, or a function that reads it when needed) lets the walk pass over
   * keys that are cooling for that model only; `route` scopes a request whose model cannot be read
   * (and qualifies the model of a route with limits of its own).
   */
  walker(model?: ModelSource, route?: RouteScope): KeyWalker {
    const { keys } = this;
    let start = 0;
    if (this.strategy === 'round-robin') {
      start = this.nextStart;
      this.nextStart = start + 1 >= keys.length ? 0 : start + 1;
    } else if (this.strategy === 'weighted') {
      start = weightedIndex(this.weights, this.random());
    }
    return new KeyWalker(this, keys, start, model, route);
  }

  /** @internal A walker over one key only: the one that created the object a request names. */
  walkerFor(key: PoolKey, model?: ModelSource, route?: RouteScope): KeyWalker {
    return new KeyWalker(this, [key], 0, model, route, true);
  }

  /** @internal Whether any key may be cooling for a single model scope: only then is a request's model read. */
  hasScopedStates(): boolean {
    return (this.store.scopedCount ?? 0) > 0;
  }

  /** @internal How many keys at the head of an ordered pool are known to be unavailable for `scope`. */
  knownHead(scope: string | undefined): number {
    const head = this.heads.get(scope);
    return head !== undefined &&
      head.generation === this.store.generation &&
      head.probes === this.probes.gate.generation &&
      this.now() < head.until
      ? head.end
      : 0;
  }

  /** @internal */
  rememberHead(end: number, until: number, scope: string | undefined): void {
    if (this.store.generation === undefined) return;
    if (this.heads.size >= 64 && !this.heads.has(scope)) this.heads.clear(); // one per model scope seen, bounded
    this.heads.set(scope, { end, until, generation: this.store.generation, probes: this.probes.gate.generation });
  }

  /**
   * Cool key `id` for `ms` from now: for every model, or with `details.model` for that model's scope only.
   * A longer cooldown already set wins; a disabled key stays disabled.
   */
  markRateLimited(id: string, ms: number, details: MarkDetails = {}): void {
    const key = this.requireKey(id, 'markRateLimited');
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `pool.markRateLimited(${JSON.stringify(id)}, ms): ms must be a non-negative finite number of milliseconds, got ${describeValue(ms)}.`,
      );
    }
    if (details.model !== undefined && typeof details.model !== 'string') {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `pool.markRateLimited(${JSON.stringify(id)}, ms, details): details.model must be a string, got ${describeValue(details.model)}.`,
      );
    }
    this.cool(key, ms, details, this.scopes.of(details.model));
  }

  /** Take key `id` out of the pool until `enable(id)` (or for `authCooldownMs` / `quotaCooldownMs`, when set). */
  markDisabled(id: string, details: MarkDetails = {}): void {
    const key = this.requireKey(id, 'markDisabled');
    if (details.reason !== undefined && !REASONS.includes(details.reason)) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `pool.markDisabled(${JSON.stringify(id)}, details): details.reason must be 'auth' or 'quota', got ${describeValue(details.reason)}.`,
      );
    }
    this.disable(key, details);
  }

  /**
   * @internal A mark from an upstream answer, for the exact key that got it: dropped when that key
   * (id and value) is no longer in the pool, so that a late answer for a removed or rotated key marks nothing.
   */
  markAnswer(
    key: PoolKey,
    mark: { cooldownMs: number; group?: boolean } | { disable: true; group?: boolean },
    details: MarkDetails,
    scope?: string,
  ): void {
    if (!this.holds(key)) return;
    // A rate limit (and an empty account, when the provider says it is the organization's) is the group's.
    const group = mark.group === true ? this.groups.of(key) : undefined;
    if ('cooldownMs' in mark) this.cool(key, this.jittered(mark.cooldownMs), details, scope, group);
    else this.disable(key, details, group);
  }

  /** Put key `id` back: neither disabled nor cooling, for any model; its group's state goes too. */
  enable(id: string): void {
    const key = this.requireKey(id, 'enable');
    this.store.enable(key.stateId);
    const group = this.groups.of(key);
    if (group !== undefined) this.store.enable(group.stateId);
    this.emit('enabled', { id, hint: key.hint, reason: 'manual' });
  }

  /** @internal A key whose cooldown ended: the probe it goes as, 0 for none needed, or when another's lease ends. */
  claimProbe(key: PoolKey, _until: number, now: number, scope: string | undefined): Probe | number {
    return this.probes.claim(key, now, scope);
  }

  /** @internal Before a probe is sent: the lease across replicas. False when another replica holds it. */
  confirmProbe(probe: Probe, requestId?: string): Promise<boolean> {
    return this.probes.confirm(probe, requestId);
  }

  /** @internal A probe's answer came (healthy, or a rate limit that cooled the key again), or never will. */
  settleProbe(probe: Probe, outcome: Exclude<ProbeOutcome, 'started'>, requestId?: string): void {
    this.probes.settle(probe, outcome, requestId);
  }

  /** Add a key at the end of the walking order, available. Its id defaults to `key-N`, N never reused. */
  add(input: KeyInput): string {
    const [key] = buildKeys('pool.add()', [input], { firstIndex: this.keysCreated, taken: this.keys });
    this.keysCreated++;
    this.store.enable(key!.stateId); // a key added is meant to be tried: whatever it left behind here goes
    this.setKeys([...this.keys, key!]);
    return key!.id;
  }

  /** Remove key `id`; walks in progress finish with the list they started with, and their answers mark nothing. */
  remove(id: string): void {
    const key = this.requireKey(id, 'remove');
    if (this.keys.length === 1) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_KEYS',
        `pool.remove(${JSON.stringify(id)}): a pool keeps at least one key; add the new one first.`,
      );
    }
    this.setKeys(this.keys.filter((k) => k.id !== id));
    this.forget(key);
  }

  /**
   * Replace the whole list. A key that stays (same id and same value) keeps
   * its state; a new key, or an id whose value changed (a rotated key), starts available.
   */
  replace(inputs: readonly KeyInput[]): void {
    const keys = buildKeys('pool.replace()', inputs);
    const kept = new Set(keys.map((key) => key.stateId));
    for (const old of this.keys) if (!kept.has(old.stateId)) this.forget(old);
    this.keysCreated = Math.max(this.keysCreated, keys.length);
    this.setKeys(keys);
  }

  /** Each key's id, hint, group and state; never a key value. */
  snapshot(): KeySnapshot[] {
    const now = this.now();
    const leased = (stateId: string): boolean =>
      this.probes.gate.holds(stateId, now, (scope) => this.states.isRecovering(stateId, scope, now));
    return this.keys.map((key) => this.states.snapshot(key, now, leased));
  }

  /**
   * Why no key is left (for the request's `model`, when given): 'disabled' or 'quota' when every key
   * is out, otherwise 'rate_limited' with the smallest remaining cooldown (0 when a key came back
   * while the walk was going on).
   */
  exhaustion(model?: string): PoolExhaustion {
    return this.exhaustionFor(this.scopes.of(model));
  }

  /** @internal exhaustion() for a model scope already resolved, over the pool's keys or a walk's own */
  exhaustionFor(scope: string | undefined, keys: readonly PoolKey[] = this.keys): PoolExhaustion {
    const now = this.now();
    return this.states.exhaustion(keys, now, scope, (key) => this.probes.endFor(key, now, scope));
  }

  /** @internal 0 when `key` is available at `now` (for `scope`), else when it may be again (Infinity: only by enable) */
  unavailableUntil(key: PoolKey, now: number, scope: string | undefined): number {
    return this.states.unavailableUntil(key, now, scope);
  }

  /** Lengthens a 429's cooldown by a random share of itself (cooldownJitter), never past maxCooldownMs. */
  private jittered(ms: number): number {
    if (this.cooldownJitter === 0 || ms >= this.cooldownBounds.maxMs) return ms;
    return Math.min(ms + ms * this.cooldownJitter * this.random(), this.cooldownBounds.maxMs);
  }

  private cool(key: PoolKey, ms: number, details: MarkDetails, scope: string | undefined, group?: Group): void {
    if (!(ms > 0)) return; // "retry now" is no cooldown
    const entity = group?.stateId ?? key.stateId;
    const until = Math.ceil(this.now() + ms);
    const store = this.store;
    const before = scope === undefined ? store.get(entity)?.cooldownUntil : store.scopedUntil?.(entity, scope);
    store.markRateLimited(entity, until, scope);
    const state = store.get(entity);
    if (state?.disabled) return;
    const after = scope === undefined ? state?.cooldownUntil : (store.scopedUntil?.(entity, scope) ?? state?.cooldownUntil);
    // Only a real change is an event: a shorter mark that a longer cooldown outlasts is not.
    if (after === undefined || after === before) return;
    this.emit('rateLimited', {
      id: key.id,
      hint: key.hint,
      cooldownMs: ms,
      cooldownUntil: after,
      ...(scope === undefined ? {} : { model: scope }),
      ...(group === undefined ? {} : { group: group.name }),
      ...whence(details),
    });
  }

  private disable(key: PoolKey, details: MarkDetails, group?: Group): void {
    const entity = group?.stateId ?? key.stateId;
    const reason = details.reason ?? 'auth';
    const forMs = reason === 'quota' ? this.quotaCooldownMs : this.authCooldownMs;
    const until = forMs === undefined ? undefined : this.now() + forMs;
    const before = this.store.get(entity);
    this.store.markDisabled(entity, until, reason);
    // Only a real change is an event: disabling a disabled key for the same reason is not.
    if (before?.disabled && (before.disabledReason ?? 'auth') === reason) return;
    this.emit('disabled', {
      id: key.id,
      hint: key.hint,
      reason,
      ...(until === undefined ? {} : { until }),
      ...(group === undefined ? {} : { group: group.name }),
      ...whence(details),
    });
  }

  /** A disabled state whose authCooldownMs / quotaCooldownMs ran out: its key, or each key of its group, is back. */
  private cameBack(stateId: string, reason: EnabledReason): void {
    const key = this.byState.get(stateId);
    const keys = key !== undefined ? [key] : this.keys.filter((k) => this.groups.of(k)?.stateId === stateId);
    for (const k of keys) this.emit('enabled', { id: k.id, hint: k.hint, reason });
  }

  private probeEvent(probe: Probe, outcome: ProbeOutcome, requestId: string | undefined): void {
    const { key, scope, group } = probe;
    this.emit('probe', {
      id: key.id,
      hint: key.hint,
      outcome,
      ...(scope === undefined ? {} : { model: scope }),
      ...(group === undefined ? {} : { group }),
      ...(requestId === undefined ? {} : { requestId }),
    });
  }

  /** Whether `key` (that id with that value) is still in the pool: a late answer for a removed or rotated key marks nothing. */
  private holds(key: PoolKey): boolean {
    return this.byId.get(key.id)?.stateId === key.stateId;
  }

  /** Drops what this process holds about a key that left the pool; another replica may still use it. */
  private forget(key: PoolKey): void {
    if (this.store.forget) this.store.forget(key.stateId);
    else this.store.enable(key.stateId);
  }

  private setKeys(keys: readonly PoolKey[]): void {
    this.keys = keys;
    this.heads = new Map();
    this.byId = new Map(keys.map((key) => [key.id, key]));
    this.byState = new Map(keys.map((key) => [key.stateId, key]));
    this.weights = cumulativeWeights(keys);
    if (this.nextStart >= keys.length) this.nextStart = 0;
  }

  private requireKey(id: string, method: string): PoolKey {
    const key = this.byId.get(id);
    if (!key) {
      throw new KeyFailoverError(
        'ERR_EKF_UNKNOWN_KEY',
        `pool.${method}(${JSON.stringify(id)}): no key has this id. Ids in this pool: ${[...this.byId.keys()].join(', ')}.`,
      );
    }
    return key;
  }
}

/** Where a mark came from, for its event: the answer's status and cause, the request's id. */
function whence({ status, cause, requestId }: MarkDetails): Pick<MarkDetails, 'status' | 'cause' | 'requestId'> {
  const out: Pick<MarkDetails, 'status' | 'cause' | 'requestId'> = {};
  if (status !== undefined) out.status = status;
  if (cause !== undefined) out.cause = cause;
  if (requestId !== undefined) out.requestId = requestId;
  return out;
}

export { KeyWalker, PoolKey, type KeyInput, type Strategy };
