-- quarantine: set aside a task whose stored body Rust cannot decode, so
-- that claims report it instead of leasing it again.
-- ARGV: base, id, version (as the claim left it), reason. Returns 1 if done.
local id, version, reason = ARGV[2], ARGV[3], ARGV[4]
local key = task_key(id)
local f = to_table(redis.call('HGETALL', key))
if not indexable(f) or f.ver ~= version then return 0 end
unindex(f)
if f.rk then refresh_key(f.kenc, f.rk, band(f.pri)) end
redis.call('HSET', key, 'bad', reason)
mark_bad(f.kenc, id, reason)
return 1
