-- Forgets a topic's history: the stream goes, and the topic goes on from a new epoch, so that
-- a position of the old one gets a reset everywhere.
--
-- KEYS[1] meta hash, KEYS[2] history stream; ARGV[1] meta TTL in ms (0: none)
-- Returns {} for a topic with no epoch (nothing to delete), else {new epoch}.
local meta, history = KEYS[1], KEYS[2]
if redis.call('EXISTS', meta) == 0 then
  return {}
end
local seconds, micros = redis_now()
local epoch = new_epoch(seconds, micros)
redis.call('DEL', history)
redis.call('HSET', meta, 'e', epoch, 's', 0)
if tonumber(ARGV[1]) > 0 then
  redis.call('PEXPIRE', meta, ARGV[1])
end
return {epoch}
