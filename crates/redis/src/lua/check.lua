-- Where a topic stands, without creating anything: its epoch and last sequence (nil when it
-- has none), refreshing its TTL while this node has subscribers to it.
--
-- KEYS[1] meta hash, ARGV[1] meta TTL in ms (0: none)
local meta = KEYS[1]
local position = redis.call('HMGET', meta, 'e', 's')
if position[1] and tonumber(ARGV[1]) > 0 then
  redis.call('PEXPIRE', meta, ARGV[1])
end
return position
