//! The dashboard over HTTP, on the memory backend: each request goes
//! through the whole router (security layers included) with
//! `tower::ServiceExt::oneshot`.

mod flaky;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, TimeDelta, Utc};
use flaky::Flaky;
use oncetask::{AttemptError, Manager, MemoryStore, Outcome, Recurrence, Store, Task};
use oncetask_ui::{HostPolicy, UiConfig, UiToken, router};
use tower::ServiceExt;

const ENV: &str = "test";
const HOST: &str = "127.0.0.1:8080";
const ORIGIN: &str = "http://127.0.0.1:8080";

const SCRIPT: &str = "<script>alert(1)</script>";
/// As Askama escapes it (numeric references).
const SCRIPT_ESCAPED: &str = "&#60;script&#62;alert(1)&#60;/script&#62;";
const IMG_ESCAPED: &str = "&#34;&#39;&#62;&#60;img src=x onerror=alert(1)&#62;";
const IMG: &str = "\"'><img src=x onerror=alert(1)>";

struct Fixture {
    store: Arc<dyn Store>,
    manager: Manager,
    t0: DateTime<Utc>,
}

impl Fixture {
    fn new() -> Self {
        Self::over(Arc::new(MemoryStore::new()))
    }

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

    fn app(&self) -> Router {
        router(self.manager.clone(), UiConfig::new("memory://test"))
    }

    /// A pending task created `offset_ms` after `t0`.
    fn task(&self, id: &str, kind: &str, offset_ms: i64) -> Task {
        Task::new(id, kind, ENV, self.t0 + TimeDelta::milliseconds(offset_ms))
    }

    fn failed(&self, id: &str, kind: &str, offset_ms: i64) -> Task {
        let mut task = self.task(id, kind, offset_ms);
        task.attempts = 1;
        task.done_at = Some(self.t0 + TimeDelta::minutes(1));
        task.outcome = Some(Outcome::Failed);
        task.errors.push(AttemptError {
            at: self.t0 + TimeDelta::minutes(1),
            error: "gateway timeout".to_owned(),
        });
        task
    }

    fn completed(&self, id: &str, kind: &str, offset_ms: i64) -> Task {
        let mut task = self.task(id, kind, offset_ms);
        task.attempts = 1;
        task.done_at = Some(self.t0 + TimeDelta::minutes(1));
        task.outcome = Some(Outcome::Completed);
        task
    }

    async fn put(&self, tasks: Vec<Task>) {
        self.store.create(tasks).await.expect("create");
    }

    async fn stored(&self, id: &str) -> Option<Task> {
        self.manager.get_task(id).await.expect("get")
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, HOST)
        .body(Body::empty())
        .expect("request")
}

fn post(uri: &str, pairs: &[(&str, &str)]) -> Request<Body> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        form.append_pair(k, v);
    }
    Request::post(uri)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header("sec-fetch-site", "same-origin")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.finish()))
        .expect("request")
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 10 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The value of the first `name="…" value="…"` input of a page.
fn input_value(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(unescape(&body[start..start + end]))
}

/// Undoes HTML escaping (numeric references, and the few named ones).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(';').expect("a reference ends with ;");
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => '&',
            "quot" => '"',
            "lt" => '<',
            "gt" => '>',
            _ => entity
                .strip_prefix('#')
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(char::from_u32)
                .expect("a numeric reference"),
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The ids of the rows of a task list (their checkboxes).
fn listed_ids(body: &str) -> Vec<String> {
    let marker = "<input type=\"checkbox\" name=\"id\" value=\"";
    body.match_indices(marker)
        .filter_map(|(at, _)| {
            let start = at + marker.len();
            body[start..]
                .find('"')
                .map(|end| unescape(&body[start..start + end]))
        })
        .collect()
}

/// The target of the "next page" link.
fn next_href(body: &str) -> Option<String> {
    let end = body.find("\">next page")?;
    let start = body[..end].rfind("href=\"")? + "href=\"".len();
    Some(unescape(&body[start..end]))
}

async fn csrf(app: &Router) -> String {
    let (status, body) = send(app, get("/")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    input_value(&body, "csrf").expect("every dashboard with actions has a CSRF field")
}

#[tokio::test]
async fn the_overview_counts_each_kind_by_status_and_shows_paused_kinds() {
    let f = Fixture::new();
    f.put(vec![
        f.task("e1", "email", 1),
        f.task("e2", "email", 2),
        f.failed("e3", "email", 3),
        f.completed("s1", "sync", 4),
    ])
    .await;
    f.manager.pause("sync").await.expect("pause");
    f.manager.pause("idle_kind").await.expect("pause");
    let app = f.app();
    let (status, body) = send(&app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("href=\"/tasks?kind=email&#38;status=pending\">2</a>"),
        "{body}"
    );
    assert!(body.contains("href=\"/tasks?kind=email&#38;status=failed\">1</a>"));
    assert!(body.contains("href=\"/tasks?kind=sync&#38;status=completed\">1</a>"));
    assert!(!body.contains("kind=sync&#38;status=pending\">"));
    // Redrive is offered where there are failed tasks.
    assert!(body.contains("Redrive 1 failed"));
    // Paused kinds, one of them with no task at all.
    let sync_row = body
        .split("<tr")
        .find(|row| row.contains(">sync</a>"))
        .expect("sync row");
    assert!(sync_row.contains("<strong>paused</strong>"), "{sync_row}");
    assert!(sync_row.contains("Resume"));
    let email_row = body
        .split("<tr")
        .find(|row| row.contains(">email</a>"))
        .expect("email row");
    assert!(email_row.contains("running") && email_row.contains("Pause"));
    assert!(
        email_row.contains("waiting "),
        "oldest pending: {email_row}"
    );
    assert!(body.contains(">idle_kind</a>"));

    // The live fragment has the same table, without the page around it.
    let (status, fragment) = send(&app, get("/live/overview")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(fragment.contains("href=\"/tasks?kind=email&#38;status=pending\">2</a>"));
    assert!(!fragment.contains("<html"));
    // The page polls it with the embedded script.
    assert!(body.contains("data-src=\"/live/overview\""));
    let (status, script) = send(&app, get("/assets/app.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(script.contains("setTimeout"));
}

#[tokio::test]
async fn filters_narrow_the_task_list() {
    let f = Fixture::new();
    let mut keyed = f.task("sync-cal-1", "sync", 3);
    keyed.resource_key = Some("cal-1".to_owned());
    f.put(vec![
        f.task("email-ada", "email", 1),
        f.failed("email-bob", "email", 2),
        keyed,
        f.task("sync-cal-2", "sync", 60_000 * 30),
    ])
    .await;
    let app = f.app();

    let (_, all) = send(&app, get("/tasks")).await;
    assert_eq!(
        listed_ids(&all),
        vec!["email-ada", "email-bob", "sync-cal-1", "sync-cal-2"]
    );
    let (_, body) = send(&app, get("/tasks?kind=email")).await;
    assert_eq!(listed_ids(&body), vec!["email-ada", "email-bob"]);
    let (_, body) = send(&app, get("/tasks?kind=email&status=failed")).await;
    assert_eq!(listed_ids(&body), vec!["email-bob"]);
    let (_, body) = send(&app, get("/tasks?status=pending&status=failed")).await;
    assert_eq!(listed_ids(&body).len(), 4);
    let (_, body) = send(&app, get("/tasks?resource_key=cal-1")).await;
    assert_eq!(listed_ids(&body), vec!["sync-cal-1"]);
    let (_, body) = send(&app, get("/tasks?id_prefix=sync-")).await;
    assert_eq!(listed_ids(&body), vec!["sync-cal-1", "sync-cal-2"]);
    // A creation time range: from t0 + 1 min on, then up to t0 + 1 min.
    let from = (f.t0 + TimeDelta::minutes(1)).to_rfc3339();
    let uri = format!(
        "/tasks?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("from", &from)
            .finish()
    );
    let (_, body) = send(&app, get(&uri)).await;
    assert_eq!(listed_ids(&body), vec!["sync-cal-2"]);
    let uri = format!(
        "/tasks?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("to", &from)
            .finish()
    );
    let (_, body) = send(&app, get(&uri)).await;
    assert_eq!(listed_ids(&body).len(), 3);
    // A bad value is said, not silently dropped.
    let (status, body) = send(&app, get("/tasks?status=done")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("unknown status &#34;done&#34;"), "{body}");
}

#[tokio::test]
async fn pages_follow_the_cursor_without_overlap() {
    let f = Fixture::new();
    // Same creation time for some, so the id breaks ties.
    let tasks = (0..120)
        .map(|i| f.task(&format!("t-{i:03}"), "bulk", i / 3))
        .collect();
    f.put(tasks).await;
    let app = f.app();
    let (_, first) = send(&app, get("/tasks?kind=bulk")).await;
    let page1 = listed_ids(&first);
    assert_eq!(page1.len(), 50);
    let next = next_href(&first).expect("a next page");
    assert!(next.contains("after="), "{next}");
    assert!(next.contains("kind=bulk"), "the filters stay: {next}");
    let (_, second) = send(&app, get(&next)).await;
    let page2 = listed_ids(&second);
    assert_eq!(page2.len(), 50);
    let (_, third) = send(&app, get(&next_href(&second).expect("a third page"))).await;
    let page3 = listed_ids(&third);
    assert_eq!(page3.len(), 20);
    assert!(next_href(&third).is_none());
    let all: Vec<String> = page1.into_iter().chain(page2).chain(page3).collect();
    let expected: Vec<String> = (0..120).map(|i| format!("t-{i:03}")).collect();
    assert_eq!(all, expected, "every task once, in order");
    // With an id prefix (checked by the dashboard), paging still works.
    let (_, body) = send(&app, get("/tasks?id_prefix=t-1")).await;
    let ids = listed_ids(&body);
    assert_eq!(ids.len(), 20, "t-100..t-119");
    assert!(ids.iter().all(|id| id.starts_with("t-1")));
}

#[tokio::test]
async fn a_confirmed_cancel_with_the_csrf_token_changes_the_task() {
    let f = Fixture::new();
    f.put(vec![f.task("charge-1", "charge", 1)]).await;
    let app = f.app();
    let token = csrf(&app).await;

    // First the confirmation, which changes nothing.
    let (status, body) = send(
        &app,
        post(
            "/actions/ids",
            &[("csrf", &token), ("action", "cancel"), ("id", "charge-1")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("<strong class=\"count\">1</strong>"),
        "{body}"
    );
    assert!(body.contains("name=\"confirmed\" value=\"1\""));
    assert!(!f.stored("charge-1").await.expect("task").is_cancelled);

    let (status, body) = send(
        &app,
        post(
            "/actions/ids",
            &[
                ("csrf", &token),
                ("action", "cancel"),
                ("id", "charge-1"),
                ("confirmed", "1"),
            ],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Marked for cancellation: 1"), "{body}");
    assert!(f.stored("charge-1").await.expect("task").is_cancelled);
}

#[tokio::test]
async fn posts_without_the_right_csrf_token_or_from_another_site_change_nothing() {
    let f = Fixture::new();
    f.put(vec![f.task("charge-1", "charge", 1)]).await;
    let app = f.app();
    let token = csrf(&app).await;
    let cancel = |csrf: Option<&str>| {
        let mut pairs = vec![("action", "cancel"), ("id", "charge-1"), ("confirmed", "1")];
        if let Some(csrf) = csrf {
            pairs.push(("csrf", csrf));
        }
        post("/actions/ids", &pairs)
    };
    for request in [
        cancel(None),
        cancel(Some("")),
        cancel(Some(
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )),
        cancel(Some(&token[..token.len() - 1])),
    ] {
        let (status, body) = send(&app, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("CSRF"), "{body}");
    }
    // The right token, but the browser says the form is another site's.
    let mut cross_site = cancel(Some(&token));
    cross_site
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().expect("value"));
    let (status, _) = send(&app, cross_site).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut foreign_origin = cancel(Some(&token));
    foreign_origin.headers_mut().insert(
        header::ORIGIN,
        "http://evil.example".parse().expect("value"),
    );
    let (status, _) = send(&app, foreign_origin).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The other actions check it too.
    for (uri, pairs) in [
        (
            "/actions/matching",
            vec![("action", "delete"), ("kind", "charge"), ("confirmed", "1")],
        ),
        ("/actions/pause", vec![("kind", "charge"), ("op", "pause")]),
        (
            "/actions/prune",
            vec![("kind", "charge"), ("finished", "1s"), ("confirmed", "1")],
        ),
    ] {
        let (status, _) = send(&app, post(uri, &pairs)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
    }
    // A GET cannot act.
    let (status, _) = send(
        &app,
        get("/actions/ids?action=cancel&id=charge-1&confirmed=1"),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let task = f.stored("charge-1").await.expect("still there");
    assert!(!task.is_cancelled);
    assert!(f.manager.paused_kinds().await.expect("paused").is_empty());
}

#[tokio::test]
async fn a_read_only_dashboard_refuses_every_action() {
    let f = Fixture::new();
    f.put(vec![f.failed("charge-1", "charge", 1)]).await;
    let app = router(
        f.manager.clone(),
        UiConfig::new("memory://test").read_only(true),
    );
    let (status, page) = send(&app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("read-only"));
    assert!(!page.contains("Redrive"), "no action buttons: {page}");
    // The dashboard shows no form (so no CSRF token): every POST is 403,
    // and says it is for being read-only.
    for (uri, pairs) in [
        (
            "/actions/ids",
            vec![("action", "delete"), ("id", "charge-1"), ("confirmed", "1")],
        ),
        (
            "/actions/matching",
            vec![
                ("action", "reset"),
                ("kind", "charge"),
                ("status", "failed"),
                ("confirmed", "1"),
            ],
        ),
        ("/actions/pause", vec![("kind", "charge"), ("op", "pause")]),
        (
            "/actions/prune",
            vec![("kind", "charge"), ("failed", "1s"), ("confirmed", "1")],
        ),
    ] {
        let (status, body) = send(&app, post(uri, &pairs)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert!(body.contains("read-only"), "{body}");
    }
    let task = f.stored("charge-1").await.expect("not deleted");
    assert!(task.done_at.is_some(), "not reset");
    assert!(task.pruned_at.is_none(), "not pruned");
    assert!(f.manager.paused_kinds().await.expect("paused").is_empty());
}

#[tokio::test]
async fn only_loopback_host_headers_are_answered() {
    let f = Fixture::new();
    let app = f.app();
    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "LOCALHOST"] {
        let mut request = get("/");
        request
            .headers_mut()
            .insert(header::HOST, host.parse().expect("host"));
        let (status, _) = send(&app, request).await;
        assert_eq!(status, StatusCode::OK, "{host}");
    }
    for host in ["evil.example", "evil.example:8080", "127.0.0.1.nip.io:8080"] {
        let mut request = get("/");
        request
            .headers_mut()
            .insert(header::HOST, host.parse().expect("host"));
        let (status, body) = send(&app, request).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert!(!body.contains("<html"));
    }
    // No Host at all.
    let request = Request::get("/").body(Body::empty()).expect("request");
    let (status, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    // A dashboard configured for any host answers it (it has a token then).
    let open = router(
        f.manager.clone(),
        UiConfig::new("memory://").host_policy(HostPolicy::Any),
    );
    let mut request = get("/");
    request
        .headers_mut()
        .insert(header::HOST, "ops.example:8080".parse().expect("host"));
    let (status, _) = send(&open, request).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn with_a_token_every_request_must_present_it() {
    let f = Fixture::new();
    let secret = "s3cret-0123456789abcdef";
    let app = router(
        f.manager.clone(),
        UiConfig::new("memory://test")
            .token(UiToken::new(secret).expect("long enough"))
            .host_policy(HostPolicy::Any),
    );
    let (status, body) = send(&app, get("/")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains("<html"));
    let response = app.clone().oneshot(get("/tasks")).await.expect("response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Basic "))
    );
    let with = |value: &str| {
        let mut request = get("/");
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, value.parse().expect("value"));
        request
    };
    let (status, _) = send(&app, with(&format!("Bearer {secret}"))).await;
    assert_eq!(status, StatusCode::OK);
    // Basic: any user, the token as password ("ops:s3cret-0123456789abcdef").
    let (status, _) = send(&app, with("Basic b3BzOnMzY3JldC0wMTIzNDU2Nzg5YWJjZGVm")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&app, with("Bearer s3cret-0123456789abcdeX")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(&app, with("Bearer ")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The token is not taken from the URL.
    let (status, _) = send(&app, get(&format!("/?token={secret}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hostile_strings_are_escaped_everywhere() {
    let f = Fixture::new();
    let mut task = f.failed(SCRIPT, IMG, 1);
    task.resource_key = Some(IMG.to_owned());
    task.data
        .insert("note".to_owned(), serde_json::json!(SCRIPT));
    task.data.insert("html".to_owned(), serde_json::json!(IMG));
    task.errors[0].error = format!("{SCRIPT}{IMG}");
    task.result = Some(serde_json::json!({ "r": SCRIPT }));
    f.put(vec![task]).await;
    let app = f.app();
    let task_uri = format!(
        "/task?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("id", SCRIPT)
            .finish()
    );
    let key_uri = format!(
        "/resource-key?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("key", IMG)
            .finish()
    );
    let list_uri = format!(
        "/tasks?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("kind", IMG)
            .append_pair("id_prefix", SCRIPT)
            .finish()
    );
    for uri in [
        "/",
        "/live/overview",
        "/tasks",
        &task_uri,
        &key_uri,
        &list_uri,
    ] {
        let (status, body) = send(&app, get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert!(!body.contains(SCRIPT), "{uri}: raw script in {body}");
        assert!(!body.contains("<img"), "{uri}: raw img in {body}");
        assert!(body.contains(IMG_ESCAPED), "{uri}: {body}");
    }
    let (_, body) = send(&app, get(&task_uri)).await;
    assert!(body.contains(SCRIPT_ESCAPED), "{body}");
    // The id still round-trips through the forms and the listing.
    assert_eq!(input_value(&body, "id").as_deref(), Some(SCRIPT));
    let (_, body) = send(&app, get(&list_uri)).await;
    assert_eq!(listed_ids(&body), vec![SCRIPT.to_owned()]);
    // And through an action's confirmation and result pages.
    let token = csrf(&app).await;
    for confirmed in [false, true] {
        let mut pairs = vec![
            ("csrf", token.as_str()),
            ("action", "reset"),
            ("id", SCRIPT),
        ];
        if confirmed {
            pairs.push(("confirmed", "1"));
        }
        let (status, body) = send(&app, post("/actions/ids", &pairs)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.contains(SCRIPT), "{body}");
        assert!(body.contains(SCRIPT_ESCAPED));
    }
    assert!(
        f.stored(SCRIPT).await.expect("task").done_at.is_none(),
        "reset"
    );
}

#[tokio::test]
async fn an_unreachable_store_is_said_and_retried() {
    let flaky = Arc::new(Flaky {
        inner: Arc::new(MemoryStore::new()),
        failing: AtomicBool::new(false),
    });
    let f = Fixture::over(flaky.clone());
    f.put(vec![f.task("e1", "email", 1)]).await;
    let app = router(
        f.manager.clone(),
        UiConfig::new("postgres://ops:***@db.internal/app"),
    );
    flaky.failing.store(true, Ordering::SeqCst);
    for uri in [
        "/",
        "/live/overview",
        "/tasks",
        "/task?id=e1",
        "/resource-key?key=k",
    ] {
        let (status, body) = send(&app, get(uri)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        assert!(body.contains("cannot be read"), "{uri}: {body}");
        assert!(body.contains("postgres://ops:***@db.internal/app"), "{uri}");
        assert!(body.contains("connection refused"), "{uri}");
    }
    let (_, page) = send(&app, get("/tasks")).await;
    assert!(!page.contains("e1"));
    // The full error page retries through its script, with backoff from the
    // refresh interval up to the longest wait; the overview likewise.
    let (_, page) = send(&app, get("/task?id=e1")).await;
    assert!(!page.contains("http-equiv=\"refresh\""), "no fixed reload");
    assert!(
        page.contains("id=\"retry\" data-retry-ms=\"2000\" data-max-retry-ms=\"30000\""),
        "{page}"
    );
    let (_, page) = send(&app, get("/")).await;
    assert!(page.contains("Retrying"));
    // Back up: the same pages work again.
    flaky.failing.store(false, Ordering::SeqCst);
    let (status, body) = send(&app, get("/tasks")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed_ids(&body), vec!["e1"]);
}

#[tokio::test]
async fn redriving_failed_tasks_of_a_kind_confirms_the_count_first() {
    let f = Fixture::new();
    f.put(vec![
        f.failed("f1", "sync", 1),
        f.failed("f2", "sync", 2),
        f.completed("c1", "sync", 3),
        f.failed("other", "email", 4),
    ])
    .await;
    let app = f.app();
    let token = csrf(&app).await;
    let mut pairs = vec![
        ("csrf", token.as_str()),
        ("action", "reset"),
        ("kind", "sync"),
        ("status", "failed"),
    ];
    let (status, body) = send(&app, post("/actions/matching", &pairs)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("<strong class=\"count\">2</strong>"),
        "{body}"
    );
    assert!(
        f.stored("f1").await.expect("f1").done_at.is_some(),
        "not yet"
    );
    pairs.push(("confirmed", "1"));
    let (status, body) = send(&app, post("/actions/matching", &pairs)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Reset to pending: 2"), "{body}");
    assert!(f.stored("f1").await.expect("f1").done_at.is_none());
    assert!(f.stored("f2").await.expect("f2").done_at.is_none());
    assert!(f.stored("c1").await.expect("c1").done_at.is_some());
    assert!(f.stored("other").await.expect("other").done_at.is_some());
    // Nothing left to redrive: the confirmation says so and offers no button.
    pairs.pop();
    let (_, body) = send(&app, post("/actions/matching", &pairs)).await;
    assert!(body.contains("Nothing to reset"), "{body}");
    assert!(!body.contains("name=\"confirmed\""));
}

#[tokio::test]
async fn selections_resource_keys_and_pauses_act() {
    let f = Fixture::new();
    let keyed = |id: &str, key: &str, offset| {
        let mut task = f.task(id, "sync", offset);
        task.resource_key = Some(key.to_owned());
        task
    };
    f.put(vec![
        f.failed("a", "email", 1),
        f.failed("b", "email", 2),
        f.failed("c", "email", 3),
        keyed("k1", "cal-1", 4),
        keyed("k2", "cal-1", 5),
        keyed("k3", "cal-2", 6),
    ])
    .await;
    let app = f.app();
    let token = csrf(&app).await;

    // Checkboxes: two of three.
    let (status, body) = send(
        &app,
        post(
            "/actions/ids",
            &[
                ("csrf", &token),
                ("action", "reset"),
                ("id", "a"),
                ("id", "c"),
                ("confirmed", "1"),
            ],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(f.stored("a").await.expect("a").done_at.is_none());
    assert!(f.stored("b").await.expect("b").done_at.is_some());
    assert!(f.stored("c").await.expect("c").done_at.is_none());

    // By resource key: the confirmation counts, then the delete.
    let mut pairs = vec![
        ("csrf", token.as_str()),
        ("action", "delete"),
        ("resource_key", "cal-1"),
    ];
    let (_, body) = send(&app, post("/actions/matching", &pairs)).await;
    assert!(
        body.contains("<strong class=\"count\">2</strong>"),
        "{body}"
    );
    pairs.push(("confirmed", "1"));
    let (_, body) = send(&app, post("/actions/matching", &pairs)).await;
    assert!(body.contains("Deleted: 2"), "{body}");
    assert!(f.stored("k1").await.is_none() && f.stored("k2").await.is_none());
    assert!(f.stored("k3").await.is_some());
    let (_, page) = send(&app, get("/resource-key?key=cal-2")).await;
    assert_eq!(page.matches(">k3</code>").count(), 1, "{page}");

    // Pause and resume a kind.
    let pause = |op: &'static str| {
        post(
            "/actions/pause",
            &[("csrf", &token), ("kind", "email"), ("op", op)],
        )
    };
    let (status, body) = send(&app, pause("pause")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        f.manager.paused_kinds().await.expect("paused"),
        vec!["email"]
    );
    send(&app, pause("resume")).await;
    assert!(f.manager.paused_kinds().await.expect("paused").is_empty());

    // A bad action is refused and changes nothing.
    let (status, _) = send(
        &app,
        post(
            "/actions/ids",
            &[
                ("csrf", &token),
                ("action", "explode"),
                ("id", "b"),
                ("confirmed", "1"),
            ],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn responses_carry_the_security_headers() {
    let f = Fixture::new();
    let app = f.app();
    for request in [get("/"), get("/nowhere"), {
        let mut r = get("/");
        r.headers_mut()
            .insert(header::HOST, "evil.example".parse().expect("host"));
        r
    }] {
        let response = app.clone().oneshot(request).await.expect("response");
        let csp = response
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(
            response
                .headers()
                .get(header::X_FRAME_OPTIONS)
                .map(|v| v.as_bytes()),
            Some(&b"DENY"[..])
        );
        // Not `no-referrer`: browsers would then send `Origin: null` with
        // the dashboard's own form posts (tests/browser.rs posts them).
        assert_eq!(
            response
                .headers()
                .get(header::REFERRER_POLICY)
                .map(|v| v.as_bytes()),
            Some(&b"same-origin"[..])
        );
    }
}

#[tokio::test]
async fn a_mounted_dashboard_links_under_its_path() {
    let f = Fixture::new();
    f.put(vec![f.task("e1", "email", 1)]).await;
    let app = Router::new().nest(
        "/ops",
        router(
            f.manager.clone(),
            UiConfig::new("memory://").base_path("ops"),
        ),
    );
    let (status, body) = send(&app, get("/ops/tasks")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("href=\"/ops/task?id=e1\""), "{body}");
    assert!(body.contains("action=\"/ops/actions/ids\""));
    assert!(body.contains("href=\"/ops/assets/style.css\""));
}

#[tokio::test]
async fn the_overview_charts_tasks_finished_between_its_reads() {
    let f = Fixture::new();
    f.put(vec![
        f.completed("c1", "email", 1),
        f.task("p1", "email", 2),
    ])
    .await;
    let app = f.app();
    let (_, first) = send(&app, get("/live/overview")).await;
    assert!(first.contains("<svg class=\"spark\""), "{first}");
    assert!(!first.contains("<rect"), "one sample: no bar yet");
    // Samples are taken at the store's millisecond precision.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    f.put(vec![
        f.completed("c2", "email", 3),
        f.failed("c3", "email", 4),
    ])
    .await;
    let (_, second) = send(&app, get("/live/overview")).await;
    assert!(
        second.contains("<title>2 finished in the last minute</title>"),
        "{second}"
    );
    assert!(second.contains(">2/min</span>"));
}

#[tokio::test]
async fn recurring_generators_show_their_rule_next_slots_and_occurrences() {
    let f = Fixture::new();
    let mut generator = f.task("report-weekly", "report", 1);
    generator.recurrence =
        Some(Recurrence::new("FREQ=HOURLY", "2025-01-06T09:00:00Z").expect("rule"));
    generator.wait_until = Some(Utc::now() + TimeDelta::minutes(30));
    // The occurrence of the latest hourly slot, under the id the manager
    // gives it: the generator's page reads its slots' occurrences by id.
    let schedule = generator
        .recurrence
        .as_ref()
        .and_then(|r| r.schedule().ok())
        .expect("schedule");
    let slot = schedule.slots_before(Utc::now(), 1)[0];
    let occurrence_id = oncetask::backend::lifecycle::occurrence_id("report-weekly", slot);
    let mut occurrence = f.completed(&occurrence_id, "report", 2);
    occurrence.parent_recurrence_id = Some("report-weekly".to_owned());
    occurrence.occurrence_timestamp = Some(slot);
    f.put(vec![generator, occurrence, f.task("plain", "report", 3)])
        .await;
    let app = f.app();
    let (status, body) = send(&app, get("/recurring")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(">report-weekly</code>"), "{body}");
    assert!(!body.contains(">plain</code>"), "not a generator");
    assert!(body.contains("FREQ=HOURLY"));
    let slots = body.split("<ul class=\"slots\">").nth(1).expect("slots");
    assert_eq!(
        slots
            .split("</ul>")
            .next()
            .map(|l| l.matches("<li>").count()),
        Some(5)
    );
    let (_, page) = send(&app, get("/task?id=report-weekly")).await;
    assert!(page.contains("Next slots"), "{page}");
    assert!(
        page.contains(&format!(">{occurrence_id}</code>")),
        "the occurrence: {page}"
    );
    let (_, occurrence) = send(&app, get(&format!("/task?id={occurrence_id}"))).await;
    assert!(
        occurrence.contains("href=\"/task?id=report-weekly\""),
        "its generator"
    );
}

#[tokio::test]
async fn the_resource_key_page_lists_the_busy_keys_and_a_keys_queue() {
    let f = Fixture::new();
    let keyed = |id: &str, kind: &str, key: &str, offset| {
        let mut task = f.task(id, kind, offset);
        task.resource_key = Some(key.to_owned());
        task
    };
    let mut done = keyed("done", "sync", "cal-9", 0);
    done.done_at = Some(f.t0);
    done.outcome = Some(Outcome::Completed);
    f.put(vec![
        keyed("a1", "sync", "cal-1", 1),
        keyed("a2", "sync", "cal-1", 2),
        keyed("a3", "mail", "cal-1", 3),
        keyed("b1", "sync", "cal-2", 4),
        done,
        f.task("nokey", "sync", 5),
    ])
    .await;
    let app = f.app();
    let (status, body) = send(&app, get("/resource-key")).await;
    assert_eq!(status, StatusCode::OK);
    let cal1 = body.find(">cal-1</a>").expect("cal-1 listed");
    let cal2 = body.find(">cal-2</a>").expect("cal-2 listed");
    assert!(cal1 < cal2, "busiest first");
    assert!(!body.contains(">cal-9</a>"), "no open task: {body}");
    let row = body[cal1..].split("</tr>").next().expect("row");
    assert!(row.contains("<td class=\"num\">3</td>"), "{row}");
    assert!(row.contains("mail, sync"), "{row}");
    // One kind only.
    let (_, body) = send(&app, get("/resource-key?kind=mail")).await;
    assert!(body.contains(">cal-1</a>") && !body.contains(">cal-2</a>"));
    // A key's queue, oldest first.
    let (_, body) = send(&app, get("/resource-key?key=cal-1")).await;
    let a1 = body.find(">a1</code>").expect("a1");
    let a3 = body.find(">a3</code>").expect("a3");
    assert!(a1 < a3);
    assert!(body.contains("3 task(s), 3 not finished"), "{body}");
}

#[tokio::test]
async fn pruning_counts_with_a_dry_run_before_it_prunes() {
    let f = Fixture::new();
    let mut done = f.completed("c1", "email", 1);
    done.data.insert("to".to_owned(), serde_json::json!("ada"));
    f.put(vec![
        done,
        f.completed("c2", "email", 2),
        f.failed("f1", "email", 3),
        f.task("p1", "email", 4),
    ])
    .await;
    let app = f.app();
    let (status, page) = send(&app, get("/prune?kind=email")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<option value=\"email\">"), "{page}");
    let token = csrf(&app).await;
    let mut pairs = vec![
        ("csrf", token.as_str()),
        ("kind", "email"),
        ("completed", "30m"),
    ];
    let (status, body) = send(&app, post("/actions/prune", &pairs)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("<strong class=\"count\">2</strong>"),
        "{body}"
    );
    assert!(body.contains("name=\"completed\" value=\"30m\""));
    let untouched = f.stored("c1").await.expect("c1");
    assert!(untouched.pruned_at.is_none() && !untouched.data.is_empty());
    pairs.push(("confirmed", "1"));
    let (status, body) = send(&app, post("/actions/prune", &pairs)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("2 turned into tombstones"), "{body}");
    let pruned = f.stored("c1").await.expect("a tombstone");
    assert!(pruned.pruned_at.is_some() && pruned.data.is_empty());
    assert!(f.stored("f1").await.expect("f1").pruned_at.is_none());
    // A form without a period is refused.
    let (status, _) = send(
        &app,
        post("/actions/prune", &[("csrf", &token), ("kind", "email")]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_overview_tells_its_script_the_refresh_interval_and_the_longest_retry() {
    let f = Fixture::new();
    let (_, body) = send(&f.app(), get("/")).await;
    assert!(
        body.contains("data-refresh-ms=\"2000\" data-max-retry-ms=\"30000\""),
        "{body}"
    );
    assert!(body.contains("Refreshed every 2s."), "{body}");
    // A slower refresh than the longest retry: failures wait the interval.
    let app = router(
        f.manager.clone(),
        UiConfig::new("memory://test").refresh(std::time::Duration::from_secs(60)),
    );
    let (_, body) = send(&app, get("/")).await;
    assert!(
        body.contains("data-refresh-ms=\"60000\" data-max-retry-ms=\"60000\""),
        "{body}"
    );
    assert!(body.contains("Refreshed every 1m 0s."), "{body}");
    // Too short an interval is raised to 100 ms.
    let app = router(
        f.manager.clone(),
        UiConfig::new("memory://test").refresh(std::time::Duration::from_millis(1)),
    );
    let (_, body) = send(&app, get("/")).await;
    assert!(body.contains("data-refresh-ms=\"100\""), "{body}");
    assert!(body.contains("Refreshed every 100 ms."), "{body}");
}

/// A memory store that refuses what Firestore refuses (a listing by
/// pending, waiting or leased alone; an id prefix; the key queues) and
/// counts the listings it answers.
struct IndexedOnly {
    inner: MemoryStore,
    finds: std::sync::atomic::AtomicUsize,
}

#[oncetask::async_trait]
impl oncetask::backend::Forward for IndexedOnly {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }

    fn check_filter(&self, filter: &oncetask::TaskFilter) -> Result<(), oncetask::StoreError> {
        use oncetask::TaskStatus::{Leased, Pending, Waiting};
        let timed = filter
            .statuses
            .iter()
            .any(|s| matches!(s, Pending | Waiting | Leased));
        if timed || filter.id_prefix.is_some() {
            return Err(oncetask::StoreError::Unsupported(
                "no index lists that <b>here</b>".to_owned(),
            ));
        }
        Ok(())
    }

    async fn find(&self, filter: &oncetask::TaskFilter) -> Result<Vec<Task>, oncetask::StoreError> {
        oncetask::backend::Forward::check_filter(self, filter)?;
        self.finds.fetch_add(1, Ordering::SeqCst);
        self.inner.find(filter).await
    }

    async fn open_resource_keys(
        &self,
        _env: &str,
        _kind: Option<&str>,
        _now: DateTime<Utc>,
        _limit: usize,
    ) -> Result<oncetask::backend::KeyQueues, oncetask::StoreError> {
        Err(oncetask::StoreError::Unsupported(
            "open a key by its name".to_owned(),
        ))
    }
}

#[tokio::test]
async fn filters_the_store_does_not_serve_are_not_offered_and_refused_unread() {
    let store = Arc::new(IndexedOnly {
        inner: MemoryStore::new(),
        finds: Default::default(),
    });
    let f = Fixture::over(store.clone());
    f.put(vec![f.task("a", "email", 1), f.failed("b", "email", 2)])
        .await;
    let app = f.app();
    let (status, body) = send(&app, get("/tasks")).await;
    assert_eq!(status, StatusCode::OK);
    // Refused choices are shown disabled, with the store's reason (escaped).
    assert!(
        body.contains(
            "title=\"not served by this store: no index lists that &#60;b&#62;here&#60;/b&#62;\"><input type=\"checkbox\" name=\"status\" value=\"pending\" disabled>"
        ),
        "{body}"
    );
    assert!(
        body.contains("name=\"status\" value=\"failed\">"),
        "offered"
    );
    assert!(
        body.contains("name=\"id_prefix\" value=\"\" disabled"),
        "{body}"
    );
    assert!(
        body.contains("name=\"open\" value=\"1\""),
        "open tasks offered"
    );
    // A URL naming a refused filter gets the reason, and nothing is read.
    let before = store.finds.load(Ordering::SeqCst);
    let (status, body) = send(&app, get("/tasks?status=pending&kind=email")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("This store does not serve that filter."),
        "{body}"
    );
    assert!(body.contains("&#60;b&#62;here"), "escaped: {body}");
    assert_eq!(store.finds.load(Ordering::SeqCst), before, "nothing read");
    // What it serves still lists.
    let (status, body) = send(&app, get("/tasks?status=failed")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(">b</code>") && !body.contains(">a</code>"),
        "{body}"
    );
    let (status, body) = send(&app, get("/tasks?open=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(">a</code>") && !body.contains(">b</code>"),
        "{body}"
    );
    // The key list says why it is not shown; a key by name still is.
    let (status, body) = send(&app, get("/resource-key")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("This store does not list its keys: open a key by its name"));
    // A bulk action over a refused status says so (400), without retrying.
    let (status, body) = send(
        &app,
        post(
            "/actions/matching",
            &[
                ("csrf", &csrf(&app).await),
                ("action", "cancel"),
                ("kind", "email"),
                ("status", "pending"),
            ],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("This store does not serve that"), "{body}");
    assert!(!body.contains("id=\"retry\""), "no retry: {body}");
}

#[tokio::test]
async fn the_task_list_filters_by_id_prefix_and_creation_range_in_the_store() {
    let f = Fixture::new();
    f.put(vec![
        f.task("user-1", "email", 1_000),
        f.task("order-1", "email", 2_000),
        f.task("user-2", "email", 3_000),
        f.task("user-3", "email", 60_000),
    ])
    .await;
    let app = f.app();
    let (_, body) = send(&app, get("/tasks?id_prefix=user-")).await;
    assert!(body.contains(">user-1</code>") && body.contains(">user-3</code>"));
    assert!(!body.contains(">order-1</code>"), "{body}");
    let to = (f.t0 + TimeDelta::seconds(10)).to_rfc3339();
    let uri = format!(
        "/tasks?id_prefix=user-&to={}",
        form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
    );
    let (_, body) = send(&app, get(&uri)).await;
    assert!(body.contains(">user-1</code>") && body.contains(">user-2</code>"));
    assert!(!body.contains(">user-3</code>"), "past the end: {body}");
}

#[tokio::test]
async fn undecodable_documents_are_listed_with_their_reasons() {
    let store = Arc::new(MemoryStore::new());
    store.insert_undecodable("broken-1", ENV, "email", IMG);
    store.insert_undecodable("broken-prod", "prod", "email", "other env");
    let f = Fixture::over(store);
    let app = f.app();
    let (status, body) = send(&app, get("/undecodable")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(">broken-1</code>"), "{body}");
    assert!(body.contains(IMG_ESCAPED), "the reason, escaped: {body}");
    assert!(!body.contains(IMG));
    assert!(!body.contains("broken-prod"), "other env");
    let (_, overview) = send(&app, get("/")).await;
    assert!(overview.contains("href=\"/undecodable\""), "linked");
}
