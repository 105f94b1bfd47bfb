//! Connecting: [`FirestoreStore::connect`] and
//! [`FirestoreStore::connect_with`], with fast, typed failures.

use firestore::errors::FirestoreError;
use firestore::gcloud_sdk::tonic::codegen::http::Uri;
use firestore::gcloud_sdk::tonic::{Code, Status};
use firestore::{FirestoreDb, FirestoreDbOptions};
use oncetask_core::store::{ConnectOptions, redact_password};
use oncetask_core::{Store, StoreError};

use crate::store::{DEFAULT_CALL_TIMEOUT, FirestoreStore};

/// The variable the `firestore` crate reads the emulator's `host:port` from.
const EMULATOR_HOST_VAR: &str = "FIRESTORE_EMULATOR_HOST";

/// Cloud Firestore's endpoint (the `firestore` crate's default).
const CLOUD_ENDPOINT: &str = "https://firestore.googleapis.com";

/// Where the client sends its requests, and where that came from.
struct Endpoint {
    url: String,
    /// What to check when it cannot be reached.
    check: String,
    /// What is wrong, when it is malformed.
    malformed: String,
}

impl FirestoreStore {
    /// Opens a client of the `(default)` database of `project_id` (or of
    /// the emulator `FIRESTORE_EMULATOR_HOST` names) and a store on its
    /// `collection` ([`crate::DEFAULT_COLLECTION`] is the Go package's),
    /// with the default [`ConnectOptions`]: see
    /// [`FirestoreStore::connect_with`].
    pub async fn connect(project_id: &str, collection: &str) -> Result<Self, StoreError> {
        Self::connect_with(
            FirestoreDbOptions::new(project_id.to_owned()),
            collection,
            &ConnectOptions::default(),
        )
        .await
    }

    /// Opens a client of the database `db` describes (project, database
    /// id, API URL; with `FIRESTORE_EMULATOR_HOST` set, the emulator, as
    /// [`FirestoreDb::with_options`] does) and a store on its `collection`.
    /// It authenticates as [`FirestoreDb::with_options`] does (Application
    /// Default Credentials; none for the emulator).
    ///
    /// * An empty or malformed project id, database id or collection, or a
    ///   malformed `FIRESTORE_EMULATOR_HOST` or API URL, fails at once with
    ///   [`StoreError::InvalidConfig`], and so do credentials that cannot be
    ///   found or built.
    /// * An endpoint that cannot be reached fails with
    ///   [`StoreError::Unavailable`] naming it, the timeout, the cause and
    ///   what to check: at once when the connection is refused, after
    ///   [`ConnectOptions::connect_timeout`] when nothing answers.
    /// * The endpoint must also answer a first read (of one missing
    ///   document: one billed read, counted in [`FirestoreStore::stats`])
    ///   within the connect timeout, so an endpoint that accepts
    ///   connections and never answers fails here too, with
    ///   [`StoreError::Unavailable`]; credentials it refuses
    ///   (PERMISSION_DENIED, UNAUTHENTICATED) and a database or project it
    ///   does not have fail with [`StoreError::InvalidConfig`].
    ///
    /// Whether the credentials may also write, query and listen shows at
    /// those calls; [`FirestoreStore::doctor`] checks it all up front.
    /// Each later call has its own deadline,
    /// [`FirestoreStore::with_call_timeout`] (default
    /// [`DEFAULT_CALL_TIMEOUT`]).
    /// [`ConnectOptions::pool_size`] is not used: one HTTP/2 channel serves
    /// every call.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use firestore::FirestoreDbOptions;
    /// use oncetask_core::store::ConnectOptions;
    /// use oncetask_firestore::FirestoreStore;
    ///
    /// # async fn demo() -> Result<(), oncetask_core::StoreError> {
    /// let db = FirestoreDbOptions::new("my-project".to_owned())
    ///     .with_database_id("tasks-eu".to_owned());
    /// let options = ConnectOptions::default().connect_timeout(Duration::from_secs(2));
    /// let store = FirestoreStore::connect_with(db, "onceTasks", &options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(
        db: FirestoreDbOptions,
        collection: &str,
        options: &ConnectOptions,
    ) -> Result<Self, StoreError> {
        check_ids(&db, collection)?;
        let endpoint = endpoint(&db)?;
        let target = format!(
            "Firestore (project {}, database {})",
            db.google_project_id, db.database_id
        );
        let no_answer =
            || options.unreachable(&target, &endpoint.url, "no answer", &endpoint.check);
        let deadline = tokio::time::Instant::now() + options.connect_timeout;
        let db = tokio::time::timeout_at(deadline, FirestoreDb::with_options(db))
            .await
            .map_err(|_| no_answer())?
            .map_err(|e| connect_error(&target, &endpoint, options, e))?;
        // The channel is open, but an endpoint that accepts connections and
        // never answers would only show at the first call, after its call
        // timeout: one read of a missing document, within what is left of
        // the connect timeout, tells now (and checks the credentials).
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let store = FirestoreStore::with_collection(db, collection).with_call_timeout(left);
        match tokio::time::timeout_at(deadline, store.get(&[PROBE_ID.to_owned()])).await {
            Err(_) => Err(no_answer()),
            Ok(Err(e)) => Err(probe_error(&target, &endpoint, options, e)),
            Ok(Ok(_)) => Ok(store.with_call_timeout(DEFAULT_CALL_TIMEOUT)),
        }
    }
}

/// The document [`FirestoreStore::connect_with`] reads to see the endpoint
/// answer (a task id nothing creates).
const PROBE_ID: &str = "oncetask-connect-probe";

/// The error of the first read: the endpoint not answering, or refusing
/// the credentials or the database.
fn probe_error(
    target: &str,
    endpoint: &Endpoint,
    options: &ConnectOptions,
    e: StoreError,
) -> StoreError {
    let at = redact_password(&endpoint.url);
    match e {
        StoreError::Unavailable(cause) => {
            options.unreachable(target, &endpoint.url, cause, &endpoint.check)
        }
        StoreError::Backend(source) => match source.downcast_ref::<Status>().map(Status::code) {
            Some(Code::PermissionDenied | Code::Unauthenticated) => {
                StoreError::InvalidConfig(format!(
                    "{target} at {at} refused the credentials: {source}; check them \
                     (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login) \
                     and that their account has roles/datastore.user on the project \
                     (`oncetask doctor` checks every permission)"
                ))
            }
            // A batch get reports missing documents in its answer: this
            // is the database (or the project) that does not exist.
            Some(Code::NotFound) => StoreError::InvalidConfig(format!(
                "{target} at {at}: {source}; check the project id and the database id"
            )),
            _ => StoreError::Backend(source),
        },
        other => other,
    }
}

/// Checks the names that end up in every document path.
fn check_ids(db: &FirestoreDbOptions, collection: &str) -> Result<(), StoreError> {
    let project = &db.google_project_id;
    if project.is_empty()
        || project.contains('/')
        || project.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(StoreError::InvalidConfig(format!(
            "invalid Google Cloud project id {project:?}: it must not be empty or contain '/' \
             or spaces"
        )));
    }
    if !is_valid_database_id(&db.database_id) {
        return Err(StoreError::InvalidConfig(format!(
            "invalid Firestore database id {:?}: use lowercase letters, digits and -, starting \
             with a letter, 4 to 63 characters (or (default))",
            db.database_id
        )));
    }
    let reserved =
        collection.len() > 4 && collection.starts_with("__") && collection.ends_with("__");
    if collection.is_empty()
        || collection.contains('/')
        || collection == "."
        || collection == ".."
        || reserved
        || collection.len() > 1500
    {
        return Err(StoreError::InvalidConfig(format!(
            "invalid Firestore collection id {collection:?}: it must not be empty, contain '/', \
             be . or .., or match __.*__"
        )));
    }
    Ok(())
}

/// Firestore's rule for a database id: `(default)`, or 4 to 63 lowercase
/// letters, digits and hyphens, starting with a letter and not ending with
/// a hyphen.
///
/// ```
/// assert!(oncetask_firestore::is_valid_database_id("(default)"));
/// assert!(oncetask_firestore::is_valid_database_id("tasks-eu"));
/// assert!(!oncetask_firestore::is_valid_database_id("Tasks"));
/// ```
pub fn is_valid_database_id(id: &str) -> bool {
    if id == firestore::FIREBASE_DEFAULT_DATABASE_ID {
        return true;
    }
    let bytes = id.as_bytes();
    (4..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// The endpoint the `firestore` crate will use for `db` (its rule: the
/// options' API URL, else the emulator, else Cloud Firestore), checked.
fn endpoint(db: &FirestoreDbOptions) -> Result<Endpoint, StoreError> {
    let endpoint = match (&db.firebase_api_url, std::env::var(EMULATOR_HOST_VAR).ok()) {
        (Some(url), _) => Endpoint {
            url: url.clone(),
            check: "check that a Firestore API (or emulator) listens at that URL \
                    (FirestoreDbOptions::firebase_api_url)"
                .to_owned(),
            malformed: format!(
                "FirestoreDbOptions::firebase_api_url is {:?}, expected http[s]://host[:port]",
                redact_password(url)
            ),
        },
        (None, Some(host)) => Endpoint {
            url: if host.contains("://") {
                host.clone()
            } else {
                format!("http://{host}")
            },
            check: format!(
                "check that the Firestore emulator is running at {host} ({EMULATOR_HOST_VAR}; \
                 scripts/firestore-emulator starts one), or unset {EMULATOR_HOST_VAR} to use \
                 Cloud Firestore"
            ),
            malformed: format!(
                "{EMULATOR_HOST_VAR} is {:?}, expected the emulator's host:port (e.g. \
                 127.0.0.1:8080)",
                redact_password(&host)
            ),
        },
        (None, None) => Endpoint {
            url: CLOUD_ENDPOINT.to_owned(),
            check: "check this machine's network access to firestore.googleapis.com \
                    (proxy, firewall, DNS), or set FIRESTORE_EMULATOR_HOST for the emulator"
                .to_owned(),
            malformed: format!("the API URL {CLOUD_ENDPOINT} does not parse"),
        },
    };
    let valid = endpoint.url.parse::<Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|h| !h.is_empty())
    });
    if !valid {
        return Err(StoreError::InvalidConfig(format!(
            "invalid Firestore endpoint: {}",
            endpoint.malformed
        )));
    }
    Ok(endpoint)
}

/// The error of a failed [`FirestoreDb::with_options`]. The `firestore`
/// crate reports client set-up failures as a system error whose code is the
/// name of `gcloud-sdk`'s error kind: transport failures (`GrpcStatus`) mean
/// the endpoint cannot be reached; URL and credential failures are
/// configuration.
fn connect_error(
    target: &str,
    endpoint: &Endpoint,
    options: &ConnectOptions,
    e: FirestoreError,
) -> StoreError {
    let code = match &e {
        FirestoreError::SystemError(system) => system.public.code.as_str(),
        _ => "",
    };
    let at = redact_password(&endpoint.url);
    if code.starts_with("GrpcStatus") {
        options.unreachable(
            target,
            &endpoint.url,
            transport_cause(code, &e),
            &endpoint.check,
        )
    } else if code.starts_with("UrlError") || code.starts_with("InvalidApiUrl") {
        StoreError::InvalidConfig(format!(
            "invalid Firestore endpoint: {} ({e})",
            endpoint.malformed
        ))
    } else if code.starts_with("Credentials")
        || code.starts_with("CryptoProviderMissing")
        || matches!(e, FirestoreError::InvalidParametersError(_))
    {
        StoreError::InvalidConfig(format!(
            "{target} at {at}: cannot build credentials: {e}; set GOOGLE_APPLICATION_CREDENTIALS \
             to a service-account key file, run `gcloud auth application-default login`, or run \
             on Google Cloud (metadata server); a service-account key also needs a rustls \
             crypto provider (feature auth-default-crypto)"
        ))
    } else {
        StoreError::backend(format!("{target} at {at}: {e}"))
    }
}

/// A short cause of a transport failure, read from the debug text of
/// tonic's error that the `firestore` crate keeps as the error code; the
/// whole error when it says nothing known.
fn transport_cause(code: &str, e: &FirestoreError) -> String {
    const KNOWN: [(&str, &str); 5] = [
        ("ConnectionRefused", "connection refused"),
        ("dns error", "the host name does not resolve (DNS)"),
        ("TimedOut", "the connection timed out"),
        ("HostUnreachable", "the host is unreachable"),
        ("NetworkUnreachable", "the network is unreachable"),
    ];
    KNOWN
        .iter()
        .find(|(marker, _)| code.contains(marker))
        .map_or_else(
            || e.to_string(),
            |(_, cause)| format!("transport error: {cause}"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_ids_follow_firestores_rule() {
        for good in ["(default)", "tasks-eu", "abcd"] {
            assert!(is_valid_database_id(good), "{good}");
        }
        for bad in ["Tasks", "a", "9lives", "tasks-", "tasks_eu", ""] {
            assert!(!is_valid_database_id(bad), "{bad}");
        }
    }

    #[test]
    fn malformed_names_are_invalid_config() {
        let db = |project: &str| FirestoreDbOptions::new(project.to_owned());
        for (options, collection) in [
            (db(""), "tasks"),
            (db("a/b"), "tasks"),
            (db("my project"), "tasks"),
            (db("p").with_database_id("Tasks_EU".to_owned()), "tasks"),
            (db("p"), ""),
            (db("p"), "a/b"),
            (db("p"), "__reserved__"),
        ] {
            let result = check_ids(&options, collection);
            assert!(
                matches!(result, Err(StoreError::InvalidConfig(_))),
                "{options:?} {collection:?}: {result:?}"
            );
        }
        assert!(check_ids(&db("demo-project"), "onceTasks").is_ok());
    }

    #[test]
    fn a_malformed_api_url_is_invalid_config() {
        for url in ["not a url", "ftp://h:1", "http://", "127.0.0.1:8080"] {
            let options = FirestoreDbOptions::new("p".to_owned()).with_firebase_api_url(url.into());
            let result = endpoint(&options).map(|e| e.url);
            assert!(
                matches!(&result, Err(StoreError::InvalidConfig(m))
                    if m.contains("firebase_api_url") && m.contains("invalid Firestore endpoint")),
                "{url}: {result:?}"
            );
        }
        let options = FirestoreDbOptions::new("p".to_owned())
            .with_firebase_api_url("http://127.0.0.1:8080".into());
        assert_eq!(
            endpoint(&options).map(|e| e.url).ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }
}
