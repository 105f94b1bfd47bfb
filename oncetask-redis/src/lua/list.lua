-- list: one page of a listing index in creation order, with the tasks.
-- KEYS[1]: the listing zset. ARGV: base, exclusive lex start ('-' first),
-- members to read, the done statuses wanted as ',failed,' ('' for every
-- status: otherwise only tasks whose `dst` field is one of them, so a
-- status filter does not ship the documents it would drop), the lex end
-- ('+' for none: the end of a creation time range), and an id prefix ('':
-- any id; a member holds its id after the 16-character time, so the
-- prefix is checked before the hash is read).
-- Returns { last member read or '', { task hash, ... }, members read }.
local members = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[5] or '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
local want = ARGV[4] or ''
local prefix = ARGV[6] or ''
local tasks = {}
for _, m in ipairs(members) do
  local id = string.sub(m, 17)
  if prefix == '' or string.sub(id, 1, #prefix) == prefix then
    local key = task_key(id)
    if want == '' then
      tasks[#tasks + 1] = redis.call('HGETALL', key)
    else
      local dst = redis.call('HGET', key, 'dst')
      if dst and string.find(want, ',' .. dst .. ',', 1, true) then
        tasks[#tasks + 1] = redis.call('HGETALL', key)
      end
    end
  end
end
return { members[#members] or '', tasks, #members }
