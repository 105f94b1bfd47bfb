-- swap: version-checked writes of whole tasks of one env.
-- ARGV: base, count, then per item: id, expected version, fields (see read_fields).
-- Returns per item: 'A' applied, 'C' conflict, 'N' not found, 'U<reason>' undecodable.
--
-- The stored task is read only in the fields that decide the write and its
-- index entries (never the payload); the new fields are written over the
-- hash, the optional fields the new task lacks are deleted, and only the
-- index entries that differ are touched.
local READ = { 'fmt', 'bad', 'ver', 'kenc', 'kind', 'rk', 'cord', 'ord', 'done', 'dst', 'canc',
  'lease', 'wait' }
local OPTIONAL = { 'rk', 'wait', 'lease', 'done', 'token', 'dst', 'result' }
local out, changed, i = {}, {}, 3
for j = 1, tonumber(ARGV[2]) do
  local id, expected = ARGV[i], ARGV[i + 1]
  local new, next_i, first = read_fields(i + 2)
  local n_fields = tonumber(ARGV[i + 2])
  i = next_i
  local key = task_key(id)
  local h = redis.call('HMGET', key, unpack(READ))
  local f = {}
  for n, name in ipairs(READ) do
    if h[n] then f[name] = h[n] end
  end
  if not f.fmt and not f.bad and redis.call('EXISTS', key) == 0 then
    out[j] = 'N'
  elseif not indexable(f) then
    out[j] = 'U' .. raw_reason(f)
  elseif f.ver ~= expected then
    out[j] = 'C'
  else
    reindex(f, new)
    redis.call('HSET', key, unpack(ARGV, first, first + 2 * n_fields - 1))
    local gone = {}
    for _, name in ipairs(OPTIONAL) do
      if new[name] == nil then gone[#gone + 1] = name end
    end
    if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
    if f.rk then refresh_key(f.kenc, f.rk) end
    if new.rk and (new.rk ~= f.rk or new.kenc ~= f.kenc) then refresh_key(new.kenc, new.rk) end
    changed[f.kind] = true
    changed[new.kind] = true
    out[j] = 'A'
  end
end
publish(changed)
return out
