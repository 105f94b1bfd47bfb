//! Query plans of the hot path's statements ([`PostgresStore::explain_claim`]):
//! a diagnostic the plan tests read, apart from the statements it plans.

use oncetask_core::store::TaskCursor;

use super::*;

impl PostgresStore {
    /// The query plans (`EXPLAIN`) of the hot path's statements, each under
    /// a `-- <name>` line: the single-mode claim statement in priority order
    /// (`claim`, the band walk over `tasks_priority_idx`) and in the oldest
    /// order (`claim oldest`, over `tasks_ready_idx`); the resource-group
    /// claim's candidate query in both orders (`candidates`, `candidates
    /// oldest`) and the resource-key busy check it embeds, the lock of a key's claim row, the group query for
    /// a key, the lock of the chosen rows and the bulk write-back of claimed
    /// tasks; the next due time an idle worker asks for, a swap, the
    /// creates of one task and of a batch, and a pruner's page of finished
    /// tasks, first and next (`find finished`, `find finished after`, over
    /// `tasks_finished_idx`); a listing's page after its cursor, of a kind
    /// (`list kind after`) and of a resource key (`list key after`). Each is
    /// the generic plan of the prepared statement, the one the store's
    /// connections run whatever the parameters (see
    /// [`PostgresStore::pool_options`]). A diagnostic, used by the tests
    /// that check the indexes serve them.
    pub async fn explain_claim(&self) -> Result<String, StoreError> {
        // In a transaction, so the setting does not outlive this call on a
        // pool that does not use it (the transaction is rolled back; the
        // prepared statements stay on the connection and are replaced by
        // the next call).
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        sqlx::raw_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let conn: &mut PgConnection = &mut tx;
        let mut out = String::new();
        let candidate = generic(
            conn,
            "candidate",
            &self.candidate_sql(ClaimOrder::Priority),
            6,
        )
        .await?;
        let candidate_oldest = generic(
            conn,
            "candidate_oldest",
            &self.candidate_sql(ClaimOrder::Oldest),
            6,
        )
        .await?;
        let group = generic(conn, "group", &self.group_sql(), 5).await?;
        let due = generic(conn, "due", &self.next_due_sql(), 3).await?;
        let write = generic(conn, "write", &self.write_sql(), 1).await?;
        let lock = generic(conn, "lock", &self.lock_ready_sql(false), 5).await?;
        let single = generic(
            conn,
            "single",
            &self.single_claim_sql(ClaimOrder::Priority),
            8,
        )
        .await?;
        let single_oldest = generic(
            conn,
            "single_oldest",
            &self.single_claim_sql(ClaimOrder::Oldest),
            8,
        )
        .await?;
        let key_lock = generic(conn, "key_lock", &self.lock_key_sql(), 3).await?;
        let swap = generic(conn, "swap", &self.swap_sql(), 2).await?;
        let create_batch = generic(
            conn,
            "create_batch",
            &crate::create::create_batch_sql(&self.inner.table),
            4,
        )
        .await?;
        let create = generic(conn, "create", &self.inner.create_one, 26).await?;
        let finished = generic(conn, "finished", &self.find_finished_sql(false), 6).await?;
        let finished_after =
            generic(conn, "finished_after", &self.find_finished_sql(true), 8).await?;
        let listing = |kind: bool, key: bool| {
            let mut filter = TaskFilter::env("e", chrono::Utc::now()).limit(50);
            if kind {
                filter = filter.kind("k");
            }
            if key {
                filter = filter.resource_key("r");
            }
            let cursor = TaskCursor {
                created_at: chrono::Utc::now(),
                id: String::new(),
            };
            // env, kind?, key?, the cursor's two values, the limit.
            let params = 4 + usize::from(kind) + usize::from(key);
            let sql =
                crate::listing::find_query(&self.inner.table, &filter, Some(&cursor), Some(50))
                    .sql()
                    .to_owned();
            (sql, params)
        };
        let (sql, params) = listing(true, false);
        let list_kind = generic(conn, "list_kind", &sql, params).await?;
        let (sql, params) = listing(false, true);
        let list_key = generic(conn, "list_key", &sql, params).await?;
        for (title, rows) in [
            ("claim", single),
            ("claim oldest", single_oldest),
            ("candidates", candidate),
            ("candidates oldest", candidate_oldest),
            ("key lock", key_lock),
            ("group", group),
            ("lock ready", lock),
            ("write-back", write),
            ("next due", due),
            ("swap", swap),
            ("create", create),
            ("create batch", create_batch),
            ("find finished", finished),
            ("find finished after", finished_after),
            ("list kind after", list_kind),
            ("list key after", list_key),
        ] {
            out.push_str(&format!("-- {title}\n"));
            for r in &rows {
                out.push_str(&r.try_get::<String, _>(0).map_err(db)?);
                out.push('\n');
            }
        }
        Ok(out)
    }
}

/// The generic plan of `sql` (with `params` parameters): prepared as
/// `oncetask_explain_{name}` on `conn` (replacing an earlier one), which
/// plans generically, and explained with every parameter null (a generic
/// plan does not depend on them).
async fn generic(
    conn: &mut PgConnection,
    name: &str,
    sql: &str,
    params: usize,
) -> Result<Vec<sqlx::postgres::PgRow>, StoreError> {
    let name = format!("oncetask_explain_{name}");
    let earlier: Option<String> =
        sqlx::query_scalar("SELECT name FROM pg_prepared_statements WHERE name = $1")
            .bind(&name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    if earlier.is_some() {
        sqlx::raw_sql(&format!("DEALLOCATE {name}"))
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    sqlx::raw_sql(&format!("PREPARE {name} AS {sql}"))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let nulls = vec!["NULL"; params].join(", ");
    sqlx::query(&format!("EXPLAIN EXECUTE {name}({nulls})"))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)
}
