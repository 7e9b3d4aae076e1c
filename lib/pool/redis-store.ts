/**
 * RedisStateStore: key state shared by gateway replicas through Redis, via
 * ioredis (an optional peer dependency, loaded only by the `./redis` entry).
 *
 * In Redis (P = prefix, default 'ekf:'), ids only, never a key value:
 *   P cooldown:<id>  Redis-time deadline, with a PX expiry of the cooldown: it clears itself.
 *   P disabled:<id>  Redis-time deadline with PX (authCooldownMs), or '0' without expiry (until enable).
 *   P ids            the ids that may have state, so that a resync is one script and no SCAN.
 *   P epoch          a token set once (SET NX); a different one than last seen means Redis lost its data.
 *   channel P events {op: 'cooldown' | 'disabled' | 'enabled', id, ms, from} for every change.
 *
 * Reads: get() answers from a local Map, so selection never waits on Redis.
 * The view is refreshed by pub/sub (one PUBLISH per change), by a full resync
 * after every (re)connect, and every `resyncIntervalMs` as a safety net.
 *
 * Writes: the local view first (this replica sees its own mark at once), then
 * one EVALSHA (ioredis defineCommand) that applies the rule atomically: the
 * longer cooldown wins, a disabled key ignores cooldowns. Its reply (the state
 * that won) corrects this replica's view, unless a newer local write came since.
 *
 * Clocks: nothing absolute crosses the wire. A mark sends its remaining ms;
 * Redis computes the deadline with its own TIME (PX expiry, PTTL for
 * comparisons); events and resyncs carry remaining ms, which each replica adds
 * to its own now(). A replica whose clock is off by seconds still sees the
 * right remaining time; the error is one network trip, and on the long side.
 *
 * Outage (fail open): a write is sent only while the client is 'ready', with a
 * timeout; otherwise, or when it fails, the id is kept as pending and the
 * outage logged once (again only after a catch-up succeeded in between). On
 * reconnect, or every second while down (a Redis that hung keeps its socket
 * open): pending ids are replayed from the local view (all ids if the epoch
 * changed, i.e. Redis came back empty, or was never read: the view may hold
 * states from a server that has restarted since), then a resync.
 * Requests never wait.
 *
 * Nothing lost: a resync replaces the view only when it ran on the server
 * whose epoch the replay before it checked. Its script reads the epoch with
 * the states; another one means Redis restarted in between (a command sent
 * as the server died is resent by ioredis on the new connection, and a
 * client of yours may queue one while offline): that answer is dropped and the
 * catch-up runs again, replaying everything. Changes heard from pub/sub while
 * a resync is on its way are newer than its answer, and are kept too.
 *
 * Standalone Redis or Sentinel; not Redis Cluster (the scripts read keys they
 * are not given). An ioredis `keyPrefix` on a client you pass is honoured.
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
import { WHERE, checkConnection, checkPrefix } from './redis-options.js';
import { RESYNC_LUA, WRITE_LUA, type Op, type Scripts } from './redis-scripts.js';
import type { KeyState, KeyStateStore } from './store.js';

export interface RedisStateStoreOptions {
  /** An ioredis client to use (not closed by `close()`); a duplicate of it subscribes. Give this or `url`. */
  client?: Redis;
  /** `redis://` or `rediss://` URL: the store makes (and closes) its own clients. Give this or `client`. */
  url?: string;
  /** Prepended to every Redis key and to the channel. Default `'ekf:'`. One prefix per set of keys. */
  prefix?: string;
  /** The pool's clock (epoch ms): give the same `now` as the KeyPool's. Default `Date.now`. */
  now?: () => number;
  /** Where an outage is reported, once per outage (`info`, when present, hears the recovery). Default `console`; `false` for silence. */
  logger?: Logger | false;
  /** How long a Redis call may take before it counts as failed. Default 1000 ms. */
  operationTimeoutMs?: number;
  /** Full resync period, a safety net for lost pub/sub messages; 0: only on (re)connect. Default 30 000 ms. */
  resyncIntervalMs?: number;
}

const OPTIONS = ['client', 'url', 'prefix', 'now', 'logger', 'operationTimeoutMs', 'resyncIntervalMs'];

export class RedisStateStore implements KeyStateStore {
  readonly prefix: string;
  private readonly now: () => number;
  private readonly logger: (Logger & { info?(message: string): void }) | undefined;
  private readonly timeoutMs: number;
  private readonly client: Redis;
  private readonly subscriber: Redis;
  private readonly ownsClient: boolean;
  private readonly channel: string;
  private readonly origin = randomUUID();
  private readonly view = new ChangeCountingMap<string, KeyState>();
  /** Ids whose latest local write Redis has not confirmed; `reset`: an enable() is among them. */
  private readonly pending = new Map<string, { reset: boolean }>();
  /** Sequence number of each id's latest local write, so that an older reply or resync does not undo it. */
  private readonly lastWrite = new Map<string, number>();
  private writes = 0;
  /** Sequence number of each id's latest event from pub/sub, so that a resync read before it does not undo it. */
  private readonly lastHeard = new Map<string, number>();
  private heard = 0;
  /** The token of the server this view last caught up with; undefined until a replay read one. */
  private epoch: string | undefined;
  private subscribed = false;
  private down = false;
  private closed = false;
  private catchingUp = false;
  private catchUpAgain = false;
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
    this.now = options.now === undefined ? Date.now : checkFunction<() => number>(WHERE, 'now', options.now);
    this.logger = checkLogger(WHERE, options.logger);
    this.timeoutMs = checkPositiveInteger(WHERE, 'operationTimeoutMs', options.operationTimeoutMs ?? 1000);
    const resyncIntervalMs = checkPositiveInteger(WHERE, 'resyncIntervalMs', options.resyncIntervalMs ?? 30_000, { allowZero: true });
    this.channel = `${this.prefix}events`;

    // Fail fast rather than queue: a command while disconnected is rejected at once, and retried by the replay.
    const failFast: RedisOptions = {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: this.timeoutMs,
      retryStrategy: (times) => Math.min(times * 100, 2000),
    };
    this.ownsClient = client === undefined;
    this.client = client ?? new Redis(url!, failFast);
    // We subscribe ourselves on each 'ready', and then resync, so that no event falls between the two.
    this.subscriber = this.client.duplicate({ autoResubscribe: false, lazyConnect: false });
    if (typeof (this.client as unknown as Partial<Scripts>).ekfKeyStateWrite !== 'function') {
      this.client.defineCommand('ekfKeyStateWrite', { numberOfKeys: 3, lua: WRITE_LUA });
      this.client.defineCommand('ekfKeyStateResync', { numberOfKeys: 2, lua: RESYNC_LUA });
    }

    const onReady = () => void this.catchUp();
    const onClose = () => this.outage();
    const ignore = () => {}; // errors surface as 'close' events and failed calls; this keeps ioredis from printing each retry
    this.client.on('ready', onReady).on('close', onClose);
    if (this.ownsClient) this.client.on('error', ignore);
    this.subscriber.on('error', ignore).on('ready', () => void this.subscribe());
    this.subscriber.on('close', () => {
      this.subscribed = false;
      this.outage();
    });
    this.subscriber.on('message', (channel: string, message: string) => channel === this.channel && this.receive(message));
    this.detach = () => void this.client.off('ready', onReady).off('close', onClose);
    if (this.client.status === 'wait') this.client.connect().catch(ignore);
    if (this.client.status === 'ready') void this.catchUp();
    this.timer = resyncIntervalMs > 0 ? setInterval(() => void this.catchUp(), resyncIntervalMs).unref() : undefined;
  }

  /** Changes with every change of the local view (see KeyStateStore.generation). */
  get generation(): number {
    return this.view.changes;
  }

  get(id: string): KeyState | undefined {
    return this.view.get(id);
  }

  markRateLimited(id: string, until: number): void {
    // Unchanged locally: a longer cooldown or a disable already holds, and Redis has it (or a replay will send it).
    if (!this.coolLocally(id, until)) return;
    const ms = Math.ceil(until - this.now());
    if (ms > 0) this.write(id, 'cooldown', ms);
  }

  markDisabled(id: string, until?: number): void {
    this.view.set(
      id,
      until === undefined ? { cooldownUntil: 0, disabled: true } : { cooldownUntil: 0, disabled: true, disabledUntil: until },
    );
    this.write(id, 'disable', until === undefined ? 0 : Math.max(1, Math.ceil(until - this.now())));
  }

  enable(id: string): void {
    const state = this.view.get(id);
    this.view.delete(id);
    // The pool calls enable() when an authCooldownMs ran out. Redis expires that key by itself, and
    // telling every replica could undo a newer disable that another replica just made.
    if (state?.disabled && state.disabledUntil !== undefined && state.disabledUntil <= this.now()) return;
    this.write(id, 'enable', 0);
  }

  /** Stops listening and closes the connections the store made; a `client` you gave stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    clearInterval(this.probe);
    this.detach();
    const quit = async (redis: Redis) => {
      try {
        await this.timed(redis.quit());
      } catch {
        redis.disconnect();
      }
    };
    await Promise.all([quit(this.subscriber), ...(this.ownsClient ? [quit(this.client)] : [])]);
  }

  private coolLocally(id: string, until: number): boolean {
    const state = this.view.get(id);
    if (state?.disabled || (state && state.cooldownUntil >= until)) return false;
    this.view.set(id, { cooldownUntil: until, disabled: false });
    return true;
  }

  /** A state from Redis (remaining ms, -1: no expiry), placed on this replica's clock. */
  private apply(id: string, state: string, ms: number): void {
    const now = this.now();
    if (state === 'cooldown' && ms > 0) this.coolLocally(id, now + ms);
    else if (state === 'disabled')
      this.view.set(id, ms > 0 ? { cooldownUntil: 0, disabled: true, disabledUntil: now + ms } : { cooldownUntil: 0, disabled: true });
    else if (state === 'enabled') this.view.delete(id);
  }

  private write(id: string, op: Op, ms: number): void {
    const seq = ++this.writes;
    this.lastWrite.set(id, seq);
    if (this.closed) return;
    if (this.client.status !== 'ready') return this.keep(id, op);
    this.send(id, op, ms, seq).catch((error: unknown) => {
      this.keep(id, op);
      this.outage(error);
    });
  }

  private keep(id: string, op: Op): void {
    this.pending.set(id, { reset: op === 'enable' || (this.pending.get(id)?.reset ?? false) });
  }

  private async send(id: string, op: Op, ms: number, seq: number): Promise<void> {
    const scripts = this.client as unknown as Scripts;
    const keys = [this.prefix + 'cooldown:' + id, this.prefix + 'disabled:' + id, this.prefix + 'ids'] as const;
    const [state, left] = await this.timed(scripts.ekfKeyStateWrite(...keys, op, id, ms, this.channel, this.origin));
    if ((this.lastWrite.get(id) ?? 0) === seq && !this.pending.has(id)) this.apply(id, state, left);
  }

  private receive(message: string): void {
    let event: { op?: unknown; id?: unknown; ms?: unknown; from?: unknown };
    try {
      event = JSON.parse(message) as typeof event;
    } catch {
      return;
    }
    // Our own changes are in the view already; an unconfirmed local write is newer than what Redis said before it.
    if (event.from === this.origin || typeof event.id !== 'string' || typeof event.op !== 'string' || this.pending.has(event.id)) return;
    this.lastHeard.set(event.id, ++this.heard);
    this.apply(event.id, event.op, Number(event.ms));
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
        if (!(await this.resync())) {
          // Redis restarted after the replay read its epoch: the answer came from a server that has not had
          // the replay. Again: the replay sees the new epoch now, and gives it everything.
          this.catchUpAgain = true;
          continue;
        }
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

  private async replay(): Promise<void> {
    const epochKey = this.prefix + 'epoch';
    const [, current] = await this.timed(Promise.all([this.client.set(epochKey, randomUUID(), 'NX'), this.client.get(epochKey)]));
    // Never read before (a first catch-up, or every one so far failed): the view may hold states that went straight
    // to a server that has restarted since (our writes, what pub/sub told us), so Redis gets all of it.
    const lost = this.epoch === undefined || current !== this.epoch;
    this.epoch = current ?? undefined;
    const ids = new Set([...this.pending.keys(), ...(lost ? this.view.keys() : [])]);
    const now = this.now();
    await Promise.all(
      [...ids].map(async (id) => {
        const reset = this.pending.get(id)?.reset ?? false;
        const state = this.view.get(id);
        const seq = this.lastWrite.get(id) ?? 0;
        this.pending.delete(id);
        try {
          if (reset && !state?.disabled) await this.send(id, 'enable', 0, seq);
          if (state?.disabled && (state.disabledUntil === undefined || state.disabledUntil > now)) {
            await this.send(id, 'disable', state.disabledUntil === undefined ? 0 : Math.ceil(state.disabledUntil - now), seq);
          } else if (state && !state.disabled && state.cooldownUntil > now) {
            await this.send(id, 'cooldown', Math.ceil(state.cooldownUntil - now), seq);
          }
        } catch (error) {
          if (!this.pending.has(id)) this.pending.set(id, { reset });
          throw error;
        }
      }),
    );
  }

  /**
   * Replaces the view with Redis's, except ids written locally or heard of since the resync began.
   * False, and the view untouched, when the answer comes from a server other than the one the replay checked.
   */
  private async resync(): Promise<boolean> {
    const [written, heard] = [this.writes, this.heard];
    const scripts = this.client as unknown as Scripts;
    const reply = await this.timed(
      scripts.ekfKeyStateResync(
        this.prefix + 'ids',
        this.prefix + 'epoch',
        (this.client.options.keyPrefix ?? '') + this.prefix,
        randomUUID(),
      ),
    );
    if (this.epoch === undefined || String(reply[0]) !== this.epoch) return false;
    const now = this.now();
    const fresh = new Map<string, KeyState>();
    for (let i = 1; i + 2 < reply.length; i += 3) {
      const [id, cooling, disabled] = [String(reply[i]), Number(reply[i + 1]), Number(reply[i + 2])];
      if (disabled !== -2)
        fresh.set(
          id,
          disabled > 0 ? { cooldownUntil: 0, disabled: true, disabledUntil: now + disabled } : { cooldownUntil: 0, disabled: true },
        );
      else if (cooling > 0) fresh.set(id, { cooldownUntil: now + cooling, disabled: false });
    }
    for (const id of new Set([...this.view.keys(), ...fresh.keys()])) {
      if ((this.lastWrite.get(id) ?? 0) > written || (this.lastHeard.get(id) ?? 0) > heard || this.pending.has(id)) continue;
      const state = fresh.get(id);
      if (state) this.view.set(id, state);
      else this.view.delete(id);
    }
    return true;
  }

  /** Logged once per outage: again only after a catch-up succeeded in between. Codes only, never a key. */
  private outage(error?: unknown): void {
    if (this.closed || this.down) return;
    this.down = true;
    this.probe = setInterval(
      () => void (this.subscribed ? this.catchUp() : this.subscriber.status === 'ready' && this.subscribe()),
      1000,
    ).unref();
    const code = (error as { code?: unknown } | undefined)?.code;
    this.logger?.warn(
      `[express-key-failover] RedisStateStore: Redis is unreachable${typeof code === 'string' ? ` (${code})` : ''}; ` +
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

/** A Map that counts its writes, so that the pool can tell when its cached view of the head is stale. */
class ChangeCountingMap<K, V> extends Map<K, V> {
  changes = 0;

  override set(key: K, value: V): this {
    this.changes++;
    return super.set(key, value);
  }

  override delete(key: K): boolean {
    this.changes++;
    return super.delete(key);
  }

  override clear(): void {
    this.changes++;
    super.clear();
  }
}
