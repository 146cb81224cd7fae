-- Replace a record (an API key's or a control token's) only if it is still the version the
-- caller read (compare-and-set), so concurrent admin calls cannot undo each other (an update
-- must never un-revoke a key).
-- KEYS[1]: the record; ARGV[1]: the version read; ARGV[2]: the new record (JSON).
-- Returns 1 when replaced, 0 when the version changed meanwhile, -1 when the record is gone.
local current = redis.call('GET', KEYS[1])
if not current then
  return -1
end
if cjson.decode(current)['version'] ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
