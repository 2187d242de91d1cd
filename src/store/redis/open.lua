-- Opens a topic, creating its log with the given epoch when absent.
-- KEYS[1] meta hash. ARGV[1] epoch for a new log.
-- Returns {epoch, latest seq, latest time ms, first retained seq}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0, 'last_ms', 0, 'first', 1)
end
return redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'last_ms', 'first')
