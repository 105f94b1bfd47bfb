//! The stored documents: what the document map holds and the id every
//! index shares. Kept apart from the indexes (`index`, `ready`) so that both
//! use them without depending on each other.

use std::sync::Arc;

use oncetask_core::Task;

/// A task id as the store keeps it: one allocation per task, shared by the
/// document map and every index entry (an index move clones a pointer).
pub(crate) type Id = Arc<str>;

/// The store's hash maps: hashbrown's default hasher (foldhash) costs a
/// fraction of std's SipHash on the short ids, envs and kinds looked up on
/// every write, and still seeds each map at random.
pub(crate) type HashMap<K, V> = hashbrown::HashMap<K, V>;

/// One stored document.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // almost every entry is a task: boxing it would cost every one
pub(crate) enum Entry {
    /// A valid task.
    Task(Task),
    /// A document that does not decode (inserted by `insert_undecodable`).
    Raw(RawDoc),
}

/// The parts of an undecodable document a backend can still see.
#[derive(Debug)]
pub(crate) struct RawDoc {
    pub(crate) env: String,
    pub(crate) kind: String,
    pub(crate) reason: String,
}

impl Entry {
    pub(crate) fn env(&self) -> &str {
        match self {
            Entry::Task(t) => &t.env,
            Entry::Raw(r) => &r.env,
        }
    }

    pub(crate) fn kind(&self) -> &str {
        match self {
            Entry::Task(t) => &t.kind,
            Entry::Raw(r) => &r.kind,
        }
    }
}
