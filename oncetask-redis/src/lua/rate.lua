-- rate: take starts from (mode 't') or give them back to (mode 'r') rate
-- limiters of one env, each request on its own (StartsRequest's rule in
-- oncetask-core's store/rate.rs).
-- ARGV: base, mode, count, then per request: the limiter key after the
-- base (rl:k or rlk:k:r), window start (ms), time to live (ms), limit,
-- starts. Returns per request the starts granted (0 for a return).
-- A limiter is a hash { w = window start, n = starts taken in it } that
-- expires a couple of periods after its last take.
local take = ARGV[2] == 't'
local out, i = {}, 4
for j = 1, tonumber(ARGV[3]) do
  local key = B .. ARGV[i]
  local w_arg, ttl = ARGV[i + 1], ARGV[i + 2]
  local w, limit, count = tonumber(w_arg), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  i = i + 5
  local h = redis.call('HMGET', key, 'w', 'n')
  local sw, sn = tonumber(h[1] or nil), tonumber(h[2] or nil) or 0
  local granted = 0
  if take then
    if sw and sw > w then
      -- A window that has passed for the others: nothing.
      granted = 0
    elseif sw and sw == w then
      granted = math.min(count, math.max(limit - sn, 0))
      if granted > 0 then
        redis.call('HSET', key, 'n', string.format('%d', sn + granted))
        redis.call('PEXPIRE', key, ttl)
      end
    else
      granted = math.min(count, limit)
      redis.call('HSET', key, 'w', w_arg, 'n', string.format('%d', granted))
      redis.call('PEXPIRE', key, ttl)
    end
  elseif sw and sw == w and sn > 0 then
    redis.call('HSET', key, 'n', string.format('%d', math.max(sn - count, 0)))
  end
  out[j] = granted
end
return out
