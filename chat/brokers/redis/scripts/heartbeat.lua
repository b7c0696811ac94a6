-- Say this node is alive (Redis time) with its session count, and keep the seq
-- and history of its rooms from expiring while it has members there.
-- KEYS[1] the node list (sorted set by last beat)   KEYS[2] sessions per node (hash)
-- KEYS[3..] each room's meta and stream
-- ARGV[1] this node   ARGV[2] its session count   ARGV[3] the rooms' TTL (ms)
-- Returns 1 when the node was not in the list (new, or reaped meanwhile).
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
local added = redis.call('ZADD', KEYS[1], seconds, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for i = 3, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
return added
