//! Why a bench run (or one of its scenarios) failed.

/// A bench failure.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The arguments cannot be run as given.
    #[error("{0}")]
    Usage(String),
    /// A backend could not be reached or set up.
    #[error("{0}")]
    Unavailable(String),
    /// The library under test failed.
    #[error(transparent)]
    Oncetask(#[from] oncetask::Error),
    /// A store call failed.
    #[error(transparent)]
    Store(#[from] oncetask::StoreError),
    /// A hand-written raw-limit cycle failed.
    #[error("raw limit: {0}")]
    Raw(String),
    /// Tasks did not finish in time (a stuck queue, or sizes too large for
    /// the timeout).
    #[error("{scenario}: {done} of {expected} tasks ran within {seconds} s")]
    Timeout {
        /// The scenario that waited.
        scenario: String,
        /// Tasks that ran.
        done: u64,
        /// Tasks expected.
        expected: u64,
        /// The timeout.
        seconds: u64,
    },
}
