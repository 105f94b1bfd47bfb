//! # oncetask-firestore
//!
//! The Firestore backend of `oncetask`, compatible with the documents the Go
//! `oncetask` package writes, so Go and Rust services can share one
//! `onceTasks` collection.
//!
//! This first increment provides the document mapping ([`document`]): how a
//! [`oncetask_core::Task`] is stored as a Firestore document in the Go
//! package's layout, and how documents Go wrote are read back. The `Store`
//! implementation follows.
//!
//! The crate depends on `firestore` without default features: the
//! application builds its own `FirestoreDb` and chooses TLS roots and auth
//! crypto through its own `firestore` dependency (cargo unifies the features).

pub mod document;

pub use document::{DecodeError, EncodeError, decode_task, encode_task};
