//! The operator reads this backend answers from its own indexes
//! ([`Store::find_generators`], [`Store::find_undecodable`]); the queues
//! of the resource keys use the trait's default (a bounded read of the
//! open tasks in creation order).
//!
//! * Generators: the `gens` set (one member per generator, added at
//!   create, cleaned as stale ids are met), one script call. A generator
//!   created before the set existed is not in it.
//! * Undecodable documents: the per-kind `bad:k` hashes the claims and
//!   `insert_undecodable` fill, one script call. A hash corrupted in place
//!   is listed once a claim has met it and set it aside.

use oncetask_core::store::Undecodable;

use super::*;

impl RedisStore {
    /// One call of a read-only `script` over the keys of `env`, returning
    /// at most `limit` items.
    async fn env_read(
        &self,
        script: &redis::Script,
        env: &str,
        limit: usize,
    ) -> Result<Value, StoreError> {
        let keys = &self.inner.keys;
        let mut conn = self.conn();
        script
            .key(keys.env_route(env))
            .arg(keys.env_base(env))
            .arg(limit)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)
    }

    /// [`Store::find_generators`]: the `gens` set, in id order.
    pub(crate) async fn generators(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Task>, StoreError> {
        let reply = self.env_read(&SCRIPTS.generators, env, limit).await?;
        let mut tasks = Vec::new();
        for stored in array(reply, "find_generators")? {
            if let Decoded::Task(task) = decode(&fields(stored, "find_generators")?) {
                tasks.push(*task);
            }
        }
        Ok(tasks)
    }

    /// [`Store::find_undecodable`]: the per-kind `bad:k` hashes, by id.
    pub(crate) async fn undecodable(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Undecodable>, StoreError> {
        let reply = self.env_read(&SCRIPTS.undecodable, env, limit).await?;
        let mut found = Vec::new();
        let mut items = array(reply, "find_undecodable")?.into_iter();
        while let (Some(id), Some(reason)) = (items.next(), items.next()) {
            found.push(Undecodable {
                id: string(id, "find_undecodable")?,
                reason: string(reason, "find_undecodable")?,
            });
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }
}
