-- What an operator sees of a topic, without creating or trimming anything: its epoch, the
-- first and last retained sequences, the last `recent` retained messages, how many are
-- retained, and Redis's estimate of the memory the history takes.
--
-- KEYS[1] meta hash, KEYS[2] history stream; ARGV[1] how many recent messages
-- Returns {} for a topic with no epoch, else
-- {epoch, last, first, {{id, {'d', data, 't', time}}, ...newest first}, count, bytes}.
local meta, history = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  return {}
end
local count = redis.call('XLEN', history)
if count == 0 then
  return {epoch, 0, 0, {}, 0, 0}
end
local head = redis.call('XRANGE', history, '-', '+', 'COUNT', 1)
local tail = redis.call('XREVRANGE', history, '+', '-', 'COUNT', math.max(1, tonumber(ARGV[1])))
local first = tonumber(string.match(head[1][1], '^(%d+)'))
local last = tonumber(string.match(tail[1][1], '^(%d+)'))
local recent = {}
if tonumber(ARGV[1]) > 0 then
  recent = tail
end
local bytes = redis.call('MEMORY', 'USAGE', history) or 0
return {epoch, last, first, recent, count, bytes}
