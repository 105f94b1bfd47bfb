//! The store's connection: one server or, with the `cluster` feature, a
//! Redis Cluster — behind one type, so the store's code is the same for both.
//!
//! Single commands and scripts route by their first key on a cluster, so
//! they need nothing special. Two things do: pipelines (a cluster pipeline
//! must stay within one slot, so [`Connection::query_each`] sends the
//! commands one by one, concurrently, instead) and `SCAN` (it walks one
//! node, so [`Connection::scan_keys`] walks every master).

use futures::future::{BoxFuture, FutureExt};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A handle to the store's connection (cheap to clone; clones share it).
/// Implements [`ConnectionLike`], so it runs any command of the `redis`
/// crate: on a cluster, a command goes to the node owning its first key.
#[derive(Clone)]
pub struct Connection(Kind);

#[derive(Clone)]
enum Kind {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl From<ConnectionManager> for Connection {
    fn from(conn: ConnectionManager) -> Self {
        Self(Kind::Single(conn))
    }
}

#[cfg(feature = "cluster")]
impl From<redis::cluster_async::ClusterConnection> for Connection {
    fn from(conn: redis::cluster_async::ClusterConnection) -> Self {
        Self(Kind::Cluster(conn))
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_cluster() {
            "Connection(cluster)"
        } else {
            "Connection(single)"
        })
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Kind::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Kind::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Kind::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Kind::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Kind::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Kind::Cluster(c) => c.get_db(),
        }
    }
}

impl Connection {
    /// Whether this is a Redis Cluster connection.
    pub fn is_cluster(&self) -> bool {
        match &self.0 {
            Kind::Single(_) => false,
            #[cfg(feature = "cluster")]
            Kind::Cluster(_) => true,
        }
    }

    /// Runs `cmds` and returns their replies in order: one pipeline on a
    /// single server; on a cluster, where the keys may live on different
    /// nodes, every command on its own, all in flight at once.
    pub(crate) async fn query_each(&self, cmds: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        match &self.0 {
            Kind::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(&mut c.clone()).await
            }
            #[cfg(feature = "cluster")]
            Kind::Cluster(c) => {
                let calls = cmds.into_iter().map(|cmd| {
                    let mut conn = c.clone();
                    async move { cmd.query_async::<Value>(&mut conn).await }
                });
                futures::future::try_join_all(calls).await
            }
        }
    }

    /// Every key matching the glob `pattern` (`SCAN … MATCH`), on every
    /// master of a cluster. Walks the whole keyspace: for tests and
    /// tear-downs, not for a hot path.
    pub async fn scan_keys(&self, pattern: &str) -> RedisResult<Vec<Vec<u8>>> {
        match &self.0 {
            Kind::Single(c) => {
                let conn = c.clone();
                scan_node(pattern, move |cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async(&mut conn).await }.boxed()
                })
                .await
            }
            #[cfg(feature = "cluster")]
            Kind::Cluster(c) => cluster::scan_keys(c, pattern).await,
        }
    }
}

/// `SCAN`s one node to the end; `run` sends one `SCAN` command to it.
async fn scan_node(
    pattern: &str,
    mut run: impl FnMut(Cmd) -> BoxFuture<'static, RedisResult<Value>>,
) -> RedisResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, keys): (u64, Vec<Vec<u8>>) =
            redis::FromRedisValue::from_redis_value(run(cmd).await?)?;
        out.extend(keys);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

#[cfg(feature = "cluster")]
mod cluster {
    use futures::FutureExt;
    use redis::cluster_async::ClusterConnection;
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    use redis::{RedisResult, Value};

    /// The `host:port` of every master that serves slots, from `CLUSTER NODES`.
    pub(super) async fn masters(conn: &ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn.clone())
            .await?;
        Ok(parse_masters(&text))
    }

    /// Masters (not failed, with at least one slot range) of a
    /// `CLUSTER NODES` reply: `<id> <ip:port@cport[,host]> <flags> <master>
    /// <ping> <pong> <epoch> <link> <slot>...`.
    pub(super) fn parse_masters(text: &str) -> Vec<(String, u16)> {
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.split(',').any(|f| f == "master")
                    || flags.contains("fail")
                    || fields.len() < 9
                {
                    return None;
                }
                let addr = fields.get(1)?.split(['@', ',']).next()?;
                let (host, port) = addr.rsplit_once(':')?;
                Some((host.to_owned(), port.parse().ok()?))
            })
            .collect()
    }

    pub(super) async fn scan_keys(
        conn: &ClusterConnection,
        pattern: &str,
    ) -> RedisResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for (host, port) in masters(conn).await? {
            let conn = conn.clone();
            let keys = super::scan_node(pattern, move |cmd| {
                let mut conn = conn.clone();
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port,
                });
                async move { conn.route_command(cmd, route).await.map(|v: Value| v) }.boxed()
            })
            .await?;
            out.extend(keys);
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn masters_are_read_from_cluster_nodes() {
            let text = "\
a1 127.0.0.1:7101@17101 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7102@17102,host-b master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7104@17104 slave b2 0 1 2 connected
d4 127.0.0.1:7105@17105 master,fail - 0 1 3 disconnected 10923-16383
e5 127.0.0.1:7106@17106 master - 0 1 4 connected
";
            assert_eq!(
                super::parse_masters(text),
                vec![
                    ("127.0.0.1".to_owned(), 7101),
                    ("127.0.0.1".to_owned(), 7102)
                ]
            );
        }
    }
}
