//! Connecting a backend: [`ConnectOptions`], and the helpers backends use to
//! report a failed connect the same way ([`ConnectOptions::unreachable`],
//! [`redact_password`]).
//!
//! A backend's `connect_with(…, &ConnectOptions)` fails fast and typed:
//!
//! * a malformed URL or setting fails at once with
//!   [`StoreError::InvalidConfig`], before anything is sent;
//! * a server that refuses the connection fails at once, and one that does
//!   not answer fails after [`ConnectOptions::connect_timeout`], with
//!   [`StoreError::Unavailable`] naming the backend, the URL (password
//!   masked), the timeout, the cause and what to check.

use std::fmt::Display;
use std::time::Duration;

use crate::error::StoreError;

/// How a backend's `connect_with` connects: how long it waits for the
/// server, and how many connections it may keep.
///
/// The defaults ([`ConnectOptions::default`]): a 5 s connect timeout and the
/// backend's own pool size.
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::store::ConnectOptions;
///
/// let options = ConnectOptions::default()
///     .connect_timeout(Duration::from_secs(2))
///     .pool_size(20);
/// assert_eq!(options.connect_timeout, Duration::from_secs(2));
/// assert_eq!(options.pool_size, Some(20));
/// assert_eq!(ConnectOptions::default().connect_timeout, ConnectOptions::DEFAULT_CONNECT_TIMEOUT);
/// // With a backend (not run here):
/// // let store = PostgresStore::connect_with(&url, "oncetask", &options).await?;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// How long connecting may take before it fails with
    /// [`StoreError::Unavailable`]. It bounds connecting only, not a later
    /// call's wait for a free pooled connection (under load that wait is
    /// normal).
    pub connect_timeout: Duration,
    /// Most connections a backend with a pool keeps (PostgreSQL's
    /// `max_connections`); `None`: the backend's default. Backends on one
    /// multiplexed connection (Redis, Firestore) ignore it.
    pub pool_size: Option<u32>,
}

impl ConnectOptions {
    /// The default [`ConnectOptions::connect_timeout`]: 5 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The defaults: same as [`ConnectOptions::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`ConnectOptions::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`ConnectOptions::pool_size`].
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// The error of a connect that got no connection, for backends:
    /// [`StoreError::Unavailable`] saying "cannot reach `backend` at `url`
    /// (within the connect timeout): `cause`; check: `check`", with the
    /// URL's password masked ([`redact_password`]).
    ///
    /// ```
    /// use oncetask_core::StoreError;
    /// use oncetask_core::store::ConnectOptions;
    ///
    /// let e = ConnectOptions::default().unreachable(
    ///     "PostgreSQL",
    ///     "postgres://app:s3cret@db:5432/app",
    ///     "connection refused",
    ///     "is the server running, and are the URL's host and port right?",
    /// );
    /// let StoreError::Unavailable(message) = e else { panic!() };
    /// assert_eq!(
    ///     message,
    ///     "cannot reach PostgreSQL at postgres://app:***@db:5432/app (connect timeout 5s): \
    ///      connection refused; is the server running, and are the URL's host and port right?"
    /// );
    /// ```
    pub fn unreachable(
        &self,
        backend: &str,
        url: &str,
        cause: impl Display,
        check: &str,
    ) -> StoreError {
        let target = format!("{backend} at {}", redact_password(url));
        self.unreachable_target(&target, cause, check)
    }

    /// [`ConnectOptions::unreachable`] for a target named by the caller,
    /// whose URLs it already masked (e.g. a cluster reached through several
    /// seed nodes).
    pub fn unreachable_target(&self, target: &str, cause: impl Display, check: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "cannot reach {target} (connect timeout {:?}): {cause}; {check}",
            self.connect_timeout
        ))
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            pool_size: None,
        }
    }
}

/// `url` with its password replaced by `***`, for messages and logs: the
/// password of the user info (`scheme://user:password@host…` →
/// `scheme://user:***@host…`) and a `password=` query parameter. A URL
/// without a password, or that is not `scheme://…`, is returned as it is.
///
/// A password written with a raw `@`, `/`, `?` or `#` is masked too: the
/// user info is taken to run to the last `@` before the query, or of the
/// whole URL when no `@` comes before the query.
///
/// ```
/// use oncetask_core::store::redact_password;
///
/// assert_eq!(
///     redact_password("postgres://app:s3cret@db:5432/app?sslmode=require"),
///     "postgres://app:***@db:5432/app?sslmode=require"
/// );
/// assert_eq!(
///     redact_password("postgres://app@db/app?password=s3cret"),
///     "postgres://app@db/app?password=***"
/// );
/// assert_eq!(redact_password("redis://:pw@h/0"), "redis://:***@h/0");
/// // A raw `#` or `?` in the password.
/// assert_eq!(redact_password("redis://:p#w@h:6379"), "redis://:***@h:6379");
/// assert_eq!(redact_password("postgres://u:p?w@h/db"), "postgres://u:***@h/db");
/// // An `@` in the query is not user info.
/// assert_eq!(redact_password("postgres://h/db?email=a:b@c"), "postgres://h/db?email=a:b@c");
/// assert_eq!(redact_password("redis://h/0"), "redis://h/0");
/// ```
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(query_start);
    if !before_query.contains('@') {
        // A raw `?` or `#` in a password starts the "query" before the `@`:
        // the user info then runs to the last `@` of the whole URL.
        if let Some((user, after)) = userinfo_to_last_at(rest) {
            let tail_query = after.find(['?', '#']).unwrap_or(after.len());
            let (host, query) = after.split_at(tail_query);
            return format!("{scheme}://{user}:***@{host}{}", redact_query(query));
        }
    }
    let before_query = match before_query.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => before_query.to_owned(),
        },
        None => before_query.to_owned(),
    };
    format!("{scheme}://{before_query}{}", redact_query(query))
}

/// `user` and what follows the last `@` of `rest`, when `rest` starts with
/// `user:` (a user name holds no `/`, `?` or `#`).
fn userinfo_to_last_at(rest: &str) -> Option<(&str, &str)> {
    let (userinfo, after) = rest.rsplit_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    (!user.contains(['/', '?', '#'])).then_some((user, after))
}

/// `?a=b&password=…#f` with the password parameter's value masked.
fn redact_query(query: &str) -> String {
    let (params, fragment) = query.split_at(query.find('#').unwrap_or(query.len()));
    let Some(params) = params.strip_prefix('?') else {
        return query.to_owned();
    };
    let params: Vec<String> = params
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => param.to_owned(),
        })
        .collect();
    format!("?{}{fragment}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_and_nothing_else_changes() {
        assert_eq!(
            redact_password("redis+cluster://u:pw@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
        // Raw '@' and '/' in a password: the user info runs to the last '@'.
        assert_eq!(
            redact_password("postgres://u:p@s/s@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_password("postgres://u@h/db?sslmode=disable&Password=x#frag"),
            "postgres://u@h/db?sslmode=disable&Password=***#frag"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_password("not a url"), "not a url");
        assert_eq!(redact_password(""), "");
    }

    #[test]
    fn the_defaults_are_five_seconds_and_the_backends_pool() {
        let options = ConnectOptions::new();
        assert_eq!(options.connect_timeout, Duration::from_secs(5));
        assert_eq!(options.pool_size, None);
        assert_eq!(options, ConnectOptions::default());
    }
}
