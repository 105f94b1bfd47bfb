//! Batches bound as a `VALUES` list: `UPDATE … FROM (VALUES (?, ?), …) AS x`
//! writes many rows in one statement, each value a bound parameter.
//!
//! One statement per batch, not one per row: each statement is a round
//! trip to the connection's worker thread, made while the store holds the
//! database's one write lock. Bound values, not a JSON array unpacked with
//! `json_each`: profiles of JSON batches spent about as much of the
//! connection thread's time in SQLite's JSON functions as in the writes.
//!
//! A list is written for a padded number of rows (a power of two, at most
//! [`MAX_ROWS`]), so a handful of statement texts serve every batch size
//! and stay in the connection's prepared-statement cache; the padding rows
//! are `NULL`s, whose `NULL` id matches no row.

/// Most rows one statement carries; longer batches are split.
pub(crate) const MAX_ROWS: usize = 256;

/// The rows a statement for `n` rows (1..=[`MAX_ROWS`]) is written for.
pub(crate) fn padded(n: usize) -> usize {
    n.next_power_of_two().clamp(1, MAX_ROWS)
}

/// `(?, ?, …), …`: `rows` rows of `columns` placeholders.
pub(crate) fn placeholders(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// `(?N, ?N+1, …), …`: `rows` rows of `columns` numbered placeholders,
/// the first `?first`. A statement that also names parameters by number
/// needs these: sqlx binds an unnumbered `?` by its position among the
/// unnumbered ones, while SQLite numbers it after the highest named.
pub(crate) fn numbered_placeholders(rows: usize, columns: usize, first: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (0..columns)
                .map(|c| format!("?{}", first + r * columns + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds `count` `NULL`s (the padding rows' values).
pub(crate) fn bind_nulls<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    count: usize,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for _ in 0..count {
        query = query.bind(None::<i64>);
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_padded_to_a_few_sizes() {
        assert_eq!(padded(1), 1);
        assert_eq!(padded(3), 4);
        assert_eq!(padded(100), 128);
        assert_eq!(padded(MAX_ROWS), MAX_ROWS);
        assert_eq!(placeholders(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(numbered_placeholders(2, 2, 4), "(?4, ?5), (?6, ?7)");
    }
}
