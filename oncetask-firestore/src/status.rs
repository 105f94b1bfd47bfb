//! How a gRPC status from Firestore becomes a [`StoreError`].
//!
//! Decisions are made on the status code; the message is read only to tell
//! one kind of FAILED_PRECONDITION apart, a query that needs an index that
//! is missing or still building, which becomes [`StoreError::MissingIndex`]
//! with the link Firestore gives to create the index.
//!
//! | Code | Error |
//! |---|---|
//! | UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED | [`StoreError::Unavailable`] (transient) |
//! | FAILED_PRECONDITION saying that the query requires an index | [`StoreError::MissingIndex`] |
//! | INVALID_ARGUMENT on one document's write | [`StoreError::Unencodable`] |
//! | anything else | [`StoreError::Backend`] holding the status |

use firestore::gcloud_sdk::tonic::{Code, Status};
use oncetask_core::StoreError;

/// Whether a create's write failed because the document exists: its
/// `exists = false` precondition failed. Decided by the code alone: Cloud
/// Firestore and its emulator both answer ALREADY_EXISTS (the emulator test
/// `status_codes` checks it).
pub(crate) fn is_exists(s: &Status) -> bool {
    s.code() == Code::AlreadyExists
}

/// The error of a failed call (see the module docs).
pub(crate) fn status_error(s: Status) -> StoreError {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted => {
            StoreError::Unavailable(format!("{}: {}", code_name(s.code()), s.message()))
        }
        Code::FailedPrecondition if needs_index(s.message()) => StoreError::MissingIndex {
            message: s.message().to_owned(),
            create_link: index_link(s.message()),
        },
        _ => StoreError::backend(s),
    }
}

/// A failed write of one document: the server refusing the document itself
/// (INVALID_ARGUMENT: too large, a value it cannot hold) is
/// [`StoreError::Unencodable`] — retrying cannot help; transient codes are
/// [`StoreError::Unavailable`]; anything else is a backend error.
pub(crate) fn item_error(id: &str, s: &Status) -> StoreError {
    match s.code() {
        Code::InvalidArgument => StoreError::Unencodable {
            id: id.to_owned(),
            reason: format!("Firestore refused the document: {}", s.message()),
        },
        _ => status_error(Status::new(s.code(), s.message())),
    }
}

/// Whether a FAILED_PRECONDITION message says the query needs an index
/// (missing: "The query requires an index. You can create it here: …";
/// still building: "The query requires an index. That index is currently
/// building and cannot be used yet. See its status here: …").
fn needs_index(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("requires an index") || m.contains("index is currently building")
}

/// The first `https://` link of a message, without trailing punctuation.
fn index_link(message: &str) -> Option<String> {
    let start = message.find("https://")?;
    let link = message[start..]
        .split(char::is_whitespace)
        .next()?
        .trim_end_matches(['.', ',', ';', ')', '"', '\'']);
    Some(link.to_owned())
}

/// The name of a status code, for messages.
pub(crate) fn code_name(c: Code) -> &'static str {
    match c {
        Code::Aborted => "ABORTED",
        Code::Unavailable => "UNAVAILABLE",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::NotFound => "NOT_FOUND",
        _ => "ERROR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend_status(e: &StoreError) -> Option<&Status> {
        match e {
            StoreError::Backend(source) => source.downcast_ref::<Status>(),
            _ => None,
        }
    }

    const LINK: &str = "https://console.firebase.google.com/v1/r/project/p/firestore/indexes?create_composite=ClJwcm9qZWN0cy9wL2RhdGFiYXNlcy8oZGVmYXVsdCkvY29sbGVjdGlvbkdyb3Vwcy9vbmNlVGFza3MvaW5kZXhlcy9fEAEaBwoDZW52EAEaCAoEdHlwZRAB";

    #[test]
    fn a_query_without_its_index_is_missing_index_with_the_link() {
        let message = format!("The query requires an index. You can create it here: {LINK}");
        match status_error(Status::new(Code::FailedPrecondition, message.clone())) {
            StoreError::MissingIndex {
                message: m,
                create_link,
            } => {
                assert_eq!(m, message);
                assert_eq!(create_link.as_deref(), Some(LINK));
            }
            other => panic!("expected MissingIndex, got {other:?}"),
        }
    }

    #[test]
    fn an_index_still_building_is_missing_index_too() {
        let message = format!(
            "The query requires an index. That index is currently building and cannot be used \
             yet. See its status here: {LINK}."
        );
        let err = status_error(Status::new(Code::FailedPrecondition, message));
        assert!(
            matches!(&err, StoreError::MissingIndex { create_link: Some(l), .. } if l == LINK),
            "{err:?}"
        );
        assert!(err.to_string().contains(LINK), "{err}");
    }

    #[test]
    fn other_failed_preconditions_stay_backend_errors() {
        let err = status_error(Status::new(
            Code::FailedPrecondition,
            "the stored version of the document does not match the required base version",
        ));
        let status = backend_status(&err).expect("a status");
        assert_eq!(status.code(), Code::FailedPrecondition);
    }

    #[test]
    fn exists_is_decided_by_the_code_only() {
        assert!(is_exists(&Status::new(Code::AlreadyExists, "")));
        // A failed precondition whose text mentions existence is not a
        // duplicate: the text is no contract.
        assert!(!is_exists(&Status::new(
            Code::FailedPrecondition,
            "Document already exists"
        )));
        assert!(!is_exists(&Status::new(
            Code::NotFound,
            "no entity to update"
        )));
    }

    #[test]
    fn transient_codes_are_unavailable() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::ResourceExhausted,
        ] {
            let err = status_error(Status::new(code, "busy"));
            assert!(
                matches!(&err, StoreError::Unavailable(m) if m == &format!("{}: busy", code_name(code))),
                "{code:?}: {err:?}"
            );
        }
    }

    #[test]
    fn a_refused_document_is_unencodable_and_permission_denied_is_kept() {
        let err = item_error("t1", &Status::new(Code::InvalidArgument, "too big"));
        assert!(
            matches!(&err, StoreError::Unencodable { id, .. } if id == "t1"),
            "{err:?}"
        );
        let err = item_error("t1", &Status::new(Code::PermissionDenied, "no"));
        assert_eq!(
            backend_status(&err).map(Status::code),
            Some(Code::PermissionDenied)
        );
    }
}
