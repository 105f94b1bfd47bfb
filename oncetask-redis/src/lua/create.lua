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

-- Why id (to be created under gen) cannot be created now, or nil.
local function blocked(id, gen, key)
  if REG ~= '' then
    local held = redis.call('SET', REG .. id, gen .. ':' .. ENV, 'NX', 'GET')
    if not held then
      -- A task without its entry breaks the registry's invariant (an entry
      -- deleted by hand, a partial restore): never write over it, and let
      -- the entry name the stored task's generation again.
      if redis.call('EXISTS', key) == 0 then return nil end
      local stored = redis.call('HGET', key, 'gen')
      if stored then redis.call('SET', REG .. id, stored .. ':' .. ENV) end
      return 'X'
    end
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

-- The first task of a kind with no task at all: its finished index has
-- nothing to backfill (see backfill.lua), so it is marked built.
local seen = {}
local function mark_new_kind(k)
  if seen[k] then return end
  seen[k] = true
  local built = per_kind('finb', k)
  if redis.call('EXISTS', built) == 0 and redis.call('EXISTS', per_kind('ca', k)) == 0 then
    redis.call('SET', built, '+')
  end
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
    mark_new_kind(new.kenc)
    redis.call('HSET', key, 'gen', gen, unpack(ARGV, first, first + 2 * n_fields - 1))
    index(new)
    if new.rec then redis.call('ZADD', B .. 'gens', 0, id) end
    if new.rk then refresh_key(new.kenc, new.rk, band(new.pri)) end
    note(changed, new.kind, false)
    out[j] = 'C'
  end
end
publish(changed)
return out
