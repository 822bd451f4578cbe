-- Publishes one message, atomically: the topic's epoch (created if missing), the next
-- sequence, the message appended to the history (trimmed to retention) and sent on the
-- topic's channel with its position.
--
-- KEYS[1] meta hash (e: epoch, s: last sequence), KEYS[2] history stream
-- ARGV[1] data (JSON), ARGV[2] retention_messages, ARGV[3] retention_age in ms (0: none),
-- ARGV[4] meta TTL in ms (0: none), ARGV[5] channel, ARGV[6] PUBLISH or SPUBLISH
-- Returns {epoch, sequence, time in ms}.
local meta, history = KEYS[1], KEYS[2]
local data, max_len, max_age = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local meta_ttl = tonumber(ARGV[4])

local seconds, micros = redis_now()
local now = now_ms(seconds, micros)
local epoch = epoch_of(meta, history, seconds, micros, meta_ttl)
local seq = redis.call('HINCRBY', meta, 's', 1)
if max_len > 0 then
  redis.call('XADD', history, 'MAXLEN', max_len, seq .. '-0', 'd', data, 't', now)
  trim_expired(history, now, max_age)
  if max_age > 0 then
    redis.call('PEXPIRE', history, max_age)
  end
end
redis.call(ARGV[6], ARGV[5], epoch .. ':' .. seq .. ':' .. now .. ':' .. data)
return {epoch, seq, now}
