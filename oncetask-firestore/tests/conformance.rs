//! The shared store conformance suite, run against [`FirestoreStore`] on
//! Google's Firestore emulator.
//!
//! Needs `FIRESTORE_EMULATOR_HOST`: `scripts/test` (what the README and
//! `.ci/run` use) starts the emulator and runs `cargo test --workspace`;
//! `scripts/test -p oncetask-firestore --test conformance claim::` runs one
//! concern. Every test gets its own collection. The proptest model runs its
//! default 64 cases (`PROPTEST_CASES` overrides).

use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::google::firestore::v1::{
    CommitRequest, Document, DocumentMask, Value, Write, write,
};
use firestore::gcloud_sdk::tonic::Request;
use oncetask_conformance::{
    ClaimTies, Corruption, StoreFactory, async_trait, store_conformance_suite,
};
use oncetask_core::Store;
use oncetask_firestore::FirestoreStore;

mod common;
use common::db;

fn s(v: &str) -> Value {
    Value {
        value_type: Some(ValueType::StringValue(v.to_owned())),
    }
}

/// Hands out a store on a fresh collection of the emulator per test.
struct EmulatorFactory;

#[async_trait]
impl StoreFactory for EmulatorFactory {
    type Store = FirestoreStore;

    /// Claims that leave busy keys out (`resourceKey not-in`) can only
    /// order by the key before the id; every claim page follows that order.
    fn claim_ties(&self) -> ClaimTies {
        ClaimTies::ResourceKeyThenId
    }

    async fn new_store(&self) -> FirestoreStore {
        let collection = format!("onceTasks-{}", uuid::Uuid::new_v4().simple());
        FirestoreStore::with_collection(db().await, collection)
    }

    async fn insert_undecodable(
        &self,
        store: &FirestoreStore,
        id: &str,
        env: &str,
        kind: &str,
    ) -> bool {
        let db = db().await;
        let name = format!("{}/{}/{id}", db.get_documents_path(), store.collection());
        let fields = [
            ("id", s(id)),
            ("env", s(env)),
            ("type", s(kind)),
            ("doneAt", s("")),
            ("waitUntil", s("0001-01-01T00:00:00Z")),
            ("leasedUntil", s("")),
            ("resourceKey", s("")),
            ("createdAt", s("2020-01-01T00:00:00.000Z")),
            ("data", s("conformance suite: not a task")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let request = CommitRequest {
            database: db.get_database_path().clone(),
            writes: vec![Write {
                operation: Some(write::Operation::Update(Document {
                    name,
                    fields,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        };
        db.client()
            .get()
            .commit(Request::new(request))
            .await
            .is_ok()
    }

    /// Stores the healthy original, then rewrites one field of its document
    /// (an update with a field mask; a masked field left out is removed).
    async fn insert_corrupted(
        &self,
        store: &FirestoreStore,
        id: &str,
        env: &str,
        kind: &str,
        corruption: Corruption,
    ) -> bool {
        let original = oncetask_conformance::corruption::original(id, env, kind);
        store
            .create(vec![original])
            .await
            .expect("create the original");
        let (field, value) = match corruption {
            Corruption::MissingField => ("createdAt", None),
            Corruption::WrongType => ("attempts", Some(s("three"))),
            // Sorts like an expired lease, so claims meet it.
            Corruption::BadTimestamp => ("leasedUntil", Some(s("2019-13-45T99:99:99.000Z"))),
            Corruption::UnknownStatus => ("outcome", Some(s("exploded"))),
            Corruption::NegativeCount => (
                "attempts",
                Some(Value {
                    value_type: Some(ValueType::IntegerValue(-1)),
                }),
            ),
        };
        let db = db().await;
        let name = format!("{}/{}/{id}", db.get_documents_path(), store.collection());
        let request = CommitRequest {
            database: db.get_database_path().clone(),
            writes: vec![Write {
                operation: Some(write::Operation::Update(Document {
                    name,
                    fields: value.into_iter().map(|v| (field.to_owned(), v)).collect(),
                    ..Default::default()
                })),
                update_mask: Some(DocumentMask {
                    field_paths: vec![field.to_owned()],
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        db.client()
            .get()
            .commit(Request::new(request))
            .await
            .expect("corrupt the document");
        true
    }
}

store_conformance_suite!(EmulatorFactory);
