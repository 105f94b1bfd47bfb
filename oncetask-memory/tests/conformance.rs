//! The shared store conformance suite, run against [`MemoryStore`].
//!
//! Every test gets its own store; `cargo test -p oncetask-memory --test
//! conformance claim::` runs one concern of the suite.

use oncetask_conformance::{Corruption, StoreFactory, async_trait, store_conformance_suite};
use oncetask_memory::MemoryStore;

/// Hands out a fresh, empty [`MemoryStore`] per test.
struct MemoryFactory;

#[async_trait]
impl StoreFactory for MemoryFactory {
    type Store = MemoryStore;

    async fn new_store(&self) -> MemoryStore {
        MemoryStore::new()
    }

    async fn insert_undecodable(
        &self,
        store: &MemoryStore,
        id: &str,
        env: &str,
        kind: &str,
    ) -> bool {
        store.insert_undecodable(id, env, kind, "conformance suite: not a task");
        true
    }

    /// The memory store keeps decoded tasks, not encoded records: every
    /// corruption is held as the raw entry a failed decode would leave.
    async fn insert_corrupted(
        &self,
        store: &MemoryStore,
        id: &str,
        env: &str,
        kind: &str,
        corruption: Corruption,
    ) -> bool {
        store.insert_undecodable(id, env, kind, &format!("corrupted: {corruption:?}"));
        true
    }
}

store_conformance_suite!(MemoryFactory);
