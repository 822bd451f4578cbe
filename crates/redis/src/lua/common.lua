-- Shared by every script: the time, epochs, and trimming history by age.

-- Redis's own clock, so that every node agrees: {seconds, microseconds} as strings.
local function redis_now()
  local now = redis.call('TIME')
  return now[1], now[2]
end

-- Milliseconds since the Unix epoch.
local function now_ms(seconds, micros)
  return tonumber(seconds) * 1000 + math.floor(tonumber(micros) / 1000)
end

-- A new epoch: microseconds since the Unix epoch, built as text, since Lua's numbers would
-- print it in exponent form.
local function new_epoch(seconds, micros)
  return seconds .. string.rep('0', 6 - #micros) .. micros
end

-- Drops retained messages older than max_age_ms from the front of the history, a bounded
-- number at a time so that no call takes long. Most calls find the oldest message still young
-- and look at that one alone.
local function trim_expired(history, now, max_age_ms)
  if max_age_ms <= 0 then
    return
  end
  local first = redis.call('XRANGE', history, '-', '+', 'COUNT', 1)
  if #first == 0 or tonumber(first[1][2][4]) + max_age_ms >= now then
    return
  end
  local oldest = redis.call('XRANGE', history, '-', '+', 'COUNT', 64)
  for _, entry in ipairs(oldest) do
    if tonumber(entry[2][4]) + max_age_ms >= now then
      redis.call('XTRIM', history, 'MINID', entry[1])
      return
    end
  end
  if #oldest > 0 then
    local last = string.match(oldest[#oldest][1], '^(%d+)')
    redis.call('XTRIM', history, 'MINID', (tonumber(last) + 1) .. '-0')
  end
end

-- The topic's epoch, creating it (and dropping any history of an earlier one) if it has none.
local function epoch_of(meta, history, seconds, micros, meta_ttl_ms)
  local epoch = redis.call('HGET', meta, 'e')
  if not epoch then
    epoch = new_epoch(seconds, micros)
    redis.call('DEL', history)
    redis.call('HSET', meta, 'e', epoch, 's', 0)
  end
  if meta_ttl_ms > 0 then
    redis.call('PEXPIRE', meta, meta_ttl_ms)
  end
  return epoch
end
