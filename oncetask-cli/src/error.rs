//! The CLI's errors and the exit code each one ends the process with.

use std::process::ExitCode;

use oncetask::{Error, StoreError};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the command ran and something it was asked for did not
/// happen (a task not found, an item that failed, a declined confirmation).
pub const EXIT_FAILED: u8 = 1;
/// Exit status: bad input (arguments, store URL, an action not confirmed).
/// clap's own usage errors use the same code.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the store cannot be reached or failed.
pub const EXIT_STORE: u8 = 3;

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  the command ran but did not fully succeed (a task not found, an item
     failed, a confirmation declined)
  2  bad input: arguments, store URL, or a change not confirmed (--yes)
  3  the store is unreachable or failed";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: the command cannot run as asked.
    #[error("{0}")]
    Usage(String),
    /// The store cannot be reached, or answered with an error.
    #[error("{0}")]
    Store(String),
    /// The command ran, but what it was asked for did not (fully) happen.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// A [`CliError::Usage`].
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    /// A [`CliError::Store`].
    pub fn store(message: impl Into<String>) -> Self {
        Self::Store(message.into())
    }

    /// A [`CliError::Failed`].
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// The process exit status for this error.
    pub fn exit_status(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Store(_) => EXIT_STORE,
            CliError::Failed(_) => EXIT_FAILED,
        }
    }

    /// [`CliError::exit_status`] as an [`ExitCode`].
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_status())
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(reason) => {
                CliError::Store(format!("the store is unreachable: {reason}"))
            }
            e @ (StoreError::InvalidConfig(_) | StoreError::Unsupported(_)) => {
                CliError::Usage(e.to_string())
            }
            e @ StoreError::MissingIndex { .. } => CliError::Store(format!(
                "{e}; `oncetask doctor` lists every index the store needs that is missing"
            )),
            other => CliError::Store(other.to_string()),
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(e) => e.into(),
            other => CliError::Failed(other.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Failed(format!("cannot write the output: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_index_names_its_link_and_the_doctor() {
        let e = CliError::from(StoreError::MissingIndex {
            message: "The query requires an index.".into(),
            create_link: Some("https://console.firebase.google.com/x".into()),
        });
        assert_eq!(e.exit_status(), EXIT_STORE);
        let text = e.to_string();
        assert!(
            text.contains("create it at https://console.firebase.google.com/x"),
            "{text}"
        );
        assert!(text.contains("`oncetask doctor`"), "{text}");
    }
}
