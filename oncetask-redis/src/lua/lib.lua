-- oncetask-redis: helpers shared by every script (prepended to each one).
--
-- ARGV[1] is the env base "<prefix>:{e:<env>}:"; every key a script touches
-- starts with it, so all of them share the env's hash slot. Task ids and
-- resource keys are always the last part of a key name (see keys.rs).
--
-- Per kind k (its percent-encoded name) and resource key r, with `ord` the
-- member "<wait hex><created hex><id>" and `cord` "<created hex><id>":
--   t:<id>         hash: the task (fields in doc.rs)
--   kinds          hash: k -> number of indexed tasks of kind k
--   ca, ca:k, cr:r zsets (score 0, member cord): listings in creation order
--   cnt:k          hash: done tasks per status, cancellationPending, open
--   sw:k           zset: wait of open (not done, not cancelled) tasks
--   due:k          zset: due time (max of wait and lease) of not-done tasks
--   wf:k           zset (score wait): never-leased tasks without a key, plus
--                  the first never-leased task ("head") of every key that
--                  is not parked
--   wl:k           zset (score lease): every not-done task holding a lease
--   kf:k:r         zset (score wait): never-leased tasks of key r
--   kl:k:r         zset (score lease): the per-key lease: leased tasks of r
--   kg:k:r         zset (score wait): every not-done task of r (group order)
--   kh:k           hash: r -> the head of r currently in wf:k
--   pk:k           zset: parked (busy) keys, score = their latest lease
--   wf<b>:k, wl<b>:k, kf<b>:k:r, kh<b>:k
--                  the same for the not-done tasks of priority band b
--                  ('+5', '-3': the priority with its sign); wf:k, wl:k,
--                  kf:k:r and kh:k are band 0's, so a store whose tasks are
--                  all at priority 0 has only the keys above
--   pb:k           hash: band b (not 0) -> number of not-done tasks in it,
--                  the bands a claim visits besides band 0
--   bad:k          hash: id -> reason, undecodable documents of kind k
--   badkinds       hash: k -> number of entries of bad:k (count_by_status
--                  of every kind finds the undecodable documents of a kind
--                  that has no task)
--   tomb:<id>      string: a fenced registry generation (see registry.rs)
--   fin:<s>:k      zset (score 0, member "<done hex><id>"): finished tasks
--                  of status s (completed, failed, cancelled) that keep
--                  their full document, in (done_at, id) order (pruners)
--   pr:<s>:k       the same for tombstones (pruned tasks)
--   finb:k         string: '+' once fin:*:k holds every finished task of k
--                  (a store older than the index is backfilled; see
--                  backfill.lua), else the backfill's last listing member
--   gens           zset (score 0, member id): the recurrence generators,
--                  added at create, cleaned as generators.lua meets stale ids
--   paused         set: the paused kinds (names as given)
--   rl:k, rlk:k:r  hash (w: window start ms, n: starts taken): the rate
--                  limiter of kind k, and of its resource key r
local B = ARGV[1]

local function to_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- t[k], a new empty table there if it has none (callers look first:
-- `t[k] or sub(t, k)` saves a function call on the common path).
local function sub(t, k)
  local s = t[k]
  if not s then
    s = {}
    t[k] = s
  end
  return s
end

-- Key names are built once per script call: in Redis' Lua every new
-- string and table costs far more than a lookup.
local kind_keys = {}
local function per_kind(what, k)
  local t = kind_keys[what] or sub(kind_keys, what)
  local key = t[k]
  if not key then
    key = B .. what .. ':' .. k
    t[k] = key
  end
  return key
end
local function per_key(what, k, r) return B .. what .. ':' .. k .. ':' .. r end

-- Priority bands. A not-done task is in the claim indexes (wf, wl, kf, kh)
-- of its priority's band, named by a tag in the key: '' for priority 0
-- (the keys of stores written before bands existed), '+5' or '-3' else.
-- The per-key lease (kl), the group (kg), the parked keys (pk) and every
-- other index span the bands.
local band_tags = {}
local function band(pri)
  if not pri or pri == '0' then return '' end
  local tag = band_tags[pri]
  if not tag then
    local n = tonumber(pri)
    tag = (n and n ~= 0) and string.format('%+d', n) or ''
    band_tags[pri] = tag
  end
  return tag
end

-- The per-kind key `what` of band tag (per_kind's for band 0), built once
-- per script call like per_kind's.
local band_keys = {}
local function per_band(what, tag, k)
  if tag == '' then return per_kind(what, k) end
  local t = band_keys[tag] or sub(band_keys, tag)
  local u = t[what] or sub(t, what)
  local key = u[k]
  if not key then
    key = B .. what .. tag .. ':' .. k
    u[k] = key
  end
  return key
end
local function task_key(id) return B .. 't:' .. id end

-- The version after `v` (a decimal u64), wrapping like u64::wrapping_add.
local function next_version(v)
  if v == '18446744073709551615' then return '0' end
  local i = #v
  while i >= 1 and string.sub(v, i, i) == '9' do i = i - 1 end
  if i == 0 then return '1' .. string.rep('0', #v) end
  return string.sub(v, 1, i - 1) .. string.char(string.byte(v, i) + 1) .. string.rep('0', #v - i)
end

-- A u32 counter plus one, saturating like u32::saturating_add.
local function next_count(c)
  local n = tonumber(c) + 1
  if n > 4294967295 then n = 4294967295 end
  return string.format('%d', n)
end

local function due_score(f)
  if f.wait and f.lease then
    if tonumber(f.wait) > tonumber(f.lease) then return f.wait end
    return f.lease
  end
  return f.wait or f.lease or '-inf'
end

local function decrement(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then redis.call('HDEL', key, field) end
end

-- Records document `id` of kind k as undecodable (reason), once.
local function mark_bad(k, id, reason)
  if redis.call('HSET', per_kind('bad', k), id, reason) == 1 then
    redis.call('HINCRBY', B .. 'badkinds', k, 1)
  end
end

-- Forgets the undecodable document `id` of kind k (removed).
local function unmark_bad(k, id)
  if redis.call('HDEL', per_kind('bad', k), id) == 1 then decrement(B .. 'badkinds', k) end
end

-- Writes to the per-kind and per-env index sets and counters wait until
-- the script's body has run (`flush`, called after every script): one
-- ZADD, ZREM or HINCRBY per key and call instead of one per task. No
-- script reads those sets after writing them. The per-key sets (kf, kl,
-- kg), which refresh_key and a claim read, are written at once.
local later_z, later_n = {}, {}

-- Member m of zset key gets score (false: leaves it) when the script ends;
-- the last intent for a member wins.
local function z_later(key, m, score)
  local t = later_z[key] or sub(later_z, key)
  t[m] = score
end

-- Counter field of hash key moves by d when the script ends; a counter
-- that reaches zero is removed.
local function n_later(key, field, d)
  local t = later_n[key] or sub(later_n, key)
  t[field] = (t[field] or 0) + d
end

local function flush()
  for key, members in pairs(later_z) do
    local add, rem = {}, {}
    for m, score in pairs(members) do
      if score then
        add[#add + 1] = score
        add[#add + 1] = m
      else
        rem[#rem + 1] = m
      end
    end
    -- unpack is bounded by Lua's C stack: at most 500 members a call.
    for i = 1, #rem, 500 do redis.call('ZREM', key, unpack(rem, i, math.min(i + 499, #rem))) end
    for i = 1, #add, 1000 do redis.call('ZADD', key, unpack(add, i, math.min(i + 999, #add))) end
  end
  for key, fields in pairs(later_n) do
    for field, d in pairs(fields) do
      if d ~= 0 and redis.call('HINCRBY', key, field, d) <= 0 then redis.call('HDEL', key, field) end
    end
  end
  later_z, later_n = {}, {}
end

-- The entries of a decodable task (fields f) that depend on its state
-- (everything but the listings, which depend only on kind, key, creation
-- time and id): the field of cnt:k it counts in, then the task's score in
-- each zset that holds its member f.ord, nil where it has none: per kind
-- sw, due, wl, wf (written when the script ends), per key kl, kf, kg
-- (written at once); last the band tag of its wl, wf and kf entries (nil
-- for a done task, which has none). Plain values, not tables: see per_kind.
local function state_entries(f)
  if f.done then return f.dst end
  local counter, sw = 'open', nil
  if f.canc == '1' then
    counter = 'cancellationPending'
  elseif f.wait then
    sw = f.wait
  end
  local wait = f.wait or '-inf'
  local wl, wf, kl, kf, kg
  if f.lease then
    wl = f.lease
    if f.rk then kl = f.lease end
  elseif f.rk then
    kf = wait
  else
    wf = wait
  end
  if f.rk then kg = wait end
  return counter, sw, due_score(f), wl, wf, kl, kf, kg, band(f.pri)
end

-- `ms` (a decimal integer of milliseconds) as doc.rs's order_hex: ms +
-- 2^53 in 16 hex digits, built from two halves so that every step stays
-- exact in Lua's doubles.
local function order_hex(ms)
  local n = tonumber(ms)
  local hi = math.floor(n / 4294967296)
  local lo = n - hi * 4294967296
  return string.format('%08x%08x', hi + 2097152, lo)
end

-- The finished-index entry of a decodable task (fields f): its key and
-- member, nil while it is not done. A tombstone's is in pr:, a full
-- document's in fin:.
local function finished_entry(f)
  if not f.done or not f.dst then return nil end
  local what = (f.prn and 'pr:' or 'fin:') .. f.dst
  return per_kind(what, f.kenc), order_hex(f.done) .. string.sub(f.ord, 33)
end

-- Moves a task's finished-index entry from its old state to its new one.
local function restate_finished(old, new)
  if not old.done and not new.done then return end
  local ok, om = finished_entry(old)
  local nk, nm = finished_entry(new)
  if ok == nk and om == nm then return end
  if ok then z_later(ok, om, false) end
  if nk then z_later(nk, nm, '0') end
end

local function put_now(key, m, score)
  if score then redis.call('ZADD', key, score, m) else redis.call('ZREM', key, m) end
end

-- Moves a task's entry in one zset from (old_m, old_s) to (new_m, new_s),
-- nil scores meaning "not in the set", with `put` (z_later for the
-- per-kind sets, put_now for the per-key ones); writes nothing when they
-- are the same.
local function shift(put, key, old_m, old_s, new_m, new_s)
  local same = old_m == new_m
  if old_s and not (same and new_s) then put(key, old_m, false) end
  if new_s and not (same and old_s == new_s) then put(key, new_m, new_s) end
end

-- Moves a task from its old state entries (fields old) to its new ones
-- (fields new), touching only the entries that differ: a claim or an
-- outcome changes a few scores, not every index; a new priority moves the
-- banded entries to the new band. The kind and resource key never change.
local function restate(old, new)
  local oc, osw, odue, owl, owf, okl, okf, okg, ob = state_entries(old)
  local nc, nsw, ndue, nwl, nwf, nkl, nkf, nkg, nb = state_entries(new)
  local k, om, nm = new.kenc, old.ord, new.ord
  restate_finished(old, new)
  if oc ~= nc then
    local cnt = per_kind('cnt', k)
    n_later(cnt, oc, -1)
    n_later(cnt, nc, 1)
  end
  shift(z_later, per_kind('sw', k), om, osw, nm, nsw)
  shift(z_later, per_kind('due', k), om, odue, nm, ndue)
  local r = new.rk
  if ob == nb or not ob or not nb then
    -- One band (or none: a done task has no banded entry).
    local b = ob or nb
    if b == '' then
      shift(z_later, per_kind('wl', k), om, owl, nm, nwl)
      shift(z_later, per_kind('wf', k), om, owf, nm, nwf)
      if r then shift(put_now, per_key('kf', k, r), om, okf, nm, nkf) end
    elseif b then
      shift(z_later, per_band('wl', b, k), om, owl, nm, nwl)
      shift(z_later, per_band('wf', b, k), om, owf, nm, nwf)
      if r then shift(put_now, per_key('kf' .. b, k, r), om, okf, nm, nkf) end
    end
  else
    local pb = per_kind('pb', k)
    if ob ~= '' then n_later(pb, ob, -1) end
    if nb ~= '' then n_later(pb, nb, 1) end
    shift(z_later, per_band('wl', ob, k), om, owl, nm, nil)
    shift(z_later, per_band('wl', nb, k), om, nil, nm, nwl)
    shift(z_later, per_band('wf', ob, k), om, owf, nm, nil)
    shift(z_later, per_band('wf', nb, k), om, nil, nm, nwf)
    if r then
      shift(put_now, per_key('kf' .. ob, k, r), om, okf, nm, nil)
      shift(put_now, per_key('kf' .. nb, k, r), om, nil, nm, nkf)
    end
  end
  -- Entering or leaving the not-done tasks (a done task has no band).
  if not ob ~= not nb then
    local b, d = nb or ob, nb and 1 or -1
    if b ~= '' then n_later(per_kind('pb', k), b, d) end
  end
  if r then
    shift(put_now, per_key('kl', k, r), om, okl, nm, nkl)
    shift(put_now, per_key('kg', k, r), om, okg, nm, nkg)
  end
end

-- Adds (sign 1) or removes (sign -1) the state entries of a decodable task
-- (fields f).
local function index_state(f, sign)
  local counter, sw, due, wl, wf, kl, kf, kg, b = state_entries(f)
  local k, m, r = f.kenc, f.ord, f.rk
  n_later(per_kind('cnt', k), counter, sign)
  if f.done then
    local fk, fm = finished_entry(f)
    z_later(fk, fm, sign > 0 and '0')
  end
  local add = sign > 0
  if sw then z_later(per_kind('sw', k), m, add and sw) end
  if due then z_later(per_kind('due', k), m, add and due) end
  if b then
    if b ~= '' then n_later(per_kind('pb', k), b, sign) end
    if wl then z_later(per_band('wl', b, k), m, add and wl) end
    if wf then z_later(per_band('wf', b, k), m, add and wf) end
    if kf then put_now(per_key('kf' .. b, k, r), m, add and kf) end
  end
  if kl then put_now(per_key('kl', k, r), m, add and kl) end
  if kg then put_now(per_key('kg', k, r), m, add and kg) end
end

-- Adds a decodable task (fields f) to every index. Callers then call
-- refresh_key for its resource key.
local function index(f)
  local k = f.kenc
  z_later(B .. 'ca', f.cord, '0')
  z_later(per_kind('ca', k), f.cord, '0')
  if f.rk then z_later(B .. 'cr:' .. f.rk, f.cord, '0') end
  n_later(B .. 'kinds', k, 1)
  index_state(f, 1)
end

-- Removes a decodable task (fields f, as stored) from every index.
local function unindex(f)
  local k = f.kenc
  z_later(B .. 'ca', f.cord, false)
  z_later(per_kind('ca', k), f.cord, false)
  if f.rk then z_later(B .. 'cr:' .. f.rk, f.cord, false) end
  n_later(B .. 'kinds', k, -1)
  index_state(f, -1)
end

-- Whether key r of kind k is free (not parked), after bringing its
-- parking in line with its tasks: a parked key keeps its latest lease as
-- score; a key without tasks is forgotten.
local function key_is_free(k, r)
  local parked = per_kind('pk', k)
  if redis.call('EXISTS', per_key('kg', k, r)) == 0 then
    redis.call('ZREM', parked, r)
  elseif redis.call('ZSCORE', parked, r) then
    local last = redis.call('ZRANGE', per_key('kl', k, r), -1, -1, 'WITHSCORES')
    redis.call('ZADD', parked, last[2] or '-inf', r)
  else
    return true
  end
  return false
end

-- Puts the head of key r in band tag's wf in line: the first never-leased
-- task of the band when the key is free, none when it is not.
local function set_head(k, r, free, tag)
  local heads = per_band('kh', tag, k)
  local current = redis.call('HGET', heads, r)
  local want, want_score = false, nil
  if free then
    local first = redis.call('ZRANGE', per_key('kf' .. tag, k, r), 0, 0, 'WITHSCORES')
    if first[1] then want, want_score = first[1], first[2] end
  end
  if current ~= want then
    local walk = per_band('wf', tag, k)
    if current then redis.call('ZREM', walk, current) end
    if want then
      redis.call('ZADD', walk, want_score, want)
      redis.call('HSET', heads, r, want)
    else
      redis.call('HDEL', heads, r)
    end
  end
end

-- Brings key r of kind k in line with its tasks in band tag, and in band
-- other if given: the bands whose kf a write changed (a task's band, or
-- the two bands of a new priority). The other bands' heads do not change.
local function refresh_key(k, r, tag, other)
  local free = key_is_free(k, r)
  set_head(k, r, free, tag)
  if other and other ~= tag then set_head(k, r, free, other) end
end

-- refresh_key in every band of the list tags.
local function refresh_key_in(k, r, tags)
  local free = key_is_free(k, r)
  for _, tag in ipairs(tags) do set_head(k, r, free, tag) end
end

-- Parks key r of kind k (busy until its latest lease; it has tasks): its
-- heads leave the wf of every band of tags until a claim at or after that
-- lease unparks it.
local function park_key(k, r, tags)
  local last = redis.call('ZRANGE', per_key('kl', k, r), -1, -1, 'WITHSCORES')
  redis.call('ZADD', per_kind('pk', k), last[2] or '-inf', r)
  for _, tag in ipairs(tags) do set_head(k, r, false, tag) end
end

-- Reads the hash fields of a script argument list: ARGV[i] is the number of
-- fields, then field/value pairs. Returns the table and the next index.
local function read_fields(i)
  local n = tonumber(ARGV[i])
  local f = {}
  for j = 0, n - 1 do f[ARGV[i + 1 + 2 * j]] = ARGV[i + 2 + 2 * j] end
  return f, i + 1 + 2 * n, i + 1
end

-- Notes a change of `kind`; `touches` when it may have changed a task a
-- worker holds (an operator's cancel, reset or delete).
local function note(changed, kind, touches)
  changed[kind] = changed[kind] or touches
end

-- Work notices go on `events`, notices of changes that may have touched
-- held tasks on `changes` (workers re-read what they claimed ahead).
local function publish(changed)
  for kind, touches in pairs(changed) do
    redis.call('PUBLISH', B .. (touches and 'changes' or 'events'), kind)
  end
end

-- True when a stored task (fields f) is one this crate can index.
local function indexable(f)
  return f.fmt == '1' and not f.bad
end

local function raw_reason(f)
  return f.bad or ('unknown document format ' .. tostring(f.fmt))
end
