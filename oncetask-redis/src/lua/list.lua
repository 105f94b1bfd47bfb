-- list: one page of a listing index in creation order, with the tasks.
-- KEYS[1]: the listing zset. ARGV: base, exclusive lex start ('-' first),
-- members to read, and the done statuses wanted as ',failed,' ('' for
-- every task: then each member's hash is returned; otherwise only those
-- whose `dst` field is one of them, so a status filter does not ship the
-- documents it would drop).
-- Returns { last member read or '', { task hash, ... }, members read }.
local members = redis.call('ZRANGE', KEYS[1], ARGV[2], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
local want = ARGV[4] or ''
local tasks = {}
for _, m in ipairs(members) do
  local key = task_key(string.sub(m, 17))
  if want == '' then
    tasks[#tasks + 1] = redis.call('HGETALL', key)
  else
    local dst = redis.call('HGET', key, 'dst')
    if dst and string.find(want, ',' .. dst .. ',', 1, true) then
      tasks[#tasks + 1] = redis.call('HGETALL', key)
    end
  end
end
return { members[#members] or '', tasks, #members }
