//! Isolation and injection (issue 8): a manager reaches only its own
//! environment's tasks, whatever it asks for, and names that look like SQL,
//! Redis key syntax, glob or LIKE patterns are plain data to every backend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use oncetask_core::manager::{HandlerOptions, handler_fn};
use oncetask_core::{Error, Manager, Store, Task, TaskStatus};
use serde_json::json;

use super::{ENV, Harness, Job, create, manual, register_ok};
use crate::hostile::NASTY_NAMES;
use crate::{ClaimTies, StoreFactory};

const KIND: &str = "isolated";
const OTHER: &str = "manager-test-other";

/// Every task of `ids` exactly as stored (missing ones omitted).
async fn stored<S: Store>(store: &S, ids: &[&str]) -> Vec<oncetask_core::store::Fetched> {
    let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    store.get(&ids).await.expect("store get")
}

fn debug<T: std::fmt::Debug>(items: &[T]) -> Vec<String> {
    items.iter().map(|i| format!("{i:?}")).collect()
}

/// A manager in one env cannot read, list, count, claim, cancel, reset or
/// delete another env's tasks — by id, by resource key, in bulk, or by
/// forging the filter's env — and nothing it tries changes them.
pub async fn a_manager_cannot_touch_another_envs_tasks_by_id_or_resource_key(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    let other = h.peer(OTHER, false);
    register_ok(&other, KIND, HandlerOptions::default().no_retry());
    create(&other, &Job::new(KIND, "o-done")).await;
    // Finish one, so that reset applies to it in its own env.
    while other.process_next(KIND).await.expect("run").is_some() {}
    create(&other, &Job::new(KIND, "o-pending").key("k")).await;
    create(&other, &Job::new(KIND, "o-keyed").key("k")).await;
    create(&other, &Job::new(KIND, "o-pending-2")).await;
    let theirs = ["o-pending", "o-keyed", "o-done", "o-pending-2"];
    let before = debug(&stored(&h.store, &theirs).await);

    // Reads.
    assert!(
        h.manager
            .get_task("o-pending")
            .await
            .expect("get")
            .is_none()
    );
    let ids: Vec<String> = theirs.iter().map(|s| (*s).to_owned()).collect();
    assert!(h.manager.get_tasks(&ids).await.expect("get").is_empty());
    assert!(
        h.manager
            .get_tasks_by_resource_key("k")
            .await
            .expect("by key")
            .is_empty()
    );
    let mut forged = h.manager.filter();
    forged.env = OTHER.to_owned();
    let forged = h.manager.find(forged).await;
    assert!(
        matches!(&forged, Err(Error::FilterEnvironment { filter_env, .. }) if filter_env == OTHER),
        "find must refuse another env's filter: {forged:?}"
    );
    assert!(
        h.manager
            .count_by_status(None)
            .await
            .expect("count")
            .is_empty()
    );
    assert!(h.manager.inspect().await.expect("inspect").kinds.is_empty());
    assert_eq!(h.manager.pending_count(KIND).await.expect("count"), 0);
    // Claims.
    assert!(h.manager.process_next(KIND).await.expect("run").is_none());
    // Actions by id, single and bulk.
    for (action, result) in [
        ("cancel", h.manager.cancel("o-pending").await.map(|_| ())),
        ("reset", h.manager.reset("o-done").await),
        ("delete", h.manager.delete("o-done").await),
        ("delete", h.manager.delete("o-pending").await),
    ] {
        assert!(
            matches!(result, Err(Error::WrongEnvironment { .. })),
            "{action}: {result:?}"
        );
    }
    for report in [
        h.manager.cancel_many(&ids).await,
        h.manager.reset_many(&ids).await,
        h.manager.delete_many(&ids).await,
    ] {
        let report = report.expect("bulk call");
        assert!(report.succeeded.is_empty(), "{report:?}");
        assert_eq!(report.failed.len(), theirs.len(), "{report:?}");
        assert!(
            report
                .failed
                .iter()
                .all(|(_, e)| matches!(e, Error::WrongEnvironment { .. })),
            "{report:?}"
        );
    }
    // Actions by resource key.
    let report = h
        .manager
        .cancel_by_resource_key(KIND, "k")
        .await
        .expect("cancel by key");
    assert!(
        report.succeeded.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    // Creating one of their ids here.
    let clash = h.manager.create(&Job::new(KIND, "o-pending")).await;
    assert!(
        matches!(clash, Err(Error::WrongEnvironment { .. })),
        "{clash:?}"
    );
    let report = h
        .manager
        .create_many(&[Job::new(KIND, "o-keyed"), Job::new(KIND, "mine")])
        .await
        .expect("create many");
    assert_eq!(report.succeeded, ["mine"]);
    assert!(matches!(
        report.failed.as_slice(),
        [(id, Error::WrongEnvironment { .. })] if id == "o-keyed"
    ));

    assert_eq!(
        debug(&stored(&h.store, &theirs).await),
        before,
        "the other env's tasks changed"
    );
    // Their own manager still sees and runs them: the key is free for them.
    let report = other
        .process_next(KIND)
        .await
        .expect("run")
        .expect("claimed");
    // Same created_at: the first of the ready ones in the backend's claim
    // order (by id `o-keyed`; by key first `o-pending-2`, which has none).
    let first = match factory.claim_ties() {
        ClaimTies::Id => "o-keyed",
        ClaimTies::ResourceKeyThenId => "o-pending-2",
    };
    assert_eq!(report.claimed, [first]);
    while other.process_next(KIND).await.expect("run").is_some() {}
    for id in ["o-pending", "o-keyed", "o-pending-2"] {
        let task = other.get_task(id).await.expect("get").expect("theirs");
        assert!(task.is_done(), "{id} ran: {task:?}");
    }
}

/// The handler log of the injection scenario: task id -> (env, kind, key, data).
type Seen = Arc<Mutex<BTreeMap<String, (String, String, Option<String>, serde_json::Value)>>>;

/// Builds the manager of `env` with a handler on `kind` that logs what it saw.
fn recording(h: &Harness<impl Store + Clone>, env: &str, kind: &str, seen: &Seen) -> Manager {
    let manager = h.peer(env, false);
    let log = seen.clone();
    manager
        .register_dyn(
            kind.to_owned(),
            handler_fn(move |task: Task| {
                let log = log.clone();
                async move {
                    let entry = (
                        task.env.clone(),
                        task.kind.clone(),
                        task.resource_key.clone(),
                        serde_json::Value::Object(task.data.clone()),
                    );
                    if let Ok(mut log) = log.lock() {
                        log.insert(task.id.clone(), entry);
                    }
                    Ok::<_, std::io::Error>(json!({ "echo": task.id }))
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    manager
}

/// SQL-looking, Redis-key-looking, glob and LIKE names (quotes, `{x}`, `*`,
/// `:`, `%`, `_`, `\`, NUL, ...) used at once as env, kind, id, resource key
/// and payload: each is stored and read back verbatim or refused with a
/// typed error, a wildcard env or kind sees only its own task, every kind
/// runs end to end, and a plain task beside them is untouched.
pub async fn injection_looking_names_are_stored_verbatim_and_harm_nothing(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    create(&h.manager, &Job::new(KIND, "plain").key("plain-key").n(7)).await;
    let plain_before = h.task("plain").await;
    let seen: Seen = Arc::default();

    // Phase 1: create one task per name, all kept until the end, so that a
    // name read as a pattern would catch the others.
    let mut accepted = Vec::new();
    for name in NASTY_NAMES {
        let manager = recording(&h, name, name, &seen);
        let job = Job::new(name, name).key(name).n(1);
        match manager.create(&job).await {
            Ok(oncetask_core::CreateStatus::Created) => accepted.push((*name, manager)),
            Ok(status) => panic!("{name:?}: reported as {status:?}"),
            Err(Error::Store(e)) => eprintln!("note: the backend refuses {name:?}: {e}"),
            Err(Error::EmptyId) if name.trim().is_empty() => {}
            Err(e) => panic!("{name:?}: not a store refusal: {e:?}"),
        }
    }
    assert!(
        accepted.len() * 2 > NASTY_NAMES.len(),
        "most names must be storable; accepted {:?}",
        accepted.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );

    // Phase 2: each env holds exactly its own task, verbatim, and runs it.
    for (name, manager) in &accepted {
        let task = manager
            .get_task(name)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{name:?} not found"));
        assert_eq!(
            (
                task.id.as_str(),
                task.env.as_str(),
                task.kind.as_str(),
                task.resource_key.as_deref()
            ),
            (*name, *name, *name, Some(*name)),
            "{name:?} read back changed"
        );
        let listed = manager.find(manager.filter()).await.expect("find");
        assert_eq!(
            listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            [*name],
            "env {name:?} lists other envs' tasks"
        );
        let by_key = manager.get_tasks_by_resource_key(name).await.expect("key");
        assert_eq!(by_key.len(), 1, "key {name:?}: {by_key:?}");
        let counts = manager.count_by_status(Some(name)).await.expect("count");
        assert_eq!(counts.values().sum::<u64>(), 1, "kind {name:?}: {counts:?}");
        let stats = manager.inspect().await.expect("inspect");
        assert_eq!(
            stats.kinds.keys().collect::<Vec<_>>(),
            [*name],
            "inspect of env {name:?}"
        );
        let report = manager
            .process_next(*name)
            .await
            .expect("run")
            .unwrap_or_else(|| panic!("{name:?} was not claimed"));
        assert_eq!(report.claimed, [*name]);
        assert!(report.undecodable.is_empty(), "{report:?}");
        let done = manager.get_task(name).await.expect("get").expect("exists");
        assert_eq!(
            done.status(h.clock.now()),
            TaskStatus::Completed,
            "{name:?}"
        );
        assert_eq!(done.result, Some(json!({ "echo": name })));
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), accepted.len(), "each task ran exactly once");
    for (name, _) in &accepted {
        let (env, kind, key, data) = seen.get(*name).expect("ran");
        assert_eq!(
            (env.as_str(), kind.as_str(), key.as_deref(), data),
            (*name, *name, Some(*name), &json!({ "n": 1 })),
            "the handler of {name:?} got another view"
        );
    }

    // Phase 3: operator actions by name: reset, cancel by key, delete.
    for (name, manager) in &accepted {
        manager.reset(name).await.expect("reset");
        let report = manager
            .cancel_by_resource_key(*name, name)
            .await
            .expect("cancel by key");
        assert_eq!(report.succeeded, [*name], "cancel by key {name:?}");
        manager.delete(name).await.expect("delete");
        assert!(manager.get_task(name).await.expect("get").is_none());
    }

    // The plain task and its kind are untouched and still work.
    assert_eq!(h.task("plain").await, plain_before);
    assert_eq!(h.manager.env(), ENV);
    create(&h.manager, &Job::new(KIND, "after")).await;
    assert_eq!(h.drain(KIND).await, 2);
    assert_eq!(h.status("plain").await, TaskStatus::Completed);
    assert_eq!(h.status("after").await, TaskStatus::Completed);
}

/// Bulk creates are per item: a name the backend refuses (NUL for
/// PostgreSQL, `/` for Firestore ids, ...) fails its own item only, and the
/// plain task created with it in the same call is stored.
pub async fn a_refused_name_fails_only_its_own_item_of_a_bulk_create(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    for (i, name) in NASTY_NAMES.iter().enumerate() {
        let companion = format!("companion-{i}");
        let jobs = [Job::new(KIND, name).key(name), Job::new(KIND, &companion)];
        let report = h.manager.create_many(&jobs).await;
        let report = report.unwrap_or_else(|e| panic!("{name:?}: the whole call failed: {e}"));
        assert!(
            report.succeeded.contains(&companion),
            "{name:?}: the plain item shared the refusal: {report:?}"
        );
        assert_eq!(
            report.succeeded.len() + report.failed.len(),
            2,
            "{name:?}: {report:?}"
        );
    }
}
