//! The routing header every Firestore call carries.
//!
//! Cloud Firestore routes a request to its database by the
//! `x-goog-request-params` header (`database=` and the database's resource
//! name, percent-encoded), which Google's own client libraries send on every
//! call. The `firestore` crate's client sends only the older
//! `google-cloud-resource-prefix` header, which is not enough for a named
//! (non-default) database. [`request`] wraps a message in a
//! [`tonic::Request`](firestore::gcloud_sdk::tonic::Request) that carries
//! the header. Every call of the store is built with it (through
//! `FirestoreStore::request`, which adds the per-call deadline), and so is
//! the Listen of [`subscribe`](crate::FirestoreStore).

use firestore::FirestoreDb;
use firestore::gcloud_sdk::tonic::Request;
use firestore::gcloud_sdk::tonic::metadata::MetadataValue;

/// The routing header's name.
pub(crate) const REQUEST_PARAMS: &str = "x-goog-request-params";

/// `msg` as a request to `db`, with the routing header of `db`'s database.
pub(crate) fn request<T>(db: &FirestoreDb, msg: T) -> Request<T> {
    let mut request = Request::new(msg);
    // Percent-encoding leaves only visible ASCII, which is always a valid
    // header value; the fallback keeps the call going without the header.
    if let Ok(value) = MetadataValue::try_from(routing_value(db.get_database_path())) {
        request.metadata_mut().insert(REQUEST_PARAMS, value);
    }
    request
}

/// The header's value for a database resource name
/// (`projects/P/databases/D`): `database=` and the name, percent-encoded.
pub(crate) fn routing_value(database_path: &str) -> String {
    let mut out = String::with_capacity(database_path.len() + 16);
    out.push_str("database=");
    for b in database_path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! The header on the wire: a loopback HTTP/2 server records the headers
    //! of the calls a client of a named database sends it, through the
    //! `firestore` crate's authentication middleware (which rewrites some
    //! headers), for a unary-style call of the store and for Listen.

    use std::time::Duration;

    use firestore::gcloud_sdk::google::firestore::v1::BatchGetDocumentsRequest;
    use firestore::gcloud_sdk::google_cloud_auth::credentials::anonymous;
    use firestore::{FirestoreDb, FirestoreDbOptions};
    use futures::StreamExt;
    use tokio::sync::mpsc;

    use super::*;

    #[test]
    fn the_value_is_the_percent_encoded_database_name() {
        assert_eq!(
            routing_value("projects/my-project/databases/(default)"),
            "database=projects%2Fmy-project%2Fdatabases%2F%28default%29"
        );
        assert_eq!(
            routing_value("projects/p/databases/tasks-eu"),
            "database=projects%2Fp%2Fdatabases%2Ftasks-eu"
        );
    }

    /// (gRPC path, routing header) of every request the server receives.
    type Seen = mpsc::UnboundedReceiver<(String, Option<String>)>;

    /// A loopback HTTP/2 server that records each request's path and
    /// routing header and answers UNIMPLEMENTED; its address.
    async fn capture_server() -> (std::net::SocketAddr, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = conn.accept().await {
                        let header = request
                            .headers()
                            .get(REQUEST_PARAMS)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let _ = tx.send((request.uri().path().to_owned(), header));
                        let response = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "12")
                            .body(())
                            .expect("a response");
                        let _ = respond.send_response(response, true);
                    }
                });
            }
        });
        (addr, rx)
    }

    async fn next(seen: &mut Seen) -> (String, Option<String>) {
        tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("the server received a request")
            .expect("the server runs")
    }

    #[tokio::test]
    async fn calls_and_listen_carry_the_named_database_on_the_wire() {
        let (addr, mut seen) = capture_server().await;
        let options = FirestoreDbOptions::new("my-project".to_owned())
            .with_database_id("tasks-eu".to_owned())
            .with_firebase_api_url(format!("http://{addr}"));
        let db = FirestoreDb::with_options_auth(options, anonymous::Builder::new().build())
            .await
            .expect("a client");
        let expected = Some("database=projects%2Fmy-project%2Fdatabases%2Ftasks-eu".to_owned());

        let get = BatchGetDocumentsRequest {
            database: db.get_database_path().clone(),
            documents: vec![format!("{}/onceTasks/t1", db.get_documents_path())],
            ..Default::default()
        };
        let result = db
            .client()
            .get()
            .batch_get_documents(request(&db, get))
            .await;
        assert!(result.is_err(), "the capture server answers UNIMPLEMENTED");
        assert_eq!(
            next(&mut seen).await,
            (
                "/google.firestore.v1.Firestore/BatchGetDocuments".to_owned(),
                expected.clone()
            )
        );

        // A request built without the helper has no routing header: the
        // client library does not add one.
        let bare = BatchGetDocumentsRequest {
            database: db.get_database_path().clone(),
            ..Default::default()
        };
        let _ = db
            .client()
            .get()
            .batch_get_documents(Request::new(bare))
            .await;
        assert_eq!(next(&mut seen).await.1, None);

        // Listen (a subscription) goes through the helper too.
        let mut notices = crate::listen::subscribe(
            db.clone(),
            crate::listen::Source::Signals("onceTasks-wakeups".into()),
            "prod".into(),
            std::sync::Arc::default(),
            std::sync::Arc::default(),
        );
        let listen = tokio::spawn(async move { notices.next().await });
        assert_eq!(
            next(&mut seen).await,
            ("/google.firestore.v1.Firestore/Listen".to_owned(), expected)
        );
        listen.abort();
    }
}
