-- generators: the recurrence generators of the env, in id order.
-- ARGV: base, most to return.
-- `gens` (zset, score 0, member id) gains an id when a generator is
-- created (create.lua) and is cleaned here: an id whose hash is gone, is
-- no generator (`rec` unset: the id was deleted and created again as a
-- plain task) or is a tombstone (`prn`) leaves the set as it is met. A
-- generator set aside as undecodable stays but is not returned.
-- Returns { task hash, ... }.
local want = tonumber(ARGV[2])
local gens = B .. 'gens'
local out = {}
local start = '-'
while #out < want do
  local ids = redis.call('ZRANGE', gens, start, '+', 'BYLEX', 'LIMIT', 0, want - #out)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local flat = redis.call('HGETALL', task_key(id))
    local f = to_table(flat)
    if not f.rec or f.prn then
      redis.call('ZREM', gens, id)
    elseif indexable(f) then
      out[#out + 1] = flat
    end
  end
  start = '(' .. ids[#ids]
end
return out
