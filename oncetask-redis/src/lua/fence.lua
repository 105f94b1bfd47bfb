-- fence: settle registry entries that point at this env but whose task is
-- missing. ARGV: base, ttl (s), then pairs of id, generation.
-- Returns per item: 'X' the task exists (the entry is live), or 'F' the
-- generation is fenced: no create holding it can land any more.
local out = {}
local ttl = ARGV[2]
local j = 1
for i = 3, #ARGV, 2 do
  local id, gen = ARGV[i], ARGV[i + 1]
  if redis.call('EXISTS', task_key(id)) == 1 then
    out[j] = 'X'
  else
    redis.call('SET', B .. 'tomb:' .. id, gen, 'EX', ttl)
    out[j] = 'F'
  end
  j = j + 1
end
return out
