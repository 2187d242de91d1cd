-- Appends a batch atomically with its dedup records.
-- KEYS[1] meta hash, KEYS[2] log stream, then every dedup key the batch may
-- touch (idempotency-key records, the producer hash, producer-sequence
-- records). They share the topic's {topic} hash tag, so the script runs on
-- one cluster slot; they are declared so that, while a slot migrates, the
-- cluster refuses the whole call up front (TRYAGAIN/ASK, retried by the
-- client) instead of failing one of them half-way through the script.
-- ARGV: epoch, time_ms, dedup window ms, max events, n, key prefix, max bytes,
-- sharded channel to announce the new latest seq on ('' for none), the
-- number of values per event (2 or 6), then per event: data, type, and when
-- six, idempotency key, fingerprint, producer id, producer seq ('' where
-- absent). A batch without keys or producer sequences sends two.
-- Returns {time, seq before the batch, verdicts, details...}: verdicts has
-- one character per event, '.' stored (they take the seqs after the one
-- given, in order, all at `time`), 'd' duplicate (details: its seq and
-- time), 'u' duplicate of an unknown original, 'c' key conflict, 'g'
-- producer-sequence gap (details: the expected seq). A reply of a few
-- values whatever the batch size: the client parses it in no time.
-- Dedup records end with the epoch of the log that wrote them: one of an
-- earlier log of the topic (deleted, its records not expired yet) is not
-- this log's and counts as absent. Records without one predate the field.
local meta, log = KEYS[1], KEYS[2]
local epoch = ARGV[1]
local m = redis.call('HMGET', meta, 'epoch', 'last_ms', 'seq', 'bytes', 'first')
if m[1] ~= epoch then
  return redis.error_reply('EPOCH log was reset')
end
local t = tonumber(ARGV[2])
local last = tonumber(m[2])
if last > t then t = last end
local ts = tostring(t)
local window, maxev, n, prefix = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local maxbytes = tonumber(ARGV[7])
local notify = ARGV[8]
local per = tonumber(ARGV[9])
local base = tonumber(m[3])
local seq = base
-- Bytes (data and type) appended to this log so far. Each entry keeps the
-- total before it in field 'o', so what a log from any start holds is one
-- subtraction, and byte retention needs no sizes of the entries it drops.
local total = tonumber(m[4] or '0')

-- Field 'o' of entry `s`.
local function offset(s)
  local e = redis.call('XRANGE', log, s .. '-0', s .. '-0')[1]
  if not e then return nil end
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'o' then return tonumber(f[i + 1]) end
  end
  return nil
end

-- Producer sequences are unsigned 64-bit: compare them as decimal strings
-- (no leading zeros), since Lua numbers are doubles.
local function cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

-- The decimal string one above `s`.
local function incr(s)
  local d = {}
  for i = 1, #s do d[i] = s:byte(i) - 48 end
  local i = #d
  while i >= 1 do
    if d[i] == 9 then d[i] = 0; i = i - 1 else d[i] = d[i] + 1; break end
  end
  local r = {}
  if i == 0 then r[1] = '1' end
  for j = 1, #d do r[#r + 1] = tostring(d[j]) end
  return table.concat(r)
end

local verdicts, details, clean = {}, {}, true -- verdicts: the non-stored only
-- A duplicate whose original is known: its seq and time are its details.
local function dup(rs, rt)
  details[#details + 1] = rs
  details[#details + 1] = rt
  return 'd'
end
for i = 0, n - 1 do
  local b = 10 + i * per
  local data, ty = ARGV[b], ARGV[b + 1]
  local key, fp, prod, pseq = '', '', '', ''
  if per == 6 then
    key, fp, prod, pseq = ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  end
  local verdict = nil
  if key ~= '' then
    local rec = redis.call('GET', prefix .. 'k:' .. key)
    if rec then
      local rs, rt, rfp, rep = string.match(rec, '^(%d+):(%d+):(%x+):?(%w*)$')
      if rep ~= '' and rep ~= epoch then
        -- Another log's: absent.
      elseif rfp == fp then
        verdict = dup(rs, rt)
      else
        verdict = 'c'
      end
    end
  end
  if not verdict and prod ~= '' then
    local high = redis.call('HGET', prefix .. 'p', prod)
    if high then
      local c = cmp(pseq, high)
      if c <= 0 then
        local rec = redis.call('GET', prefix .. 'ps:' .. prod .. ':' .. pseq)
        local rs, rt, rep
        if rec then rs, rt, rep = string.match(rec, '^(%d+):(%d+):?(%w*)$') end
        if rec and (rep == '' or rep == epoch) then
          verdict = dup(rs, rt)
        else
          verdict = 'u'
        end
      elseif pseq ~= incr(high) then
        verdict = 'g'
        details[#details + 1] = incr(high)
      end
    end
  end
  if verdict then
    clean = false
    verdicts[i + 1] = verdict
  else
    seq = seq + 1
    -- Numbers formatted with %d: Lua's own number-to-string conversion
    -- (%.14g) costs twice as much, and this runs for every event.
    local id, o = string.format('%d-0', seq), string.format('%d', total)
    if ty ~= '' then
      redis.call('XADD', log, id, 'd', data, 't', ts, 'o', o, 'y', ty)
    else
      redis.call('XADD', log, id, 'd', data, 't', ts, 'o', o)
    end
    total = total + #data + #ty
    if key ~= '' then
      redis.call('SET', prefix .. 'k:' .. key, seq .. ':' .. ts .. ':' .. fp .. ':' .. epoch, 'PX', window)
    end
    if prod ~= '' then
      redis.call('HSET', prefix .. 'p', prod, pseq)
      redis.call('SET', prefix .. 'ps:' .. prod .. ':' .. pseq, seq .. ':' .. ts .. ':' .. epoch, 'PX', window)
    end
  end
end
if seq > base then
  redis.call('HSET', meta, 'seq', seq, 'last_ms', ts, 'bytes', total)
  local first = tonumber(m[5])
  local want = first
  if seq - want + 1 > maxev then want = seq - maxev + 1 end
  -- Offsets are never negative: a log of at most maxbytes in all keeps
  -- everything, without reading an entry.
  local o = total > maxbytes and offset(want)
  if o and total - o > maxbytes then
    -- The oldest start that keeps at most maxbytes (the newest event stays
    -- even if larger): offsets grow with the sequence, so bisect.
    local lo, hi = want + 1, seq
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      local om = offset(mid)
      if om and total - om <= maxbytes then hi = mid else lo = mid + 1 end
    end
    want = lo
  end
  if want > first then
    redis.call('HSET', meta, 'first', want)
    redis.call('XTRIM', log, 'MINID', '~', want .. '-0')
  end
  if notify ~= '' then
    -- Wakes the instances that follow this topic (cluster mode); the
    -- channel hashes to this slot, so it is served where the log is. Best
    -- effort (pcall): the events above are stored whatever happens here
    -- (a script's writes are not undone by a later error), so a refused
    -- announcement (an ACL user without channel permissions) must not turn
    -- their acknowledgement into an error; followers' sweeps find them.
    redis.pcall('SPUBLISH', notify, seq)
  end
end
local all = string.rep('.', n)
if not clean then
  local v = {}
  for i = 1, n do v[i] = verdicts[i] or '.' end
  all = table.concat(v)
end
local reply = {ts, tostring(base), all}
for i = 1, #details do reply[#reply + 1] = details[i] end
return reply
