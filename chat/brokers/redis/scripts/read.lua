-- Read a room's history without starting a run: its stored epoch ('' when it
-- has no run) and latest seq, Redis time in ms, and the newest (seq - since)
-- stream entries as id, body pairs, newest first.
-- KEYS[1] the room's meta hash   KEYS[2] the room's stream
-- ARGV[1] since
local stored = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
if not stored[1] then return {'', 0, now_ms, {}} end
local seq = tonumber(stored[2] or '0')
local entries = {}
local missing = seq - tonumber(ARGV[1])
if missing > 0 then
  for _, entry in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', missing)) do
    table.insert(entries, entry[1])
    table.insert(entries, entry[2][2])
  end
end
return {stored[1], seq, now_ms, entries}
