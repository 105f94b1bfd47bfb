-- claim: select ready tasks of one env/kind and lease them, in one call.
-- ARGV: base, kenc, now (ms), leased_until (ms), token, mode ('s' single |
-- 'g' group), n (limit or max_group, > 0), report cap, then the hash fields
-- to read and return (the first eleven in the order `candidate` uses them).
-- Returns { {values of those fields, as leased}, ... } and { id, reason,
-- ... } of undecodables.
local k, now_s, until_ms, token, mode = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, n, cap = tonumber(now_s), tonumber(ARGV[7]), tonumber(ARGV[8])
-- One read per candidate gives both what the claim decides on and what
-- goes back to the caller.
local READ = { unpack(ARGV, 9) }
local TOKEN = 0
for p, name in ipairs(READ) do
  if name == 'token' then TOKEN = p end
end

-- 1. Keys whose latest lease has expired are free again.
local parked = per_kind('pk', k)
for _, r in ipairs(redis.call('ZRANGEBYSCORE', parked, '-inf', now_s)) do
  redis.call('ZREM', parked, r)
  refresh_key(k, r)
end

-- 2. Select (read only, so that the walk's offsets stay valid).
local picked, taken, busy, to_park, bad, stale, seen = {}, {}, {}, {}, {}, {}, {}

local function key_busy(r)
  if busy[r] == nil then
    local last = redis.call('ZRANGE', per_key('kl', k, r), -1, -1, 'WITHSCORES')
    busy[r] = last[2] ~= nil and tonumber(last[2]) > now
  end
  return busy[r]
end

-- Why a field the claim computes with is not as doc.rs writes it, or nil
-- (a corrupted hash must be set aside, not break the claim or be "repaired").
local function malformed(h)
  if h[4] and not tonumber(h[4]) then return 'field wait: not a time in milliseconds' end
  if h[5] and not tonumber(h[5]) then return 'field lease: not a time in milliseconds' end
  if not string.match(h[7] or '', '^%d+$') then return 'field att: not a count' end
  if not string.match(h[8] or '', '^%d+$') then return 'field catt: not a count' end
  if not string.match(h[9] or '', '^%d+$') then return 'field ver: not a version' end
  return nil
end

-- The fields a claim decides on, or nil for a document to skip.
local function candidate(zkey, m)
  local id = string.sub(m, 33)
  if seen[id] then return nil end
  seen[id] = true
  local h = redis.call('HMGET', task_key(id), unpack(READ))
  if not h[1] and not h[2] then
    stale[#stale + 1] = { zkey, m }
    return nil
  end
  if h[1] ~= '1' or h[2] then
    bad[#bad + 1] = { id, zkey, m, h[2] or ('unknown document format ' .. tostring(h[1])) }
    return nil
  end
  local why = malformed(h)
  if why then
    bad[#bad + 1] = { id, zkey, m, why }
    return nil
  end
  if h[6] or (h[4] and tonumber(h[4]) > now) or (h[5] and tonumber(h[5]) > now) then return nil end
  -- What the lease changes (the state entries of lib.lua and the counters)
  -- is decided on these fields alone: no whole-task read.
  return {
    id = id, rk = h[3] or nil, wait = h[4] or nil, lease = h[5] or nil, att = h[7],
    catt = h[8], ver = h[9], canc = h[10], ord = h[11], kenc = k, read = h,
  }
end

-- The ready tasks of free key r in group order (wait, created, id), up to n.
local function take_group(r)
  local zkey, offset = per_key('kg', k, r), 0
  while #picked < n do
    local batch = redis.call('ZRANGEBYSCORE', zkey, '-inf', now_s, 'LIMIT', offset, 64)
    for _, m in ipairs(batch) do
      local c = candidate(zkey, m)
      if c and #picked < n then picked[#picked + 1] = c end
    end
    if #batch < 64 then return end
    offset = offset + #batch
  end
end

-- Visits one walk entry; true when the selection is complete.
local function visit(zkey, m)
  local c = candidate(zkey, m)
  if not c then return false end
  local r = c.rk
  if r then
    if taken[r] then return false end
    if key_busy(r) then
      to_park[r] = true
      return false
    end
    taken[r] = true
  end
  if mode == 's' then
    picked[#picked + 1] = c
    return #picked >= n
  end
  if r then
    seen[c.id] = nil
    take_group(r)
  else
    picked[1] = c
  end
  return true
end

-- Walks one part of the claim order: never-leased tasks (wf, by wait) come
-- before expired leases (wl, by lease); both end at `now`.
local function walk(zkey)
  local offset = 0
  while true do
    local batch = redis.call('ZRANGEBYSCORE', zkey, '-inf', now_s, 'LIMIT', offset, 64)
    for _, m in ipairs(batch) do
      if visit(zkey, m) then return true end
    end
    if #batch < 64 then return false end
    offset = offset + #batch
  end
end

if not walk(per_kind('wf', k)) then walk(per_kind('wl', k)) end

-- 3. Apply: lease (exactly the fields lifecycle::claim changes), park the
-- keys now busy, set undecodable documents aside.
local leased = {}
for i, old in ipairs(picked) do
  local key = task_key(old.id)
  -- What restate reads, as leased (built at once: growing a table field
  -- by field costs more than the rest of the claim).
  local f = {
    kenc = k, rk = old.rk, ord = old.ord, wait = old.wait, canc = old.canc,
    lease = until_ms, ver = next_version(old.ver), att = next_count(old.att),
  }
  local fields = { 'ver', f.ver, 'lease', f.lease, 'token', token, 'att', f.att }
  local h = old.read
  if old.canc == '1' then
    fields[#fields + 1] = 'catt'
    fields[#fields + 1] = next_count(old.catt)
    h[8] = fields[#fields]
  end
  redis.call('HSET', key, unpack(fields))
  restate(old, f)
  -- The task goes back as read, with what the lease wrote.
  h[5], h[7], h[9] = f.lease, f.att, f.ver
  if TOKEN > 0 then h[TOKEN] = token end
  leased[i] = h
end
for r, _ in pairs(taken) do park_key(k, r) end
for r, _ in pairs(to_park) do park_key(k, r) end
for _, s in ipairs(stale) do redis.call('ZREM', s[1], s[2]) end

local quarantine = per_kind('bad', k)
for _, b in ipairs(bad) do
  redis.call('ZREM', b[2], b[3])
  mark_bad(k, b[1], b[4])
end

-- 4. Report the kind's undecodable documents (every claim, up to cap).
local reported = {}
local size = redis.call('HLEN', quarantine)
if size > 0 then
  if size <= cap then
    reported = redis.call('HGETALL', quarantine)
  else
    reported = redis.call('HRANDFIELD', quarantine, cap, 'WITHVALUES')
  end
end
return { leased, reported }
