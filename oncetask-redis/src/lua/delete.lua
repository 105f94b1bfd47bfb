-- delete: remove tasks of one env, optionally version-checked.
-- ARGV: base, then pairs of id, expected version ('' for any).
-- Returns per item: 'D<generation>' deleted, 'N' not found, 'C' conflict.
local out, changed, j = {}, {}, 1
-- Indexed tasks removed per kind: a kind left without any drops its
-- finished-index marker (finb:k), so no key outlives the kind's tasks.
local removed = {}
for i = 2, #ARGV, 2 do
  local id, expected = ARGV[i], ARGV[i + 1]
  local key = task_key(id)
  local raw = redis.call('HGETALL', key)
  if #raw == 0 then
    out[j] = 'N'
  else
    local f = to_table(raw)
    local ok = indexable(f)
    if expected ~= '' and (not ok or f.ver ~= expected) then
      out[j] = 'C'
    else
      if ok then
        unindex(f)
        removed[f.kenc] = (removed[f.kenc] or 0) + 1
        if f.rk then refresh_key(f.kenc, f.rk, band(f.pri)) end
        note(changed, f.kind, true)
      elseif f.kenc then
        unmark_bad(f.kenc, id)
      end
      redis.call('DEL', key)
      out[j] = 'D' .. (f.gen or '')
    end
  end
  j = j + 1
end
-- The listings' removals wait for flush: ca:k still counts them here.
for k, n in pairs(removed) do
  if redis.call('ZCARD', per_kind('ca', k)) <= n then redis.call('DEL', per_kind('finb', k)) end
end
publish(changed)
return out
