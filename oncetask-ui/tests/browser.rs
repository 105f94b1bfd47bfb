//! The dashboard in a real browser: headless Chromium, driven through
//! chromedriver (WebDriver), against the dashboard served on a loopback
//! port over a real store: memory, PostgreSQL at `ONCETASK_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`, a fresh schema per
//! test, dropped at its end) and SQLite (a file in a temporary directory)
//! for the core scenarios.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`
//! (`scripts/test` installs them when missing); without them, or without
//! PostgreSQL, the tests fail and say what to start: they never pass
//! without a browser.
//!
//! Each test saves PNG screenshots of the pages it sees in
//! `ui-screenshots/` of the Cargo target directory (`$CARGO_TARGET_DIR`
//! when set, else the workspace's `target/`): `overview.png`, `tasks.png`,
//! `task.png`, `confirm.png`, `result.png`, `resource-key.png`,
//! `recurring.png`, and those of the other scenarios.

mod common;

mod flaky;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{Browser, Relay, Server, encode};
use flaky::Flaky;
use oncetask::postgres::PostgresStore;
use oncetask::postgres::sqlx;
use oncetask::{AttemptError, Manager, MemoryStore, Outcome, Recurrence, Store, Task, TaskData};
use oncetask_ui::{UiConfig, UiToken};
use serde_json::{Value, json};

const ENV: &str = "test";
const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "\"'><img src=x onerror=alert(1)>";
/// How long a page may take to show what it should (live updates poll
/// every 2 s).
const PATIENCE: Duration = Duration::from_secs(15);

/// A store and its operator's manager (no workers: nothing runs).
struct Fixture {
    store: Arc<dyn Store>,
    manager: Manager,
    t0: DateTime<Utc>,
}

impl Fixture {
    fn over(store: Arc<dyn Store>) -> Self {
        let manager = Manager::builder(store.clone())
            .env(ENV)
            .start_workers(false)
            .accept_any_kind()
            .build();
        Self {
            store,
            manager,
            t0: Utc::now() - TimeDelta::hours(1),
        }
    }

    fn memory() -> Self {
        Self::over(Arc::new(MemoryStore::new()))
    }

    fn task(&self, id: &str, kind: &str, offset_ms: i64) -> Task {
        Task::new(id, kind, ENV, self.t0 + TimeDelta::milliseconds(offset_ms))
    }

    fn finished(&self, id: &str, kind: &str, offset_ms: i64, outcome: Outcome) -> Task {
        let mut task = self.task(id, kind, offset_ms);
        task.attempts = 1;
        task.done_at = Some(self.t0 + TimeDelta::minutes(1));
        if outcome == Outcome::Failed {
            task.errors.push(AttemptError {
                at: self.t0 + TimeDelta::minutes(1),
                error: "gateway timeout".to_owned(),
            });
        }
        task.outcome = Some(outcome);
        task
    }

    async fn put(&self, tasks: Vec<Task>) {
        self.store.create(tasks).await.expect("create");
    }

    /// The tasks every core scenario starts from: email (2 pending, one
    /// failed; e1 and e2 share resource key `customer-42`), sync (one
    /// pending, one completed) and report (an hourly generator, waiting,
    /// and one completed occurrence).
    async fn seed(&self) {
        let mut e1 = self.task("e1", "email", 1);
        e1.resource_key = Some("customer-42".to_owned());
        e1.data.insert("to".to_owned(), json!("ops@example.com"));
        let mut e2 = self.task("e2", "email", 2);
        e2.resource_key = Some("customer-42".to_owned());
        let mut generator = self.task("report-hourly", "report", 5);
        generator.recurrence =
            Some(Recurrence::new("FREQ=HOURLY", "2025-01-06T09:00:00Z").expect("rule"));
        generator.wait_until = Some(Utc::now() + TimeDelta::minutes(30));
        let mut occurrence = self.finished("report-hourly_occ_1", "report", 6, Outcome::Completed);
        occurrence.parent_recurrence_id = Some("report-hourly".to_owned());
        occurrence.occurrence_timestamp = Some(self.t0);
        self.put(vec![
            e1,
            e2,
            self.finished("e3", "email", 3, Outcome::Failed),
            self.task("s1", "sync", 4),
            self.finished("s2", "sync", 7, Outcome::Completed),
            generator,
            occurrence,
        ])
        .await;
    }
}

/// A task created through the API ([`Manager::create`]).
#[derive(serde::Serialize)]
struct Email {
    to: String,
}

impl TaskData for Email {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        "email"
    }
    fn idempotent_id(&self) -> String {
        format!("email-to-{}", self.to)
    }
}

/// The overview's counts: (kind, status header) → the cell's text, and
/// ("all kinds", status) for the totals.
async fn overview_counts(browser: &Browser) -> Vec<(String, String, String)> {
    let cells = browser
        .exec(
            "var heads = Array.from(document.querySelectorAll('table.overview thead th'))\
               .map(function (th) { return th.textContent.trim(); });\
             var rows = Array.from(document.querySelectorAll('table.overview tbody tr, table.overview tfoot tr'));\
             var out = [];\
             rows.forEach(function (tr) {\
               var cells = Array.from(tr.children).map(function (c) { return c.textContent.trim(); });\
               for (var i = 1; i < heads.length && i < cells.length; i++) {\
                 out.push([cells[0], heads[i], cells[i]]);\
               }\
             });\
             return out;",
            vec![],
        )
        .await;
    cells
        .as_array()
        .expect("an array")
        .iter()
        .map(|c| {
            let s = |i: usize| c[i].as_str().unwrap_or_default().to_owned();
            (s(0), s(1), s(2))
        })
        .collect()
}

/// The count the overview shows for `kind` and `status` (its header).
async fn count(browser: &Browser, kind: &str, status: &str) -> Option<String> {
    overview_counts(browser)
        .await
        .into_iter()
        .find(|(k, s, _)| k == kind && s == status)
        .map(|(_, _, n)| n)
}

/// The ids a task list shows (its rows' links), in order.
async fn listed_ids(browser: &Browser) -> Vec<String> {
    let ids = browser
        .exec(
            "return Array.from(document.querySelectorAll('table.tasks tbody tr td a code'))\
               .map(function (c) { return c.textContent; });",
            vec![],
        )
        .await;
    ids.as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The overview shows each kind's counts by status and the totals.
async fn overview_shows_the_counts(browser: &Browser, server: &Server, shots: &str) {
    browser.goto(&server.url("/")).await;
    assert_eq!(browser.text_of("h1").await, "Overview");
    let counts = overview_counts(browser).await;
    let expect = [
        ("email", "pending", "2"),
        ("email", "failed", "1"),
        ("email", "completed", "0"),
        ("email", "total", "3"),
        ("sync", "pending", "1"),
        ("sync", "completed", "1"),
        ("report", "waiting", "1"),
        ("report", "completed", "1"),
        ("report", "failed", "0"),
        ("all kinds", "pending", "3"),
        ("all kinds", "completed", "2"),
        ("all kinds", "total", "7"),
    ];
    for (kind, status, n) in expect {
        let shown = counts
            .iter()
            .find(|(k, s, _)| k == kind && s == status)
            .map(|(_, _, n)| n.as_str());
        assert_eq!(shown, Some(n), "{kind} {status} in {counts:?}");
    }
    // A count links to its tasks.
    let link = browser
        .find("table.overview a[href='/tasks?kind=email&status=failed']")
        .await;
    assert_eq!(browser.text(&link).await, "1");
    browser.screenshot(&format!("{shots}overview")).await;
    browser.click_to_load(&link).await;
    assert_eq!(listed_ids(browser).await, vec!["e3"]);
}

/// Filling the filter form and submitting it narrows the list.
async fn filters_narrow_the_list(browser: &Browser, server: &Server, shots: &str) {
    browser.goto(&server.url("/tasks")).await;
    let mut all = listed_ids(browser).await;
    all.sort();
    assert_eq!(
        all,
        [
            "e1",
            "e2",
            "e3",
            "report-hourly",
            "report-hourly_occ_1",
            "s1",
            "s2"
        ]
    );
    let kind = browser.find("form.filters input[name=kind]").await;
    browser.clear(&kind).await;
    browser.type_text(&kind, "email").await;
    browser
        .click_to_load(&browser.find("form.filters button").await)
        .await;
    let mut ids = listed_ids(browser).await;
    ids.sort();
    assert_eq!(ids, ["e1", "e2", "e3"], "kind email");
    assert!(browser.url().await.contains("kind=email"));
    // And a status on top of the kind.
    browser
        .click(
            &browser
                .find("form.filters input[name=status][value=pending]")
                .await,
        )
        .await;
    browser
        .click_to_load(&browser.find("form.filters button").await)
        .await;
    let mut ids = listed_ids(browser).await;
    ids.sort();
    assert_eq!(ids, ["e1", "e2"], "kind email, status pending");
    // The form shows what it filtered by.
    let checked = browser
        .exec(
            "return document.querySelector('form.filters input[name=status][value=pending]').checked;",
            vec![],
        )
        .await;
    assert_eq!(checked, Value::Bool(true));
    browser.screenshot(&format!("{shots}tasks")).await;
    // An id prefix narrows further.
    let prefix = browser.find("form.filters input[name=id_prefix]").await;
    browser.type_text(&prefix, "e2").await;
    browser
        .click_to_load(&browser.find("form.filters button").await)
        .await;
    assert_eq!(listed_ids(browser).await, ["e2"]);
}

/// Cancel on the task's page, through its confirmation, changes the
/// stored task.
async fn cancel_from_the_page(browser: &Browser, server: &Server, f: &Fixture, shots: &str) {
    browser.goto(&server.url("/task?id=e1")).await;
    assert_eq!(browser.text_of("h1 code").await, "e1");
    assert_eq!(browser.text_of("span.status").await, "pending");
    browser.screenshot(&format!("{shots}task")).await;
    browser
        .click_to_load(
            &browser
                .find("form.actions button[name=action][value=cancel]")
                .await,
        )
        .await;
    assert_eq!(browser.text_of("h1").await, "Cancel task \"e1\"?");
    assert_eq!(browser.text_of("strong.count").await, "1");
    browser.screenshot(&format!("{shots}confirm")).await;
    // The confirmation alone changes nothing.
    let task = f.manager.get_task("e1").await.expect("get").expect("e1");
    assert!(!task.is_cancelled, "cancelled before the confirmation");
    browser
        .click_to_load(&browser.find("button.danger").await)
        .await;
    assert_eq!(browser.text_of("h1").await, "Cancel done");
    let result = browser.text_of("main").await;
    assert!(result.contains("Marked for cancellation: 1"), "{result}");
    browser.screenshot(&format!("{shots}result")).await;
    let task = f.manager.get_task("e1").await.expect("get").expect("e1");
    assert!(task.is_cancelled, "the stored task is marked cancelled");
    // Its page says so too.
    browser.click_to_load(&browser.find("ul.ids a").await).await;
    assert_eq!(
        browser.text_of("span.status").await,
        "cancellationPending",
        "no worker runs the cancellation path here"
    );
    // Untouched: the other task of the key.
    let other = f.manager.get_task("e2").await.expect("get").expect("e2");
    assert!(!other.is_cancelled);
}

/// The pages that only show: a resource key's queue and the generators.
async fn resource_key_and_recurring(browser: &Browser, server: &Server, shots: &str) {
    browser.goto(&server.url("/resource-key")).await;
    let keys = browser.text_of("table.keys").await;
    assert!(keys.contains("customer-42"), "{keys}");
    browser
        .click_to_load(&browser.find("table.keys a").await)
        .await;
    assert_eq!(browser.text_of("h1 code").await, "customer-42");
    let mut ids = listed_ids(browser).await;
    ids.sort();
    assert_eq!(ids, ["e1", "e2"]);
    browser.screenshot(&format!("{shots}resource-key")).await;
    browser.goto(&server.url("/recurring")).await;
    assert_eq!(
        browser.text_of("table.generators td code").await,
        "report-hourly"
    );
    assert_eq!(browser.find_all("ul.slots li").await.len(), 5);
    browser.screenshot(&format!("{shots}recurring")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_counts_filters_cancel_and_the_pages_that_only_show() {
    let f = Fixture::memory();
    f.seed().await;
    let server = Server::start(f.manager.clone(), UiConfig::new("memory://browser-test")).await;
    let browser = Browser::launch(&[]).await;
    overview_shows_the_counts(&browser, &server, "").await;
    filters_narrow_the_list(&browser, &server, "").await;
    resource_key_and_recurring(&browser, &server, "").await;
    cancel_from_the_page(&browser, &server, &f, "").await;
    assert_eq!(browser.open_dialog().await, None);
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_through_the_api_changes_the_open_overview() {
    let f = Fixture::memory();
    f.seed().await;
    let server = Server::start(f.manager.clone(), UiConfig::new("memory://browser-test")).await;
    let browser = Browser::launch(&[]).await;
    browser.goto(&server.url("/")).await;
    assert_eq!(
        count(&browser, "email", "pending").await.as_deref(),
        Some("2")
    );
    assert_eq!(count(&browser, "audit", "pending").await, None);
    // A mark that a reload would lose.
    browser
        .exec("window.oncetaskMark = 'still here'; return null;", vec![])
        .await;
    let url = browser.url().await;
    f.manager
        .create(&Email {
            to: "new@example.com".to_owned(),
        })
        .await
        .expect("create");
    let mut audit = f.task("a1", "audit", 10);
    audit.data.insert("by".to_owned(), json!("ops"));
    f.put(vec![audit]).await;
    let b = &browser;
    browser
        .wait_until(
            "the new counts on the open overview",
            PATIENCE,
            || async move {
                count(b, "email", "pending").await.as_deref() == Some("3")
                    && count(b, "audit", "pending").await.as_deref() == Some("1")
            },
        )
        .await;
    assert_eq!(
        count(&browser, "all kinds", "total").await.as_deref(),
        Some("9")
    );
    let mark = browser
        .exec("return window.oncetaskMark || null;", vec![])
        .await;
    assert_eq!(mark, json!("still here"), "the page was not reloaded");
    assert_eq!(browser.url().await, url);
    assert_eq!(browser.text_of("#live-status").await, "");
    browser.screenshot("overview-live").await;
    browser.quit().await;
}

/// No dialog is open, no element came from the data (no `img`, no
/// `script` but the dashboard's own), and nothing ran.
async fn assert_inert(browser: &Browser, page: &str) {
    assert_eq!(
        browser.open_dialog().await,
        None,
        "{page}: a dialog is open"
    );
    let foreign = browser
        .exec(
            "return {\
               imgs: document.querySelectorAll('img').length,\
               scripts: Array.from(document.scripts)\
                 .filter(function (s) { return !/\\/assets\\/app\\.js$/.test(s.src); }).length,\
               handlers: document.querySelectorAll('[onerror]').length\
             };",
            vec![],
        )
        .await;
    assert_eq!(
        foreign,
        json!({ "imgs": 0, "scripts": 0, "handlers": 0 }),
        "{page}: markup from the data became elements"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_payloads_and_errors_render_as_text() {
    let f = Fixture::memory();
    let mut task = f.finished(SCRIPT, IMG, 1, Outcome::Failed);
    task.resource_key = Some(IMG.to_owned());
    task.data.insert("note".to_owned(), json!(SCRIPT));
    task.errors[0].error = format!("{SCRIPT}{IMG}");
    task.result = Some(json!({ "r": IMG }));
    f.put(vec![task]).await;
    let config = UiConfig::new(format!("memory://{IMG}")).refresh(Duration::from_millis(300));
    let server = Server::start(f.manager.clone(), config).await;
    let browser = Browser::launch(&[]).await;

    // The overview, also after its live part was swapped in.
    browser.goto(&server.url("/")).await;
    assert_eq!(browser.text_of("table.overview tbody td a").await, IMG);
    assert_eq!(
        browser.text_of("header .store code").await,
        format!("memory://{IMG}")
    );
    assert_inert(&browser, "overview").await;
    let b = &browser;
    browser
        .wait_until("a live refresh", PATIENCE, || async move {
            next_wait_ms(b).await.is_some()
        })
        .await;
    assert_eq!(browser.text_of("table.overview tbody td a").await, IMG);
    assert_inert(&browser, "overview, refreshed").await;

    // The list, found by the hostile kind and id prefix.
    browser
        .goto(&server.url(&format!(
            "/tasks?kind={}&id_prefix={}",
            encode(IMG),
            encode(SCRIPT)
        )))
        .await;
    assert_eq!(listed_ids(&browser).await, [SCRIPT]);
    let value = browser
        .exec(
            "return document.querySelector('form.filters input[name=kind]').value;",
            vec![],
        )
        .await;
    assert_eq!(value, json!(IMG));
    assert_inert(&browser, "task list").await;

    // Its page: id, payload, result and error as text.
    browser
        .click_to_load(&browser.find("table.tasks tbody a").await)
        .await;
    assert_eq!(browser.text_of("h1 code").await, SCRIPT);
    let pres = browser
        .exec(
            "return Array.from(document.querySelectorAll('main pre')).map(function (p) { return p.textContent; });",
            vec![],
        )
        .await;
    let pres: Vec<&str> = pres
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(pres.iter().any(|p| p.contains(SCRIPT)), "payload: {pres:?}");
    assert!(
        pres.iter().any(|p| p.contains(&format!("{SCRIPT}{IMG}"))),
        "error: {pres:?}"
    );
    assert!(
        pres.iter().any(|p| p.contains("img src=x onerror")),
        "result: {pres:?}"
    );
    assert_inert(&browser, "task page").await;
    browser.screenshot("hostile-task").await;

    // Its resource key, and an action's confirmation.
    browser
        .goto(&server.url(&format!("/resource-key?key={}", encode(IMG))))
        .await;
    assert_eq!(browser.text_of("h1 code").await, IMG);
    assert_inert(&browser, "resource key").await;
    browser
        .goto(&server.url(&format!("/task?id={}", encode(SCRIPT))))
        .await;
    browser
        .click_to_load(
            &browser
                .find("form.actions button[name=action][value=reset]")
                .await,
        )
        .await;
    assert_eq!(browser.text_of("ul.ids code").await, SCRIPT);
    assert_inert(&browser, "confirmation").await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_browser_must_present_it() {
    const TOKEN: &str = "browser-test-token-0123456789";
    let f = Fixture::memory();
    f.seed().await;
    let config = UiConfig::new("memory://browser-test")
        .token(UiToken::new(TOKEN).expect("token"))
        .refresh(Duration::from_millis(300));
    let server = Server::start(f.manager.clone(), config).await;
    let browser = Browser::launch(&[]).await;

    // Without credentials: refused, and no dashboard shown (headless
    // Chromium has no login dialog: it shows an empty page).
    browser.goto(&server.url("/")).await;
    assert!(browser.find_all("table.overview").await.is_empty());
    assert!(browser.find_all("h1").await.is_empty());
    browser.screenshot("unauthorized").await;
    // With the token as the password of URL credentials (Basic).
    let port = server.addr.port();
    browser
        .goto(&format!("http://ops:{TOKEN}@127.0.0.1:{port}/"))
        .await;
    assert_eq!(browser.text_of("h1").await, "Overview");
    assert_eq!(
        count(&browser, "email", "pending").await.as_deref(),
        Some("2")
    );
    // The page's own requests carry the cached credentials: the live
    // updates keep working.
    f.put(vec![f.task("e9", "email", 9)]).await;
    let b = &browser;
    browser
        .wait_until(
            "a live update with the credentials",
            PATIENCE,
            || async move { count(b, "email", "pending").await.as_deref() == Some("3") },
        )
        .await;
    assert_eq!(browser.text_of("#live-status").await, "");
    // The page's own origin, with and without credentials: requests that
    // omit them are refused, and say why.
    let status = |credentials: &'static str, auth: Option<&str>| {
        let auth = auth.map(str::to_owned);
        let browser = &browser;
        async move {
            browser
                .exec_async(
                    "var done = arguments[arguments.length - 1];\
                     var headers = arguments[1] ? { Authorization: arguments[1] } : {};\
                     fetch(location.origin + '/tasks', { credentials: arguments[0], headers: headers, cache: 'no-store' })\
                       .then(function (r) {\
                         return r.text().then(function (t) {\
                           done([r.status, r.headers.get('WWW-Authenticate'), t]);\
                         });\
                       }, function (e) { done([String(e), null, '']); });",
                    vec![json!(credentials), json!(auth)],
                )
                .await
        }
    };
    let cached = status("same-origin", None).await;
    assert_eq!(
        cached[0],
        json!(200),
        "the cached Basic credentials: {cached}"
    );
    let refused = status("omit", None).await;
    assert_eq!(refused[0], json!(401), "{refused}");
    assert_eq!(
        refused[1],
        json!("Basic realm=\"oncetask\", charset=\"UTF-8\"")
    );
    let said = refused[2].as_str().unwrap_or_default();
    assert!(said.contains("needs its access token"), "{said}");
    let wrong = status("omit", Some("Bearer wrong-token-0123456789")).await;
    assert_eq!(wrong[0], json!(401), "{wrong}");
    let bearer = status("omit", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(bearer[0], json!(200));
    assert!(
        bearer[2]
            .as_str()
            .unwrap_or_default()
            .contains("<h1>Tasks</h1>"),
        "{bearer}"
    );

    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_is_refused() {
    let f = Fixture::memory();
    f.seed().await;
    let server = Server::start(f.manager.clone(), UiConfig::new("memory://browser-test")).await;
    // evil.test resolves to the dashboard's address, as after DNS
    // rebinding.
    let browser = Browser::launch(&["--host-resolver-rules=MAP evil.test 127.0.0.1"]).await;
    let port = server.addr.port();
    browser.goto(&format!("http://evil.test:{port}/")).await;
    let body = browser.text_of("body").await;
    assert!(
        body.contains("refused: this dashboard only answers requests addressed to localhost"),
        "{body}"
    );
    assert!(browser.find_all("table.overview").await.is_empty());
    let status = browser
        .exec_async(
            "var done = arguments[arguments.length - 1];\
             fetch(location.origin + '/tasks', { cache: 'no-store' })\
               .then(function (r) { done(r.status); }, function (e) { done(String(e)); });",
            vec![],
        )
        .await;
    assert_eq!(status, json!(421), "Misdirected Request");
    browser.screenshot("foreign-host").await;
    // The same browser reaches it by a loopback name.
    browser.goto(&format!("http://localhost:{port}/")).await;
    assert_eq!(browser.text_of("h1").await, "Overview");
    browser.quit().await;
}

/// The wait before the overview's next read, as its script set it.
async fn next_wait_ms(browser: &Browser) -> Option<u64> {
    browser
        .exec(
            "return document.getElementById('live').getAttribute('data-next-ms');",
            vec![],
        )
        .await
        .as_str()
        .and_then(|s| s.parse().ok())
}

/// Waits until the overview's waits between reads have doubled from
/// 200 ms to 1.6 s; the waits seen, in order.
async fn waits_backing_off(browser: &Browser) -> Vec<u64> {
    let mut waits = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while waits.last() != Some(&1600) {
        assert!(
            std::time::Instant::now() < deadline,
            "no backoff to 1.6 s within {PATIENCE:?}: {waits:?}"
        );
        if let Some(ms) = next_wait_ms(browser).await
            && waits.last() != Some(&ms)
        {
            waits.push(ms);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 200 ms while it worked; the first retry after the interval, then
    // doubling (a wait can pass between two looks).
    assert_eq!(waits.first(), Some(&200), "{waits:?}");
    assert!(waits.windows(2).all(|w| w[1] > w[0]), "{waits:?}");
    assert!(
        waits.iter().all(|ms| [200, 400, 800, 1600].contains(ms)),
        "{waits:?}"
    );
    waits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_backs_off_while_the_store_or_the_dashboard_is_down() {
    let flaky = Arc::new(Flaky {
        inner: Arc::new(MemoryStore::new()),
        failing: AtomicBool::new(false),
    });
    let f = Fixture::over(flaky.clone());
    f.seed().await;
    let config =
        UiConfig::new("postgres://ops:***@db.internal/app").refresh(Duration::from_millis(200));
    let server = Server::start(f.manager.clone(), config).await;
    // The browser reaches the dashboard through a relay that can go down.
    let relay = Relay::start(server.addr).await;
    let browser = Browser::launch(&[]).await;
    browser.goto(&relay.url("/")).await;
    assert_eq!(
        browser.text_of("main p.muted").await,
        "Refreshed every 200 ms."
    );
    browser
        .exec("window.oncetaskMark = 'still here'; return null;", vec![])
        .await;
    let b = &browser;
    browser
        .wait_until("a successful refresh", PATIENCE, || async move {
            next_wait_ms(b).await == Some(200)
        })
        .await;

    // Down: the page says so, and waits longer after each failed read.
    flaky.failing.store(true, Ordering::SeqCst);
    waits_backing_off(&browser).await;
    let alert = browser.text_of("#live .error").await;
    assert!(alert.contains("The store cannot be read."), "{alert}");
    assert!(
        alert.contains("postgres://ops:***@db.internal/app"),
        "{alert}"
    );
    assert!(alert.contains("connection refused"), "{alert}");
    let said = browser.text_of("#live-status").await;
    assert!(
        said.starts_with("The store cannot be read. Retrying in"),
        "{said}"
    );
    browser.screenshot("store-down").await;

    // Back up: the counts return and the waits are the interval again.
    flaky.failing.store(false, Ordering::SeqCst);
    browser
        .wait_until(
            "the counts after the store came back",
            PATIENCE,
            || async move {
                next_wait_ms(b).await == Some(200)
                    && count(b, "email", "pending").await.as_deref() == Some("2")
            },
        )
        .await;
    assert_eq!(browser.text_of("#live-status").await, "");
    assert!(browser.find_all("#live .error").await.is_empty());

    // The dashboard unreachable: the same backoff, and the last counts
    // stay on the page.
    relay.set_down(true);
    waits_backing_off(&browser).await;
    let said = browser.text_of("#live-status").await;
    assert!(
        said.starts_with("The dashboard cannot be reached. Retrying in"),
        "{said}"
    );
    assert_eq!(
        count(&browser, "email", "pending").await.as_deref(),
        Some("2")
    );
    browser.screenshot("dashboard-unreachable").await;
    relay.set_down(false);
    browser
        .wait_until("the dashboard reached again", PATIENCE, || async move {
            next_wait_ms(b).await == Some(200)
        })
        .await;
    assert_eq!(browser.text_of("#live-status").await, "");
    let mark = browser
        .exec("return window.oncetaskMark || null;", vec![])
        .await;
    assert_eq!(mark, json!("still here"), "the page was not reloaded");

    // A whole page that cannot be read (a task's page) asks again with
    // the same backoff, and reloads itself once the store answers.
    flaky.failing.store(true, Ordering::SeqCst);
    browser.goto(&relay.url("/task?id=e1")).await;
    assert_eq!(browser.text_of("h1").await, "The store cannot be read");
    let retry_wait = || async move {
        b.exec(
            "var r = document.getElementById('retry'); return r ? r.getAttribute('data-next-ms') : null;",
            vec![],
        )
        .await
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
    };
    browser
        .wait_until("the error page's waits doubling", PATIENCE, || async move {
            retry_wait().await.is_some_and(|ms| ms >= 800)
        })
        .await;
    browser.screenshot("page-store-down").await;
    flaky.failing.store(false, Ordering::SeqCst);
    browser
        .wait_until(
            "the task page after the store came back",
            PATIENCE,
            || async move { b.find_all("#retry").await.is_empty() },
        )
        .await;
    assert!(browser.text_of("h1").await.contains("e1"));
    browser.quit().await;
}

/// A PostgreSQL store on a fresh schema, dropped by [`drop_schema`].
async fn postgres_store() -> PostgresStore {
    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
    let url = std::env::var("ONCETASK_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let schema = format!(
        // The prefix the conformance suite's clean-up drops after an hour,
        // should a crashed run leave one behind.
        "oncetask_test_{}_{}",
        Utc::now().timestamp(),
        uuid::Uuid::new_v4().simple()
    );
    let store = PostgresStore::connect(&url, &schema)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {url} ({e}). Start it (on this machine: \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                 or run `scripts/test`), or set ONCETASK_POSTGRES_URL."
            )
        });
    store.migrate().await.expect("migrate a fresh schema");
    store
}

async fn drop_schema(store: &PostgresStore) {
    sqlx::query(&format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        store.schema()
    ))
    .execute(store.pool())
    .await
    .expect("drop the test schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_counts_filters_and_cancel() {
    let store = postgres_store().await;
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    // The scenario runs as a task of its own, so that the schema is
    // dropped whether it passes or panics.
    let outcome = tokio::spawn(async move {
        let f = Fixture::over(shared);
        f.seed().await;
        let server = Server::start(
            f.manager.clone(),
            UiConfig::new("postgres://postgres@127.0.0.1/test"),
        )
        .await;
        let browser = Browser::launch(&[]).await;
        overview_shows_the_counts(&browser, &server, "postgres-").await;
        filters_narrow_the_list(&browser, &server, "postgres-").await;
        cancel_from_the_page(&browser, &server, &f, "postgres-").await;
        browser.quit().await;
    })
    .await;
    drop_schema(&store).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_counts_filters_and_cancel() {
    let dir = std::env::temp_dir().join(format!(
        "oncetask-ui-browser-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let url = format!("sqlite://{}", dir.join("tasks.db").display());
    let store = oncetask::sqlite::SqliteStore::connect(&url)
        .await
        .expect("a new SQLite file");
    let shared: Arc<dyn Store> = Arc::new(store);
    // As a task of its own, so that the file goes whether it passes or not.
    let outcome = tokio::spawn(async move {
        let f = Fixture::over(shared);
        f.seed().await;
        let server = Server::start(f.manager.clone(), UiConfig::new("sqlite://tasks.db")).await;
        let browser = Browser::launch(&[]).await;
        overview_shows_the_counts(&browser, &server, "sqlite-").await;
        filters_narrow_the_list(&browser, &server, "sqlite-").await;
        cancel_from_the_page(&browser, &server, &f, "sqlite-").await;
        resource_key_and_recurring(&browser, &server, "sqlite-").await;
        browser.quit().await;
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
