-- backfill: one page of the one-time build of kind k's finished index
-- (fin:<s>:k, pr:<s>:k) on a store written before it existed. Walks the
-- kind's listing (ca:k) from the position kept in finb:k, so that every
-- caller (several pruners at once, a crash half-way) goes on from where
-- the last one stopped; '+' there means built. Writes are idempotent, and
-- every script that finishes, resets, prunes or deletes a task keeps its
-- entry in line meanwhile.
-- ARGV: base, kenc, page size. Returns 1 when the index is complete.
local k, size = ARGV[2], tonumber(ARGV[3])
local mark = per_kind('finb', k)
local at = redis.call('GET', mark)
if at == '+' then return 1 end
local start = at and ('(' .. at) or '-'
local members = redis.call('ZRANGE', per_kind('ca', k), start, '+', 'BYLEX', 'LIMIT', 0, size)
for _, m in ipairs(members) do
  local h = redis.call('HMGET', task_key(string.sub(m, 17)), 'fmt', 'bad', 'done', 'dst', 'prn',
    'ord')
  local f = {
    fmt = h[1] or nil, bad = h[2] or nil, done = h[3] or nil, dst = h[4] or nil,
    prn = h[5] or nil, ord = h[6] or nil, kenc = k,
  }
  if indexable(f) and f.done and f.ord then
    local key, member = finished_entry(f)
    if key then z_later(key, member, '0') end
  end
end
if #members < size then
  redis.call('SET', mark, '+')
  return 1
end
redis.call('SET', mark, members[#members])
return 0
