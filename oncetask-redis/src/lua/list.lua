-- list: one page of a listing index in creation order, with the tasks.
-- KEYS[1]: the listing zset. ARGV: base, exclusive lex start ('-' first), size.
-- Returns { last member or '', { task hash, ... } }.
local members = redis.call('ZRANGE', KEYS[1], ARGV[2], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
local tasks = {}
for i, m in ipairs(members) do
  tasks[i] = redis.call('HGETALL', task_key(string.sub(m, 17)))
end
return { members[#members] or '', tasks }
