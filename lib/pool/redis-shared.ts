/**
 * What RedisStateStore shares besides key states (issue 21): the group each
 * key was learned to belong to, the one probe lease across replicas after a
 * cooldown ends, the "healthy again" that ends a probe everywhere, and which
 * key created each upstream object (affinity).
 *
 * In Redis (P = prefix), state ids and upstream object ids only, never a key value:
 *   P groups         hash: state id -> group name; HSETNX, so that the first group learned stays everywhere.
 *   P probe:<entry>  the lease of one probe (the holder's origin), SET NX with a PX expiry: a probe that
 *                    never answers holds the key out for that long at most.
 *   P objects        hash: object id -> owner state id; P objects:ends, a sorted set of the same ids by
 *                    their end (Redis time), bounded by `maxObjects`, the soonest to end going first.
 *   channel P events {op: 'group' | 'healthy' | 'object', ...} as each happens.
 *
 * Like the rest of the store: answers come from the local view; Redis is written in the background,
 * failures are an outage (fail open), and a catch-up replays what this replica learned and reads back
 * what the others did. A lease is the only thing a request waits for (one round trip, bounded by
 * operationTimeoutMs, and only for the one request that is about to probe).
 */
import type { Redis } from 'ioredis';
import type { MemoryKeyStateStore } from './memory-store.js';

export interface SharedHost {
  readonly client: Redis;
  readonly prefix: string;
  readonly channel: string;
  /** This replica's id in published events. */
  readonly origin: string;
  readonly view: MemoryKeyStateStore;
  readonly maxObjects: number;
  now(): number;
  ready(): boolean;
  timed<T>(promise: Promise<T>): Promise<T>;
  outage(error: unknown): void;
}

interface SharedScripts {
  ekfSharedGroup(groups: string, id: string, group: string, channel: string, from: string): Promise<string>;
  ekfSharedLease(lease: string, from: string, ms: number): Promise<number>;
  ekfSharedUnlease(lease: string, from: string): Promise<number>;
  ekfSharedObject(
    objects: string,
    ends: string,
    object: string,
    id: string,
    ms: number,
    max: number,
    channel: string,
    from: string,
  ): Promise<number>;
  ekfSharedRead(groups: string, objects: string, ends: string): Promise<(string | number)[]>;
}

// KEYS: 1 groups. ARGV: 1 id, 2 group, 3 channel, 4 from. Returns the group that holds (the first learned).
const GROUP_LUA = `
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('PUBLISH', ARGV[3], cjson.encode({ op = 'group', id = ARGV[1], group = ARGV[2], from = ARGV[4] }))
  return ARGV[2]
end
return redis.call('HGET', KEYS[1], ARGV[1])`;

// KEYS: 1 the lease. ARGV: 1 from, 2 ms. 0: taken (or already ours); else the ms left on another's.
const LEASE_LUA = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 0 end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then return 1 end
return left`;

// KEYS: 1 the lease. ARGV: 1 from. Gives back a lease only when it is ours.
const UNLEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

// KEYS: 1 objects (hash), 2 ends (zset). ARGV: 1 object, 2 owner, 3 ms, 4 max, 5 channel, 6 from.
const OBJECT_LUA = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 64)) do
  redis.call('HDEL', KEYS[1], old); redis.call('ZREM', KEYS[2], old)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #popped, 2 do redis.call('HDEL', KEYS[1], popped[i]) end
end
redis.call('PUBLISH', ARGV[5], cjson.encode({ op = 'object', object = ARGV[1], id = ARGV[2], ms = tonumber(ARGV[3]), from = ARGV[6] }))
return 1`;

// KEYS: 1 groups, 2 objects, 3 ends. Returns [n, (id, group) x n, (object, owner, ms left)...].
const READ_LUA = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local groups = redis.call('HGETALL', KEYS[1])
local out = { #groups / 2 }
for i = 1, #groups do out[#out + 1] = groups[i] end
local live = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  local owner = redis.call('HGET', KEYS[2], live[i])
  if owner then out[#out + 1] = live[i]; out[#out + 1] = owner; out[#out + 1] = tonumber(live[i + 1]) - now end
end
return out`;

export function defineSharedCommands(client: Redis): void {
  if (typeof (client as unknown as Partial<SharedScripts>).ekfSharedGroup === 'function') return;
  client.defineCommand('ekfSharedGroup', { numberOfKeys: 1, lua: GROUP_LUA });
  client.defineCommand('ekfSharedLease', { numberOfKeys: 1, lua: LEASE_LUA });
  client.defineCommand('ekfSharedUnlease', { numberOfKeys: 1, lua: UNLEASE_LUA });
  client.defineCommand('ekfSharedObject', { numberOfKeys: 2, lua: OBJECT_LUA });
  client.defineCommand('ekfSharedRead', { numberOfKeys: 3, lua: READ_LUA });
}

export class SharedState {
  constructor(private readonly host: SharedHost) {}

  private get scripts(): SharedScripts {
    return this.host.client as unknown as SharedScripts;
  }

  /** The Redis key of a probe lease: a state id, or a state id and its scope (as probes.ts names them). */
  private lease(entry: string): string {
    return `${this.host.prefix}probe:${entry.startsWith('\u0000') ? `s:${entry.slice(1)}` : `k:${entry}`}`;
  }

  learnGroup(id: string, group: string): boolean {
    if (!this.host.view.learnGroup(id, group)) return false;
    this.send(async () => {
      const held = await this.host.timed(this.scripts.ekfSharedGroup(this.key('groups'), id, group, this.host.channel, this.host.origin));
      if (typeof held === 'string' && held !== group) this.host.view.putGroup(id, held); // another replica learned first
    });
    return true;
  }

  /** Takes the lease on probing `entry` across replicas: 0 when this replica holds it, else the ms left on another's. */
  async leaseProbe(entry: string, ms: number): Promise<number> {
    if (!this.host.ready()) return 0; // down: this process's lease is all there is (fail open)
    try {
      return await this.host.timed(this.scripts.ekfSharedLease(this.lease(entry), this.host.origin, ms));
    } catch (error) {
      this.host.outage(error);
      return 0;
    }
  }

  releaseProbe(entry: string): void {
    this.send(() => this.host.timed(this.scripts.ekfSharedUnlease(this.lease(entry), this.host.origin)));
  }

  markHealthy(id: string, scope: string | undefined): void {
    this.host.view.markHealthy(id, scope);
    const message = JSON.stringify({ op: 'healthy', id, scope: scope ?? '', from: this.host.origin });
    this.send(() => this.host.timed(this.host.client.publish(this.host.channel, message)));
  }

  rememberObject(object: string, id: string, until: number): void {
    this.host.view.rememberObject(object, id, until);
    const ms = Math.ceil(until - this.host.now());
    if (ms <= 0) return;
    this.send(() =>
      this.host.timed(
        this.scripts.ekfSharedObject(
          this.key('objects'),
          this.key('objects:ends'),
          object,
          id,
          ms,
          this.host.maxObjects,
          this.host.channel,
          this.host.origin,
        ),
      ),
    );
  }

  /** An event from another replica; false when it is not one of these. */
  receive(event: Record<string, unknown>): boolean {
    const { view } = this.host;
    const { op, id } = event;
    if (typeof id !== 'string') return false;
    if (op === 'group' && typeof event['group'] === 'string') view.putGroup(id, event['group']);
    else if (op === 'healthy')
      view.markHealthy(id, typeof event['scope'] === 'string' && event['scope'] !== '' ? event['scope'] : undefined);
    else if (op === 'object' && typeof event['object'] === 'string' && typeof event['ms'] === 'number') {
      view.rememberObject(event['object'], id, this.host.now() + event['ms']);
    } else return false;
    return true;
  }

  /** After an outage: Redis gets the groups this replica learned (the first learned still wins). */
  async replay(): Promise<void> {
    const { view, channel, origin } = this.host;
    await Promise.all(
      [...view.groupEntries()].map(async ([id, group]) => {
        const held = await this.host.timed(this.scripts.ekfSharedGroup(this.key('groups'), id, group, channel, origin));
        if (typeof held === 'string' && held !== group) view.putGroup(id, held);
      }),
    );
  }

  /** Reads back the groups and the objects every replica learned. */
  async resync(): Promise<void> {
    const reply = await this.host.timed(this.scripts.ekfSharedRead(this.key('groups'), this.key('objects'), this.key('objects:ends')));
    const { view } = this.host;
    const now = this.host.now();
    const groups = Number(reply[0]);
    let i = 1;
    for (let n = 0; n < groups; n++, i += 2) view.putGroup(String(reply[i]), String(reply[i + 1]));
    for (; i + 2 < reply.length; i += 3) {
      view.rememberObject(String(reply[i]), String(reply[i + 1]), now + Number(reply[i + 2]));
    }
  }

  private key(name: string): string {
    return `${this.host.prefix}${name}`;
  }

  /** A write in the background: sent while connected; a failure is an outage (the catch-up replays groups). */
  private send(write: () => Promise<unknown>): void {
    if (!this.host.ready()) return;
    write().catch((error: unknown) => this.host.outage(error));
  }
}
