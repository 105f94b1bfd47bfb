//! A kit for testing code that uses oncetask: deterministic time,
//! run-until-idle, isolated handler runs, assertions with readable
//! failure messages, and an inline mode. Enable the `testing` feature.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use oncetask_core::testing::TestKit;
//! use oncetask_core::{HandlerOptions, Store, TaskArgs, TaskContext};
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # struct Ping { n: u32 }
//! # impl TaskArgs for Ping {
//! #     const KIND: &'static str = "ping";
//! #     fn idempotent_id(&self) -> String { format!("ping-{}", self.n) }
//! # }
//! # async fn demo(store: Arc<dyn Store>) {
//! let kit = TestKit::new(store);
//! kit.manager()
//!     .register(
//!         |_ping: Ping, _cx: TaskContext| async { Ok::<_, std::io::Error>(()) },
//!         HandlerOptions::default(),
//!     )
//!     .unwrap();
//! kit.manager().create(&Ping { n: 1 }).await.unwrap();
//! kit.assert_enqueued::<Ping>("ping", |p| p.n == 1).await;
//! kit.run_until_idle().await;
//! kit.assert_completed("ping-1").await;
//! kit.assert_idle().await;
//! # }
//! ```
//!
//! Every manager-level scenario of the conformance suite runs through this
//! kit, so it is exercised against every backend.

mod assertions;
mod kit;

pub use assertions::AssertionError;
pub use kit::{DrainReport, Performed, TestKit, TestKitBuilder};
