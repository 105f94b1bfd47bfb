-- create: insert tasks of one env unless their id exists.
-- ARGV: base, count, registry prefix, env, then per item: id, registry
-- generation, fields.
--
-- With a registry prefix (a single server, where a script may touch the
-- registry key of another slot) the script takes each id's registry entry
-- itself (SET NX) with the fresh generation it is given: one round trip per
-- create. With '' (a cluster), the caller has taken the entries already.
--
-- Returns per item: 'C' created, 'X' exists, 'F' fenced (the generation was
-- fenced off by another creator: go back to the registry), 'H<entry>' the
-- registry entry is held by another creator or env (the caller settles it).
local REG, ENV = ARGV[3], ARGV[4]
local out, changed, i = {}, {}, 5

-- Index entries of tasks without a resource key are written once per key
-- after the loop: one ZADD of many members costs far less than one each.
local zadds, incrs = {}, {}
local function zadd_later(key, score, member)
  local l = zadds[key]
  if not l then
    l = {}
    zadds[key] = l
  end
  l[#l + 1] = score
  l[#l + 1] = member
end
local function incr_later(key, field)
  local h = incrs[key]
  if not h then
    h = {}
    incrs[key] = h
  end
  h[field] = (h[field] or 0) + 1
end
local function index_later(f)
  local k = f.kenc
  zadd_later(B .. 'ca', 0, f.cord)
  zadd_later(per_kind('ca', k), 0, f.cord)
  incr_later(B .. 'kinds', k)
  local counter, z = state_entries(f)
  incr_later(per_kind('cnt', k), counter)
  for key, score in pairs(z) do zadd_later(key, score, f.ord) end
end

-- Why id (to be created under gen) cannot be created now, or nil.
local function blocked(id, gen, key)
  if REG ~= '' then
    local held = redis.call('SET', REG .. id, gen .. ':' .. ENV, 'NX', 'GET')
    if not held then return nil end
    local colon = string.find(held, ':', 1, true)
    if colon and string.sub(held, colon + 1) == ENV and redis.call('EXISTS', key) == 1 then
      return 'X'
    end
    return 'H' .. held
  end
  local tomb = B .. 'tomb:' .. id
  if redis.call('EXISTS', key, tomb) == 0 then return nil end
  if redis.call('GET', tomb) == gen then return 'F' end
  if redis.call('EXISTS', key) == 1 then return 'X' end
  return nil
end

for j = 1, tonumber(ARGV[2]) do
  local id, gen = ARGV[i], ARGV[i + 1]
  local new, next_i, first = read_fields(i + 2)
  local n_fields = tonumber(ARGV[i + 2])
  i = next_i
  local key = task_key(id)
  local why = blocked(id, gen, key)
  if why then
    out[j] = why
  else
    redis.call('HSET', key, 'gen', gen, unpack(ARGV, first, first + 2 * n_fields - 1))
    if new.rk then
      index(new)
      refresh_key(new.kenc, new.rk)
    else
      index_later(new)
    end
    note(changed, new.kind, false)
    out[j] = 'C'
  end
end
for key, l in pairs(zadds) do
  -- Lua's unpack is bounded by its C stack: at most 500 members a call.
  for s = 1, #l, 1000 do redis.call('ZADD', key, unpack(l, s, math.min(s + 999, #l))) end
end
for key, h in pairs(incrs) do
  for field, n in pairs(h) do redis.call('HINCRBY', key, field, n) end
end
publish(changed)
return out
