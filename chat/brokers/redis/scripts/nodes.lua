-- The live nodes with their session counts and last beats, and the dead ones.
-- KEYS[1] the node list   KEYS[2] sessions per node   ARGV[1] seconds a node may be silent
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) + tonumber(now[2]) / 1000000 - tonumber(ARGV[1])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], cutoff, '+inf', 'WITHSCORES')
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff)
local found = {}
for i = 1, #live, 2 do
  local sessions = redis.call('HGET', KEYS[2], live[i]) or '0'
  table.insert(found, {live[i], sessions, live[i + 1]})
end
return {found, dead}
