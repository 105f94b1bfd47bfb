//! What the stored tasks take up ([`Store::storage_stats`](super::Store::storage_stats)).

use std::collections::BTreeMap;

use crate::status::TaskStatus;

/// Stored documents (rows, hashes) and their size, for one status or in
/// total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredSize {
    /// Documents.
    pub documents: u64,
    /// Their size in bytes, as the backend measures or estimates it
    /// ([`StorageStats::method`]); `None` when it has no figure.
    pub bytes: Option<u64>,
}

impl StoredSize {
    /// Adds one document of `bytes`.
    pub fn add(&mut self, bytes: Option<u64>) {
        self.bytes = match (self.documents, self.bytes, bytes) {
            (0, _, bytes) => bytes,
            (_, Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.documents += 1;
    }
}

/// One figure a backend reports beside the per-status ones (a relation's
/// size on disk, the server's memory), with what it measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFigure {
    /// What it is and how it was obtained, e.g. `table oncetask_tasks
    /// (pg_total_relation_size, every env)`.
    pub label: String,
    /// Bytes.
    pub bytes: u64,
}

/// What the tasks of one environment take up in the store
/// ([`Store::storage_stats`](super::Store::storage_stats)): documents and
/// bytes per status (full documents), tombstones apart, and backend
/// figures, each labelled with how it was obtained.
///
/// ```
/// use oncetask_core::TaskStatus;
/// use oncetask_core::store::StorageStats;
///
/// let mut stats = StorageStats::new("counted");
/// stats.by_status.entry(TaskStatus::Completed).or_default().add(Some(300));
/// stats.tombstones.add(Some(80));
/// assert_eq!(stats.documents(), 2);
/// assert_eq!(stats.bytes(), Some(380));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageStats {
    /// Full documents per status (tombstones are not in here).
    pub by_status: BTreeMap<TaskStatus, StoredSize>,
    /// Tombstones (pruned tasks), whatever their status.
    pub tombstones: StoredSize,
    /// Figures of the whole store (relations, memory), labelled.
    pub figures: Vec<StorageFigure>,
    /// How the per-status figures were obtained (exact counts, sampling,
    /// estimates).
    pub method: String,
}

impl StorageStats {
    /// Empty figures obtained by `method`.
    pub fn new(method: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            ..Self::default()
        }
    }

    /// Every document counted, tombstones included.
    pub fn documents(&self) -> u64 {
        self.by_status.values().map(|s| s.documents).sum::<u64>() + self.tombstones.documents
    }

    /// Their bytes, when every part has a figure.
    pub fn bytes(&self) -> Option<u64> {
        self.by_status
            .values()
            .chain(std::iter::once(&self.tombstones))
            .filter(|s| s.documents > 0)
            .try_fold(0u64, |sum, s| s.bytes.map(|b| sum + b))
    }
}
