//! Wake-ups over pub/sub: a reconnecting subscriber per [`crate::RedisStore::subscribe`] call.
//!
//! On a cluster the scripts still use classic `PUBLISH`, not sharded
//! `SPUBLISH`: a classic message reaches subscribers on every node, so a
//! subscriber needs one connection to any node and nothing changes when
//! slots move or a node fails over, and the scripts stay the same as on a
//! single server. The price is that each notice crosses the cluster bus to
//! every node, which is small next to the claim it triggers.

use std::time::Duration;

use futures::StreamExt;
use oncetask_core::store::Notification;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use crate::conn::Connection;
use crate::keys::{Keys, decode};

/// Pause before reconnecting after an error.
const PAUSE: Duration = Duration::from_millis(500);

/// Forwards the kinds published on `env`'s two channels to `tx` until the
/// subscriber goes away, reconnecting whenever the connection fails (to the
/// next of `clients` each time: on a cluster, another node may be up while
/// this one restarts). After a reconnect, every kind of the env is announced
/// once: notices sent while the connection was down are lost.
pub(crate) async fn listen(
    clients: Vec<redis::Client>,
    conn: Connection,
    keys: Keys,
    env: String,
    tx: Sender<Notification>,
) {
    let channels = [keys.channel(&env), keys.changes_channel(&env)];
    let mut reconnected = false;
    let mut attempt: usize = 0;
    while !tx.is_closed() {
        let Some(client) = clients.get(attempt % clients.len().max(1)) else {
            return;
        };
        attempt = attempt.wrapping_add(1);
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(_) => {
                tokio::time::sleep(PAUSE).await;
                reconnected = true;
                continue;
            }
        };
        if pubsub.subscribe(&channels).await.is_err() {
            tokio::time::sleep(PAUSE).await;
            reconnected = true;
            continue;
        }
        if reconnected && !announce_all(&conn, &keys, &env, &tx).await {
            return;
        }
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                m = messages.next() => m,
                () = tx.closed() => return,
            };
            let Some(message) = message else { break };
            let kind = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
            let notice = Notification::new(kind, message.get_channel_name() == channels[1]);
            if let Err(TrySendError::Closed(_)) = tx.try_send(notice) {
                return;
            }
            // A full buffer drops the notice: notices may be lost.
        }
        reconnected = true;
        tokio::time::sleep(PAUSE).await;
    }
}

/// Sends a notice for every kind of `env`; false once the subscriber is gone.
async fn announce_all(
    conn: &Connection,
    keys: &Keys,
    env: &str,
    tx: &Sender<Notification>,
) -> bool {
    let mut conn = conn.clone();
    let kinds: Vec<String> = redis::cmd("HKEYS")
        .arg(keys.env_route(env))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for kind in kinds.iter().filter_map(|k| decode(k)) {
        // Missed notices may have been of any change.
        if let Err(TrySendError::Closed(_)) = tx.try_send(Notification::touching_claimed(kind)) {
            return false;
        }
    }
    true
}
