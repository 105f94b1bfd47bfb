//! What the emulator answers where the store decides on a status code:
//! a create (`exists = false` precondition) of an id that exists.

use chrono::Utc;
use firestore::gcloud_sdk::google::firestore::v1::{
    BatchWriteRequest, Document, Precondition, Write, precondition::ConditionType, write::Operation,
};
use firestore::gcloud_sdk::tonic::{Code, Request};
use oncetask_core::store::CreateOutcome;
use oncetask_core::{Store, Task};
use oncetask_firestore::FirestoreStore;

mod common;
use common::db;

fn collection() -> String {
    format!("status-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn a_create_precondition_on_an_existing_document_is_already_exists() {
    let db = db().await;
    let name = format!("{}/{}/d1", db.get_documents_path(), collection());
    let create = || BatchWriteRequest {
        database: db.get_database_path().clone(),
        writes: vec![Write {
            operation: Some(Operation::Update(Document {
                name: name.clone(),
                ..Default::default()
            })),
            current_document: Some(Precondition {
                condition_type: Some(ConditionType::Exists(false)),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut codes = Vec::new();
    for _ in 0..2 {
        let response = db
            .client()
            .get()
            .batch_write(Request::new(create()))
            .await
            .expect("batch write")
            .into_inner();
        codes.push(Code::from(response.status[0].code));
    }
    // The store's `is_exists` matches on ALREADY_EXISTS only.
    assert_eq!(codes, [Code::Ok, Code::AlreadyExists]);
}

#[tokio::test]
async fn creating_an_existing_id_reports_already_exists() {
    let store = FirestoreStore::with_collection(db().await, collection());
    let now = Utc::now();
    let first = store
        .create(vec![Task::new("t1", "job", "prod", now)])
        .await
        .expect("create");
    assert!(matches!(first[..], [CreateOutcome::Created]), "{first:?}");
    let again = store
        .create(vec![
            Task::new("t1", "job", "prod", now),
            Task::new("t2", "job", "prod", now),
        ])
        .await
        .expect("create");
    assert!(
        matches!(
            again[..],
            [CreateOutcome::AlreadyExists, CreateOutcome::Created]
        ),
        "{again:?}"
    );
    let other_env = store
        .create(vec![Task::new("t1", "job", "staging", now)])
        .await
        .expect("create");
    assert!(
        matches!(&other_env[..], [CreateOutcome::ExistsInOtherEnv { env }] if env == "prod"),
        "{other_env:?}"
    );
}
