-- Appends a batch atomically with its dedup records.
-- KEYS[1] meta hash, KEYS[2] log stream, then every dedup key the batch may
-- touch (idempotency-key records, the producer hash, producer-sequence
-- records). They share the topic's {topic} hash tag, so the script runs on
-- one cluster slot; they are declared so that, while a slot migrates, the
-- cluster refuses the whole call up front (TRYAGAIN/ASK, retried by the
-- client) instead of failing one of them half-way through the script.
-- ARGV: epoch, time_ms, dedup window ms, max events, n, key prefix, max bytes,
-- sharded channel to announce the new latest seq on ('' for none),
-- then six values per event: data, type, idempotency key, fingerprint, producer id,
-- producer seq ('' where absent).
-- Returns one reply per event: {'ok', seq, time}, {'dup', seq, time},
-- {'dup'} (original unknown), {'conflict'} or {'gap', expected producer seq}.
-- Dedup records end with the epoch of the log that wrote them: one of an
-- earlier log of the topic (deleted, its records not expired yet) is not
-- this log's and counts as absent. Records without one predate the field.
local meta, log = KEYS[1], KEYS[2]
local epoch = ARGV[1]
if redis.call('HGET', meta, 'epoch') ~= epoch then
  return redis.error_reply('EPOCH log was reset')
end
local t = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', meta, 'last_ms'))
if last > t then t = last end
local window, maxev, n, prefix = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local maxbytes = tonumber(ARGV[7])
local notify = ARGV[8]
local seq = tonumber(redis.call('HGET', meta, 'seq'))
-- Bytes (data and type) appended to this log so far. Each entry keeps the
-- total before it in field 'o', so what a log from any start holds is one
-- subtraction, and byte retention needs no sizes of the entries it drops.
local total = tonumber(redis.call('HGET', meta, 'bytes') or '0')

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

local out = {}
for i = 0, n - 1 do
  local b = 9 + i * 6
  local data, ty, key, fp, prod, pseq = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local verdict = nil
  if key ~= '' then
    local rec = redis.call('GET', prefix .. 'k:' .. key)
    if rec then
      local rs, rt, rfp, rep = string.match(rec, '^(%d+):(%d+):(%x+):?(%w*)$')
      if rep ~= '' and rep ~= epoch then
        -- Another log's: absent.
      elseif rfp == fp then verdict = {'dup', rs, rt} else verdict = {'conflict'} end
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
          verdict = {'dup', rs, rt}
        else
          verdict = {'dup'}
        end
      elseif pseq ~= incr(high) then
        verdict = {'gap', incr(high)}
      end
    end
  end
  if verdict then
    out[#out + 1] = verdict
  else
    seq = seq + 1
    if ty ~= '' then
      redis.call('XADD', log, seq .. '-0', 'd', data, 't', t, 'o', total, 'y', ty)
    else
      redis.call('XADD', log, seq .. '-0', 'd', data, 't', t, 'o', total)
    end
    total = total + #data + #ty
    if key ~= '' then
      redis.call('SET', prefix .. 'k:' .. key, seq .. ':' .. t .. ':' .. fp .. ':' .. epoch, 'PX', window)
    end
    if prod ~= '' then
      redis.call('HSET', prefix .. 'p', prod, pseq)
      redis.call('SET', prefix .. 'ps:' .. prod .. ':' .. pseq, seq .. ':' .. t .. ':' .. epoch, 'PX', window)
    end
    out[#out + 1] = {'ok', tostring(seq), tostring(t)}
  end
end
if seq > tonumber(redis.call('HGET', meta, 'seq')) then
  redis.call('HSET', meta, 'seq', seq, 'last_ms', t, 'bytes', total)
  local first = tonumber(redis.call('HGET', meta, 'first'))
  local want = first
  if seq - want + 1 > maxev then want = seq - maxev + 1 end
  local o = offset(want)
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
    -- channel hashes to this slot, so it is served where the log is.
    redis.call('SPUBLISH', notify, seq)
  end
end
return out
