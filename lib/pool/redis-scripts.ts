/**
 * The two Lua scripts of RedisStateStore: one atomic write (with its PUBLISH),
 * one resync read (with the epoch it ran under).
 *
 * Every write carries a stamp: when the mark was made, in Redis time as the
 * writing replica estimates it (its clock plus the offset to Redis TIME it last
 * measured). An enable leaves its stamp behind (`enabled:<id>`, for a day), so
 * that a replica replaying an older state after an outage cannot undo it; and
 * an enable older than the disable it meets does not undo that disable.
 */

import type { KeyState } from './store.js';

export type Op = 'cooldown' | 'scoped' | 'disable' | 'enable';
/** [state, remaining ms (-1: no expiry), disabled reason or '', Redis time (ms)], as Redis returns them. */
export type Reply = [state: string, ms: number | string, reason: string, redisNow: number | string];

export interface WriteArgs {
  op: Op;
  id: string;
  ms: number;
  stamp: number;
  scope: string;
  reason: string;
}

export interface Scripts {
  ekfKeyStateWrite(...args: (string | number)[]): Promise<Reply>;
  /**
   * [epoch, redisNow, n, (id, cooldown PTTL, disabled PTTL, reason, stamp) x n, (member, remaining ms)...]:
   * the epoch (set first if Redis has none) of the server that read the states.
   */
  ekfKeyStateResync(idsKey: string, epochKey: string, scopedKey: string, keyPrefix: string, newEpoch: string): Promise<(string | number)[]>;
}

/** How long an enable outranks older marks replayed after it. */
export const ENABLE_STAMP_TTL_MS = 24 * 3600 * 1000;

/** The KEYS of a write for state id `id`, in the order WRITE_LUA reads them. */
export function writeKeys(prefix: string, id: string): string[] {
  return [
    `${prefix}cooldown:${id}`,
    `${prefix}disabled:${id}`,
    `${prefix}enabled:${id}`,
    `${prefix}ids`,
    `${prefix}scoped`,
    `${prefix}scoped:${id}`,
  ];
}

/** A resync's answer, placed on this replica's clock (`now`). */
export function readResync(
  reply: (string | number)[],
  now: number,
): { redisNow: number; states: Map<string, KeyState>; scoped: { id: string; scope: string; until: number }[] } {
  const states = new Map<string, KeyState>();
  const scoped: { id: string; scope: string; until: number }[] = [];
  const count = Number(reply[2]);
  let i = 3;
  for (let n = 0; n < count; n++, i += 5) {
    const [id, cooling, disabled, reason, stamp] = [
      String(reply[i]),
      Number(reply[i + 1]),
      Number(reply[i + 2]),
      String(reply[i + 3]),
      Number(reply[i + 4]),
    ];
    if (disabled !== -2) {
      const state: KeyState = { cooldownUntil: 0, disabled: true, stamp };
      if (disabled > 0) state.disabledUntil = now + disabled;
      if (reason === 'quota') state.disabledReason = 'quota';
      states.set(id, state);
    } else if (cooling > 0) states.set(id, { cooldownUntil: now + cooling, disabled: false, stamp });
  }
  for (; i + 1 < reply.length; i += 2) {
    const member = splitScopedMember(String(reply[i]));
    if (member) scoped.push({ ...member, until: now + Number(reply[i + 1]) });
  }
  return { redisNow: Number(reply[1]), states, scoped };
}

/** The member of the scoped set for (id, scope): the id's length first, so that any id and scope split back apart. */
export function scopedMember(id: string, scope: string): string {
  return `${id.length}:${id}${scope}`;
}

export function splitScopedMember(member: string): { id: string; scope: string } | undefined {
  const colon = member.indexOf(':');
  const length = Number(member.slice(0, colon));
  if (colon < 1 || !Number.isSafeInteger(length) || member.length < colon + 1 + length) return undefined;
  return { id: member.slice(colon + 1, colon + 1 + length), scope: member.slice(colon + 1 + length) };
}

// KEYS: 1 cooldown:<id>, 2 disabled:<id>, 3 enabled:<id>, 4 ids, 5 scoped (zset), 6 scoped:<id> (hash)
// ARGV: 1 op, 2 id, 3 ms, 4 stamp, 5 scope, 6 reason, 7 channel, 8 from, 9 max scoped, 10 key prefix (for evictions)
export const WRITE_LUA = `
local op, id, ms, stamp, scope, reason = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local enabledAt = tonumber(redis.call('GET', KEYS[3]) or '-1')
local function disabled()
  local value = redis.call('GET', KEYS[2])
  if not value then return nil end
  local bar = string.find(value, '|', 1, true)
  if not bar then return 0, 'auth', redis.call('PTTL', KEYS[2]) end
  return tonumber(string.sub(value, 1, bar - 1)) or 0, string.sub(value, bar + 1), redis.call('PTTL', KEYS[2])
end
local member = #id .. ':' .. id .. scope
local function current()
  local dstamp, dreason, dleft = disabled()
  if dstamp then return { 'disabled', dleft, dreason, now } end
  if op == 'scoped' then
    local score = redis.call('ZSCORE', KEYS[5], member)
    if score and tonumber(score) > now then return { 'scoped', tonumber(score) - now, '', now } end
    return { 'scoped', 0, '', now }
  end
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then return { 'cooldown', left, '', now } end
  return { 'enabled', 0, '', now }
end
local function publish(state, left, why)
  redis.call('PUBLISH', ARGV[7], cjson.encode({ op = state, id = id, ms = left, scope = scope, reason = why, stamp = stamp, from = ARGV[8] }))
end
local function dropScopes(who)
  local hash = ARGV[10] .. 'scoped:' .. who
  for _, s in ipairs(redis.call('HKEYS', hash)) do redis.call('ZREM', KEYS[5], #who .. ':' .. who .. s) end
  redis.call('DEL', hash)
end
if op == 'enable' then
  local dstamp = disabled()
  if dstamp and dstamp > stamp then return current() end
  redis.call('DEL', KEYS[1], KEYS[2])
  dropScopes(id)
  if stamp > enabledAt then redis.call('SET', KEYS[3], string.format('%.0f', stamp), 'PX', ${ENABLE_STAMP_TTL_MS}) end
  redis.call('SREM', KEYS[4], id)
  publish('enabled', 0, '')
  return { 'enabled', 0, '', now }
end
-- A mark older than the latest enable, or a cooldown on a disabled key, changes nothing.
if stamp <= enabledAt then return current() end
local dstamp = disabled()
if op == 'disable' then
  if dstamp and dstamp > stamp then return current() end
  redis.call('DEL', KEYS[1])
  local value = string.format('%.0f', stamp) .. '|' .. reason
  if ms > 0 then redis.call('SET', KEYS[2], value, 'PX', ms) else redis.call('SET', KEYS[2], value) end
  redis.call('SADD', KEYS[4], id)
  publish('disabled', ms > 0 and ms or -1, reason)
  return { 'disabled', ms > 0 and ms or -1, reason, now }
end
if dstamp then return current() end
if op == 'cooldown' then
  local left = redis.call('PTTL', KEYS[1])
  if left >= ms then return { 'cooldown', left, '', now } end
  redis.call('SET', KEYS[1], string.format('%.0f', stamp), 'PX', ms)
  redis.call('SADD', KEYS[4], id)
  publish('cooldown', ms, '')
  return { 'cooldown', ms, '', now }
end
-- op == 'scoped': one set for every key's scoped cooldowns, bounded; the soonest to end go first.
local deadline = now + ms
local score = redis.call('ZSCORE', KEYS[5], member)
if score and tonumber(score) >= deadline then return { 'scoped', tonumber(score) - now, '', now } end
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 64)) do
  local bar = string.find(old, ':', 1, true)
  local length = tonumber(string.sub(old, 1, bar - 1))
  redis.call('HDEL', ARGV[10] .. 'scoped:' .. string.sub(old, bar + 1, bar + length), string.sub(old, bar + 1 + length))
  redis.call('ZREM', KEYS[5], old)
end
redis.call('ZADD', KEYS[5], deadline, member)
redis.call('HSET', KEYS[6], scope, deadline)
if redis.call('PTTL', KEYS[6]) < ms then redis.call('PEXPIRE', KEYS[6], ms) end
local over = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[9])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[5], over)
  for i = 1, #popped, 2 do
    local old = popped[i]
    local bar = string.find(old, ':', 1, true)
    local length = tonumber(string.sub(old, 1, bar - 1))
    redis.call('HDEL', ARGV[10] .. 'scoped:' .. string.sub(old, bar + 1, bar + length), string.sub(old, bar + 1 + length))
  end
end
redis.call('SADD', KEYS[4], id)
publish('scoped', ms, '')
return { 'scoped', ms, '', now }`;

// KEYS: 1 ids, 2 epoch, 3 scoped (zset). ARGV: 1 key prefix, 2 a new epoch
export const RESYNC_LUA = `
redis.call('SET', KEYS[2], ARGV[2], 'NX')
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out = { redis.call('GET', KEYS[2]), now, 0 }
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local cooling = redis.call('PTTL', ARGV[1] .. 'cooldown:' .. id)
  local disabled = redis.call('PTTL', ARGV[1] .. 'disabled:' .. id)
  local reason, stamp = '', 0
  if disabled ~= -2 then
    local value = redis.call('GET', ARGV[1] .. 'disabled:' .. id) or ''
    local bar = string.find(value, '|', 1, true)
    if bar then reason = string.sub(value, bar + 1); stamp = tonumber(string.sub(value, 1, bar - 1)) or 0 end
  elseif cooling ~= -2 then
    stamp = tonumber(redis.call('GET', ARGV[1] .. 'cooldown:' .. id) or '0') or 0
  end
  if cooling == -2 and disabled == -2 and redis.call('EXISTS', ARGV[1] .. 'scoped:' .. id) == 0 then redis.call('SREM', KEYS[1], id)
  else
    n = n + 1
    out[#out + 1] = id; out[#out + 1] = cooling; out[#out + 1] = disabled; out[#out + 1] = reason; out[#out + 1] = string.format('%.0f', stamp)
  end
end
out[3] = n
local scoped = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #scoped, 2 do
  out[#out + 1] = scoped[i]; out[#out + 1] = tonumber(scoped[i + 1]) - now
end
return out`;
