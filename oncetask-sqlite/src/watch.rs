//! Notices of other processes' writes: a background task per store with
//! subscribers reads the `changes` rows other stores recorded.
//!
//! Every [`Watch::period`] (5 ms by default) it looks at the size and
//! modification time of the database's write-ahead log (the `-wal` file
//! next to it) with one `stat`: every commit, by any process, writes to
//! that file. Only when they differ from the last look, or the file changed
//! too recently to trust the time's granularity (within [`SETTLE`]), does
//! the watcher query the database, on a connection of its own:
//! `SELECT … FROM changes WHERE seq > last`. Rows of other stores become
//! notices for the envs someone listens to; rows of this store were
//! announced at their commit already. It also queries every
//! [`BACKSTOP`] whatever the file says, and at every tick while it cannot
//! be read.
//!
//! So an idle watcher costs a timer wake-up and a `stat` per period; for
//! two seconds after each write it queries at every tick. Measured with
//! `examples/watch_idle.rs` (release build, a 2-core machine busy with
//! other builds, three runs): 3-4 % of a core at 1 ms, 0.9-1.1 % at 5 ms,
//! 0.5-1.0 % at 10 ms, 0.3-0.9 % at 20 ms; a `PRAGMA data_version` query
//! per 5 ms tick through sqlx's connection thread cost about 2 %.
//!
//! The watcher never opens SQLite's files itself: closing a descriptor of
//! a file drops every POSIX lock the process holds on it, SQLite's
//! included, which corrupts the database (<https://www.sqlite.org/howtocorrupt.html>).
//!
//! When rows it has not seen were deleted (it fell more than
//! [`notify::KEEP`](crate::notify::KEEP) rows behind), it cannot tell what
//! changed and announces every kind of every env it serves as a change that
//! may touch held tasks. The watcher runs while someone listens: it stops
//! when the store is dropped or the last subscriber goes, and the next
//! `subscribe` starts a new one. Writes that do not go through this crate
//! (another program's SQL) are not announced.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use oncetask_core::StoreError;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};
use tokio::time::MissedTickBehavior;

use crate::error::db;
use crate::notify::Changes;
use crate::{Inner, SqliteStore};

/// Rows read per look at most; more are read at the next tick.
const BATCH: i64 = 10_000;

/// How long after its last modification the log's size and time are
/// trusted to show the next write (file systems keep coarse times).
pub(crate) const SETTLE: Duration = Duration::from_secs(2);

/// The watcher queries at least this often, whatever the log's stamp says
/// (a guard against file times coarser than [`SETTLE`]; each such query
/// costs about as much CPU as 100 idle ticks).
const BACKSTOP: Duration = Duration::from_secs(10);

/// How long the watcher waits after a failed look before the next one.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a store's watcher needs; `None` in a store that does not watch.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    /// How to open the watcher's own connection.
    pub options: SqliteConnectOptions,
    /// The database's write-ahead log.
    pub wal: PathBuf,
    /// How often it looks.
    pub period: Duration,
}

/// The watcher's state between looks.
struct Watcher {
    conn: Option<SqliteConnection>,
    /// The last `seq` read; `None` until the first look.
    last: Option<i64>,
    /// The log's size and time before the last successful look.
    stamp: Option<Stamp>,
}

/// Runs the watcher of `inner` until the store is dropped or nobody
/// listens any more.
pub(crate) async fn run(inner: Weak<Inner>, watch: Watch) {
    let mut watcher = Watcher {
        conn: None,
        last: None,
        stamp: None,
    };
    // `interval` refuses a zero period.
    let mut ticker = tokio::time::interval(watch.period.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Query at least this often whatever the log's stamp says.
    let every = (BACKSTOP.as_micros() / watch.period.as_micros().max(1)).max(1);
    let mut ticks: u128 = 0;
    loop {
        ticker.tick().await;
        ticks = ticks.wrapping_add(1);
        let Some(inner) = inner.upgrade() else { return };
        // Taken before the query: a commit after it changes the stamp.
        let stamp = stamp(&watch);
        let quiet = stamp.as_ref().is_some_and(|s| {
            Some(s) == watcher.stamp.as_ref()
                && SystemTime::now()
                    .duration_since(s.modified)
                    .is_ok_and(|age| age >= SETTLE)
        });
        let envs = if quiet && !ticks.is_multiple_of(every) {
            // Nothing to read: only whether to go on.
            inner.hub.is_listened().then(Vec::new)
        } else {
            inner.hub.keep_watching()
        };
        let Some(envs) = envs else {
            if let Some(conn) = watcher.conn.take() {
                let _ = conn.close().await;
            }
            return;
        };
        if envs.is_empty() {
            continue;
        }
        let store = SqliteStore { inner };
        match watcher.look(&store, &watch, &envs).await {
            Ok((changes, more)) => {
                // With rows left to read, look again at the next tick.
                watcher.stamp = if more { None } else { stamp };
                store.inner.hub.publish(changes);
            }
            Err(_) => {
                // Reopen and look again after a while; the notices of the
                // meantime come late (workers still poll).
                watcher.conn = None;
                watcher.stamp = None;
                drop(store);
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// A write-ahead log's size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
}

/// The log's [`Stamp`], by `stat` (never by opening it: see the module
/// docs), or `None` when it cannot be read.
fn stamp(watch: &Watch) -> Option<Stamp> {
    let meta = std::fs::metadata(&watch.wal).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok()?,
    })
}

impl Watcher {
    /// Reads the rows past the last one seen: the notices of other
    /// stores' changes in `envs`, and whether rows are left to read.
    async fn look(
        &mut self,
        store: &SqliteStore,
        watch: &Watch,
        envs: &[String],
    ) -> Result<(Changes, bool), StoreError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(watch.options.connect().await.map_err(db)?),
        };
        let mut changes = Changes::default();
        let Some(last) = self.last else {
            // The first look: only what comes after it is news.
            let newest: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM changes")
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            self.last = Some(newest);
            return Ok((changes, false));
        };
        let rows: Vec<(i64, i64, String, String, bool)> = sqlx::query_as(
            "SELECT seq, origin, env, kind, touching FROM changes \
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .bind(last)
        .bind(BATCH)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        let more = i64::try_from(rows.len()).is_ok_and(|n| n >= BATCH);
        let Some(&(first, ..)) = rows.first() else {
            return Ok((changes, false));
        };
        if first > last.saturating_add(1) {
            // Rows this watcher never read were deleted: anything may have
            // changed.
            for env in envs {
                let mut kinds = store.distinct_kinds(env).await?;
                kinds.extend(store.list_paused(env).await?);
                for kind in kinds {
                    changes.add(env, &kind, true);
                }
            }
        }
        let origin = store.inner.origin;
        for (seq, from, env, kind, touching) in rows {
            self.last = Some(seq);
            if from != origin && envs.contains(&env) {
                changes.add(&env, &kind, touching);
            }
        }
        Ok((changes, more))
    }
}

/// Starts the watcher of `store` on the current tokio runtime; false when
/// there is none.
pub(crate) fn start(store: &SqliteStore, watch: Watch) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    runtime.spawn(run(Arc::downgrade(&store.inner), watch));
    true
}
