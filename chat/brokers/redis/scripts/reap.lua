-- Reap a node that is still dead (or this node, leaving: ARGV[4] = '1'): its
-- presence and sessions leave the shared counts.
-- KEYS[1] the node list   KEYS[2] the cluster's sessions per user
-- KEYS[3] sessions per node   KEYS[4] the node's presence share   KEYS[5] its claims
-- KEYS[6..] the presence hash of each room in its share (read just before)
-- ARGV[1] the node   ARGV[2] SEP   ARGV[3] seconds a node may be silent
-- ARGV[4] '1' when the node leaves   ARGV[5..] the rooms of KEYS[6..], in order
-- Returns the room, user pairs whose presence emptied (for presence leave events),
-- or nil, changing nothing, when the share holds a room not in KEYS (it changed
-- since it was read: the caller reads it again).
local node = ARGV[1]
if ARGV[4] ~= '1' then
  local score = redis.call('ZSCORE', KEYS[1], node)
  local now = redis.call('TIME')
  local cutoff = tonumber(now[1]) + tonumber(now[2]) / 1000000 - tonumber(ARGV[3])
  if not score or tonumber(score) >= cutoff then return {} end
end
local room_keys = {}
for i = 5, #ARGV do room_keys[ARGV[i]] = KEYS[i + 1] end
local fields = redis.call('HGETALL', KEYS[4])
for i = 1, #fields, 2 do
  local sep = string.find(fields[i], ARGV[2], 1, true)
  if sep and not room_keys[string.sub(fields[i], 1, sep - 1)] then return nil end
end
local left = {}
for i = 1, #fields, 2 do
  local sep = string.find(fields[i], ARGV[2], 1, true)
  if sep then
    local room = string.sub(fields[i], 1, sep - 1)
    local key = room_keys[room]
    local user = string.sub(fields[i], sep + 1)
    local before = tonumber(redis.call('HGET', key, user) or '0')
    if redis.call('HINCRBY', key, user, -tonumber(fields[i + 1])) <= 0 then
      redis.call('HDEL', key, user)
      if before > 0 then
        table.insert(left, room)
        table.insert(left, user)
      end
    end
  end
end
fields = redis.call('HGETALL', KEYS[5])
for i = 1, #fields, 2 do
  if redis.call('HINCRBY', KEYS[2], fields[i], -tonumber(fields[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[2], fields[i])
  end
end
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('HDEL', KEYS[3], node)
redis.call('ZREM', KEYS[1], node)
return left
