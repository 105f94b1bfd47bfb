-- swap: version-checked writes of the changed fields of tasks of one env.
-- ARGV: base, count, then per item: id, expected version, the notice to
-- send ('0' none, '1' work, '2' an operator's change: see lib.lua's
-- publish), the number of fields to set, field/value pairs, the number of
-- fields to delete, their names (doc.rs, encode_change).
-- Returns per item: 'A' applied, 'C' conflict, 'N' not found, 'U<reason>' undecodable.
--
-- The stored task is read only in the fields that decide the write and its
-- index entries (never the payload); only the change's fields are written,
-- and only the index entries that differ are touched. A swap never changes
-- the kind, the resource key or the creation time, so the listings stay;
-- a new priority moves the task's claim entries to its new band. A
-- finish, reset or prune moves its finished-index entry (fin:, pr:).
local READ = { 'fmt', 'bad', 'ver', 'kenc', 'kind', 'rk', 'ord', 'done', 'dst', 'canc',
  'lease', 'wait', 'pri', 'prn' }
local out, changed, i = {}, {}, 3
for j = 1, tonumber(ARGV[2]) do
  local id, expected, notice = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local first = i + 4
  local dels = first + 2 * tonumber(ARGV[i + 3])
  local n_dels = tonumber(ARGV[dels])
  i = dels + 1 + n_dels
  local key = task_key(id)
  local h = redis.call('HMGET', key, unpack(READ))
  -- Built at once (growing a table field by field is costly in Redis'
  -- Lua); absent fields are nil. In the order of READ.
  local f = {
    fmt = h[1] or nil, bad = h[2] or nil, ver = h[3] or nil, kenc = h[4] or nil,
    kind = h[5] or nil, rk = h[6] or nil, ord = h[7] or nil, done = h[8] or nil,
    dst = h[9] or nil, canc = h[10] or nil, lease = h[11] or nil, wait = h[12] or nil,
    pri = h[13] or nil, prn = h[14] or nil,
  }
  if not f.fmt and not f.bad and redis.call('EXISTS', key) == 0 then
    out[j] = 'N'
  elseif not indexable(f) then
    out[j] = 'U' .. raw_reason(f)
  elseif f.ver ~= expected then
    out[j] = 'C'
  else
    local new = {
      kenc = f.kenc, rk = f.rk, ord = f.ord, done = f.done, dst = f.dst, canc = f.canc,
      lease = f.lease, wait = f.wait, pri = f.pri, prn = f.prn,
    }
    for a = first, dels - 1, 2 do new[ARGV[a]] = ARGV[a + 1] end
    for d = dels + 1, dels + n_dels do new[ARGV[d]] = nil end
    restate(f, new)
    redis.call('HSET', key, unpack(ARGV, first, dels - 1))
    if n_dels > 0 then redis.call('HDEL', key, unpack(ARGV, dels + 1, dels + n_dels)) end
    if f.rk then refresh_key(f.kenc, f.rk, band(f.pri), band(new.pri)) end
    if notice ~= '0' then note(changed, f.kind, notice == '2') end
    out[j] = 'A'
  end
end
publish(changed)
return out
