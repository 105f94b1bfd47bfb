-- undecodable: the documents of the env set aside as undecodable, from
-- the per-kind `bad:k` hashes the kinds of `badkinds` name.
-- ARGV: base, most to return.
-- Returns { id, reason, id, reason, ... } (unordered).
local want = tonumber(ARGV[2])
local out = {}
for _, k in ipairs(redis.call('HKEYS', B .. 'badkinds')) do
  local pairs_ = redis.call('HGETALL', per_kind('bad', k))
  for i = 1, #pairs_, 2 do
    if #out >= 2 * want then return out end
    out[#out + 1] = pairs_[i]
    out[#out + 1] = pairs_[i + 1]
  end
end
return out
