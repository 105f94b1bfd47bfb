-- create: insert tasks of one env unless their id exists.
-- ARGV: base, count, then per item: id, registry generation, fields.
-- Returns per item: 'C' created, 'X' exists, 'F' fenced (the generation was
-- fenced off by another creator: go back to the registry).
local out, changed, i = {}, {}, 3
for j = 1, tonumber(ARGV[2]) do
  local id, gen = ARGV[i], ARGV[i + 1]
  local new, next_i, first = read_fields(i + 2)
  local n_fields = tonumber(ARGV[i + 2])
  i = next_i
  local key = task_key(id)
  if redis.call('GET', B .. 'tomb:' .. id) == gen then
    out[j] = 'F'
  elseif redis.call('EXISTS', key) == 1 then
    out[j] = 'X'
  else
    redis.call('HSET', key, 'gen', gen, unpack(ARGV, first, first + 2 * n_fields - 1))
    index(new)
    if new.rk then refresh_key(new.kenc, new.rk) end
    note(changed, new.kind, false)
    out[j] = 'C'
  end
end
publish(changed)
return out
