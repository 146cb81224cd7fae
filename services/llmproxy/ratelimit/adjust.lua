-- Corrections of counted hits: a token reservation reconciled with the actual usage, or the
-- hits of a request that another descriptor refused given back. Each correction lands in the
-- window the original hits went into, so it expires with them.
-- ARGV[1]: the calling instance's member prefix. ARGV[2]: the corrections, five words each
-- (as take.lua's checks): algorithm, window ms, delta (may be negative), the original hits'
-- time in ms, member id (log; "-" for counters).
-- KEYS: as take.lua. Returns the number of corrections applied; one whose window has passed,
-- or that would take back hits from a counter that no longer exists, is skipped.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = ARGV[1]
local applied = 0
local k = 1
local words = string.gmatch(ARGV[2], '%S+')
for algorithm in words do
  local window = tonumber(words())
  local delta = tonumber(words())
  local at = math.min(tonumber(words()), now)
  local id = words()
  if algorithm == 'c' then
    local key = KEYS[k]
    k = k + 1
    local idx = math.floor(at / window)
    if delta ~= 0 and idx >= math.floor(now / window) - 1
        and (delta > 0 or redis.call('HEXISTS', key, idx) == 1) then
      redis.call('HINCRBY', key, idx, delta)
      redis.call('PEXPIRE', key, window * 2)
      applied = applied + 1
    end
  else
    local zkey = KEYS[k]
    local skey = KEYS[k + 1]
    k = k + 2
    if delta ~= 0 and at > now - window
        and (delta > 0 or redis.call('EXISTS', zkey) == 1) then
      redis.call('ZADD', zkey, at, prefix .. id .. ':' .. delta)
      redis.call('INCRBY', skey, delta)
      redis.call('PEXPIRE', zkey, window)
      redis.call('PEXPIRE', skey, window)
      applied = applied + 1
    end
  end
end
return applied
