-- One session less of a user in a room (if this node's share still counts it).
-- KEYS[1] the room's presence hash   KEYS[2] this node's presence hash
-- ARGV[1] the user   ARGV[2] the room SEP user field of this node's share
-- Returns 1 when that was the user's last session in the room.
local mine = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if mine <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
if mine < 0 then return 0 end
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if count <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
