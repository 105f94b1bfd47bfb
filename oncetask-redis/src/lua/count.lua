-- count: tasks of one env (and kind) per status at `now`, as Task::status.
-- ARGV: base, now (ms), now in ord encoding (16 hex), '1' + kenc for one
-- kind or '*' for all kinds.
-- Returns a flat list of status, count; 'undecodable' counts the documents
-- set aside as not decodable (the kind's 'bad' hash).
local now_s, now_hex, only = ARGV[2], ARGV[3], ARGV[4]
local kinds
if only == '*' then
  -- Kinds with tasks, and kinds with undecodable documents only.
  local seen = {}
  kinds = {}
  for _, h in ipairs({ 'kinds', 'badkinds' }) do
    for _, k in ipairs(redis.call('HKEYS', B .. h)) do
      if not seen[k] then
        seen[k] = true
        kinds[#kinds + 1] = k
      end
    end
  end
else
  kinds = { string.sub(only, 2) }
end
local totals = {}
local function add(status, n)
  if n > 0 then totals[status] = (totals[status] or 0) + n end
end
for _, k in ipairs(kinds) do
  local cnt = to_table(redis.call('HGETALL', per_kind('cnt', k)))
  for _, s in ipairs({ 'completed', 'failed', 'cancelled', 'cancellationPending' }) do
    add(s, tonumber(cnt[s] or '0'))
  end
  local open = tonumber(cnt.open or '0')
  -- Live leases of open tasks: wl holds every leased not-done task, so
  -- the cancelled ones (counted above) are left out here. Live leases are
  -- as many as the tasks in flight, so reading each one's flag is cheap.
  -- Every band's (band 0 and those of pb:k).
  local leased, leased_waiting = 0, 0
  local tags = redis.call('HKEYS', per_kind('pb', k))
  tags[#tags + 1] = ''
  for _, tag in ipairs(tags) do
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', per_band('wl', tag, k), '(' .. now_s, '+inf')) do
      if redis.call('HGET', task_key(string.sub(m, 33)), 'canc') ~= '1' then
        leased = leased + 1
        if string.sub(m, 1, 16) > now_hex then leased_waiting = leased_waiting + 1 end
      end
    end
  end
  local waiting = redis.call('ZCOUNT', per_kind('sw', k), '(' .. now_s, '+inf') - leased_waiting
  add('leased', leased)
  add('waiting', waiting)
  add('pending', open - leased - waiting)
  add('undecodable', redis.call('HLEN', per_kind('bad', k)))
end
local out = {}
for s, n in pairs(totals) do
  out[#out + 1] = s
  out[#out + 1] = n
end
return out
