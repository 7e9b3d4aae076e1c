/**
 * RedisStateStore: key state shared by gateway replicas through Redis, via
 * ioredis (an optional peer dependency, loaded only by the `./redis` entry).
 *
 * In Redis (P = prefix, default 'ekf:'), state ids only (a key's id and a
 * truncated hash of its value), never a key value:
 *   P cooldown:<id>  the mark's stamp, with a PX expiry of the cooldown: it clears itself.
 *   P disabled:<id>  '<stamp>|<reason>', with PX (authCooldownMs, quotaCooldownMs) or none (until enable).
 *   P enabled:<id>   the stamp of the latest enable, for a day: older marks replayed later lose to it.
 *   P scoped         one sorted set of every per-model cooldown (member: id and model scope; score: its
 *                    end in Redis time), bounded by `maxScopedStates`; P scoped:<id> lists one key's.
 *   P ids            the ids that may have state, so that a resync is one script and no SCAN.
 *   P epoch          a token set once (SET NX); a different one than last seen means Redis lost its data.
 *   channel P events {op, id, ms, scope, reason, stamp, from} for every change.
 *
 * Reads: get() answers from a local view (a MemoryKeyStateStore), so selection never waits on Redis.
 * The view is refreshed by pub/sub (one PUBLISH per change), by a full resync
 * after every (re)connect, and every `resyncIntervalMs` as a safety net.
 *
 * Writes: the local view first (this replica sees its own mark at once), then
 * one EVALSHA (ioredis defineCommand) that applies the rules atomically: the
 * longer cooldown wins, a disabled key ignores cooldowns, the newer of a disable
 * and an enable wins. Its reply (the state that won) corrects this replica's
 * view, unless a newer local write came since.
 *
 * Clocks: nothing absolute crosses the wire but stamps. A mark sends its
 * remaining ms; Redis computes the deadline with its own TIME (PX expiry, PTTL
 * for comparisons); events and resyncs carry remaining ms, which each replica
 * adds to the pool's now(). Stamps (which of two changes is newer) are in Redis
 * time, as each replica estimates it from the offset to Redis TIME in its last reply.
 *
 * Outage (fail open): a write is sent only while the client is 'ready', with a
 * timeout; otherwise, or when it fails, it is kept as pending and the outage
 * logged once (again only after a catch-up succeeded in between). On
 * reconnect, or every second while down (a Redis that hung keeps its socket
 * open): pending writes are replayed from the local view with their stamps (all
 * of the view if the epoch changed, i.e. Redis came back empty, or was never
 * read), then a resync. Requests never wait.
 *
 * Nothing lost: a resync replaces the view only when it ran on the server
 * whose epoch the replay before it checked; changes heard from pub/sub while a
 * resync is on its way are newer than its answer, and are kept too.
 *
 * Standalone Redis or Sentinel; not Redis Cluster (the scripts read keys they
 * are not given). An ioredis `keyPrefix` on a client you pass is honoured.
 *
 * Why one file past ~300 lines: the class is one connection state machine (subscribe, catch-up,
 * replay, resync, outage) whose steps share its fields; its scripts, options, change log and
 * shared state (groups, probes, objects) already live in redis-*.ts beside it.
 */
import { randomUUID } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import {
  KeyFailoverError,
  checkFunction,
  checkKnownOptions,
  checkLogger,
  checkPositiveInteger,
  describeValue,
  type Logger,
} from '../validations.js';
import { OPTIONS, WHERE, checkConnection, checkPrefix, describeRedisError, type RedisStateStoreOptions } from './redis-options.js';
import { ChangeLog, entryOf } from './redis-log.js';
import { RESYNC_LUA, WRITE_LUA, readResync, writeKeys, type Op, type Scripts } from './redis-scripts.js';
import { SharedState, defineSharedCommands } from './redis-shared.js';
import { DEFAULT_MAX_OBJECTS } from './affinity.js';
import { recovering } from './key-states.js';

export type { RedisStateStoreOptions };
import { DEFAULT_MAX_SCOPED_STATES, MemoryKeyStateStore } from './memory-store.js';
import type { DisabledReason, KeyState, KeyStateStore, ScopedCooldown } from './store.js';

export class RedisStateStore implements KeyStateStore {
  readonly prefix: string;
  private now: () => number;
  private readonly givenNow: (() => number) | undefined;
  private readonly logger: (Logger & { info?(message: string): void }) | undefined;
  private readonly timeoutMs: number;
  private readonly maxScoped: number;
  private readonly client: Redis;
  private readonly subscriber: Redis;
  private readonly ownsClient: boolean;
  private readonly channel: string;
  private readonly origin = randomUUID();
  private readonly view: MemoryKeyStateStore;
  private readonly log = new ChangeLog();
  /** Groups, probe leases, healthy notices and object owners (redis-shared.ts). */
  private readonly shared: SharedState;
  /** Redis TIME minus this replica's clock, from the latest reply: stamps are in Redis time. */
  private offset = 0;
  /** The token of the server this view last caught up with; undefined until a replay read one. */
  private epoch: string | undefined;
  private subscribed = false;
  private down = false;
  private closed = false;
  private catchingUp = false;
  private catchUpAgain = false;
  private lastError: unknown;
  private readonly synced: Promise<void>;
  private markSynced: () => void = () => {};
  private readonly timer: NodeJS.Timeout | undefined;
  /** While down: tries to catch up every second, for outages that end without a reconnect (a Redis that hung). */
  private probe: NodeJS.Timeout | undefined;
  private readonly detach: () => void;

  constructor(options: RedisStateStoreOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `${WHERE}: expected an options object { url } or { client }, got ${describeValue(options)}.`,
      );
    }
    checkKnownOptions(WHERE, options, OPTIONS);
    const { client, url } = checkConnection(options.client, options.url);
    this.prefix = checkPrefix(options.prefix ?? 'ekf:');
    this.givenNow = options.now === undefined ? undefined : checkFunction<() => number>(WHERE, 'now', options.now);
    this.now = this.givenNow ?? Date.now;
    this.logger = checkLogger(WHERE, options.logger);
    this.timeoutMs = checkPositiveInteger(WHERE, 'operationTimeoutMs', options.operationTimeoutMs ?? 1000);
    const resyncIntervalMs = checkPositiveInteger(WHERE, 'resyncIntervalMs', options.resyncIntervalMs ?? 30_000, { allowZero: true });
    this.maxScoped = checkPositiveInteger(WHERE, 'maxScopedStates', options.maxScopedStates ?? DEFAULT_MAX_SCOPED_STATES);
    const maxObjects = checkPositiveInteger(WHERE, 'maxObjects', options.maxObjects ?? DEFAULT_MAX_OBJECTS);
    this.view = new MemoryKeyStateStore({ maxScopedStates: this.maxScoped, maxObjects });
    this.view.useClock(() => this.now());
    this.synced = new Promise((resolve) => (this.markSynced = resolve));

    // Fail fast rather than queue: a command while disconnected is rejected at once, and retried by the replay.
    const failFast: RedisOptions = {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: this.timeoutMs,
      retryStrategy: (times) => Math.min(times * 100, 2000),
      // ioredis waits this long for a closing socket before destroying it; a store closed while Redis is
      // unreachable would otherwise hold the process open for 2 s.
      disconnectTimeout: Math.min(500, this.timeoutMs),
    };
    this.ownsClient = client === undefined;
    this.client = client ?? new Redis(url!, failFast);
    // Channels are not keys: ioredis does not prefix them, so the client's keyPrefix goes in by hand, as it does for the scripts.
    this.channel = `${this.client.options.keyPrefix ?? ''}${this.prefix}events`;
    // We subscribe ourselves on each 'ready', and then resync, so that no event falls between the two.
    this.subscriber = this.client.duplicate({ autoResubscribe: false, lazyConnect: false });
    if (typeof (this.client as unknown as Partial<Scripts>).ekfKeyStateWrite !== 'function') {
      this.client.defineCommand('ekfKeyStateWrite', { numberOfKeys: 6, lua: WRITE_LUA });
      this.client.defineCommand('ekfKeyStateResync', { numberOfKeys: 3, lua: RESYNC_LUA });
    }
    defineSharedCommands(this.client);
    this.shared = new SharedState({
      client: this.client,
      prefix: this.prefix,
      channel: this.channel,
      origin: this.origin,
      view: this.view,
      maxObjects,
      now: () => this.now(),
      ready: () => !this.closed && this.client.status === 'ready',
      timed: (promise) => this.timed(promise),
      outage: (error) => this.outage(error),
    });

    const onReady = () => void this.catchUp();
    const onClose = () => this.outage();
    // Errors surface as 'close' events and failed calls; the last one says why (a wrong password, say) when the
    // outage is reported. Listening also keeps ioredis from printing "Unhandled error event" at every retry.
    const onError = (error: unknown) => (this.lastError = error);
    this.client.on('ready', onReady).on('close', onClose).on('error', onError);
    this.subscriber.on('error', onError).on('ready', () => void this.subscribe());
    this.subscriber.on('close', () => {
      this.subscribed = false;
      this.outage();
    });
    this.subscriber.on('message', (channel: string, message: string) => channel === this.channel && this.receive(message));
    this.detach = () => void this.client.off('ready', onReady).off('close', onClose).off('error', onError);
    if (this.client.status === 'wait') this.client.connect().catch(() => {});
    if (this.client.status === 'ready') void this.catchUp();
    this.timer = resyncIntervalMs > 0 ? setInterval(() => void this.catchUp(), resyncIntervalMs).unref() : undefined;
  }

  /** Changes with every change of the local view (see KeyStateStore.generation). */
  get generation(): number {
    return this.view.generation;
  }

  get scopedCount(): number {
    return this.view.scopedCount;
  }

  /** The pool's clock: the store measures with it. A different `now` given to the store is refused. */
  useClock(now: () => number): void {
    if (this.givenNow !== undefined && this.givenNow !== now) {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `${WHERE}: option "now" is not the clock of the KeyPool that uses this store; give "now" to the KeyPool only (it hands its clock to the store).`,
      );
    }
    this.now = now;
  }

  /**
   * Resolves once the store has caught up with Redis (its first resync), or after `timeoutMs`
   * (default 2000) when Redis is slow or down: a new replica then serves from what it has.
   */
  ready(timeoutMs = 2000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    return Promise.race([this.synced, bound]).finally(() => clearTimeout(timer));
  }

  get(id: string): KeyState | undefined {
    return this.view.get(id);
  }

  scopedUntil(id: string, scope: string): number {
    return this.view.scopedUntil(id, scope);
  }

  scopes(id: string): ScopedCooldown[] {
    return this.view.scopes(id);
  }

  markRateLimited(id: string, until: number, scope?: string): void {
    // Unchanged locally: a longer cooldown or a disable already holds, and Redis has it (or a replay will send it).
    if (!this.view.markRateLimited(id, until, scope)) return;
    const ms = Math.ceil(until - this.now());
    if (ms > 0) this.write(id, scope === undefined ? 'cooldown' : 'scoped', ms, scope);
  }

  markDisabled(id: string, until?: number, reason: DisabledReason = 'auth'): void {
    this.view.markDisabled(id, until, reason);
    this.write(id, 'disable', until === undefined ? 0 : Math.max(1, Math.ceil(until - this.now())), undefined, reason);
  }

  enable(id: string): void {
    const state = this.view.get(id);
    this.view.enable(id);
    // The pool calls enable() when an authCooldownMs ran out. Redis expires that key by itself, and
    // telling every replica could undo a newer disable that another replica just made.
    if (state?.disabled && state.disabledUntil !== undefined && state.disabledUntil <= this.now()) return;
    this.write(id, 'enable', 0);
  }

  /** A key that left this replica's pool: dropped from the view only; other replicas may still use it. */
  forget(id: string): void {
    this.view.forget(id);
  }

  groupOf(id: string): string | undefined {
    return this.view.groupOf(id);
  }

  /** The first group learned for a key stays, on every replica (HSETNX). */
  learnGroup(id: string, group: string): boolean {
    return this.shared.learnGroup(id, group);
  }

  /** Ends a probe everywhere: each replica drops the key's cooldowns that already ended. */
  markHealthy(id: string, scope?: string): void {
    this.shared.markHealthy(id, scope);
  }

  /** One probe across replicas: a lease in Redis (SET NX PX). 0 when this replica holds it, else the ms left on another's. */
  leaseProbe(entry: string, ms: number): Promise<number> {
    return this.shared.leaseProbe(entry, ms);
  }

  releaseProbe(entry: string): void {
    this.shared.releaseProbe(entry);
  }

  rememberObject(object: string, id: string, until: number): void {
    this.shared.rememberObject(object, id, until);
  }

  objectOwner(object: string): string | undefined {
    return this.view.objectOwner(object);
  }

  /** Stops listening and closes the connections the store made; a `client` you gave stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    clearInterval(this.probe);
    this.detach();
    // QUIT says goodbye when connected; disconnect() also stops a client that is still reconnecting (a quit
    // sent then resolves at once and leaves its reconnect timer running).
    const quit = async (redis: Redis) => {
      try {
        if (redis.status === 'ready') await this.timed(redis.quit());
      } catch {
        // gone already, or it did not answer in time
      } finally {
        redis.disconnect();
      }
    };
    await Promise.all([quit(this.subscriber), ...(this.ownsClient ? [quit(this.client)] : [])]);
  }

  /**
   * A state from Redis (remaining ms, -1: no expiry), placed on this replica's clock. Cooldowns only
   * ever lengthen here: a reply and an event from another replica may arrive in either order.
   */
  private apply(id: string, state: string, ms: number, scope: string | undefined, reason: string, stamp: number | undefined): void {
    const now = this.now();
    this.log.saw(stamp);
    if (state === 'scoped') {
      if (scope === undefined) return;
      if (ms > 0) this.view.markRateLimited(id, now + ms, scope);
      else this.view.putScope(id, scope, 0); // refused: an enable came after that mark
    } else if (state === 'cooldown') {
      if (ms <= 0 || !this.view.markRateLimited(id, now + ms)) return;
      if (stamp !== undefined) this.view.put(id, withStamp(this.view.get(id)!, stamp));
    } else if (state === 'disabled') {
      const disabled: KeyState = { cooldownUntil: 0, disabled: true };
      if (ms > 0) disabled.disabledUntil = now + ms;
      if (reason === 'quota') disabled.disabledReason = 'quota';
      this.view.put(id, withStamp(disabled, stamp));
    } else if (state === 'enabled') {
      this.view.enable(id);
    }
  }

  private write(id: string, op: Op, ms: number, scope?: string, reason: DisabledReason = 'auth'): void {
    const entry = entryOf(id, scope);
    const { seq, stamp } = this.log.wrote(entry, this.now() + this.offset);
    if (op !== 'scoped' && op !== 'enable') this.view.put(id, withStamp(this.view.get(id)!, stamp));
    if (this.closed) return;
    if (this.client.status !== 'ready') return this.keep(entry, id, scope, op);
    this.send({ op, id, ms, stamp, scope: scope ?? '', reason }, seq).catch((error: unknown) => {
      this.keep(entry, id, scope, op);
      this.outage(error);
    });
  }

  private keep(entry: string, id: string, scope: string | undefined, op: Op): void {
    this.log.keep(entry, id, scope, op === 'enable');
  }

  private async send(args: { op: Op; id: string; ms: number; stamp: number; scope: string; reason: string }, seq: number): Promise<void> {
    const { op, id, ms, stamp, scope, reason } = args;
    const scripts = this.client as unknown as Scripts;
    const keyPrefix = (this.client.options.keyPrefix ?? '') + this.prefix;
    const sentAt = this.now();
    const [state, left, wonReason, redisNow] = await this.timed(
      scripts.ekfKeyStateWrite(
        ...writeKeys(this.prefix, id),
        ...[op, id, ms, stamp, scope, reason, this.channel, this.origin, this.maxScoped, keyPrefix],
      ),
    );
    this.offset = Number(redisNow) - (sentAt + this.now()) / 2;
    const entry = entryOf(id, scope === '' ? undefined : scope);
    if (this.log.latest(entry).seq === seq && !this.log.pending.has(entry)) {
      this.apply(id, state, Number(left), scope === '' ? undefined : scope, wonReason, state === 'enabled' ? undefined : stamp);
    }
  }

  private receive(message: string): void {
    let event: { op?: unknown; id?: unknown; ms?: unknown; scope?: unknown; reason?: unknown; from?: unknown };
    try {
      event = JSON.parse(message) as typeof event;
    } catch {
      return;
    }
    if (event.from === this.origin || typeof event.id !== 'string' || typeof event.op !== 'string') return;
    if (this.shared.receive(event)) return;
    const scope = event.op === 'scoped' && typeof event.scope === 'string' ? event.scope : undefined;
    const entry = entryOf(event.id, scope);
    // Our own changes are in the view already; an unconfirmed local write is newer than what Redis said before it.
    if (this.log.pending.has(entry)) return;
    this.log.heardOf(entry);
    const stamp = typeof (event as { stamp?: unknown }).stamp === 'number' ? (event as { stamp: number }).stamp : undefined;
    this.apply(event.id, event.op, Number(event.ms), scope, typeof event.reason === 'string' ? event.reason : '', stamp);
  }

  private async subscribe(): Promise<void> {
    try {
      await this.timed(this.subscriber.subscribe(this.channel));
      this.subscribed = true;
    } catch (error) {
      return this.outage(error);
    }
    await this.catchUp();
  }

  /** Replays what Redis missed, then reads everything back. One at a time; a call during one runs it again after. */
  private async catchUp(): Promise<void> {
    if (this.closed) return;
    if (this.catchingUp) {
      this.catchUpAgain = true;
      return;
    }
    this.catchingUp = true;
    try {
      do {
        this.catchUpAgain = false;
        if (this.client.status !== 'ready') return;
        await this.replay();
        await this.shared.replay();
        if (!(await this.resync())) {
          // Redis restarted after the replay read its epoch: the answer came from a server that has not had
          // the replay. Again: the replay sees the new epoch now, and gives it everything.
          this.catchUpAgain = true;
          continue;
        }
        await this.shared.resync();
        this.markSynced();
        if (this.down && this.subscribed) {
          this.down = false;
          clearInterval(this.probe);
          this.logger?.info?.('[express-key-failover] RedisStateStore: Redis is reachable again; key state caught up.');
        }
      } while (this.catchUpAgain && !this.closed);
    } catch (error) {
      this.outage(error);
    } finally {
      this.catchingUp = false;
    }
  }

  /** Sends Redis what it has not confirmed, each state with the stamp it was made with. */
  private async replay(): Promise<void> {
    const epochKey = this.prefix + 'epoch';
    const [, current] = await this.timed(Promise.all([this.client.set(epochKey, randomUUID(), 'NX'), this.client.get(epochKey)]));
    // Never read before (a first catch-up, or every one so far failed): the view may hold states that went straight
    // to a server that has restarted since (our writes, what pub/sub told us), so Redis gets all of it.
    const lost = this.epoch === undefined || current !== this.epoch;
    this.epoch = current ?? undefined;
    const { pending } = this.log;
    const entries = new Map(pending);
    if (lost) {
      for (const [id] of this.view.entries()) entries.set(id, entries.get(id) ?? { id, scope: undefined, reset: false });
      for (const { id, scope } of this.view.scopedEntries()) {
        const entry = entryOf(id, scope);
        entries.set(entry, entries.get(entry) ?? { id, scope, reset: false });
      }
    }
    const now = this.now();
    await Promise.all(
      [...entries].map(async ([entry, { id, scope, reset }]) => {
        const write = this.log.latest(entry);
        const seq = write.seq;
        pending.delete(entry);
        try {
          if (scope !== undefined) {
            const until = this.view.scopedUntil(id, scope);
            if (until > now) await this.send({ op: 'scoped', id, ms: Math.ceil(until - now), stamp: write.stamp, scope, reason: '' }, seq);
            return;
          }
          const state = this.view.get(id);
          const stamp = state?.stamp ?? write.stamp;
          if (reset && !state?.disabled) await this.send({ op: 'enable', id, ms: 0, stamp: write.stamp, scope: '', reason: '' }, seq);
          if (state?.disabled && (state.disabledUntil === undefined || state.disabledUntil > now)) {
            const ms = state.disabledUntil === undefined ? 0 : Math.ceil(state.disabledUntil - now);
            await this.send({ op: 'disable', id, ms, stamp, scope: '', reason: state.disabledReason ?? 'auth' }, seq);
          } else if (state && !state.disabled && state.cooldownUntil > now) {
            await this.send({ op: 'cooldown', id, ms: Math.ceil(state.cooldownUntil - now), stamp, scope: '', reason: '' }, seq);
          }
        } catch (error) {
          if (!pending.has(entry)) pending.set(entry, { id, scope, reset });
          throw error;
        }
      }),
    );
  }

  /**
   * Replaces the view with Redis's, except entries written locally or heard of since the resync began.
   * False, and the view untouched, when the answer comes from a server other than the one the replay checked.
   */
  private async resync(): Promise<boolean> {
    const checkpoint = this.log.checkpoint();
    const scripts = this.client as unknown as Scripts;
    const sentAt = this.now();
    const reply = await this.timed(
      scripts.ekfKeyStateResync(
        this.prefix + 'ids',
        this.prefix + 'epoch',
        this.prefix + 'scoped',
        (this.client.options.keyPrefix ?? '') + this.prefix,
        randomUUID(),
      ),
    );
    if (this.epoch === undefined || String(reply[0]) !== this.epoch) return false;
    const now = this.now();
    const { redisNow, states, scoped: scopedList } = readResync(reply, now);
    this.offset = redisNow - (sentAt + now) / 2;
    const scoped = new Map(scopedList.map((entry) => [entryOf(entry.id, entry.scope), entry]));
    const untouched = (entry: string) => this.log.untouchedSince(entry, checkpoint);
    for (const id of new Set([...[...this.view.entries()].map(([id]) => id), ...states.keys()])) {
      if (!untouched(id)) continue;
      const mine = this.view.get(id);
      // A cooldown that ended here and that no answer said healthy yet is gone from Redis (it expired): kept, so that one probe still goes first.
      if (!states.has(id) && mine !== undefined && !mine.disabled && recovering(mine.cooldownUntil, now)) continue;
      this.view.put(id, states.get(id));
    }
    for (const { id, scope } of this.view.scopedEntries()) {
      const entry = entryOf(id, scope);
      if (!scoped.has(entry) && untouched(entry)) this.view.putScope(id, scope, 0);
    }
    for (const [entry, { id, scope, until }] of scoped) if (untouched(entry)) this.view.putScope(id, scope, until);
    return true;
  }

  /** Logged once per outage: again only after a catch-up succeeded in between. Never a key or a password. */
  private outage(error?: unknown): void {
    if (this.closed || this.down) return;
    this.down = true;
    this.probe = setInterval(
      () => void (this.subscribed ? this.catchUp() : this.subscriber.status === 'ready' && this.subscribe()),
      1000,
    ).unref();
    this.logger?.warn(
      `[express-key-failover] RedisStateStore: ${describeRedisError(error ?? this.lastError)}; ` +
        'serving key state from this process until it returns, then catching up.',
    );
  }

  /** Settles within operationTimeoutMs whatever the client does (a client of yours may queue while offline). */
  private timed<T>(promise: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    promise.catch(() => {});
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error('Redis call timed out'), { code: 'ETIMEDOUT' })), this.timeoutMs).unref();
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }
}

function withStamp(state: KeyState, stamp: number | undefined): KeyState {
  return stamp === undefined ? state : { ...state, stamp };
}
