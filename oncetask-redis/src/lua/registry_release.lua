-- registry_release: delete an id's registry entry only if it still holds
-- the given value. KEYS[1]: the entry. ARGV: the value.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
