-- insert_raw: store a document that is not a task (tests of W7).
-- ARGV: base, id, generation, env, kind, kenc, reason.
local id, gen, env, kind, kenc, reason = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
redis.call('HSET', task_key(id), 'gen', gen, 'id', id, 'env', env, 'kind', kind, 'kenc', kenc,
  'bad', reason, 'body', 'not a task')
mark_bad(kenc, id, reason)
publish({ [kind] = true })
return 1
