-- One more session of a user in a room, counted in the room and in this node's share.
-- KEYS[1] the room's presence hash (user -> sessions)   KEYS[2] this node's presence hash
-- ARGV[1] the user   ARGV[2] the room SEP user field of this node's share
-- Returns {the user's sessions in the room, the room's users}.
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return {count, redis.call('HKEYS', KEYS[1])}
