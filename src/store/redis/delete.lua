-- Deletes a topic's log: its meta hash, the stream of its epoch and its
-- producer sequences, in one step. Afterwards the append script refuses
-- every writer that still names the old epoch (the meta hash is gone), and
-- the next open creates the log anew under a new epoch. Idempotency-key
-- and producer-sequence records expire with the dedup window; they carry
-- their epoch, so the new log never takes them for its own.
-- KEYS[1] meta hash, KEYS[2] producer hash. ARGV[1] the topic's key prefix.
-- Returns the deleted epoch, or nil when the topic does not exist.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return false end
redis.call('DEL', KEYS[1], KEYS[2], ARGV[1] .. 'log:' .. epoch)
return epoch
