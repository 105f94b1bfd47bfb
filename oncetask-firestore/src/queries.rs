//! The queries [`FirestoreStore`](crate::FirestoreStore) runs, built in one
//! place so that the index file (`firestore.indexes.json`, shipped with this
//! crate) can be checked against them: a unit test builds every shape below
//! and asserts that a composite index of the file serves it.

use firestore::gcloud_sdk::google::firestore::v1::{
    StructuredQuery, Value, structured_query as sq, value::ValueType,
};

/// The fields `due_query` can range over.
pub(crate) const DUE_FIELDS: [&str; 2] = ["waitUntil", "leasedUntil"];

/// A query over `collection` with `filters` (ANDed) ordered ascending by `order`.
pub(crate) fn base_query(
    collection: &str,
    filters: Vec<sq::Filter>,
    order: &[&str],
) -> StructuredQuery {
    StructuredQuery {
        from: vec![sq::CollectionSelector {
            collection_id: collection.to_owned(),
            all_descendants: false,
        }],
        r#where: Some(and(filters)),
        order_by: order
            .iter()
            .map(|f| sq::Order {
                field: Some(field_ref(f)),
                direction: sq::Direction::Ascending as i32,
            })
            .collect(),
        ..Default::default()
    }
}

/// Ready tasks of `env`/`kind` at `now` (an RFC 3339 string), longest
/// unleased and earliest due first; exact ties (same `leasedUntil`,
/// `waitUntil` and `createdAt`) by `resourceKey`, then id. The key comes
/// before the id because [`ready_query_excluding`] can order no other way
/// (a `not-in` field must be ordered on), and every page of a claim must
/// follow one order.
pub(crate) fn ready_query(collection: &str, env: &str, kind: &str, now: &str) -> StructuredQuery {
    base_query(
        collection,
        vec![
            eq("env", str_value(env)),
            eq("type", str_value(kind)),
            eq("doneAt", str_value("")),
            cmp(
                "waitUntil",
                sq::field_filter::Operator::LessThanOrEqual,
                now,
            ),
            cmp(
                "leasedUntil",
                sq::field_filter::Operator::LessThanOrEqual,
                now,
            ),
        ],
        &[
            "leasedUntil",
            "waitUntil",
            "createdAt",
            "resourceKey",
            "__name__",
        ],
    )
}

/// Most resource keys one query may exclude (Firestore's limit on the
/// values of a `not-in` filter).
pub(crate) const MAX_EXCLUDED_KEYS: usize = 10;

/// [`ready_query`] without the tasks of the resource keys in `busy` (at
/// most [`MAX_EXCLUDED_KEYS`]; keys that are busy or that the claim already
/// takes a task of): a claim that found the head of the queue taken by
/// such keys reads past their backlogs instead of paging through them.
/// Ordered like the ready query; read from the head (no cursor).
pub(crate) fn ready_query_excluding(
    collection: &str,
    env: &str,
    kind: &str,
    now: &str,
    busy: &[String],
) -> StructuredQuery {
    let mut q = ready_query(collection, env, kind, now);
    if let Some(sq::filter::FilterType::CompositeFilter(and)) =
        q.r#where.as_mut().and_then(|w| w.filter_type.as_mut())
    {
        and.filters.push(field_filter(
            "resourceKey",
            sq::field_filter::Operator::NotIn,
            Value {
                value_type: Some(ValueType::ArrayValue(
                    firestore::gcloud_sdk::google::firestore::v1::ArrayValue {
                        values: busy
                            .iter()
                            .take(MAX_EXCLUDED_KEYS)
                            .map(|k| str_value(k))
                            .collect(),
                    },
                )),
            },
        ));
    }
    q
}

/// Not-done tasks of one resource key whose lease is live at `now` (a
/// claim asks for one: is the key busy?).
pub(crate) fn key_live_query(
    collection: &str,
    env: &str,
    kind: &str,
    key: &str,
    now: &str,
) -> StructuredQuery {
    let mut filters = key_filters(env, kind, key);
    filters.push(cmp(
        "leasedUntil",
        sq::field_filter::Operator::GreaterThan,
        now,
    ));
    base_query(collection, filters, &["leasedUntil", "__name__"])
}

/// The not-done tasks of one resource key (same env and kind).
fn key_filters(env: &str, kind: &str, key: &str) -> Vec<sq::Filter> {
    vec![
        eq("env", str_value(env)),
        eq("type", str_value(kind)),
        eq("resourceKey", str_value(key)),
        eq("doneAt", str_value("")),
    ]
}

/// Not-done tasks of one resource key due at `now`, in group order
/// (`waitUntil`, `createdAt`, id): a group claim's members.
pub(crate) fn key_ready_query(
    collection: &str,
    env: &str,
    kind: &str,
    key: &str,
    now: &str,
) -> StructuredQuery {
    let mut filters = key_filters(env, kind, key);
    filters.push(cmp(
        "waitUntil",
        sq::field_filter::Operator::LessThanOrEqual,
        now,
    ));
    base_query(collection, filters, &["waitUntil", "createdAt", "__name__"])
}

/// Tasks of `env` whose kind sorts after `after` (all, when `None`), in
/// kind order: with limit 1, the next kind of `env` (`kinds` walks them,
/// one read per kind).
pub(crate) fn next_kind_query(collection: &str, env: &str, after: Option<&str>) -> StructuredQuery {
    // `>= ""` for the first: only string kinds (a corrupted non-string
    // `type` would sort first and could not be stepped past).
    let (op, value) = match after {
        Some(after) => (sq::field_filter::Operator::GreaterThan, after),
        None => (sq::field_filter::Operator::GreaterThanOrEqual, ""),
    };
    let filters = vec![
        eq("env", str_value(env)),
        field_filter("type", op, str_value(value)),
    ];
    base_query(collection, filters, &["type", "__name__"])
}

/// Equality filters on `env` and, when given, the kind (`type`).
fn env_kind_filters(env: &str, kind: Option<&str>) -> Vec<sq::Filter> {
    let mut filters = vec![eq("env", str_value(env))];
    if let Some(kind) = kind {
        filters.push(eq("type", str_value(kind)));
    }
    filters
}

/// Tasks of `env`, optionally of one kind / resource key / not done only:
/// equality filters only (`kinds` looks up one kind's tasks with it; it
/// is the base of [`list_query`]).
pub(crate) fn scan_query(
    collection: &str,
    env: &str,
    kind: Option<&str>,
    resource_key: Option<&str>,
    not_done: bool,
) -> StructuredQuery {
    let mut filters = env_kind_filters(env, kind);
    if let Some(key) = resource_key {
        filters.push(eq("resourceKey", str_value(key)));
    }
    if not_done {
        filters.push(eq("doneAt", str_value("")));
    }
    base_query(collection, filters, &[])
}

/// Not-done tasks of `env`/`kind` whose `field` (one of [`DUE_FIELDS`]) is
/// after `after`, in `field` order (`next_due`).
pub(crate) fn due_query(
    collection: &str,
    env: &str,
    kind: &str,
    field: &str,
    after: &str,
) -> StructuredQuery {
    base_query(
        collection,
        vec![
            eq("env", str_value(env)),
            eq("type", str_value(kind)),
            eq("doneAt", str_value("")),
            cmp(field, sq::field_filter::Operator::GreaterThan, after),
        ],
        &[field, "__name__"],
    )
}

/// The wake-up signal documents of `env` in the signal collection
/// `collection` ([`crate::signal`]): what a subscription listens to by
/// default. One equality filter: the automatic single-field index serves it.
/// (A listener hears its own store's signals too: the Store contract has a
/// store hear its own writes.)
pub(crate) fn signal_query(collection: &str, env: &str) -> StructuredQuery {
    base_query(collection, vec![eq("env", str_value(env))], &[])
}

/// The not-done tasks of `env`: what a subscription listens to with
/// [`crate::Wakeups::TaskChanges`].
pub(crate) fn listen_query(collection: &str, env: &str) -> StructuredQuery {
    base_query(
        collection,
        vec![eq("env", str_value(env)), eq("doneAt", str_value(""))],
        &[],
    )
}

/// What one COUNT query of [`count_queries`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CountOf {
    /// Not done, not cancelled, unleased and due.
    Pending,
    /// Not done, not cancelled, unleased, `waitUntil` after now.
    Waiting,
    /// Not done, not cancelled, `leasedUntil` after now.
    Leased,
    /// Not done, cancelled.
    CancellationPending,
    /// Done and cancelled.
    Cancelled,
    /// Done, not cancelled, outcome `completed`.
    Completed,
    /// Done, not cancelled, outcome `failed`.
    Failed,
    /// Done, not cancelled, outcome `cancelled`.
    CancelledOutcome,
    /// Done, not cancelled: more than `Completed + Failed + CancelledOutcome`
    /// means documents the Go package finished (no outcome), whose status
    /// needs a read.
    DoneNotCancelled,
    /// Every document of the env (and kind): what no status query counts
    /// has malformed status fields, so it is undecodable.
    All,
}

/// The COUNT queries of `count_by_status`: each status as field filters on
/// the tasks of `env` (and `kind`) at `now` (an RFC 3339 string).
///
/// The status queries partition the documents whose status fields are
/// well-formed: `doneAt` a string (`""` or, with `> ""`, a time),
/// `isCancelled` a boolean, and the time fields a status compares strings
/// (equality and range filters match only values of their own type). A
/// document with one of them missing or of another type is in no status
/// query, only in [`CountOf::All`].
pub(crate) fn count_queries(
    collection: &str,
    env: &str,
    kind: Option<&str>,
    now: &str,
) -> Vec<(CountOf, StructuredQuery)> {
    use sq::field_filter::Operator::{GreaterThan, LessThanOrEqual};
    let base = || env_kind_filters(env, kind);
    let with = |extra: Vec<sq::Filter>| {
        let mut f = base();
        f.extend(extra);
        base_query(collection, f, &[])
    };
    let not_done = || eq("doneAt", str_value(""));
    // `> ""` rather than `!= ""`: a range filter matches strings only.
    let done = || field_filter("doneAt", GreaterThan, str_value(""));
    let cancelled = |c: bool| eq("isCancelled", bool_value(c));
    let outcome = |o: &str| eq("outcome", str_value(o));
    vec![
        (
            CountOf::Pending,
            with(vec![
                not_done(),
                cancelled(false),
                cmp("leasedUntil", LessThanOrEqual, now),
                cmp("waitUntil", LessThanOrEqual, now),
            ]),
        ),
        (
            CountOf::Waiting,
            with(vec![
                not_done(),
                cancelled(false),
                cmp("leasedUntil", LessThanOrEqual, now),
                cmp("waitUntil", GreaterThan, now),
            ]),
        ),
        (
            CountOf::Leased,
            with(vec![
                not_done(),
                cancelled(false),
                cmp("leasedUntil", GreaterThan, now),
            ]),
        ),
        (
            CountOf::CancellationPending,
            with(vec![not_done(), cancelled(true)]),
        ),
        (CountOf::Cancelled, with(vec![done(), cancelled(true)])),
        (
            CountOf::Completed,
            with(vec![done(), cancelled(false), outcome("completed")]),
        ),
        (
            CountOf::Failed,
            with(vec![done(), cancelled(false), outcome("failed")]),
        ),
        (
            CountOf::CancelledOutcome,
            with(vec![done(), cancelled(false), outcome("cancelled")]),
        ),
        (
            CountOf::DoneNotCancelled,
            with(vec![done(), cancelled(false)]),
        ),
        (CountOf::All, with(vec![])),
    ]
}

/// The done, not-cancelled tasks of `env` (and `kind`) in `doneAt` order:
/// `count_by_status` reads them (bounded) to find the documents the Go
/// package finished, which carry no outcome (Firestore cannot filter on a
/// missing field).
pub(crate) fn done_not_cancelled_query(
    collection: &str,
    env: &str,
    kind: Option<&str>,
) -> StructuredQuery {
    let mut filters = env_kind_filters(env, kind);
    filters.push(field_filter(
        "doneAt",
        sq::field_filter::Operator::GreaterThan,
        str_value(""),
    ));
    filters.push(eq("isCancelled", bool_value(false)));
    base_query(collection, filters, &["doneAt", "__name__"])
}

/// Which tasks a listing selects by status: only what equality filters
/// select, so that one composite index per shape serves it in creation
/// order (statuses that depend on the time have no such filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListStatuses<'a> {
    /// Every task.
    Any,
    /// Not done (`doneAt == ""`).
    NotDone,
    /// Not done and cancelled.
    CancellationPending,
    /// Finished with one of these outcomes (`outcome in [...]`).
    Outcomes(&'a [&'a str]),
}

/// The tasks of `env` (optionally of one kind and resource key) that
/// `statuses` selects, created at or before `until` when given (an
/// inclusive bound on the stored string), in creation order (`createdAt`,
/// then the document name): `find`'s query.
pub(crate) fn list_query(
    collection: &str,
    env: &str,
    kind: Option<&str>,
    resource_key: Option<&str>,
    statuses: ListStatuses<'_>,
    until: Option<&str>,
) -> StructuredQuery {
    let mut filters = env_kind_filters(env, kind);
    if let Some(key) = resource_key {
        filters.push(eq("resourceKey", str_value(key)));
    }
    match statuses {
        ListStatuses::Any => {}
        ListStatuses::NotDone => filters.push(eq("doneAt", str_value(""))),
        ListStatuses::CancellationPending => {
            filters.push(eq("doneAt", str_value("")));
            filters.push(eq("isCancelled", bool_value(true)));
        }
        ListStatuses::Outcomes([one]) => filters.push(eq("outcome", str_value(one))),
        ListStatuses::Outcomes(several) => filters.push(field_filter(
            "outcome",
            sq::field_filter::Operator::In,
            Value {
                value_type: Some(ValueType::ArrayValue(
                    firestore::gcloud_sdk::google::firestore::v1::ArrayValue {
                        values: several.iter().map(|o| str_value(o)).collect(),
                    },
                )),
            },
        )),
    }
    if let Some(until) = until {
        filters.push(cmp(
            "createdAt",
            sq::field_filter::Operator::LessThanOrEqual,
            until,
        ));
    }
    base_query(collection, filters, &["createdAt", "__name__"])
}

/// The recurrence generators of `env`: the tasks whose `recurrence` map
/// has an `rrule` (a plain task's `recurrence` is null), ordered by the
/// rule, then the document name (the range filter's field comes first).
pub(crate) fn generators_query(collection: &str, env: &str) -> StructuredQuery {
    base_query(
        collection,
        vec![
            eq("env", str_value(env)),
            field_filter(
                "recurrence.rrule",
                sq::field_filter::Operator::GreaterThan,
                str_value(""),
            ),
        ],
        &["recurrence.rrule", "__name__"],
    )
}

/// Pending tasks of `env`/`kind` at `now` (as the ready query: not done,
/// not cancelled, `leasedUntil` and `waitUntil` at most `now`) whose
/// `createdAt`, `leasedUntil` and `waitUntil` are all before `below` (when
/// set), in `createdAt` order (then `leasedUntil`, `waitUntil`, the
/// order the range filters need): with limit 1, a task that became ready
/// before `below` (the inspector narrows its oldest pending time with it).
pub(crate) fn oldest_pending_query(
    collection: &str,
    env: &str,
    kind: &str,
    now: &str,
    below: Option<&str>,
) -> StructuredQuery {
    use sq::field_filter::Operator::{LessThan, LessThanOrEqual};
    let mut filters = vec![
        eq("env", str_value(env)),
        eq("type", str_value(kind)),
        eq("doneAt", str_value("")),
        eq("isCancelled", bool_value(false)),
        cmp("leasedUntil", LessThanOrEqual, now),
        cmp("waitUntil", LessThanOrEqual, now),
    ];
    if let Some(below) = below {
        for field in ["createdAt", "leasedUntil", "waitUntil"] {
            filters.push(cmp(field, LessThan, below));
        }
    }
    base_query(
        collection,
        filters,
        &["createdAt", "leasedUntil", "waitUntil", "__name__"],
    )
}

/// Finished tasks of `env`/`kind` whose stored `doneAt` is at most
/// `upper` (an RFC 3339 string), in `doneAt` order, then id: what a pruner
/// reads ([`oncetask_core::Store::find_finished`]), from a cursor. Status
/// and tombstones are told apart on the client: Go documents carry no
/// `outcome` and full documents no `prunedAt`, and a filter on a field
/// leaves out every document without it.
pub(crate) fn finished_query(
    collection: &str,
    env: &str,
    kind: &str,
    upper: &str,
) -> StructuredQuery {
    use sq::field_filter::Operator::{GreaterThan, LessThanOrEqual};
    base_query(
        collection,
        vec![
            eq("env", str_value(env)),
            eq("type", str_value(kind)),
            field_filter("doneAt", GreaterThan, str_value("")),
            cmp("doneAt", LessThanOrEqual, upper),
        ],
        &["doneAt", "__name__"],
    )
}

/// Finished tasks of `env`/`kind` whose stored `doneAt` is exactly `done`
/// (a whole second in the Go package's spelling, `…:05Z`, which sorts
/// after every Rust time of its second): equality filters only.
pub(crate) fn finished_at_query(
    collection: &str,
    env: &str,
    kind: &str,
    done: &str,
) -> StructuredQuery {
    base_query(
        collection,
        vec![
            eq("env", str_value(env)),
            eq("type", str_value(kind)),
            eq("doneAt", str_value(done)),
        ],
        &[],
    )
}

/// What one COUNT query of [`tombstone_count_queries`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TombstonesOf {
    /// Every tombstone of the env.
    All,
    /// Cancelled (`isCancelled`).
    Cancelled,
    /// Not cancelled, outcome `completed`.
    Completed,
    /// Not cancelled, outcome `failed`.
    Failed,
    /// Not cancelled, outcome `cancelled`.
    CancelledOutcome,
}

/// The COUNT queries of the tombstones of `env` (documents with a
/// `prunedAt`: every tombstone is a Rust write, so every one has it), per
/// status where a filter expresses it: tombstones of tasks the Go package
/// finished carry no outcome and are the rest.
pub(crate) fn tombstone_count_queries(
    collection: &str,
    env: &str,
) -> Vec<(TombstonesOf, StructuredQuery)> {
    let pruned = || {
        field_filter(
            PRUNED,
            sq::field_filter::Operator::GreaterThan,
            str_value(""),
        )
    };
    let with = |extra: Vec<sq::Filter>| {
        let mut f = vec![eq("env", str_value(env))];
        f.extend(extra);
        f.push(pruned());
        base_query(collection, f, &[])
    };
    let not_cancelled = || eq("isCancelled", bool_value(false));
    let outcome = |o: &str| eq("outcome", str_value(o));
    vec![
        (TombstonesOf::All, with(vec![])),
        (
            TombstonesOf::Cancelled,
            with(vec![eq("isCancelled", bool_value(true))]),
        ),
        (
            TombstonesOf::Completed,
            with(vec![not_cancelled(), outcome("completed")]),
        ),
        (
            TombstonesOf::Failed,
            with(vec![not_cancelled(), outcome("failed")]),
        ),
        (
            TombstonesOf::CancelledOutcome,
            with(vec![not_cancelled(), outcome("cancelled")]),
        ),
    ]
}

/// The not-cancelled tombstones of `env` in `prunedAt` order: read
/// (bounded) to classify those of tasks the Go package finished.
pub(crate) fn tombstones_not_cancelled_query(collection: &str, env: &str) -> StructuredQuery {
    base_query(
        collection,
        vec![
            eq("env", str_value(env)),
            eq("isCancelled", bool_value(false)),
            field_filter(
                PRUNED,
                sq::field_filter::Operator::GreaterThan,
                str_value(""),
            ),
        ],
        &[PRUNED, "__name__"],
    )
}

/// The tombstone field (see [`crate::document::PRUNED_AT`]).
const PRUNED: &str = crate::document::PRUNED_AT;

fn bool_value(b: bool) -> Value {
    Value {
        value_type: Some(ValueType::BooleanValue(b)),
    }
}

pub(crate) fn str_value(s: &str) -> Value {
    Value {
        value_type: Some(ValueType::StringValue(s.to_owned())),
    }
}

fn field_ref(path: &str) -> sq::FieldReference {
    sq::FieldReference {
        field_path: path.to_owned(),
    }
}

fn field_filter(field: &str, op: sq::field_filter::Operator, value: Value) -> sq::Filter {
    sq::Filter {
        filter_type: Some(sq::filter::FilterType::FieldFilter(sq::FieldFilter {
            field: Some(field_ref(field)),
            op: op as i32,
            value: Some(value),
        })),
    }
}

pub(crate) fn eq(field: &str, value: Value) -> sq::Filter {
    field_filter(field, sq::field_filter::Operator::Equal, value)
}

fn cmp(field: &str, op: sq::field_filter::Operator, time: &str) -> sq::Filter {
    field_filter(field, op, str_value(time))
}

fn and(filters: Vec<sq::Filter>) -> sq::Filter {
    sq::Filter {
        filter_type: Some(sq::filter::FilterType::CompositeFilter(
            sq::CompositeFilter {
                op: sq::composite_filter::Operator::And as i32,
                filters,
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    //! Every query shape the store builds is served by an index: either
    //! Firestore's automatic single-field indexes (equality filters only, no
    //! ordering: Firestore merges the single-field indexes) or a composite
    //! index of `firestore.indexes.json` whose fields are the equality fields
    //! (any order) followed by the ordering fields, in order.

    use super::*;
    use std::collections::BTreeSet;

    const INDEXES: &str = include_str!("../firestore.indexes.json");

    /// Equality fields and ordering (explicit, then implicit by inequality
    /// fields; without `__name__`).
    struct Shape {
        equalities: BTreeSet<String>,
        order: Vec<String>,
    }

    fn shape(q: &StructuredQuery) -> Shape {
        let mut equalities = BTreeSet::new();
        let mut inequalities = BTreeSet::new();
        let mut pending: Vec<&sq::Filter> = q.r#where.iter().collect();
        while let Some(f) = pending.pop() {
            match &f.filter_type {
                Some(sq::filter::FilterType::CompositeFilter(c)) => pending.extend(&c.filters),
                Some(sq::filter::FilterType::FieldFilter(ff)) => {
                    let field = ff.field.as_ref().map(|r| r.field_path.clone());
                    let field = field.unwrap_or_default();
                    // `in` is served like an equality (one index range per value).
                    if ff.op == sq::field_filter::Operator::Equal as i32
                        || ff.op == sq::field_filter::Operator::In as i32
                    {
                        equalities.insert(field);
                    } else {
                        inequalities.insert(field);
                    }
                }
                other => panic!("unexpected filter {other:?}"),
            }
        }
        let mut order: Vec<String> = q
            .order_by
            .iter()
            .inspect(|o| assert_eq!(o.direction, sq::Direction::Ascending as i32))
            .filter_map(|o| o.field.as_ref().map(|r| r.field_path.clone()))
            .filter(|f| f != "__name__")
            .collect();
        // Firestore orders by inequality fields not ordered on explicitly,
        // in field-name order, after the explicit ones.
        for f in &inequalities {
            if !order.contains(f) {
                order.push(f.clone());
            }
        }
        Shape { equalities, order }
    }

    /// Composite indexes of the file on `collection`: ascending field lists.
    fn indexes(collection: &str) -> Vec<Vec<String>> {
        let file: serde_json::Value = serde_json::from_str(INDEXES).expect("valid JSON");
        let list = file["indexes"].as_array().expect("`indexes` array");
        assert!(
            file["fieldOverrides"].is_array(),
            "`fieldOverrides` array (may be empty)"
        );
        list.iter()
            .filter(|ix| ix["collectionGroup"] == collection)
            .map(|ix| {
                assert_eq!(ix["queryScope"], "COLLECTION");
                ix["fields"]
                    .as_array()
                    .expect("`fields` array")
                    .iter()
                    .map(|f| {
                        assert_eq!(f["order"], "ASCENDING", "{f}");
                        f["fieldPath"].as_str().expect("fieldPath").to_owned()
                    })
                    .collect()
            })
            .collect()
    }

    fn served(shape: &Shape, indexes: &[Vec<String>]) -> bool {
        if shape.order.is_empty() {
            return true; // merged single-field indexes
        }
        let n = shape.equalities.len();
        indexes.iter().any(|fields| {
            fields.len() == n + shape.order.len()
                && fields[..n].iter().cloned().collect::<BTreeSet<_>>() == shape.equalities
                && fields[n..] == shape.order[..]
        })
    }

    /// Every status selection of a listing (one outcome and several are
    /// different filters).
    const LIST_STATUSES: [ListStatuses<'static>; 5] = [
        ListStatuses::Any,
        ListStatuses::NotDone,
        ListStatuses::CancellationPending,
        ListStatuses::Outcomes(&["failed"]),
        ListStatuses::Outcomes(&["completed", "failed"]),
    ];

    /// Every query the store builds, with every option combination.
    fn all_queries(c: &str) -> Vec<(String, StructuredQuery)> {
        let t = "2026-01-01T00:00:00.000Z";
        let mut out = vec![
            ("ready".to_owned(), ready_query(c, "e", "k", t)),
            (
                "ready past busy keys".to_owned(),
                ready_query_excluding(c, "e", "k", t, &["r".to_owned()]),
            ),
            ("key live".to_owned(), key_live_query(c, "e", "k", "r", t)),
            ("first kind".to_owned(), next_kind_query(c, "e", None)),
            ("next kind".to_owned(), next_kind_query(c, "e", Some("k"))),
            ("key ready".to_owned(), key_ready_query(c, "e", "k", "r", t)),
        ];
        for field in DUE_FIELDS {
            out.push((
                format!("next_due {field}"),
                due_query(c, "e", "k", field, t),
            ));
        }
        out.push(("listen".to_owned(), listen_query(c, "e")));
        out.push((
            "signals".to_owned(),
            signal_query(&format!("{c}{}", crate::signal::COLLECTION_SUFFIX), "e"),
        ));
        out.push((
            "kind's tasks".to_owned(),
            scan_query(c, "e", Some("k"), None, false),
        ));
        out.push(("finished".to_owned(), finished_query(c, "e", "k", t)));
        out.push(("generators".to_owned(), generators_query(c, "e")));
        out.push((
            "finished in a Go second".to_owned(),
            finished_at_query(c, "e", "k", "2026-01-01T00:00:00Z"),
        ));
        for (what, q) in tombstone_count_queries(c, "e") {
            out.push((format!("count tombstones {what:?}"), q));
        }
        out.push((
            "tombstones not cancelled".to_owned(),
            tombstones_not_cancelled_query(c, "e"),
        ));
        for below in [None, Some(t)] {
            out.push((
                format!("oldest pending {below:?}"),
                oldest_pending_query(c, "e", "k", t, below),
            ));
        }
        for kind in [None, Some("k")] {
            for (what, q) in count_queries(c, "e", kind, t) {
                out.push((format!("count {what:?} {kind:?}"), q));
            }
            out.push((
                format!("done not cancelled {kind:?}"),
                done_not_cancelled_query(c, "e", kind),
            ));
            for key in [None, Some("r")] {
                for statuses in LIST_STATUSES {
                    for until in [None, Some(t)] {
                        out.push((
                            format!("list {kind:?} {key:?} {statuses:?} {until:?}"),
                            list_query(c, "e", kind, key, statuses, until),
                        ));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_query_is_served_by_an_index() {
        assert!(!indexes(crate::DEFAULT_COLLECTION).is_empty());
        for (name, q) in all_queries(crate::DEFAULT_COLLECTION) {
            // The indexes of the query's own collection group.
            let indexes = indexes(&q.from[0].collection_id);
            assert!(
                served(&shape(&q), &indexes),
                "no index serves the {name} query"
            );
        }
    }

    #[test]
    fn the_index_file_has_no_unused_index() {
        let queries = all_queries(crate::DEFAULT_COLLECTION);
        let groups: BTreeSet<String> = queries
            .iter()
            .map(|(_, q)| q.from[0].collection_id.clone())
            .collect();
        for group in groups {
            let shapes: Vec<Shape> = queries
                .iter()
                .filter(|(_, q)| q.from[0].collection_id == group)
                .map(|(_, q)| shape(q))
                .collect();
            for index in indexes(&group) {
                let used = shapes
                    .iter()
                    .any(|s| !s.order.is_empty() && served(s, std::slice::from_ref(&index)));
                assert!(used, "index {index:?} of {group} serves no query");
            }
        }
    }

    /// The field overrides of the file: (collection group, field path,
    /// override).
    fn overrides() -> Vec<(String, String, serde_json::Value)> {
        let file: serde_json::Value = serde_json::from_str(INDEXES).expect("valid JSON");
        file["fieldOverrides"]
            .as_array()
            .expect("`fieldOverrides` array")
            .iter()
            .map(|o| {
                let group = o["collectionGroup"].as_str().expect("collectionGroup");
                let path = o["fieldPath"].as_str().expect("fieldPath");
                (group.to_owned(), path.to_owned(), o.clone())
            })
            .collect()
    }

    /// Every field path a query filters or orders on (`__name__` included).
    fn queried_fields(q: &StructuredQuery) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = q
            .order_by
            .iter()
            .filter_map(|o| o.field.as_ref().map(|r| r.field_path.clone()))
            .collect();
        let mut pending: Vec<&sq::Filter> = q.r#where.iter().collect();
        while let Some(f) = pending.pop() {
            match &f.filter_type {
                Some(sq::filter::FilterType::CompositeFilter(c)) => pending.extend(&c.filters),
                Some(sq::filter::FilterType::FieldFilter(ff)) => {
                    out.extend(ff.field.as_ref().map(|r| r.field_path.clone()));
                }
                Some(sq::filter::FilterType::UnaryFilter(u)) => {
                    if let Some(sq::unary_filter::OperandType::Field(r)) = &u.operand_type {
                        out.insert(r.field_path.clone());
                    }
                }
                None => {}
            }
        }
        out
    }

    /// The lock collection of resource keys (read by id only, never queried).
    fn lock_group() -> String {
        format!("{}-resourceKeys", crate::DEFAULT_COLLECTION)
    }

    /// The signal collection (queried by `env` only).
    fn signal_group() -> String {
        format!(
            "{}{}",
            crate::DEFAULT_COLLECTION,
            crate::signal::COLLECTION_SUFFIX
        )
    }

    /// The side collections read by id only (never queried): paused
    /// kinds, rate limiters, pruning positions.
    fn by_id_groups() -> [String; 3] {
        use crate::store::side::{CONTROLS_SUFFIX, LIMITERS_SUFFIX, PRUNING_SUFFIX};
        [CONTROLS_SUFFIX, LIMITERS_SUFFIX, PRUNING_SUFFIX]
            .map(|suffix| format!("{}{suffix}", crate::DEFAULT_COLLECTION))
    }

    /// The fields the store writes on a lock document.
    const LOCK_FIELDS: [&str; 8] = [
        "env",
        "type",
        "resourceKey",
        "leasedUntil",
        "leaseToken",
        "holder",
        "heldUntil",
        "expireAt",
    ];

    /// An override that indexes its field again (one ascending
    /// collection index) rather than exempting it.
    fn reindexed(o: &serde_json::Value) -> bool {
        o["indexes"] == serde_json::json!([{ "order": "ASCENDING", "queryScope": "COLLECTION" }])
    }

    #[test]
    fn no_query_filters_or_orders_on_an_exempted_field() {
        let all = overrides();
        let exempted: Vec<(String, String)> = all
            .iter()
            .filter(|(_, _, o)| !reindexed(o))
            .map(|(group, path, _)| (group.clone(), path.clone()))
            .collect();
        let queries = all_queries(crate::DEFAULT_COLLECTION);
        for (name, q) in &queries {
            let group = &q.from[0].collection_id;
            for field in queried_fields(q) {
                let indexed_again = all
                    .iter()
                    .any(|(g, path, o)| g == group && *path == field && reindexed(o));
                if indexed_again {
                    continue;
                }
                for (g, path) in &exempted {
                    let under = field == *path || field.starts_with(&format!("{path}."));
                    assert!(
                        !(g == group && under),
                        "the {name} query uses {field}, exempted from indexing on {g}"
                    );
                }
            }
        }
        // No query reads the lock, controls, limiter or pruning
        // collections (read by id only): each of their fields may go.
        for group in [lock_group()].into_iter().chain(by_id_groups()) {
            assert!(
                queries
                    .iter()
                    .all(|(_, q)| q.from[0].collection_id != group)
            );
        }
    }

    #[test]
    fn the_overrides_exempt_every_unqueried_field_and_are_well_formed() {
        let all = overrides();
        let mut seen = BTreeSet::new();
        for (group, path, o) in &all {
            assert!(
                seen.insert((group.clone(), path.clone())),
                "{group}/{path} is overridden twice"
            );
            assert!(
                group == crate::DEFAULT_COLLECTION
                    || *group == lock_group()
                    || *group == signal_group()
                    || by_id_groups().contains(group),
                "unknown collection group {group}"
            );
            if reindexed(o) {
                // A subfield of an exempted map indexed again for a query.
                let parent = path.rsplit_once('.').map(|(p, _)| p);
                assert!(
                    parent.is_some_and(|p| all.iter().any(|(g, q, _)| g == group && q == p)),
                    "{group}/{path}: only a subfield of an exempted map is indexed again"
                );
            } else {
                assert_eq!(
                    o["indexes"],
                    serde_json::json!([]),
                    "{group}/{path}: an exemption has `indexes: []`"
                );
            }
            let keys: BTreeSet<&str> = o
                .as_object()
                .expect("an object")
                .keys()
                .map(String::as_str)
                .collect();
            let ttl = (*group == lock_group()
                || *group == signal_group()
                || (by_id_groups().contains(group) && !group.ends_with("-controls")))
                && path == "expireAt";
            let expected: BTreeSet<&str> = if ttl {
                ["collectionGroup", "fieldPath", "indexes", "ttl"].into()
            } else {
                ["collectionGroup", "fieldPath", "indexes"].into()
            };
            assert_eq!(keys, expected, "{group}/{path}");
            if ttl {
                assert_eq!(o["ttl"], true, "the TTL policy is on");
            }
        }
        let queried: BTreeSet<String> = all_queries(crate::DEFAULT_COLLECTION)
            .iter()
            .flat_map(|(_, q)| queried_fields(q))
            .collect();
        // Every top-level field of a task document (and `leaseAttempt`,
        // written by claims) is queried or exempted: a new field has to be
        // decided on here. The task sets the fields written only when not
        // their default.
        let mut task = oncetask_core::Task::new("t", "k", "e", chrono::Utc::now());
        task.snoozes = 1;
        task.priority = 1;
        task.max_attempts = Some(1);
        task.pruned_at = Some(chrono::Utc::now());
        let mut fields: BTreeSet<String> = crate::encode_task(&task)
            .expect("encodes")
            .into_keys()
            .collect();
        fields.insert("leaseAttempt".to_owned());
        for field in fields {
            let exempted = seen.contains(&(crate::DEFAULT_COLLECTION.to_owned(), field.clone()));
            assert!(
                queried.contains(&field) != exempted,
                "task field {field}: queried {}, exempted {exempted} (exactly one must hold)",
                queried.contains(&field)
            );
        }
        for field in ["data", "result", "errors", "recurrence", "leaseAttempt"] {
            assert!(seen.contains(&(crate::DEFAULT_COLLECTION.to_owned(), field.to_owned())));
        }
        for field in LOCK_FIELDS {
            assert!(
                seen.contains(&(lock_group(), field.to_owned())),
                "lock field {field} is not exempted"
            );
        }
        // Paused kinds, limiters and pruning positions are read by id.
        let [controls, limiters, pruning] = by_id_groups();
        for field in ["env", crate::store::side::PAUSED] {
            assert!(seen.contains(&(controls.clone(), field.to_owned())));
        }
        for field in [
            "env",
            "type",
            "resourceKey",
            "windowStart",
            "taken",
            "expireAt",
        ] {
            assert!(seen.contains(&(limiters.clone(), field.to_owned())));
        }
        for field in ["env", "type", "expireAt"]
            .into_iter()
            .chain(crate::store::side::POSITION_FIELDS)
        {
            assert!(
                seen.contains(&(pruning.clone(), field.to_owned())),
                "pruning field {field}"
            );
        }
        // Signals are listened to by `env`; their other fields are exempted.
        for field in ["instance", "kinds", crate::signal::PRIORITIZED, "expireAt"] {
            assert!(seen.contains(&(signal_group(), field.to_owned())));
        }
        assert!(!seen.contains(&(signal_group(), "env".to_owned())));
    }

    /// A filter or an order on a field leaves out every document without
    /// it. Documents the Go package writes lack the Rust-only fields, and
    /// Rust leaves these out at their default: a query on one of them
    /// (say, claims ordered by priority) would skip every such task. The
    /// one exception: `prunedAt`, in queries meant to select tombstones
    /// only (every tombstone is a Rust write and has it).
    #[test]
    fn no_query_uses_a_field_documents_may_lack() {
        use crate::document::{MAX_ATTEMPTS, PRIORITY, PRUNED_AT, SNOOZES, WAIT_EXACT};
        for (name, q) in all_queries(crate::DEFAULT_COLLECTION) {
            let fields = queried_fields(&q);
            for absent in [SNOOZES, PRIORITY, MAX_ATTEMPTS, WAIT_EXACT, "leaseAttempt"] {
                assert!(!fields.contains(absent), "the {name} query uses {absent}");
            }
            if fields.contains(PRUNED_AT) {
                assert!(
                    name.contains("tombstones"),
                    "the {name} query uses {PRUNED_AT}"
                );
            }
        }
    }

    #[test]
    fn firebase_json_names_the_index_file() {
        // The repository's root (not part of the packaged crate).
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("firebase.json")).expect("firebase.json");
        let file: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let path = file["firestore"]["indexes"]
            .as_str()
            .expect("firestore.indexes is a path");
        assert_eq!(path, "oncetask-firestore/firestore.indexes.json");
        let on_disk = root.join(path);
        assert!(on_disk.is_file(), "{} exists", on_disk.display());
    }

    #[test]
    fn the_doctor_runs_every_query_shape() {
        let t = "2026-01-01T00:00:00.000Z";
        let doctor: Vec<StructuredQuery> =
            crate::doctor::query_shapes(crate::DEFAULT_COLLECTION, "e", "k", t)
                .into_iter()
                .map(|(_, mut q)| {
                    assert_eq!(q.limit, Some(1));
                    q.limit = None;
                    q
                })
                .collect();
        for (name, q) in all_queries(crate::DEFAULT_COLLECTION) {
            let same_shape = |d: &StructuredQuery| {
                let (a, b) = (shape(d), shape(&q));
                a.equalities == b.equalities
                    && a.order == b.order
                    && queried_fields(d) == queried_fields(&q)
            };
            assert!(
                doctor.iter().any(same_shape),
                "the doctor does not run the {name} query shape"
            );
        }
    }
}
