//! The group claim's write-back: whole tasks written over their rows with
//! one `UPDATE` from a JSON array. Apart from `group` because it knows rows
//! and columns, not claims.

use super::*;

impl PostgresStore {
    /// Writes tasks over their rows with one `UPDATE`.
    pub(super) async fn write_back(
        &self,
        conn: &mut PgConnection,
        tasks: &[&Task],
    ) -> Result<(), StoreError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let rows = tasks
            .iter()
            .map(|task| {
                row::encode(task).map_err(|reason| StoreError::Unencodable {
                    id: task.id.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.write_rows(conn, rows).await
    }

    /// Writes rows encoded by `row::encode` over the stored rows with their
    /// ids, with one `UPDATE`.
    async fn write_rows(
        &self,
        conn: &mut PgConnection,
        rows: Vec<Value>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(&self.write_sql())
            .bind(Json(Value::Array(rows)))
            .execute(conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The bulk write: every row of the JSON array `$1` (see `row::encode`)
    /// over the stored row with its id.
    pub(crate) fn write_sql(&self) -> String {
        let t = &self.inner.table;
        let sets = COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|c| *c != "id")
            .zip(RECORD_VALUES.split(',').map(str::trim).skip(1))
            .map(|(c, v)| format!("{c} = {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        // The ids again as an array next to the join, so the rows are found
        // through the primary key even in a plan made on a tiny table.
        format!(
            "UPDATE {t} SET {sets} FROM jsonb_to_recordset($1) AS {RECORD} \
             WHERE {t}.id = x.id \
               AND {t}.id = ANY(ARRAY(SELECT e ->> 'id' FROM jsonb_array_elements($1) AS e))"
        )
    }
}
