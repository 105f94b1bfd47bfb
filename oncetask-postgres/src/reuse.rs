//! Connections the hot path keeps between its statements.
//!
//! sqlx's pool checks every connection it gets back with a round trip to
//! the server (a `Sync` answered by `ReadyForQuery`), in a task it spawns
//! for it: one more message for the server, one more task and usually a
//! thread wake-up on the client, for every statement. Measured on the raw
//! cycles of `oncetask bench` (BENCHMARKS.md, "Postgres, session 12"): a
//! single-row insert loop ran ~15-20 % slower through the pool than on one
//! connection it kept, a claim-and-complete loop of single tasks ~15 %.
//!
//! So the store's hot-path statements (creates, single claims, group
//! claims, outcome swaps) run on connections taken out of the pool and
//! kept here between statements:
//!
//! * a statement that completed hands its connection back for the next
//!   one; one that failed or was cancelled (the future dropped mid-way)
//!   drops it, which closes its socket, as its state on the wire is
//!   unknown;
//! * the connections are *detached* from the pool: the pool neither counts
//!   them against its size nor waits for them when it is closed. At most
//!   the pool's `max_connections` of them exist at once, so a store opens
//!   up to twice that many connections to the server;
//! * one left unused for [`PING_IDLE_AFTER`](crate::PING_IDLE_AFTER) or
//!   longer is closed rather than reused (the server may have dropped it),
//!   and none is handed out once the pool is closed.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{Semaphore, SemaphorePermit};

/// A connection kept between statements.
struct Kept {
    conn: PgConnection,
    /// When its last statement completed.
    since: Instant,
}

/// The connections kept for the hot path of one store (see the module docs).
pub(crate) struct Reuse {
    idle: Mutex<Vec<Kept>>,
    /// One permit per connection that may be lent now: `size` minus those
    /// lent. A connection is opened only when none is idle, so at most
    /// `size` exist (lent or idle), and a statement waiting for one is
    /// woken when another is given back.
    permits: Semaphore,
}

/// A connection lent to one statement: [`Lent::give_back`] after it
/// completed; dropped otherwise, which closes its socket.
pub(crate) struct Lent<'a> {
    kept: Kept,
    home: &'a Reuse,
    /// Released after the connection went back to the idle list (or away).
    _permit: SemaphorePermit<'a>,
}

impl Reuse {
    /// Up to `size` connections at once (at least one).
    pub(crate) fn new(size: usize) -> Self {
        Self {
            idle: Mutex::default(),
            permits: Semaphore::new(size.max(1)),
        }
    }

    /// The connection given back last, or a new one out of `pool`.
    pub(crate) async fn lend(&self, pool: &PgPool) -> Result<Lent<'_>, sqlx::Error> {
        if pool.is_closed() {
            for kept in self.take_idle() {
                close(kept);
            }
            return Err(sqlx::Error::PoolClosed);
        }
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let kept = match self.pop_fresh() {
            Some(kept) => kept,
            None => Kept {
                conn: pool.acquire().await?.detach(),
                since: Instant::now(),
            },
        };
        Ok(Lent {
            kept,
            home: self,
            _permit: permit,
        })
    }

    fn take_idle(&self) -> Vec<Kept> {
        std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The most recently given back connection that has not sat idle too
    /// long; older ones are closed.
    fn pop_fresh(&self) -> Option<Kept> {
        let mut stale = Vec::new();
        let fresh = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            // Given back in time order: the stale ones are at the front.
            let cut = idle.partition_point(|k| k.since.elapsed() >= crate::PING_IDLE_AFTER);
            stale.extend(idle.drain(..cut));
            idle.pop()
        };
        for kept in stale {
            close(kept);
        }
        fresh
    }
}

impl Lent<'_> {
    /// The connection, for one statement (or one transaction).
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.kept.conn
    }

    /// The statement completed: the connection serves the next one.
    pub(crate) fn give_back(self) {
        let Self {
            mut kept,
            home,
            _permit,
        } = self;
        kept.since = Instant::now();
        home.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(kept);
    }
}

/// Closes an idle connection politely (a `Terminate` message) in the
/// background when a runtime is at hand; otherwise dropping it closes the
/// socket.
fn close(kept: Kept) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = kept.conn.close().await;
        });
    }
}
