-- Publish a batch of messages, in order: each one's next seq in its room, its
-- stream entry and its sent-id record; then one PUBLISH per room: the room's
-- message alone, or a JSON array of its messages of the batch, in seq order.
-- KEYS: four per message: its room's meta hash (seq, epoch), its room's stream
-- (history), its user's sent ids (hash), their order (sorted set by time)
-- ARGV[1] history size (0: keep none)   ARGV[2] the rooms' TTL (ms)   ARGV[3] the Redis run id
-- ARGV[4] how long a sent id is remembered (ms)   ARGV[5] ids kept per user
-- then five per message: its JSON fields, without the opening brace; a fresh
-- epoch, used if its room has none; its room's channel; '' or the sent id's
-- field (room SEP id); the text's digest
-- Returns, per message, {seq, epoch, 0}, or {first seq, its epoch, 1} for a retry
-- of a sent id, or the error's text if Redis refused a command of that message
-- (the others go on, as they would one script call each).
local size, ttl, run = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local window, per_user = tonumber(ARGV[4]), tonumber(ARGV[5])
local channels, bodies = {}, {}
local now_ms

local function publish(k, a)
  local sent_at
  if ARGV[a + 3] ~= '' then
    if not now_ms then
      local now = redis.call('TIME')
      now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
    end
    sent_at = now_ms
    local found = redis.call('HGET', KEYS[k + 2], ARGV[a + 3])
    if found then
      local seq, epoch, digest, at = string.match(found, '^(%d+) (%S+) (%x+) (%d+)$')
      if digest == ARGV[a + 4] and tonumber(at) > sent_at - window then
        return {tonumber(seq), epoch, 1}
      end
    end
  end
  local epoch = redis.call('HGET', KEYS[k], 'epoch')
  if not epoch then
    epoch = ARGV[a + 1]
    redis.call('HSET', KEYS[k], 'epoch', epoch)
  end
  epoch = epoch .. '.' .. run
  local seq = redis.call('HINCRBY', KEYS[k], 'seq', 1)
  local body = '{"k":"m","seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. ARGV[a]
  if size > 0 then
    redis.call('XADD', KEYS[k + 1], 'MAXLEN', size, '*', 'p', body)
    redis.call('PEXPIRE', KEYS[k + 1], ttl)
  end
  redis.call('PEXPIRE', KEYS[k], ttl)
  local channel = ARGV[a + 2]
  local queued = bodies[channel]
  if not queued then
    queued = {}
    bodies[channel] = queued
    table.insert(channels, channel)
  end
  table.insert(queued, body)
  if sent_at then
    local field = ARGV[a + 3]
    redis.call('HSET', KEYS[k + 2], field, seq .. ' ' .. epoch .. ' ' .. ARGV[a + 4] .. ' ' .. sent_at)
    redis.call('ZADD', KEYS[k + 3], sent_at, field)
    local gone = redis.call('ZRANGEBYSCORE', KEYS[k + 3], '-inf', sent_at - window)
    local excess = redis.call('ZCARD', KEYS[k + 3]) - #gone - per_user
    if excess > 0 then
      local oldest = redis.call('ZRANGE', KEYS[k + 3], #gone, #gone + excess - 1)
      for _, old in ipairs(oldest) do table.insert(gone, old) end
    end
    if #gone > 0 then
      redis.call('HDEL', KEYS[k + 2], unpack(gone))
      redis.call('ZREM', KEYS[k + 3], unpack(gone))
    end
    redis.call('PEXPIRE', KEYS[k + 2], window)
    redis.call('PEXPIRE', KEYS[k + 3], window)
  end
  return {seq, epoch, 0}
end

local answers = {}
for i = 0, #KEYS / 4 - 1 do
  local ok, answer = pcall(publish, 4 * i + 1, 6 + 5 * i)
  if ok then
    answers[i + 1] = answer
  elseif type(answer) == 'table' and answer.err then
    answers[i + 1] = answer.err
  else
    answers[i + 1] = tostring(answer)
  end
end
for _, channel in ipairs(channels) do
  local queued = bodies[channel]
  if #queued == 1 then
    redis.call('PUBLISH', channel, queued[1])
  else
    redis.call('PUBLISH', channel, '[' .. table.concat(queued, ',') .. ']')
  end
end
return answers
