-- Deletes a topic's log: its meta hash, the stream of its epoch and its
-- producer sequences, in one step. Afterwards the append script refuses
-- every writer that still names the old epoch (the meta hash is gone), and
-- the next open creates the log anew under a new epoch. Idempotency-key
-- and producer-sequence records expire with the dedup window; they carry
-- their epoch, so the new log never takes them for its own.
-- KEYS[1] meta hash, KEYS[2] producer hash, KEYS[3] the log stream of the
-- epoch the caller read (declared, so a cluster routes and checks it like
-- the others). ARGV[1] that epoch.
-- Returns the deleted epoch, nil when the topic does not exist, or an
-- EPOCH error when the log was recreated since the caller read its epoch.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return false end
if epoch ~= ARGV[1] then return redis.error_reply('EPOCH log was reset') end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return epoch
