-- A room's latest seq and epoch (starting a run if it has none), Redis time in
-- ms, and with a since the newest (seq - since) stream entries as id, body
-- pairs, newest first.
-- KEYS[1] the room's meta hash   KEYS[2] the room's stream
-- ARGV[1] a fresh epoch   ARGV[2] the room's TTL (ms)   ARGV[3] since, or ''
-- ARGV[4] the Redis run id
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local now = redis.call('TIME')
local entries = {}
if ARGV[3] ~= '' then
  local missing = seq - tonumber(ARGV[3])
  if missing > 0 then
    for _, entry in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', missing)) do
      table.insert(entries, entry[1])
      table.insert(entries, entry[2][2])
    end
  end
end
return {seq, epoch .. '.' .. ARGV[4], now[1] * 1000 + math.floor(now[2] / 1000), entries}
