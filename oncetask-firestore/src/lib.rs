//! # oncetask-firestore
//!
//! The Firestore backend of `oncetask`, compatible with the documents the Go
//! `oncetask` package writes, so Go and Rust services can share one
//! `onceTasks` collection.
//!
//! * [`document`]: how a [`oncetask_core::Task`] is stored as a Firestore
//!   document in the Go package's layout, and how documents Go wrote are
//!   read back (field names, empty strings, time-string ordering). The
//!   fields only Rust writes are listed there, among them `snoozes`,
//!   `priority` and `maxAttempts`, which are written only when they differ
//!   from their default (0, 0, no limit), so that a Go document, which has
//!   none of them, reads as the default; no query filters or orders on
//!   them, as that would leave out every document without them.
//! * [`priority`]: how claims honour task priorities without a query on
//!   `priority`: a claim by priority ranks the window of the oldest ready
//!   tasks ([`DEFAULT_PRIORITY_WINDOW`], 50) on the client, and only while
//!   the kind is known to hold prioritized tasks (a kind whose tasks are
//!   all at priority 0 is claimed at the same cost as before); a task
//!   beyond the window waits until it enters it. Go workers ignore
//!   priority.
//! * [`FirestoreStore`]: the `Store`, built from your own
//!   [`firestore::FirestoreDb`] (the [`store`] module docs say how each
//!   operation works and what it costs in reads and writes).
//!
//! ```no_run
//! use std::sync::Arc;
//! use oncetask_core::Manager;
//! use oncetask_firestore::FirestoreStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Your client, your credentials; `FIRESTORE_EMULATOR_HOST` picks the emulator.
//! let db = firestore::FirestoreDb::new("my-project").await?;
//! let store = FirestoreStore::new(db); // the Go package's `onceTasks` collection
//! let manager = Manager::builder(Arc::new(store)).env("production").build();
//! # let _ = manager;
//!
//! // A named (non-default) database of the project:
//! let options = firestore::FirestoreDbOptions::new("my-project".to_owned())
//!     .with_database_id("tasks-eu".to_owned());
//! let eu = FirestoreStore::new(firestore::FirestoreDb::with_options(options).await?);
//!
//! // Before the first claim on a real database: are the indexes built, may
//! // these credentials read and write?
//! let report = eu.doctor("production", &["send_email".to_owned()]).await?;
//! if !report.is_ok() {
//!     eprintln!("{report}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`FirestoreStore::connect_with`] builds the client and the store in one
//! call, with [`ConnectOptions`](oncetask_core::store::ConnectOptions)
//! (connect timeout, default 5 s): a malformed project, database,
//! collection or `FIRESTORE_EMULATOR_HOST` fails at once with
//! [`StoreError::InvalidConfig`](oncetask_core::StoreError::InvalidConfig),
//! an endpoint that does not answer a first read within the timeout with
//! [`StoreError::Unavailable`](oncetask_core::StoreError::Unavailable),
//! naming it and what to check.
//!
//! * [`doctor`]: [`FirestoreStore::doctor`] and the [`CostModel`].
//! * Deploying (indexes, index exemptions, TTL policy), authentication,
//!   limits and costs: the repository's `docs/firestore.md`.
//!
//! The `firestore` dependency has its default features off. This crate's
//! default feature `tls-webpki-roots` picks TLS roots (`gcloud-sdk` does not
//! build without one; `tls-roots` uses the system's instead); enable
//! `auth-default-crypto` (or the same feature of your own `firestore`
//! dependency) for service-account auth.
//!
//! Local development and tests use Google's Firestore emulator:
//! `scripts/firestore-emulator` starts it on loopback, and `scripts/test`
//! runs the workspace's tests, this crate's conformance suite included,
//! against it.

mod connect;
pub mod doctor;
pub mod document;
pub mod limits;
mod listen;
pub mod priority;
mod queries;
mod routing;
mod signal;
mod status;
pub mod store;

pub use connect::is_valid_database_id;
pub use doctor::{CostModel, DoctorReport};
pub use document::{DecodeError, EncodeError, decode_task, encode_task};
pub use store::{
    DEFAULT_COLLECTION, DEFAULT_PRIORITY_WINDOW, DEFAULT_SIGNAL_INTERVAL, FirestoreStore,
    StoreStats, Wakeups,
};

/// The `firestore` crate this backend is built on: build the
/// `FirestoreDb` a [`FirestoreStore`] wraps with the same version.
pub use firestore;
