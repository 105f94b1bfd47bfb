-- claim: select ready tasks of one env/kind and lease them, in one call.
-- ARGV: base, kenc, now (ms), leased_until (ms), token, mode ('s' single |
-- 'g' group; then 'o' for the oldest order, the claim order whatever the
-- priorities, else higher priorities first), n (limit or max_group, > 0),
-- report cap, then the hash fields to read and return (the first eleven in
-- the order `candidate` uses them; `token` and `pri` by name).
-- Returns { {values of those fields, as leased}, ... } and { id, reason,
-- ... } of undecodables.
local k, now_s, until_ms, token = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local mode, oldest = string.sub(ARGV[6], 1, 1), string.sub(ARGV[6], 2, 2) == 'o'
local now, n, cap = tonumber(now_s), tonumber(ARGV[7]), tonumber(ARGV[8])
-- One read per candidate gives both what the claim decides on and what
-- goes back to the caller.
local READ = { unpack(ARGV, 9) }
local TOKEN, PRI = 0, 0
for p, name in ipairs(READ) do
  if name == 'token' then TOKEN = p elseif name == 'pri' then PRI = p end
end

-- The bands of the kind, highest priority first: band 0 (always) and the
-- bands of pb:k (bands without a not-done task are not there).
local tags = { '' }
local others = redis.call('HKEYS', per_kind('pb', k))
if #others > 0 then
  local by = { [''] = 0 }
  for _, tag in ipairs(others) do
    tags[#tags + 1] = tag
    by[tag] = tonumber(tag) or 0
  end
  table.sort(tags, function(a, b) return by[a] > by[b] end)
end

-- 1. Keys whose latest lease has expired are free again.
local parked = per_kind('pk', k)
for _, r in ipairs(redis.call('ZRANGEBYSCORE', parked, '-inf', now_s)) do
  redis.call('ZREM', parked, r)
  refresh_key_in(k, r, tags)
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
    catt = h[8], ver = h[9], canc = h[10], ord = h[11], pri = PRI > 0 and h[PRI] or nil,
    kenc = k, read = h,
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

-- True when member a sorts before member b as Redis sorts them (bytes;
-- Lua's `<` on strings follows the server's locale). Eight bytes a step:
-- members of one wait and creation time share 32 bytes and more.
local byte = string.byte
local function before(a, b)
  local n = #a < #b and #a or #b
  for i = 1, n, 8 do
    local a1, a2, a3, a4, a5, a6, a7, a8 = byte(a, i, i + 7)
    local b1, b2, b3, b4, b5, b6, b7, b8 = byte(b, i, i + 7)
    if a1 ~= b1 then return a1 < b1 end
    if a2 ~= b2 then return (a2 or -1) < (b2 or -1) end
    if a3 ~= b3 then return (a3 or -1) < (b3 or -1) end
    if a4 ~= b4 then return (a4 or -1) < (b4 or -1) end
    if a5 ~= b5 then return (a5 or -1) < (b5 or -1) end
    if a6 ~= b6 then return (a6 or -1) < (b6 or -1) end
    if a7 ~= b7 then return (a7 or -1) < (b7 or -1) end
    if a8 ~= b8 then return (a8 or -1) < (b8 or -1) end
  end
  return #a < #b
end

-- Walks part `what` (wf or wl) of every band at once, in claim order
-- (score, then member: wait or lease, then the `ord` member). Each band's
-- cursor holds its next entry (m, s), read 64 at a time.
local function merged_walk(what)
  local cursors = {}
  local function advance(c)
    c.pos = c.pos + 2
    if c.pos > #c.batch then
      if #c.batch < 128 and c.offset > 0 then
        c.m = nil
        return
      end
      c.batch = redis.call('ZRANGEBYSCORE', c.key, '-inf', now_s, 'WITHSCORES',
        'LIMIT', c.offset, 64)
      c.offset = c.offset + 64
      c.pos = 1
    end
    c.m, c.s = c.batch[c.pos], tonumber(c.batch[c.pos + 1])
  end
  for i, tag in ipairs(tags) do
    local c = { key = per_band(what, tag, k), batch = {}, pos = -1, offset = 0 }
    advance(c)
    cursors[i] = c
  end
  while true do
    local best
    for _, c in ipairs(cursors) do
      if c.m and (not best or c.s < best.s or (c.s == best.s and before(c.m, best.m))) then
        best = c
      end
    end
    if not best then return false end
    local zkey, m = best.key, best.m
    advance(best)
    if visit(zkey, m) then return true end
  end
end

if #tags == 1 then
  -- Every not-done task at priority 0 (a store that does not use
  -- priorities): both orders are the claim order.
  if not walk(per_kind('wf', k)) then walk(per_kind('wl', k)) end
elseif oldest then
  -- The claim order alone: the bands merged.
  if not merged_walk('wf') then merged_walk('wl') end
else
  -- Highest band first, each in the claim order.
  for _, tag in ipairs(tags) do
    if walk(per_band('wf', tag, k)) or walk(per_band('wl', tag, k)) then break end
  end
end

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
  -- Set apart: a ninth field would double the table of every claimed task.
  if old.pri then f.pri = old.pri end
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
for r, _ in pairs(taken) do park_key(k, r, tags) end
for r, _ in pairs(to_park) do park_key(k, r, tags) end
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
