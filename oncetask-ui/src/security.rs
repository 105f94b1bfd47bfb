//! The dashboard's defenses, as axum middleware and helpers: the `Host`
//! check (DNS rebinding), the access token, the method, read-only, `Origin`
//! and `Sec-Fetch-Site` checks of actions, the CSRF token of action forms,
//! and the response headers (CSP and friends). The crate docs describe the
//! model as a whole.

use std::fmt;
use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::AppState;

/// Shortest access token accepted, in bytes: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The environment variable the `oncetask ui` command reads the access
/// token from (the library reads no environment by itself).
pub const TOKEN_ENV: &str = "ONCETASK_UI_TOKEN";

/// The secret that grants access to the dashboard when it is not bound to
/// loopback only.
///
/// Clients present it as `Authorization: Bearer <token>`, or through HTTP
/// Basic authentication with any user name and the token as the password
/// (what a browser asks for when the dashboard answers 401). It is never
/// read from a URL, and never printed: its `Debug` shows `UiToken(***)`.
#[derive(Clone)]
pub struct UiToken(String);

/// Why a token was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_LEN`] bytes (after trimming white space).
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The token file cannot be read.
    Unreadable(std::io::Error),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::TooShort { len } => write!(
                f,
                "the access token has {len} bytes; use at least {MIN_TOKEN_LEN} \
                 (e.g. 32 random hex digits)"
            ),
            TokenError::Unreadable(e) => write!(f, "cannot read the token file: {e}"),
        }
    }
}

impl std::error::Error for TokenError {}

impl UiToken {
    /// A token from its text; surrounding white space (a file's final
    /// newline) is not part of it.
    pub fn new(token: impl Into<String>) -> Result<Self, TokenError> {
        let token = token.into();
        let trimmed = token.trim();
        if trimmed.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { len: trimmed.len() });
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The token stored in a file (its whole content, trimmed).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(TokenError::Unreadable)?;
        Self::new(text)
    }

    /// True when `given` is the token, compared in constant time.
    pub fn matches(&self, given: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(given))
    }
}

impl fmt::Debug for UiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UiToken(***)")
    }
}

/// Which `Host` headers the dashboard answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostPolicy {
    /// Only `localhost`, `127.0.0.1` and `[::1]`, with or without a port:
    /// a page of another site that rebinds its name to 127.0.0.1 sends its
    /// own name and is refused (421). The default, for a dashboard bound to
    /// loopback.
    Loopback,
    /// These host names (compared without the port, case-insensitively),
    /// e.g. the name of a reverse proxy in front of the dashboard.
    Names(Vec<String>),
    /// Any host: for a dashboard bound beyond loopback, where the token
    /// stands in for the check.
    Any,
}

impl HostPolicy {
    /// True when a request whose `Host` is `host` may be answered.
    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host);
        match self {
            HostPolicy::Any => true,
            HostPolicy::Loopback => {
                name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "[::1]"
            }
            HostPolicy::Names(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }
}

/// The name part of a `Host` value: without its port, brackets kept for IPv6.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The host a request names: its `Host` header, or the authority of an
/// absolute URI (HTTP/2).
fn request_host(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(header::HOST) {
        return value.to_str().ok().map(str::to_owned);
    }
    request.uri().authority().map(|a| a.as_str().to_owned())
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// Refuses requests whose `Host` the [`HostPolicy`] does not allow, with
/// 421 Misdirected Request.
pub(crate) async fn check_host(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = match request_host(&request) {
        Some(host) => state.config.host_policy.allows(&host),
        None => matches!(state.config.host_policy, HostPolicy::Any),
    };
    if !allowed {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            "refused: this dashboard only answers requests addressed to localhost, \
             127.0.0.1 or [::1] (or the hosts it was configured with)",
        );
    }
    next.run(request).await
}

/// The token a request presents: `Bearer <token>`, or the password of
/// `Basic` credentials.
fn presented_token(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// With a token configured, answers 401 (asking for Basic credentials)
/// unless the request presents it.
pub(crate) async fn check_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.config.token else {
        return next.run(request).await;
    };
    match presented_token(request.headers()) {
        Some(given) if token.matches(&given) => next.run(request).await,
        _ => {
            let mut response = plain(
                StatusCode::UNAUTHORIZED,
                "this dashboard needs its access token: as the password of Basic \
                 authentication (any user name) or as `Authorization: Bearer <token>`",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"oncetask\", charset=\"UTF-8\""),
            );
            response
        }
    }
}

/// Actions: only GET and HEAD read, only POST acts. A POST is refused (403)
/// when the dashboard is read-only, when `Sec-Fetch-Site` says it comes
/// from another site, or when its `Origin` is not the dashboard's own.
/// (The CSRF token in the form is checked by the action itself, which
/// reads the body.)
pub(crate) async fn check_action(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method();
    if method == Method::GET || method == Method::HEAD {
        return next.run(request).await;
    }
    if method != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST are used");
    }
    if state.config.read_only {
        return plain(
            StatusCode::FORBIDDEN,
            "refused: this dashboard is read-only; nothing was changed",
        );
    }
    if let Err(why) = same_origin(request.headers()) {
        return plain(
            StatusCode::FORBIDDEN,
            &format!("refused: {why}; nothing was changed"),
        );
    }
    next.run(request).await
}

/// Checks the browser's own word on where a POST comes from: `Sec-Fetch-Site`
/// (when sent) must be `same-origin` or `none`, and `Origin` (when sent)
/// must name the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err("the request comes from another site (Sec-Fetch-Site)");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if host.is_empty() || !authority.eq_ignore_ascii_case(host) {
            return Err("the request's Origin is not this dashboard");
        }
    }
    Ok(())
}

/// True when a form's CSRF field is this process's token.
pub(crate) fn csrf_ok(state: &AppState, given: Option<&str>) -> bool {
    match given {
        Some(given) => bool::from(state.csrf.as_bytes().ct_eq(given.as_bytes())),
        None => false,
    }
}

/// The 403 of a form whose CSRF token is missing or wrong.
pub(crate) fn csrf_refused() -> Response {
    plain(
        StatusCode::FORBIDDEN,
        "refused: the form's CSRF token is missing or stale (reload the page and try \
         again); nothing was changed",
    )
}

/// A fresh random CSRF secret for this process (256 bits from the OS
/// generator, as hex).
pub(crate) fn new_csrf_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Headers on every response: no scripts, styles or frames but the
/// dashboard's own, no caching of task data, no referrer to other sites.
pub(crate) async fn response_headers(request: Request, next: Next) -> Response<Body> {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send
    // `Origin: null` with the dashboard's own form posts, which the Origin
    // check then refuses. Other sites still get no referrer (no task ids in
    // their logs).
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_policy_takes_loopback_names_with_or_without_port() {
        let p = HostPolicy::Loopback;
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil:80",
            "[::2]:80",
            "",
            "0.0.0.0:8080",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_are_trimmed_and_must_be_long_enough() {
        assert!(UiToken::new("short").is_err());
        let token = UiToken::new(" 0123456789abcdef\n").expect("long enough");
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcde"));
        assert_eq!(format!("{token:?}"), "UiToken(***)");
    }

    #[test]
    fn basic_and_bearer_credentials_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_token(&headers), Some(b"abc".to_vec()));
        // "ops:s3cret:x" — the password may hold colons.
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic b3BzOnMzY3JldDp4"),
        );
        assert_eq!(presented_token(&headers), Some(b"s3cret:x".to_vec()));
    }
}
