-- pause: pause ('1') or resume ('0') a kind of one env.
-- ARGV: base, kind (as given), '1' or '0'. Returns 1 when the state
-- changed; a change is published on the changes channel, so that every
-- manager re-reads the paused kinds (and releases what it claimed ahead).
local kind = ARGV[2]
local changed
if ARGV[3] == '1' then
  changed = redis.call('SADD', B .. 'paused', kind)
else
  changed = redis.call('SREM', B .. 'paused', kind)
end
if changed == 1 then publish({ [kind] = true }) end
return changed
