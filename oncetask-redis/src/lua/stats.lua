-- stats: what one kind's tasks take up, by sampling. ARGV: base, kenc,
-- now (ms), sample size n.
-- Returns { tombstones per status (completed, failed, cancelled: ZCARD of
-- pr:<s>:k), { bucket, bytes, ... } }: up to n samples of MEMORY USAGE of
-- task hashes from each of: the not-done tasks (due:k, each bucketed by
-- its status at now, as Task::status), the full documents of each
-- finished status (fin:<s>:k), and the tombstones of each (bucket
-- 'tombstone'). Indexes left out: the per-task figure is the hash alone.
local k, now, n = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local DONE = { 'completed', 'failed', 'cancelled' }
local tombs, samples = {}, {}
local function sample(key, bucket)
  -- SAMPLES 0: every field measured (the default samples 5 and misses
  -- the one big body field).
  local usage = redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')
  if usage then
    samples[#samples + 1] = bucket
    samples[#samples + 1] = usage
  end
end
for _, m in ipairs(redis.call('ZRANDMEMBER', per_kind('due', k), n)) do
  local key = task_key(string.sub(m, 33))
  local h = redis.call('HMGET', key, 'canc', 'lease', 'wait', 'done')
  if not h[4] then
    local bucket = 'pending'
    if h[1] == '1' then
      bucket = 'cancellationPending'
    elseif h[2] and tonumber(h[2]) > now then
      bucket = 'leased'
    elseif h[3] and tonumber(h[3]) > now then
      bucket = 'waiting'
    end
    sample(key, bucket)
  end
end
for i, s in ipairs(DONE) do
  for _, m in ipairs(redis.call('ZRANDMEMBER', per_kind('fin:' .. s, k), n)) do
    sample(task_key(string.sub(m, 17)), s)
  end
  local pruned = per_kind('pr:' .. s, k)
  tombs[i] = redis.call('ZCARD', pruned)
  for _, m in ipairs(redis.call('ZRANDMEMBER', pruned, n)) do
    sample(task_key(string.sub(m, 17)), 'tombstone')
  end
end
return { tombs, samples }
