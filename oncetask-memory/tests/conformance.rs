//! The shared store conformance suite, run against [`MemoryStore`].
//!
//! Every test gets its own store; `cargo test -p oncetask-memory --test
//! conformance claim::` runs one concern of the suite.

use conformance_tests::{StoreFactory, async_trait, store_conformance_suite};
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
}

store_conformance_suite!(MemoryFactory);
