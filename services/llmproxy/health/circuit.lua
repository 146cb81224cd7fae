-- The circuit breaker of one provider, applied atomically: the same machine as circuit.py.
-- KEYS[1]: the circuit hash.
-- ARGV: now, slice_s, slices, consecutive_failures, error_rate, min_calls, open_s,
--       close_after, ttl_ms, window_s (as text, for the reason), then one outcome per argument:
--       ok, fail, pok or pfail (probes).
-- Returns the record and the transitions as JSON.
local key = KEYS[1]
local now = tonumber(ARGV[1])
local slice_s = tonumber(ARGV[2])
local slices = tonumber(ARGV[3])
local max_consecutive = tonumber(ARGV[4])
local error_rate = tonumber(ARGV[5])
local min_calls = tonumber(ARGV[6])
local open_s = tonumber(ARGV[7])
local close_after = tonumber(ARGV[8])
local ttl_ms = tonumber(ARGV[9])
local window_s = ARGV[10]

local fields = redis.call('HGETALL', key)
local h = {}
for i = 1, #fields, 2 do
  h[fields[i]] = fields[i + 1]
end
local state = h['state'] or 'closed'
local opened_at = tonumber(h['opened_at'] or '0')
local consecutive = tonumber(h['consecutive'] or '0')
local trials = tonumber(h['trials'] or '0')
local reason = h['reason'] or ''
local current = math.floor(now / slice_s)
local buckets = {}
local changed = false
for name, value in pairs(h) do
  if string.sub(name, 1, 2) == 'b:' then
    local index = tonumber(string.sub(name, 3))
    if index > current - slices and index <= current then
      local sep = string.find(value, ':', 1, true)
      buckets[index] = {tonumber(string.sub(value, 1, sep - 1)), tonumber(string.sub(value, sep + 1))}
    else
      changed = true
    end
  end
end

local transitions = {}
local function move(to, why)
  table.insert(transitions, {state, to, why})
  state = to
  reason = why
  changed = true
end

if state == 'open' and now >= opened_at + open_s then
  trials = 0
  -- %g prints numbers as Python's :g does (6 significant digits).
  move('half_open', 'open for ' .. string.format('%g', open_s) .. ' s: trial calls allowed')
end

for i = 11, #ARGV do
  local code = ARGV[i]
  local probe = string.sub(code, 1, 1) == 'p'
  local ok = code == 'ok' or code == 'pok'
  if state == 'closed' then
    if not probe then
      local bucket = buckets[current] or {0, 0}
      buckets[current] = {bucket[1] + 1, bucket[2] + (ok and 0 or 1)}
      changed = true
      if ok then consecutive = 0 else consecutive = consecutive + 1 end
      local in_window, failed = 0, 0
      for _, counts in pairs(buckets) do
        in_window = in_window + counts[1]
        failed = failed + counts[2]
      end
      if consecutive >= max_consecutive then
        opened_at = now
        move('open', consecutive .. ' failed calls in a row')
      elseif in_window >= min_calls and failed >= error_rate * in_window then
        opened_at = now
        move('open', failed .. ' of ' .. in_window .. ' calls failed in ' .. window_s .. ' s')
      end
    end
  elseif state == 'half_open' then
    changed = true
    if ok then
      trials = trials + 1
      if trials >= close_after then
        consecutive, trials, buckets = 0, 0, {}
        move('closed', close_after .. ' trials succeeded')
      end
    else
      opened_at, trials = now, 0
      if probe then move('open', 'a trial probe failed') else move('open', 'a trial call failed') end
    end
  end
end

if changed then
  redis.call('DEL', key)
  local args = {
    'state', state,
    'opened_at', string.format('%.17g', opened_at),
    'consecutive', consecutive,
    'trials', trials,
    'reason', reason,
  }
  for index, counts in pairs(buckets) do
    table.insert(args, 'b:' .. index)
    table.insert(args, counts[1] .. ':' .. counts[2])
  end
  redis.call('HSET', key, unpack(args))
  redis.call('PEXPIRE', key, ttl_ms)
end

local out_buckets = {}
for index, counts in pairs(buckets) do
  out_buckets[tostring(index)] = counts
end
return cjson.encode({
  state = state,
  opened_at = string.format('%.17g', opened_at),
  consecutive = consecutive,
  trials = trials,
  reason = reason,
  buckets = out_buckets,
  transitions = transitions,
})
