-- swap: version-checked writes of whole tasks of one env.
-- ARGV: base, count, then per item: id, expected version, fields (see read_fields).
-- Returns per item: 'A' applied, 'C' conflict, 'N' not found, 'U<reason>' undecodable.
local out, changed, i = {}, {}, 3
for j = 1, tonumber(ARGV[2]) do
  local id, expected = ARGV[i], ARGV[i + 1]
  local new, next_i, first = read_fields(i + 2)
  local n_fields = tonumber(ARGV[i + 2])
  i = next_i
  local key = task_key(id)
  local raw = redis.call('HGETALL', key)
  if #raw == 0 then
    out[j] = 'N'
  else
    local f = to_table(raw)
    if not indexable(f) then
      out[j] = 'U' .. raw_reason(f)
    elseif f.ver ~= expected then
      out[j] = 'C'
    else
      reindex(f, new)
      redis.call('DEL', key)
      redis.call('HSET', key, 'gen', f.gen or '', unpack(ARGV, first, first + 2 * n_fields - 1))
      if f.rk then refresh_key(f.kenc, f.rk) end
      if new.rk and (new.rk ~= f.rk or new.kenc ~= f.kenc) then refresh_key(new.kenc, new.rk) end
      changed[f.kind] = true
      changed[new.kind] = true
      out[j] = 'A'
    end
  end
end
publish(changed)
return out
