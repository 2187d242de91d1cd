-- Moves the logical start of a log forward (age retention) and trims it.
-- KEYS[1] meta hash, KEYS[2] log stream. ARGV[1] epoch, ARGV[2] new first seq.
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
local first = tonumber(redis.call('HGET', KEYS[1], 'first'))
local want = tonumber(ARGV[2])
if want > first then
  redis.call('HSET', KEYS[1], 'first', want)
  redis.call('XTRIM', KEYS[2], 'MINID', '~', want .. '-0')
end
return 1
