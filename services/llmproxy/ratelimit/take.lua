-- Sliding-window checks for a batch of descriptors, in one atomic step: each check counts its
-- hits only if they fit, so concurrent requests (from any instance) can never overshoot.
-- ARGV[1]: the calling instance's member prefix. ARGV[2]: the checks, five space-separated
-- words each: algorithm ("c" sliding counter, "l" sliding log), limit, window ms, hits (0:
-- only look), member id (log; "-" for counters). One string rather than five arguments a
-- check: the client's per-argument cost is what bounds the batch, Lua splits it in C.
-- KEYS: per check, the counter's hash ("c"), or the log's sorted set and its running sum ("l").
-- Returns the server time in ms, then per check: allowed (1/0), used, remaining, reset ms
-- (allowed: until the window moves on; refused: until the hits would fit).
-- Arguments to redis.call are passed as strings: a Lua number is formatted with %.14g on the
-- way, which showed as a tenth of Redis's CPU in perf; '%d' and the words themselves are cheap.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_s = string.format('%d', now)
local prefix = ARGV[1]
local out = {now}
local k = 1

-- A log member is "<id>:<hits>", so expiring members can be subtracted from the sum.
local function weight(member)
  return tonumber(string.match(member, ':(-?%d+)$'))
end

local words = string.gmatch(ARGV[2], '%S+')
for algorithm in words do
  local limit = tonumber(words())
  local window_s = words()
  local hits_s = words()
  local window = tonumber(window_s)
  local hits = tonumber(hits_s)
  local id = words()
  local need = hits > 0 and hits or 1
  local allowed = 0
  local used
  local reset = window
  if algorithm == 'c' then
    -- Counters of the current and previous fixed windows, in one hash (fields: window index);
    -- the previous one counts for the part of it the sliding window still covers.
    local key = KEYS[k]
    k = k + 1
    local idx = math.floor(now / window)
    local idx_s = string.format('%d', idx)
    local v = redis.call('HMGET', key, idx_s, string.format('%d', idx - 1))
    local curr = tonumber(v[1]) or 0
    local prev = tonumber(v[2]) or 0
    local elapsed = now - idx * window
    local est = prev * (window - elapsed) / window + curr
    if est + need <= limit then
      allowed = 1
      if hits > 0 then
        redis.call('HINCRBY', key, idx_s, hits_s)
        if not v[1] then
          -- A new window: drop the ones no longer needed, and keep the hash until this window
          -- has served as the previous one (created at or after idx * window, it lives to at
          -- least (idx + 2) * window). Later hits of the window need not touch the TTL again.
          redis.call('HDEL', key, string.format('%d', idx - 2), string.format('%d', idx - 3))
          redis.call('PEXPIRE', key, string.format('%d', window * 2))
        end
        est = est + hits
      end
      reset = window - elapsed
    elseif need <= limit then
      if curr + need > limit then
        -- Wait for the next window, then for this one's count to decay enough.
        reset = window - elapsed + math.ceil(window * (1 - (limit - need) / curr))
      else
        reset = math.ceil(window * (1 - (limit - curr - need) / prev)) - elapsed
      end
    end
    used = math.ceil(est)
  else
    -- Every hit in a sorted set scored by time; the sum key holds the weights in the window.
    local zkey = KEYS[k]
    local skey = KEYS[k + 1]
    k = k + 2
    -- The sum is read once and written once: with the hit and its TTL when one is counted,
    -- else (TTL kept) only if expiring members changed it.
    used = tonumber(redis.call('GET', skey) or '0')
    local changed = false
    local old = redis.call(
      'ZRANGEBYSCORE', zkey, '-inf', string.format('%d', now - window), 'LIMIT', '0', '1000')
    if #old > 0 then
      for j = 1, #old do
        used = used - weight(old[j])
      end
      redis.call('ZREM', zkey, unpack(old))
      changed = true
    end
    if used + need <= limit then
      allowed = 1
      if hits > 0 then
        redis.call('ZADD', zkey, now_s, prefix .. id .. ':' .. hits_s)
        used = used + hits
        redis.call('SET', skey, string.format('%d', used), 'PX', window_s)
        redis.call('PEXPIRE', zkey, window_s)
        changed = false
      end
      local first = redis.call('ZRANGE', zkey, '0', '0', 'WITHSCORES')
      if first[2] then
        reset = tonumber(first[2]) + window - now
      end
    elseif need <= limit then
      -- Oldest first: when will enough weight have left the window?
      local excess = used + need - limit
      local entries = redis.call('ZRANGE', zkey, '0', '255', 'WITHSCORES')
      local freed = 0
      for j = 1, #entries, 2 do
        freed = freed + weight(entries[j])
        if freed >= excess then
          reset = tonumber(entries[j + 1]) + window - now
          break
        end
      end
    end
    if changed then
      redis.call('SET', skey, string.format('%d', used), 'KEEPTTL')
    end
  end
  out[#out + 1] = allowed
  out[#out + 1] = used
  out[#out + 1] = math.max(0, limit - used)
  out[#out + 1] = math.max(1, reset)
end
return out
