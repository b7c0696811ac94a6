-- Publish one message to a room: its next seq, its stream entry, its PUBLISH.
-- KEYS[1] the room's meta hash (seq, epoch)   KEYS[2] the room's stream (history)
-- KEYS[3] the user's sent ids (hash)          KEYS[4] their order (sorted set by time)
-- ARGV[1] the message's JSON fields, without the opening brace
-- ARGV[2] a fresh epoch, used if the room has none   ARGV[3] history size (0: keep none)
-- ARGV[4] the room's TTL (ms)   ARGV[5] the room's channel   ARGV[6] the Redis run id
-- ARGV[7] ''  or the sent id's field (room SEP id)   ARGV[8] the text's digest
-- ARGV[9] how long a sent id is remembered (ms)      ARGV[10] ids kept per user
-- Returns {seq, epoch, 0}, or {first seq, its epoch, 1} for a retry of a sent id.
local sent_at
if ARGV[7] ~= '' then
  local now = redis.call('TIME')
  sent_at = now[1] * 1000 + math.floor(now[2] / 1000)
  local found = redis.call('HGET', KEYS[3], ARGV[7])
  if found then
    local seq, epoch, digest, at = string.match(found, '^(%d+) (%S+) (%x+) (%d+)$')
    if digest == ARGV[8] and tonumber(at) > sent_at - tonumber(ARGV[9]) then
      return {tonumber(seq), epoch, 1}
    end
  end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
epoch = epoch .. '.' .. ARGV[6]
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local body = '{"k":"m","seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. ARGV[1]
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'p', body)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], body)
if sent_at then
  redis.call('HSET', KEYS[3], ARGV[7], seq .. ' ' .. epoch .. ' ' .. ARGV[8] .. ' ' .. sent_at)
  redis.call('ZADD', KEYS[4], sent_at, ARGV[7])
  local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', sent_at - tonumber(ARGV[9]))
  local excess = redis.call('ZCARD', KEYS[4]) - #gone - tonumber(ARGV[10])
  if excess > 0 then
    local oldest = redis.call('ZRANGE', KEYS[4], #gone, #gone + excess - 1)
    for _, field in ipairs(oldest) do table.insert(gone, field) end
  end
  if #gone > 0 then
    redis.call('HDEL', KEYS[3], unpack(gone))
    redis.call('ZREM', KEYS[4], unpack(gone))
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[9])
  redis.call('PEXPIRE', KEYS[4], ARGV[9])
end
return {seq, epoch, 0}
