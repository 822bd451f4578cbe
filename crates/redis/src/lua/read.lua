-- Reads a topic: its epoch (created if missing, as a publish would), last sequence, first
-- retained sequence, and up to `count` retained messages after a sequence.
--
-- KEYS[1] meta hash, KEYS[2] history stream
-- ARGV[1] after this sequence, ARGV[2] count, ARGV[3] retention_age in ms (0: none),
-- ARGV[4] meta TTL in ms (0: none), ARGV[5] most bytes of data past the first message
-- Returns {epoch, last, first, {{id, {'d', data, 't', time}}, ...}}.
local meta, history = KEYS[1], KEYS[2]
local count, max_age = tonumber(ARGV[2]), tonumber(ARGV[3])

local seconds, micros = redis_now()
local epoch = epoch_of(meta, history, seconds, micros, tonumber(ARGV[4]))
local last = tonumber(redis.call('HGET', meta, 's'))
trim_expired(history, now_ms(seconds, micros), max_age)
local first = last + 1
local head = redis.call('XRANGE', history, '-', '+', 'COUNT', 1)
if #head > 0 then
  first = tonumber(string.match(head[1][1], '^(%d+)'))
end
local entries = {}
if count > 0 then
  -- The sequence as given: Lua would print a large number in exponent form.
  local range = redis.call('XRANGE', history, '(' .. ARGV[1] .. '-0', '+', 'COUNT', count)
  -- At most max_bytes of data past the first message, so that a reply stays small.
  local bytes, max_bytes = 0, tonumber(ARGV[5])
  for i, entry in ipairs(range) do
    bytes = bytes + #entry[2][2]
    if i > 1 and bytes > max_bytes then
      break
    end
    entries[i] = entry
  end
end
return {epoch, last, first, entries}
