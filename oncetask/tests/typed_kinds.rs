//! Task kinds as a user enum, end to end: register, create, run, read back.

use std::sync::Arc;

use oncetask::manager::handler_fn;
use oncetask::testing::TestKit;
use oncetask::{Error, HandlerOptions, MemoryStore, Task, TaskData, TaskKind};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Welcome,
    Invoice,
}

impl TaskKind for Kind {
    fn as_str(&self) -> &str {
        match self {
            Kind::Welcome => "welcome",
            Kind::Invoice => "invoice",
        }
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Welcome {
    user: String,
}

impl TaskData for Welcome {
    type Kind = Kind;
    fn kind(&self) -> Kind {
        Kind::Welcome
    }
    fn idempotent_id(&self) -> String {
        format!("welcome-{}", self.user)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Invoice {
    user: String,
}

impl TaskData for Invoice {
    type Kind = Kind;
    fn kind(&self) -> Kind {
        Kind::Invoice
    }
    fn idempotent_id(&self) -> String {
        format!("invoice-{}", self.user)
    }
}

#[tokio::test]
async fn enum_kinds_select_handlers_and_read_into_checks_the_kind() {
    let kit = TestKit::new(Arc::new(MemoryStore::new()));
    kit.manager()
        .register_dyn(
            Kind::Welcome,
            handler_fn(|task: Task| async move {
                let welcome: Welcome = task.read_into()?;
                Ok::<_, Error>(format!("hello {}", welcome.user))
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    kit.manager()
        .create(&Welcome { user: "ada".into() })
        .await
        .expect("create");
    kit.run_until_idle().await;
    let task = kit.assert_completed("welcome-ada").await;
    assert_eq!(task.kind, "welcome");
    assert_eq!(task.result, Some(serde_json::json!("hello ada")));

    // Reading a task as a type of another kind is a typed error.
    let wrong = task.read_into::<Invoice>();
    assert!(
        matches!(&wrong, Err(Error::KindMismatch { expected, actual }) if expected == "invoice" && actual == "welcome"),
        "{wrong:?}"
    );
    // A kind without a handler is refused at creation.
    let unknown = kit.manager().create(&Invoice { user: "ada".into() }).await;
    assert!(
        matches!(unknown, Err(Error::UnknownKind { .. })),
        "{unknown:?}"
    );
}
