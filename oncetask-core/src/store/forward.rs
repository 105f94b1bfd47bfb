//! Stores that wrap another store: count, record or fail some calls and
//! hand every other call on unchanged.
//!
//! Implement [`Forward`] (name the wrapped store, override the calls to
//! intercept) and the type is a [`Store`]. Every method forwards by
//! default, the provided ones too ([`Store::kinds`], [`Store::check_filter`], [`Store::inspect`],
//! [`Store::find_generators`], [`Store::open_resource_keys`],
//! [`Store::find_undecodable`],
//! [`Store::find_finished`], [`Store::storage_stats`],
//! [`Store::concurrent_claims`], [`Store::claims_ahead`],
//! [`Store::subscribe`]), so a wrapper never silently answers with the
//! [`Store`] trait's generic defaults instead of the wrapped backend's own.
//! Where both traits are in scope, a call on the wrapper itself names its
//! trait (`Store::claim(&wrapper, …)`); through `Arc<dyn Store>` it needs
//! none.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use async_trait::async_trait;
//! use oncetask_core::store::{ClaimRequest, Claimed, Forward, Store};
//! use oncetask_core::StoreError;
//!
//! /// Counts claims; everything else goes straight through.
//! struct CountClaims {
//!     inner: Arc<dyn Store>,
//!     claims: AtomicUsize,
//! }
//!
//! #[async_trait]
//! impl Forward for CountClaims {
//!     fn inner(&self) -> &dyn Store {
//!         &*self.inner
//!     }
//!
//!     async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
//!         self.claims.fetch_add(1, Ordering::Relaxed);
//!         self.inner.claim(request).await
//!     }
//! }
//!
//! fn wrap(inner: Arc<dyn Store>) -> Arc<dyn Store> {
//!     Arc::new(CountClaims { inner, claims: AtomicUsize::new(0) })
//! }
//! ```

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use super::{
    ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome, Fetched, FinishedQuery, KeyQueues,
    Notification, StartsRequest, StorageStats, Store, Swap, SwapOutcome, TaskFilter, Undecodable,
};
use crate::error::StoreError;
use crate::inspect::QueueStats;
use crate::status::StatusCounts;
use crate::task::Task;

/// A store that wraps [`Forward::inner`]: each method hands the call to
/// it unless overridden. Every `Forward` is a [`Store`].
#[async_trait]
pub trait Forward: Send + Sync + 'static {
    /// The wrapped store.
    fn inner(&self) -> &dyn Store;

    /// [`Store::create`].
    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        self.inner().create(tasks).await
    }

    /// [`Store::claim`].
    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        self.inner().claim(request).await
    }

    /// [`Store::swap`].
    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        self.inner().swap(swaps).await
    }

    /// [`Store::get`].
    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        self.inner().get(ids).await
    }

    /// [`Store::find`].
    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.inner().find(filter).await
    }

    /// [`Store::check_filter`].
    fn check_filter(&self, filter: &TaskFilter) -> Result<(), StoreError> {
        self.inner().check_filter(filter)
    }

    /// [`Store::count_by_status`].
    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        self.inner().count_by_status(env, kind, now).await
    }

    /// [`Store::delete`].
    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        self.inner().delete(deletes).await
    }

    /// [`Store::next_due`].
    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner().next_due(env, kind, after).await
    }

    /// [`Store::kinds`].
    async fn kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.inner().kinds(env).await
    }

    /// [`Store::inspect`].
    async fn inspect(&self, env: &str, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
        self.inner().inspect(env, now).await
    }

    /// [`Store::find_finished`].
    async fn find_finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        self.inner().find_finished(query).await
    }

    /// [`Store::find_generators`].
    async fn find_generators(&self, env: &str, limit: usize) -> Result<Vec<Task>, StoreError> {
        self.inner().find_generators(env, limit).await
    }

    /// [`Store::open_resource_keys`].
    async fn open_resource_keys(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<KeyQueues, StoreError> {
        self.inner().open_resource_keys(env, kind, now, limit).await
    }

    /// [`Store::find_undecodable`].
    async fn find_undecodable(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Undecodable>, StoreError> {
        self.inner().find_undecodable(env, limit).await
    }

    /// [`Store::set_paused`].
    async fn set_paused(&self, env: &str, kind: &str, paused: bool) -> Result<bool, StoreError> {
        self.inner().set_paused(env, kind, paused).await
    }

    /// [`Store::paused_kinds`].
    async fn paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.inner().paused_kinds(env).await
    }

    /// [`Store::take_starts`].
    async fn take_starts(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        self.inner().take_starts(requests).await
    }

    /// [`Store::return_starts`].
    async fn return_starts(&self, requests: &[StartsRequest]) -> Result<(), StoreError> {
        self.inner().return_starts(requests).await
    }

    /// [`Store::storage_stats`].
    async fn storage_stats(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        self.inner().storage_stats(env, now).await
    }

    /// [`Store::concurrent_claims`].
    fn concurrent_claims(&self) -> usize {
        self.inner().concurrent_claims()
    }

    /// [`Store::claims_ahead`].
    fn claims_ahead(&self) -> bool {
        self.inner().claims_ahead()
    }

    /// [`Store::subscribe`].
    fn subscribe(&self, env: &str) -> Option<BoxStream<'static, Notification>> {
        self.inner().subscribe(env)
    }
}

#[async_trait]
impl<F: Forward> Store for F {
    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        Forward::create(self, tasks).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        Forward::claim(self, request).await
    }

    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        Forward::swap(self, swaps).await
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        Forward::get(self, ids).await
    }

    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        Forward::find(self, filter).await
    }

    fn check_filter(&self, filter: &TaskFilter) -> Result<(), StoreError> {
        Forward::check_filter(self, filter)
    }

    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        Forward::count_by_status(self, env, kind, now).await
    }

    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        Forward::delete(self, deletes).await
    }

    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Forward::next_due(self, env, kind, after).await
    }

    async fn kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        Forward::kinds(self, env).await
    }

    async fn inspect(&self, env: &str, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
        Forward::inspect(self, env, now).await
    }

    async fn find_finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        Forward::find_finished(self, query).await
    }

    async fn find_generators(&self, env: &str, limit: usize) -> Result<Vec<Task>, StoreError> {
        Forward::find_generators(self, env, limit).await
    }

    async fn open_resource_keys(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<KeyQueues, StoreError> {
        Forward::open_resource_keys(self, env, kind, now, limit).await
    }

    async fn find_undecodable(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Undecodable>, StoreError> {
        Forward::find_undecodable(self, env, limit).await
    }

    async fn set_paused(&self, env: &str, kind: &str, paused: bool) -> Result<bool, StoreError> {
        Forward::set_paused(self, env, kind, paused).await
    }

    async fn paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        Forward::paused_kinds(self, env).await
    }

    async fn take_starts(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        Forward::take_starts(self, requests).await
    }

    async fn return_starts(&self, requests: &[StartsRequest]) -> Result<(), StoreError> {
        Forward::return_starts(self, requests).await
    }

    async fn storage_stats(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        Forward::storage_stats(self, env, now).await
    }

    fn concurrent_claims(&self) -> usize {
        Forward::concurrent_claims(self)
    }

    fn claims_ahead(&self) -> bool {
        Forward::claims_ahead(self)
    }

    fn subscribe(&self, env: &str) -> Option<BoxStream<'static, Notification>> {
        Forward::subscribe(self, env)
    }
}
