//! Wake-ups over LISTEN/NOTIFY: sending notices and the reconnecting listener.

use super::*;

impl PostgresStore {
    /// Sends one notice per changed env/kind (delivered at commit) on the
    /// env's changes channel: the one caller is delete, which may remove a
    /// task a worker holds.
    pub(crate) async fn notify_changes(
        &self,
        conn: &mut PgConnection,
        changed: &Changed,
    ) -> Result<(), StoreError> {
        if changed.is_empty() {
            return Ok(());
        }
        let (channels, kinds): (Vec<String>, Vec<String>) = changed
            .iter()
            .map(|(env, kind)| (self.changes_channel(env), kind.clone()))
            .unzip();
        sqlx::query("SELECT pg_notify(c, k) FROM unnest($1::text[], $2::text[]) AS n(c, k)")
            .bind(&channels)
            .bind(&kinds)
            .execute(conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The LISTEN/NOTIFY channel of `env` in this store's schema: a hash, so
    /// any env name makes a short, safe identifier.
    pub(crate) fn channel(&self, env: &str) -> String {
        format!("oncetask_{:016x}", fnv1a(&[&self.inner.schema, env]))
    }

    /// The channel of `env` for changes that may have touched a task a
    /// worker holds (cancel, reset, delete): listeners re-read the tasks
    /// they claimed ahead. New or freed work goes on [`Self::channel`].
    pub(crate) fn changes_channel(&self, env: &str) -> String {
        format!("{}_changes", self.channel(env))
    }
}

/// 64-bit FNV-1a: a stable channel name per schema and env.
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Forwards notices of `channel` (work) and `changes` (changes that may
/// touch held tasks) to `tx` until the subscriber goes away, reconnecting
/// (with a pause) whenever the connection fails.
pub(crate) async fn listen(
    pool: PgPool,
    channel: String,
    changes: String,
    tx: tokio::sync::mpsc::Sender<Notification>,
) {
    let pause = std::time::Duration::from_millis(500);
    // The listener's connection is its own, not one of the store's pool:
    // a pool connection held for good would be one fewer for claims and swaps.
    // It waits for a connection as long as the store's pool does.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .connect_lazy_with((*pool.connect_options()).clone());
    while !tx.is_closed() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(_) => {
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if listener
            .listen_all([channel.as_str(), changes.as_str()])
            .await
            .is_err()
        {
            tokio::time::sleep(pause).await;
            continue;
        }
        loop {
            let received = tokio::select! {
                r = listener.try_recv() => r,
                () = tx.closed() => return,
            };
            match received {
                Ok(Some(notice)) => {
                    let notice = Notification::new(notice.payload(), notice.channel() == changes);
                    // A full buffer drops the notice: notices may be lost.
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                        tx.try_send(notice)
                    {
                        return;
                    }
                }
                // The connection was lost; `try_recv` reconnects on the next call.
                Ok(None) => {}
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    break;
                }
            }
        }
    }
}
