//! Mapping SQLite and sqlx errors onto [`StoreError`].

use oncetask_core::StoreError;

/// SQLite's primary result codes this backend tells apart
/// (<https://www.sqlite.org/rescode.html>).
mod code {
    pub const BUSY: i32 = 5;
    pub const LOCKED: i32 = 6;
    pub const READONLY: i32 = 8;
    pub const CANTOPEN: i32 = 14;
    pub const NOTADB: i32 = 26;
}

/// The primary result code of a SQLite error (the extended code's low byte).
pub(crate) fn primary_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff),
        _ => None,
    }
}

/// True for SQLite's "database is locked" errors (`SQLITE_BUSY`, `SQLITE_LOCKED`).
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    matches!(primary_code(e), Some(code::BUSY | code::LOCKED))
}

/// A failed statement as a [`StoreError`]: a database another connection
/// kept locked past the busy timeout, a closed pool or an I/O failure is
/// [`StoreError::Unavailable`] (a retry may succeed); a read-only database
/// is [`StoreError::InvalidConfig`]; anything else a backend error.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match primary_code(&e) {
        Some(code::BUSY | code::LOCKED) => StoreError::Unavailable(format!(
            "SQLite database is locked by another connection or process past the busy \
             timeout: {e}"
        )),
        Some(code::READONLY) => StoreError::InvalidConfig(format!(
            "SQLite database is read-only (check the file's and its directory's permissions): {e}"
        )),
        _ => match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(format!("SQLite: {e}"))
            }
            other => StoreError::backend(other),
        },
    }
}

/// The error of a failed open of the database at `location` (a path, or
/// `:memory:`): typed and naming the problem.
pub(crate) fn open_error(location: &str, e: sqlx::Error) -> StoreError {
    match primary_code(&e) {
        Some(code::NOTADB) => StoreError::InvalidConfig(format!(
            "{location} is not a SQLite database ({e}); point the URL at a SQLite file or at \
             a path where a new one may be created"
        )),
        Some(code::CANTOPEN) => StoreError::InvalidConfig(format!(
            "cannot open or create the SQLite database {location} ({e}); check that its \
             directory exists and is writable"
        )),
        Some(code::READONLY) => StoreError::InvalidConfig(format!(
            "the SQLite database {location} is read-only ({e}); check the permissions of the \
             file and of its directory (SQLite writes its WAL and shared-memory files there)"
        )),
        Some(code::BUSY | code::LOCKED) => StoreError::Unavailable(format!(
            "the SQLite database {location} stayed locked by another connection or process \
             past the busy timeout ({e})"
        )),
        _ => match e {
            sqlx::Error::Io(_) => {
                StoreError::Unavailable(format!("cannot open the SQLite database {location}: {e}"))
            }
            other => StoreError::backend(format!("SQLite database {location}: {other}")),
        },
    }
}
