/** The two Lua scripts of RedisStateStore: one atomic write (with its PUBLISH), one resync read (with the epoch it ran under). */

export type Op = 'cooldown' | 'disable' | 'enable';
export type Reply = [state: string, ms: number];
export interface Scripts {
  ekfKeyStateWrite(
    cooldownKey: string,
    disabledKey: string,
    idsKey: string,
    op: Op,
    id: string,
    ms: number,
    channel: string,
    from: string,
  ): Promise<Reply>;
  /** [epoch, id, cooldown PTTL, disabled PTTL, id, ...]: the epoch (set first if Redis has none) of the server that read the states. */
  ekfKeyStateResync(idsKey: string, epochKey: string, keyPrefix: string, newEpoch: string): Promise<(string | number)[]>;
}

export const WRITE_LUA = `
local op, id, ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local time = redis.call('TIME')
local deadline = string.format('%.0f', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + ms)
local state, left
if op == 'cooldown' then
  left = redis.call('PTTL', KEYS[2])
  if left ~= -2 then return { 'disabled', left } end
  left = redis.call('PTTL', KEYS[1])
  if left >= ms then return { 'cooldown', left } end
  redis.call('SET', KEYS[1], deadline, 'PX', ARGV[3])
  state, left = 'cooldown', ms
elseif op == 'disable' then
  redis.call('DEL', KEYS[1])
  if ms > 0 then redis.call('SET', KEYS[2], deadline, 'PX', ARGV[3]) else redis.call('SET', KEYS[2], '0') end
  state, left = 'disabled', ms > 0 and ms or -1
else
  redis.call('DEL', KEYS[1], KEYS[2])
  state, left = 'enabled', 0
end
if state == 'enabled' then redis.call('SREM', KEYS[3], id) else redis.call('SADD', KEYS[3], id) end
redis.call('PUBLISH', ARGV[4], cjson.encode({ op = state, id = id, ms = left, from = ARGV[5] }))
return { state, left }`;

export const RESYNC_LUA = `
redis.call('SET', KEYS[2], ARGV[2], 'NX')
local out = { redis.call('GET', KEYS[2]) }
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local cooling = redis.call('PTTL', ARGV[1] .. 'cooldown:' .. id)
  local disabled = redis.call('PTTL', ARGV[1] .. 'disabled:' .. id)
  if cooling == -2 and disabled == -2 then redis.call('SREM', KEYS[1], id)
  else out[#out + 1] = id; out[#out + 1] = cooling; out[#out + 1] = disabled end
end
return out`;
