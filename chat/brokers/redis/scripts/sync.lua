-- Make this node's share match what it holds (after an outage, a reap, or a
-- Redis that restarted empty): apply the differences to the shared counts.
-- KEYS[1] the cluster's sessions per user   KEYS[2] this node's presence share
-- KEYS[3] its claims   KEYS[4..] the presence hash of each room of the share,
-- the one in Redis and the one wanted
-- ARGV[1] the wanted presence share (JSON: room SEP user -> sessions)
-- ARGV[2] the wanted claims (JSON: user -> sessions)   ARGV[3] SEP
-- ARGV[4..] the rooms of KEYS[4..], in order
-- Returns {joined pairs, left pairs} of presence that appeared or emptied.
local room_keys = {}
for i = 4, #ARGV do room_keys[ARGV[i]] = KEYS[i] end
local joined, left = {}, {}
local function apply(key, member, delta)
  local before = tonumber(redis.call('HGET', key, member) or '0')
  local after = redis.call('HINCRBY', key, member, delta)
  if after <= 0 then redis.call('HDEL', key, member) end
  return before, after
end
local function sync(mine, shared_of, wanted, track)
  local have = {}
  local fields = redis.call('HGETALL', mine)
  for i = 1, #fields, 2 do have[fields[i]] = tonumber(fields[i + 1]) end
  local deltas = {}
  for field, count in pairs(wanted) do deltas[field] = count - (have[field] or 0) end
  for field, count in pairs(have) do
    if wanted[field] == nil then deltas[field] = -count end
  end
  for field, delta in pairs(deltas) do
    if delta ~= 0 then
      local key, member, room = shared_of(field)
      if key then
        local before, after = apply(key, member, delta)
        if track and before <= 0 and after > 0 then
          table.insert(joined, room); table.insert(joined, member)
        elseif track and before > 0 and after <= 0 then
          table.insert(left, room); table.insert(left, member)
        end
      end
    end
  end
  redis.call('DEL', mine)
  for field, count in pairs(wanted) do
    if count > 0 then redis.call('HSET', mine, field, count) end
  end
end
sync(KEYS[2], function(field)
  local sep = string.find(field, ARGV[3], 1, true)
  if not sep then return nil end
  local room = string.sub(field, 1, sep - 1)
  return room_keys[room], string.sub(field, sep + 1), room
end, cjson.decode(ARGV[1]), true)
sync(KEYS[3], function(field)
  return KEYS[1], field, nil
end, cjson.decode(ARGV[2]), false)
return {joined, left}
