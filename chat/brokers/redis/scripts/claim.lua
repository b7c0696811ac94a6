-- Count one more session of a user unless it has its cap already.
-- KEYS[1] the cluster's sessions per user   KEYS[2] this node's share
-- ARGV[1] the user   ARGV[2] the cap (0: none)
-- Returns 1 when counted.
local count = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local cap = tonumber(ARGV[2])
if cap > 0 and count >= cap then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
