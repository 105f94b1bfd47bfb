//! Helpers for a backend's connect tests (outside the suite, which gets
//! its stores from a [`StoreFactory`](crate::StoreFactory)): endpoints that
//! refuse or never answer, short connect options, and checks of the typed
//! error. Connect tests assert the error and its message, never the time.

use std::net::TcpListener;
use std::time::Duration;

use oncetask_core::StoreError;
use oncetask_core::store::ConnectOptions;

/// A password to put in test URLs; a message containing it leaks it.
pub const PASSWORD: &str = "s3cret-pw";

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A loopback listener that never accepts: connections to it complete (in
/// the kernel's backlog) and then hear nothing. Keep it while connecting.
pub fn silent_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = listener.local_addr().expect("its address").port();
    (listener, port)
}

/// Connect options with a 1 s connect timeout, so failing tests end soon.
pub fn quick() -> ConnectOptions {
    ConnectOptions::default().connect_timeout(Duration::from_secs(1))
}

/// The message of a [`StoreError::Unavailable`]; panics on anything else.
pub fn unavailable(err: &StoreError) -> &str {
    match err {
        StoreError::Unavailable(message) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// The message of a [`StoreError::InvalidConfig`]; panics on anything else.
pub fn invalid_config(err: &StoreError) -> &str {
    match err {
        StoreError::InvalidConfig(message) => message,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
