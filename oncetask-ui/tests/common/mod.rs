//! What the browser tests share: chromedriver on a free loopback port (a
//! child process, killed on drop), a small W3C WebDriver client for it
//! (the handful of commands the tests use, as JSON over HTTP/1.1 on
//! loopback: no client crate and no TLS stack), headless Chromium sessions,
//! the dashboard served on a free loopback port, and screenshots.
//!
//! Chromium and chromedriver are the Debian packages `chromium` and
//! `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`, or
//! `ONCETASK_CHROMIUM` and `ONCETASK_CHROMEDRIVER`); `scripts/test` installs
//! them when missing. Without them the tests fail, saying so: they never
//! pass without a browser.

#![allow(dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use oncetask::Manager;
use oncetask_ui::UiConfig;
use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A binary from `var`, else `default`; fails the test when it is missing.
fn binary(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} not found: the dashboard's browser tests need headless Chromium and chromedriver. \
         Run `scripts/test` (it installs them), or `apt-get install chromium chromium-driver`, \
         or set {var}.",
        path.display()
    );
    path
}

/// A free loopback port (free when asked: the caller binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A WebDriver error (`{"value": {"error": …, "message": …}}`).
#[derive(Debug)]
pub struct WdError {
    /// The W3C error code, e.g. `no such alert`.
    pub error: String,
    /// What the driver says.
    pub message: String,
}

/// One WebDriver request, blocking: `method path` with a JSON body, on the
/// driver at `port`. The answer's `value`, or its error.
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, WdError> {
    let io = |e: std::io::Error| WdError {
        error: "io".to_owned(),
        message: format!("{method} {path}: {e}"),
    };
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT)).map_err(io)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body.as_bytes()).map_err(io)?;
    // The answer: headers, then Content-Length bytes (or up to the close).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let payload = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(
                !head.contains("transfer-encoding: chunked"),
                "chromedriver answered chunked"
            );
            let len = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|n| n.trim().parse::<usize>().ok())
            });
            if let Some(len) = len
                && buf.len() >= end + 4 + len
            {
                break buf[end + 4..end + 4 + len].to_vec();
            }
        }
        let n = stream.read(&mut chunk).map_err(io)?;
        if n == 0 {
            let end = buf
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(buf.len(), |e| e + 4);
            break buf[end..].to_vec();
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let answer: Value = serde_json::from_slice(&payload).map_err(|e| WdError {
        error: "json".to_owned(),
        message: format!(
            "{method} {path}: {e}: {}",
            String::from_utf8_lossy(&payload)
        ),
    })?;
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Err(WdError {
            error: error.to_owned(),
            message: value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Ok(value)
}

/// chromedriver on a free loopback port; killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Starts chromedriver and waits until it is ready.
    pub async fn start() -> Driver {
        let path = binary("ONCETASK_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let child = Command::new(&path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let driver = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = tokio::task::spawn_blocking(move || request(port, "GET", "/status", None))
                .await
                .expect("join");
            if let Ok(status) = status
                && status.get("ready") == Some(&Value::Bool(true))
            {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on 127.0.0.1:{port} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session (its own chromedriver); the session ends
/// on [`Browser::quit`], or on drop (a failing test).
pub struct Browser {
    session: String,
    port: u16,
    /// Dropped after the session (field order).
    _driver: Driver,
}

/// An element reference.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Headless Chromium with these extra command-line switches.
    pub async fn launch(extra_args: &[&str]) -> Browser {
        let chromium = binary("ONCETASK_CHROMIUM", "/usr/bin/chromium");
        let driver = Driver::start().await;
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1360,900",
            "--no-first-run",
            "--no-default-browser-check",
            // Plain http on test names (evil.test), never upgraded to https.
            "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
        ];
        args.extend_from_slice(extra_args);
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "unhandledPromptBehavior": "ignore",
                    "goog:chromeOptions": {
                        "binary": chromium.to_string_lossy(),
                        "args": args,
                    }
                }
            }
        });
        let port = driver.port;
        let session = tokio::task::spawn_blocking(move || {
            request(port, "POST", "/session", Some(&capabilities))
        })
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e:?}"));
        let session = session
            .get("sessionId")
            .and_then(Value::as_str)
            .expect("a session id")
            .to_owned();
        Browser {
            session,
            port,
            _driver: driver,
        }
    }

    /// A command of this session: `method /session/{id}{path}`.
    pub async fn try_cmd(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let port = self.port;
        let path = format!("/session/{}{path}", self.session);
        tokio::task::spawn_blocking(move || request(port, method, &path, body.as_ref()))
            .await
            .expect("join")
    }

    /// A command that must succeed.
    pub async fn cmd(&self, method: &'static str, path: &str, body: Option<Value>) -> Value {
        match self.try_cmd(method, path, body).await {
            Ok(value) => value,
            Err(e) => panic!("WebDriver {method} {path}: {e:?}"),
        }
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The address shown.
    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn element(value: &Value) -> Element {
        Element(
            value
                .get(ELEMENT)
                .and_then(Value::as_str)
                .expect("an element reference")
                .to_owned(),
        )
    }

    /// The first element matching `css`; fails the test when none does,
    /// with the page's address and text.
    pub async fn find(&self, css: &str) -> Element {
        let found = self
            .try_cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        match found {
            Ok(value) => Self::element(&value),
            Err(e) => {
                let url = self.url().await;
                let text = self
                    .exec(
                        "return document.body ? document.body.innerText : document.documentElement.outerHTML;",
                        vec![],
                    )
                    .await;
                panic!(
                    "no element {css:?} on {url} ({}); the page says:\n{}",
                    e.error,
                    text.as_str().unwrap_or_default()
                )
            }
        }
    }

    /// Every element matching `css`.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let value = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        value
            .as_array()
            .map(|a| a.iter().map(Self::element).collect())
            .unwrap_or_default()
    }

    /// Clicks `element` as a user would (scrolled into view, on top).
    pub async fn click(&self, element: &Element) {
        self.cmd(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await;
    }

    /// Clicks a link or a form's button, and waits until the page it
    /// leads to has loaded (a new document, not the one clicked in).
    pub async fn click_to_load(&self, element: &Element) {
        self.exec("window.oncetaskStale = true; return null;", vec![])
            .await;
        self.click(element).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let loaded = self
                .try_cmd(
                    "POST",
                    "/execute/sync",
                    Some(json!({
                        "script": "return document.readyState === 'complete' && !window.oncetaskStale;",
                        "args": [],
                    })),
                )
                .await;
            if let Ok(Value::Bool(true)) = loaded {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no new page within 15 s of the click"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Empties a text field.
    pub async fn clear(&self, element: &Element) {
        self.cmd(
            "POST",
            &format!("/element/{}/clear", element.0),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into `element`.
    pub async fn type_text(&self, element: &Element, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", element.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.text(&element).await
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs `script`, which calls its last argument with the result.
    pub async fn exec_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The text of an open alert, confirm or prompt dialog, if any.
    pub async fn open_dialog(&self) -> Option<String> {
        match self.try_cmd("GET", "/alert/text", None).await {
            Ok(text) => Some(text.as_str().unwrap_or_default().to_owned()),
            Err(e) if e.error == "no such alert" => None,
            Err(e) => panic!("GET /alert/text: {e:?}"),
        }
    }

    /// Saves a PNG of the viewport as `<target>/ui-screenshots/<name>.png`
    /// (see [`screenshot_dir`]).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Waits until `ready` holds, polling every 100 ms for at most
    /// `timeout`; fails the test with `what` (and the last page text) when
    /// it does not.
    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, mut ready: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if ready().await {
                return;
            }
            if Instant::now() >= deadline {
                let body = self
                    .exec(
                        "return document.body ? document.body.innerText : '';",
                        vec![],
                    )
                    .await;
                panic!("waited {timeout:?} for {what}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session (and so the browser).
    pub async fn quit(mut self) {
        let session = std::mem::take(&mut self.session);
        let port = self.port;
        let _ = tokio::task::spawn_blocking(move || {
            request(port, "DELETE", &format!("/session/{session}"), None)
        })
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed before quit: end the browser before its driver.
        if !self.session.is_empty() {
            let _ = request(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
    }
}

/// Where screenshots go: `ui-screenshots/` in the Cargo target directory
/// (`CARGO_TARGET_DIR` when set, else the workspace's `target/`).
pub fn screenshot_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    };
    target.join("ui-screenshots")
}

/// The dashboard served on a free loopback port; stopped on drop.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves the dashboard over `manager` with `config`.
    pub async fn start(manager: Manager, config: UiConfig) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("its address");
        let app = oncetask_ui::router(manager, config);
        let task = tokio::spawn(async move {
            oncetask_ui::serve(listener, app).await.expect("serve");
        });
        Server { addr, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP relay in front of a server that can be taken down: while down it
/// closes every connection, open or new, as a dashboard that cannot be
/// reached would (the browser's keep-alive connections included).
pub struct Relay {
    /// Where it listens.
    pub addr: SocketAddr,
    down: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays to `to`.
    pub async fn start(to: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("its address");
        let (down, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *watch.borrow() {
                    continue;
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Relay { addr, down, task }
    }

    /// Takes the relay down (`true`) or back up.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A query string value, URL-encoded.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
