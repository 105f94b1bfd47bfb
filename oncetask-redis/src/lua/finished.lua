-- finished: one page of a finished index (fin:<s>:k or pr:<s>:k) in
-- (done_at, id) order, with the tasks.
-- KEYS[1]: the index. ARGV: base, kenc, lex start, lex end, size.
-- Returns { 1, last member or '', { task hash, ... } } (an empty hash for
-- a member whose task is gone), or { 0 } when the kind's index is not
-- built yet (finb:k: a store older than the index; see backfill.lua).
if redis.call('GET', per_kind('finb', ARGV[2])) ~= '+' then return { 0 } end
local members = redis.call('ZRANGE', KEYS[1], ARGV[3], ARGV[4], 'BYLEX', 'LIMIT', 0,
  tonumber(ARGV[5]))
local tasks = {}
for i, m in ipairs(members) do
  tasks[i] = redis.call('HGETALL', task_key(string.sub(m, 17)))
end
return { 1, members[#members] or '', tasks }
