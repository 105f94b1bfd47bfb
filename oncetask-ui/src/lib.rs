//! # oncetask-ui
//!
//! A web dashboard for the operators of an oncetask queue, on any backend:
//! an [`axum::Router`] over an operator's [`Manager`], served by the
//! `oncetask ui` command or mounted by a service of its own (behind its
//! own authentication, if it has one).
//!
//! Pages (plain HTML from compile-time checked templates, one embedded
//! style sheet and ~60 lines of embedded JavaScript; nothing is fetched
//! from the network):
//!
//! * **overview** (`/`): per kind, the counts by status, undecodable
//!   documents, the age of the oldest pending task, the next due time,
//!   whether the kind is paused, and a small chart of the tasks finished
//!   per minute over the last 10 minutes (sampled while an overview is
//!   open), refreshed every 2 s ([`UiConfig::refresh`]) without reloading
//!   the page; while the store or the dashboard cannot be reached, the
//!   retries back off (doubling up to 30 s, back to the interval after a
//!   success); pause and resume a kind, redrive (reset) its failed tasks;
//! * **tasks** (`/tasks`): the list, filtered by kind, status, resource
//!   key, id prefix and creation time range, 50 a page by keyset cursor;
//!   cancel, reset or delete the selected tasks, or every task matching
//!   the filter;
//! * **task** (`/task?id=…`): every field, the payload, the result, the
//!   error of each failed attempt, the lease, the resource key, the
//!   recurrence and its occurrences; cancel, reset, delete, reprioritize;
//! * **resource key** (`/resource-key?key=…`): the key's queue, and
//!   cancel, reset or delete by key.
//! * **resource keys** (`/resource-key`): the keys of the open tasks,
//!   busiest first;
//! * **recurring** (`/recurring`): the recurrence generators, their rules
//!   and next slots;
//! * **prune** (`/prune`): prune a kind's finished tasks past a retention,
//!   counted by a dry run first.
//!
//! Every action first answers with a confirmation page that says how many
//! tasks it touches (counted with [`Manager::count_matching`] for a
//! selection), and then with what it did, task by task. When the store
//! cannot be reached or fails, the page says so (with the store's label,
//! whose password the caller has masked) and keeps retrying.
//!
//! ```no_run
//! use std::sync::Arc;
//! use oncetask::{Manager, MemoryStore};
//! use oncetask_ui::{UiConfig, router, serve};
//!
//! # async fn run() -> std::io::Result<()> {
//! // An operator's manager: no workers, every kind accepted.
//! let manager = Manager::builder(Arc::new(MemoryStore::new()))
//!     .env("prod")
//!     .start_workers(false)
//!     .accept_any_kind()
//!     .build();
//! let app = router(manager, UiConfig::new("memory://"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, app).await
//! # }
//! ```
//!
//! ## Security model
//!
//! The dashboard can change and delete tasks, so it treats every request
//! as possibly hostile, and every task field as untrusted data.
//!
//! * **Who can reach it.** By default ([`HostPolicy::Loopback`]) it
//!   answers only requests whose `Host` is `localhost`, `127.0.0.1` or
//!   `[::1]` (any port), and refuses others with 421. Bound to loopback,
//!   only local processes connect; the `Host` check stops *DNS rebinding*,
//!   where a web page of another site points its own name at 127.0.0.1 and
//!   so gets the browser to send it requests (with that site's name as
//!   `Host`). A dashboard bound beyond loopback must have an access token
//!   ([`UiToken`], which the `oncetask ui` command takes from the
//!   `ONCETASK_UI_TOKEN` environment variable or a `--token-file`, never
//!   from a URL or a command-line value); a token can also be required on
//!   loopback. A request without the token gets 401 and a Basic
//!   authentication challenge: a browser asks for it (any user name, the
//!   token as password); scripts send `Authorization: Bearer <token>`. The
//!   comparison takes constant time. Basic credentials travel in clear:
//!   beyond loopback, put the dashboard behind TLS.
//! * **Actions.** Reads are GET and change nothing; every action is a POST
//!   (other methods get 405). A POST is refused with 403, changing nothing,
//!   when the dashboard is read-only ([`UiConfig::read_only`]); when the
//!   browser says it comes from another site (`Sec-Fetch-Site` other than
//!   `same-origin` or `none`, or an `Origin` that is not the `Host` it was
//!   sent to); and when its form does not carry the CSRF token: a random
//!   256-bit value made when the router is built, put in a hidden field of
//!   every form and compared in constant time. Another site can make a
//!   browser send a POST with its cookies or cached Basic credentials, but
//!   cannot read the dashboard's pages to learn the token.
//! * **Output.** Task ids, kinds, payloads, results, errors and resource
//!   keys are user data: the templates escape everything they print
//!   (Askama's HTML escaping, on by default and never turned off for
//!   data), links are built with URL encoding, and the
//!   `Content-Security-Policy` allows only the dashboard's own script and
//!   style sheet (no inline script), so markup that slipped through could
//!   not run anyway. Responses also carry `X-Frame-Options: DENY` (no
//!   clickjacking), `nosniff`, `Referrer-Policy: same-origin` (no task ids
//!   in other sites' logs; `no-referrer` would make browsers send
//!   `Origin: null` with the dashboard's own forms) and
//!   `Cache-Control: no-store`.
//! * **What it does not do.** It has no users or roles: whoever has the
//!   token (or a local shell) has every action, unless read-only. A
//!   service that mounts the router behind its own authentication keeps
//!   the CSRF, Origin and escaping defenses, and chooses the
//!   [`HostPolicy`] that fits its deployment (behind a reverse proxy, the
//!   proxy must pass the original `Host` on: the `Origin` check compares
//!   the two). An action's result page answers its POST directly, so
//!   reloading it asks the browser to send the form again.

mod actions;
mod format;
mod list;
mod pages;
mod security;
mod throughput;
mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use oncetask::Manager;

pub use security::{HostPolicy, MIN_TOKEN_LEN, TOKEN_ENV, TokenError, UiToken};

/// Tasks per page of the task list.
pub const PAGE_SIZE: usize = 50;

/// How often an open overview reads the counts again, unless
/// [`UiConfig::refresh`] says otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(2);

/// The longest wait between two reads of an overview whose reads fail (the
/// retries double from the refresh interval up to this, or up to the
/// interval itself when that is longer).
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// How the dashboard behaves: read-only or not, who may reach it, and what
/// it says about the store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UiConfig {
    /// Refuse every action (403): the dashboard only shows.
    pub read_only: bool,
    /// The access token every request must present, if any.
    pub token: Option<UiToken>,
    /// Which `Host` headers are answered.
    pub host_policy: HostPolicy,
    /// How pages name the store, e.g. its URL with the password masked
    /// (`oncetask::backend::redact_password`). Shown as given (escaped).
    pub store_label: String,
    /// The path the router is mounted at, starting and ending with `/`
    /// (`/` when it is the whole application): the pages' links start with
    /// it.
    pub base_path: String,
    /// How often an open overview reads the counts again (every read is a
    /// [`Manager::inspect`] of the store).
    pub refresh: Duration,
}

impl UiConfig {
    /// A dashboard that acts, answers loopback `Host`s only, needs no token
    /// and is mounted at `/`; `store_label` names the store on every page.
    pub fn new(store_label: impl Into<String>) -> Self {
        Self {
            read_only: false,
            token: None,
            host_policy: HostPolicy::Loopback,
            store_label: store_label.into(),
            base_path: "/".to_owned(),
            refresh: DEFAULT_REFRESH,
        }
    }

    /// Reads an open overview's counts every `every` (at least 100 ms;
    /// default [`DEFAULT_REFRESH`]), e.g. less often over a large store,
    /// where each read counts its tasks.
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every.max(Duration::from_millis(100));
        self
    }

    /// Refuses every action when `read_only`.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Requires `token` on every request.
    pub fn token(mut self, token: UiToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Answers the `Host`s of `policy`.
    pub fn host_policy(mut self, policy: HostPolicy) -> Self {
        self.host_policy = policy;
        self
    }

    /// The path the router is mounted at (e.g. `/ops` for
    /// `Router::nest("/ops", …)`); slashes are added where missing.
    pub fn base_path(mut self, path: &str) -> Self {
        let trimmed = path.trim_matches('/');
        self.base_path = if trimmed.is_empty() {
            "/".to_owned()
        } else {
            format!("/{trimmed}/")
        };
        self
    }
}

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) manager: Manager,
    pub(crate) config: UiConfig,
    /// This process's CSRF token.
    pub(crate) csrf: String,
    /// Finished counts sampled at each overview read, for the throughput chart.
    pub(crate) throughput: throughput::Sampler,
}

/// The handlers' state.
pub(crate) type AppState = Arc<Shared>;

/// The dashboard over `manager` (an operator's manager of the store and
/// environment to show: see the crate example), with the defenses of the
/// crate docs as layers.
pub fn router(manager: Manager, config: UiConfig) -> Router {
    let state: AppState = Arc::new(Shared {
        manager,
        config,
        csrf: security::new_csrf_secret(),
        throughput: throughput::Sampler::default(),
    });
    Router::new()
        .route("/", get(pages::overview))
        .route("/live/overview", get(pages::overview_fragment))
        .route("/tasks", get(pages::tasks))
        .route("/task", get(pages::task))
        .route("/resource-key", get(pages::resource_key))
        .route("/recurring", get(pages::recurring))
        .route("/undecodable", get(pages::undecodable))
        .route("/actions/ids", post(actions::by_ids))
        .route("/actions/matching", post(actions::matching))
        .route("/actions/pause", post(actions::pause))
        .route("/prune", get(pages::prune))
        .route("/actions/prune", post(actions::prune))
        .route("/assets/style.css", get(pages::style))
        .route("/assets/app.js", get(pages::script))
        .fallback(pages::not_found)
        .layer(from_fn_with_state(state.clone(), security::check_action))
        .layer(from_fn_with_state(state.clone(), security::check_token))
        .layer(from_fn_with_state(state.clone(), security::check_host))
        .layer(from_fn(security::response_headers))
        .with_state(state)
}

/// Serves `router` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}
