//! `oncetask ui`: serves the web dashboard of [`oncetask_ui`] over the
//! store of `--store` (or, with `--demo`, an in-memory store running the
//! demo's tasks).
//!
//! The access token comes from `--token-file` or the
//! [`oncetask_ui::TOKEN_ENV`] environment variable, never from the command
//! line itself (where `ps` would show it) nor from a URL. Binding beyond
//! loopback without one is refused.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oncetask::async_trait;
use oncetask::backend::{
    ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome, Fetched, Forward, StartsRequest,
    Swap, SwapOutcome,
};
use oncetask::{Store, StoreError, Task, TaskFilter};
use oncetask_ui::{HostPolicy, TOKEN_ENV, UiConfig, UiToken};

use crate::args::{GlobalArgs, UiArgs};
use crate::error::CliError;
use crate::{Io, StoreUrl};

/// The dashboard's configuration for `args` and a token: loopback binds
/// answer loopback `Host`s (and `--allow-host` names); any other bind needs
/// a token, and then answers the `--allow-host` names, or any `Host` when
/// none is given (the token standing in for the check).
pub fn config(
    args: &UiArgs,
    token: Option<UiToken>,
    store_label: String,
) -> Result<UiConfig, CliError> {
    let bind = args.bind;
    let loopback = bind.ip().is_loopback();
    if !loopback && token.is_none() {
        return Err(CliError::usage(format!(
            "refusing to serve the dashboard on {bind} without an access token: anyone who \
             reaches that address could change and delete tasks. Set {TOKEN_ENV} or pass \
             --token-file PATH (at least {} bytes), or bind to 127.0.0.1",
            oncetask_ui::MIN_TOKEN_LEN
        )));
    }
    let host_policy = match (loopback, args.allow_hosts.is_empty()) {
        (true, true) => HostPolicy::Loopback,
        (false, true) => HostPolicy::Any,
        (true, false) => HostPolicy::Names(
            ["localhost", "127.0.0.1", "[::1]"]
                .into_iter()
                .map(str::to_owned)
                .chain(args.allow_hosts.iter().cloned())
                .collect(),
        ),
        (false, false) => HostPolicy::Names(args.allow_hosts.clone()),
    };
    let mut config = UiConfig::new(store_label)
        .read_only(args.read_only)
        .host_policy(host_policy);
    if let Some(every) = args.refresh {
        config = config.refresh(every);
    }
    if let Some(token) = token {
        config = config.token(token);
    }
    Ok(config)
}

/// The access token: from `--token-file`, else from [`TOKEN_ENV`] (`env`
/// is its value, if set), else none.
pub fn token(args: &UiArgs, env: Option<String>) -> Result<Option<UiToken>, CliError> {
    if let Some(path) = &args.token_file {
        return UiToken::from_file(path)
            .map(Some)
            .map_err(|e| CliError::usage(format!("--token-file {}: {e}", path.display())));
    }
    match env {
        Some(value) if !value.trim().is_empty() => UiToken::new(value)
            .map(Some)
            .map_err(|e| CliError::usage(format!("{TOKEN_ENV}: {e}"))),
        _ => Ok(None),
    }
}

/// Runs `oncetask ui` until the process is stopped.
pub async fn run(global: &GlobalArgs, args: &UiArgs, io: &mut Io<'_>) -> Result<(), CliError> {
    let token = token(args, std::env::var(TOKEN_ENV).ok())?;
    let has_token = token.is_some();
    let (manager, label) = if args.demo {
        if global.store.is_some() {
            return Err(CliError::usage(
                "--demo brings its own in-memory store: leave out --store (and ONCETASK_STORE)",
            ));
        }
        let manager = crate::demo::start_for_ui().await?;
        (manager, "memory:// (the demo's tasks)".to_owned())
    } else {
        let url = global.store.clone().ok_or_else(|| {
            CliError::usage(
                "no store given: pass --store URL or set ONCETASK_STORE, or try `oncetask ui --demo`",
            )
        })?;
        if url == StoreUrl::Memory {
            writeln!(
                io.err,
                "note: memory:// is a new, empty store in this process; try `oncetask ui --demo`"
            )?;
        }
        let timeout = Duration::from_secs(global.connect_timeout.max(1));
        let store: Arc<dyn Store> = match url.open(timeout).await {
            Ok(store) => store,
            // Unreachable (not misconfigured): serve anyway, say so on
            // every page, and keep trying.
            Err(CliError::Store(why)) => {
                writeln!(
                    io.err,
                    "warning: cannot reach the store yet ({why}); the dashboard says so and \
                     retries every {} s",
                    RECONNECT_EVERY.as_secs()
                )?;
                Reconnecting::start(url.clone(), timeout, why)
            }
            Err(e) => return Err(e),
        };
        (crate::operator_manager(store, &global.env), url.redacted())
    };
    let config = config(args, token, label.clone())?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| CliError::usage(format!("cannot listen on {}: {e}", args.bind)))?;
    let addr = listener.local_addr()?;
    writeln!(
        io.out,
        "oncetask dashboard: http://{addr}/ (store {label}, environment {:?}{}{})",
        manager.env(),
        if args.read_only { ", read-only" } else { "" },
        if has_token {
            ", access token required"
        } else {
            ""
        },
    )?;
    writeln!(io.err, "serving until stopped (Ctrl-C)")?;
    io.out.flush()?;
    let router = oncetask_ui::router(manager, config);
    oncetask_ui::serve(listener, router)
        .await
        .map_err(|e| CliError::failed(format!("the dashboard stopped: {e}")))
}

/// How often `oncetask ui` tries again to reach a store it could not.
const RECONNECT_EVERY: Duration = Duration::from_secs(5);

/// A store that could not be reached when the dashboard started: it
/// answers every call with the last connection error
/// ([`StoreError::Unavailable`]) until a background task reaches the
/// store, and from then on is that store.
struct Reconnecting {
    connected: OnceLock<Arc<dyn Store>>,
    down: Unreachable,
}

impl Reconnecting {
    /// Starts reconnecting to `url` every [`RECONNECT_EVERY`].
    fn start(url: StoreUrl, timeout: Duration, why: String) -> Arc<dyn Store> {
        let store = Arc::new(Reconnecting {
            connected: OnceLock::new(),
            down: Unreachable(Mutex::new(why)),
        });
        let retrying = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECONNECT_EVERY).await;
                match url.open(timeout).await {
                    Ok(connected) => {
                        let _ = retrying.connected.set(connected);
                        eprintln!("connected to the store {url}");
                        return;
                    }
                    Err(e) => retrying.down.set(e.to_string()),
                }
            }
        });
        store
    }
}

impl Forward for Reconnecting {
    fn inner(&self) -> &dyn Store {
        match self.connected.get() {
            Some(store) => store.as_ref(),
            None => &self.down,
        }
    }
}

/// A store that cannot be reached, and why.
struct Unreachable(Mutex<String>);

impl Unreachable {
    fn set(&self, why: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    fn error(&self) -> StoreError {
        let why = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        StoreError::Unavailable(format!(
            "{why} (retrying every {} s)",
            RECONNECT_EVERY.as_secs()
        ))
    }
}

#[async_trait]
impl Store for Unreachable {
    async fn create(&self, _: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        Err(self.error())
    }
    async fn claim(&self, _: &ClaimRequest) -> Result<Claimed, StoreError> {
        Err(self.error())
    }
    async fn swap(&self, _: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        Err(self.error())
    }
    async fn get(&self, _: &[String]) -> Result<Vec<Fetched>, StoreError> {
        Err(self.error())
    }
    async fn find(&self, _: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        Err(self.error())
    }
    async fn count_by_status(
        &self,
        _: &str,
        _: Option<&str>,
        _: DateTime<Utc>,
    ) -> Result<oncetask::StatusCounts, StoreError> {
        Err(self.error())
    }
    async fn delete(&self, _: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        Err(self.error())
    }
    async fn next_due(
        &self,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Err(self.error())
    }
    async fn set_paused(&self, _: &str, _: &str, _: bool) -> Result<bool, StoreError> {
        Err(self.error())
    }
    async fn paused_kinds(&self, _: &str) -> Result<Vec<String>, StoreError> {
        Err(self.error())
    }
    async fn take_starts(&self, _: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        Err(self.error())
    }
    async fn return_starts(&self, _: &[StartsRequest]) -> Result<(), StoreError> {
        Err(self.error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn ui_args(extra: &[&str]) -> UiArgs {
        let mut argv = vec!["oncetask", "ui"];
        argv.extend_from_slice(extra);
        match crate::Cli::try_parse_from(argv).expect("parses").command {
            crate::Command::Ui(args) => args,
            other => panic!("not ui: {other:?}"),
        }
    }

    #[test]
    fn a_bind_beyond_loopback_needs_a_token() {
        let args = ui_args(&["--bind", "0.0.0.0:9000"]);
        assert_eq!(args.bind.port(), 9000);
        let err = config(&args, None, "memory://".into()).expect_err("no token");
        assert!(err.to_string().contains("without an access token"), "{err}");
        let token = UiToken::new("0123456789abcdef0123").expect("token");
        let ok = config(&args, Some(token.clone()), "memory://".into()).expect("token");
        assert_eq!(ok.host_policy, HostPolicy::Any);
        assert!(ok.token.is_some());
        let named = ui_args(&["--bind", "0.0.0.0:9000", "--allow-host", "ops.example"]);
        let ok = config(&named, Some(token), "memory://".into()).expect("token");
        assert!(ok.host_policy.allows("ops.example:9000"));
        assert!(!ok.host_policy.allows("evil.example"));
    }

    #[test]
    fn loopback_binds_check_the_host_and_default_to_8080() {
        let args = ui_args(&["--read-only"]);
        assert_eq!(args.bind.to_string(), "127.0.0.1:8080");
        let config = config(&args, None, "x".into()).expect("loopback");
        assert_eq!(config.host_policy, HostPolicy::Loopback);
        assert!(config.read_only);
        assert_eq!(config.refresh, oncetask_ui::DEFAULT_REFRESH);
        let v6 = ui_args(&["--bind", "[::1]:8081"]);
        assert!(super::config(&v6, None, "x".into()).is_ok());
    }

    #[test]
    fn allowed_hosts_join_the_loopback_names_and_refresh_is_set() {
        let args = ui_args(&["--allow-host", "ops.internal", "--refresh", "10s"]);
        let config = config(&args, None, "x".into()).expect("loopback");
        for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "ops.internal"] {
            assert!(config.host_policy.allows(host), "{host}");
        }
        assert!(!config.host_policy.allows("evil.example"));
        assert_eq!(config.refresh, std::time::Duration::from_secs(10));
    }

    #[tokio::test]
    async fn an_unreachable_store_answers_with_its_error_until_connected() {
        let store = Reconnecting {
            connected: OnceLock::new(),
            down: Unreachable(Mutex::new("connection refused".to_owned())),
        };
        let err = Store::find(&store, &TaskFilter::env("e", Utc::now()))
            .await
            .expect_err("down");
        assert!(err.to_string().contains("connection refused"), "{err}");
        store.down.set("timed out".to_owned());
        let err = Store::paused_kinds(&store, "e").await.expect_err("down");
        assert!(
            err.to_string().contains("timed out (retrying every 5 s)"),
            "{err}"
        );
        let memory: Arc<dyn Store> = Arc::new(oncetask::MemoryStore::new());
        assert!(store.connected.set(memory).is_ok());
        let found = Store::find(&store, &TaskFilter::env("e", Utc::now()))
            .await
            .expect("connected");
        assert!(found.is_empty());
    }

    #[test]
    fn the_token_comes_from_the_file_or_the_environment() {
        let args = ui_args(&[]);
        assert!(token(&args, None).expect("none").is_none());
        assert!(token(&args, Some(" ".into())).expect("blank").is_none());
        assert!(
            token(&args, Some("0123456789abcdef".into()))
                .expect("env")
                .is_some()
        );
        let err = token(&args, Some("short".into())).expect_err("too short");
        assert!(err.to_string().contains(TOKEN_ENV), "{err}");

        let path = std::env::temp_dir().join(format!("oncetask-ui-token-{}", std::process::id()));
        std::fs::write(&path, "from-the-file-0123456789\n").expect("write");
        let args = ui_args(&["--token-file", path.to_str().expect("utf-8")]);
        let from_file = token(&args, Some("ignored-env-0123456789".into()))
            .expect("file")
            .expect("some");
        assert!(from_file.matches(b"from-the-file-0123456789"));
        std::fs::remove_file(&path).expect("remove");
        let err = token(&args, None).expect_err("gone");
        assert!(err.to_string().contains("--token-file"), "{err}");
    }
}
