//! Typed handlers: the kind comes from the argument type, the handler gets
//! the decoded payload and its task's context, a payload that does not
//! decode and a permanent error fail the task at once.

use std::sync::{Arc, Mutex};

use oncetask_core::manager::{HandlerOptions, TaskContext};
use oncetask_core::{HandlerError, Outcome, TaskArgs, TaskStatus};
use serde::{Deserialize, Serialize};

use super::{ENV, Job, create, manual};
use crate::StoreFactory;

/// A typed task: one invoice of one customer (the resource key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    /// Invoice number.
    pub number: u32,
    /// Customer; invoices of one customer never run at the same time.
    pub customer: String,
}

impl TaskArgs for Invoice {
    const KIND: &'static str = "typed_invoice";

    fn idempotent_id(&self) -> String {
        format!("invoice-{}", self.number)
    }

    fn resource_key(&self) -> Option<String> {
        Some(self.customer.clone())
    }
}

fn invoice(number: u32) -> Invoice {
    Invoice {
        number,
        customer: "ada".into(),
    }
}

type Seen = Arc<Mutex<Vec<(Invoice, TaskContext)>>>;

/// The handler registered for the type runs its tasks, with the payload as
/// created and the task's id, kind, env, attempt and resource key.
pub async fn a_typed_handler_gets_its_payload_and_context(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let seen = Seen::default();
    let log = seen.clone();
    h.manager
        .register(
            move |invoice: Invoice, cx: TaskContext| {
                let log = log.clone();
                async move {
                    log.lock().expect("log").push((invoice, cx));
                    Ok::<_, std::io::Error>("paid")
                }
            },
            HandlerOptions::default(),
        )
        .expect("register");
    let created = h.manager.create(&invoice(7)).await.expect("create");
    assert!(created.is_created());

    assert_eq!(h.drain(Invoice::KIND).await, 1);
    let task = h.kit.assert_completed("invoice-7").await;
    assert_eq!(task.result, Some(serde_json::json!("paid")));
    let seen = seen.lock().expect("log");
    let [(args, cx)] = seen.as_slice() else {
        panic!("one run expected, got {seen:?}");
    };
    assert_eq!(args, &invoice(7));
    assert_eq!(cx.id, "invoice-7");
    assert_eq!(cx.kind, Invoice::KIND);
    assert_eq!(cx.env, ENV);
    assert_eq!(cx.attempt, 1);
    assert_eq!(cx.resource_key.as_deref(), Some("ada"));
    assert!(!cx.is_cancelled);
    assert!(cx.leased_until.is_some_and(|until| until > h.clock.now()));
}

/// A stored payload that is not an `Invoice` fails on its first run, with
/// retries left, and the error names the type; the handler never runs.
pub async fn a_payload_that_does_not_decode_fails_at_once_naming_the_type(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let runs = Arc::new(Mutex::new(0_u32));
    let counted = runs.clone();
    h.manager
        .register(
            move |_invoice: Invoice, _cx: TaskContext| {
                let counted = counted.clone();
                async move {
                    *counted.lock().expect("count") += 1;
                    Ok::<_, std::io::Error>(())
                }
            },
            HandlerOptions::default(),
        )
        .expect("register");
    // Same kind, another shape: `{"n": 3}` has no `number` or `customer`.
    create(&h.manager, &Job::new(Invoice::KIND, "stray").n(3)).await;

    assert_eq!(h.drain(Invoice::KIND).await, 1, "no retry");
    let task = h.kit.assert_failed("stray").await;
    assert_eq!(task.attempts, 1);
    assert_eq!(task.outcome, Some(Outcome::Failed));
    let error = &task.errors[0].error;
    assert!(
        error.contains("payload does not decode as") && error.contains("Invoice"),
        "{error}"
    );
    assert_eq!(*runs.lock().expect("count"), 0);
}

/// A handler's `HandlerError::permanent` fails the task on the first
/// attempt although the default policy allows three.
pub async fn a_permanent_handler_error_fails_at_once(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    h.manager
        .register(
            |_invoice: Invoice, _cx: TaskContext| async {
                Err::<(), _>(HandlerError::permanent("the customer closed the account"))
            },
            HandlerOptions::default(),
        )
        .expect("register");
    create_invoice(&h.manager, 1).await;

    assert_eq!(h.drain(Invoice::KIND).await, 1);
    let task = h.kit.assert_failed("invoice-1").await;
    assert_eq!(task.attempts, 1);
    assert_eq!(task.errors.len(), 1);
    assert_eq!(task.errors[0].error, "the customer closed the account");
}

/// A typed cancellation handler gets the cancelled task's payload, and its
/// context says it is cancelled.
pub async fn a_typed_cancellation_handler_gets_the_payload(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let seen = Seen::default();
    let log = seen.clone();
    let options =
        HandlerOptions::default().cancellation_handler(move |invoice: Invoice, cx: TaskContext| {
            let log = log.clone();
            async move {
                log.lock().expect("log").push((invoice, cx));
                Ok::<_, std::io::Error>(())
            }
        });
    h.manager
        .register(
            |_invoice: Invoice, _cx: TaskContext| async { Ok::<_, std::io::Error>(()) },
            options,
        )
        .expect("register");
    create_invoice(&h.manager, 2).await;
    h.manager.cancel("invoice-2").await.expect("cancel");

    h.drain(Invoice::KIND).await;
    assert_eq!(h.status("invoice-2").await, TaskStatus::Cancelled);
    let seen = seen.lock().expect("log");
    let [(args, cx)] = seen.as_slice() else {
        panic!("one cancellation run expected, got {seen:?}");
    };
    assert_eq!(args.number, 2);
    assert!(cx.is_cancelled);
    assert_eq!(cx.attempt, 1, "the cancellation path's own count");
}

/// A typed group handler gets every ready task of one key in one call, in
/// due order, each with its own context.
pub async fn a_typed_group_handler_gets_the_whole_group(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let calls = Arc::new(Mutex::new(Vec::<Vec<(u32, String)>>::new()));
    let log = calls.clone();
    h.manager
        .register_group(
            move |items: Vec<(Invoice, TaskContext)>| {
                let log = log.clone();
                async move {
                    let call = items
                        .into_iter()
                        .map(|(invoice, cx)| (invoice.number, cx.id))
                        .collect();
                    log.lock().expect("log").push(call);
                    Ok::<_, std::io::Error>(())
                }
            },
            HandlerOptions::default(),
        )
        .expect("register");
    for number in [1, 2, 3] {
        create_invoice(&h.manager, number).await;
        h.advance(std::time::Duration::from_millis(1));
    }

    h.drain(Invoice::KIND).await;
    let calls = calls.lock().expect("log").clone();
    assert_eq!(
        calls,
        [vec![
            (1, "invoice-1".to_owned()),
            (2, "invoice-2".to_owned()),
            (3, "invoice-3".to_owned()),
        ]]
    );
    for number in [1, 2, 3] {
        h.kit.assert_completed(&format!("invoice-{number}")).await;
    }
}

async fn create_invoice(manager: &oncetask_core::Manager, number: u32) {
    let created = manager.create(&invoice(number)).await.expect("create");
    assert!(created.is_created(), "invoice-{number} should be new");
}

/// A producer declares the task type it creates without handling it; an
/// undeclared kind is refused and nothing is stored.
pub async fn a_producer_declares_the_types_it_creates(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let builder = || {
        oncetask_core::Manager::builder(Arc::new(h.store.clone()))
            .env(ENV)
            .clock(Arc::new(h.clock.clone()))
            .start_workers(false)
    };
    let undeclared = builder().build();
    let refused = undeclared.create(&invoice(5)).await;
    assert!(
        matches!(&refused, Err(oncetask_core::Error::UnknownKind { kind }) if kind == Invoice::KIND),
        "{refused:?}"
    );
    assert!(
        h.manager
            .get_task("invoice-5")
            .await
            .expect("get")
            .is_none()
    );

    let producer = builder().declare::<Invoice>().build();
    let created = producer.create(&invoice(5)).await.expect("create");
    assert!(created.is_created());
    assert_eq!(h.status("invoice-5").await, TaskStatus::Pending);
}

/// A task of a group whose payload does not decode fails on its own; the
/// group handler gets the rest of the group.
pub async fn a_malformed_task_fails_alone_and_its_group_runs(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let calls = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
    let log = calls.clone();
    h.manager
        .register_group(
            move |items: Vec<(Invoice, TaskContext)>| {
                let log = log.clone();
                async move {
                    let numbers = items.iter().map(|(invoice, _)| invoice.number).collect();
                    log.lock().expect("log").push(numbers);
                    Ok::<_, std::io::Error>(())
                }
            },
            HandlerOptions::default(),
        )
        .expect("register");
    create_invoice(&h.manager, 1).await;
    h.advance(std::time::Duration::from_millis(1));
    // Same kind and key (customer "ada"), another shape.
    create(
        &h.manager,
        &Job::new(Invoice::KIND, "stray").key("ada").n(3),
    )
    .await;
    h.advance(std::time::Duration::from_millis(1));
    create_invoice(&h.manager, 2).await;

    h.drain(Invoice::KIND).await;
    let calls = calls.lock().expect("log").clone();
    assert_eq!(calls, [vec![1, 2]]);
    let stray = h.kit.assert_failed("stray").await;
    assert_eq!(stray.attempts, 1);
    assert!(
        stray.errors[0].error.contains("payload does not decode"),
        "{:?}",
        stray.errors
    );
    h.kit.assert_completed("invoice-1").await;
    h.kit.assert_completed("invoice-2").await;
}
