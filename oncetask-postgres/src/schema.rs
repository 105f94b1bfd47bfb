//! The schema: identifier checks and the embedded migrations.

use super::*;

/// The embedded schema migrations (the `migrations/` directory of this crate).
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl PostgresStore {
    /// Creates the schema if needed and applies the embedded migrations to it.
    ///
    /// The migrations are written without a schema name; they run on one
    /// connection whose `search_path` is set to the store's schema, so their
    /// tables, and sqlx's `_sqlx_migrations` bookkeeping table, land in that
    /// schema. Each schema therefore has its own migration history, and
    /// several stores (schemas) can share one database. The connection is
    /// closed afterwards rather than returned to the pool with a changed
    /// `search_path`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.inner.pool.acquire().await.map_err(db)?.detach();
        let schema = &self.inner.schema;
        let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut conn)
            .await;
        match created {
            Ok(_) => {}
            // Two processes creating the schema at once: one of them gets a
            // unique violation (or "duplicate schema"), and the schema exists.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("23505") | Some("42P06")) => {}
            Err(e) => return Err(db(e)),
        }
        sqlx::query(&format!("SET search_path TO \"{schema}\""))
            .execute(&mut conn)
            .await
            .map_err(db)?;
        MIGRATOR
            .run_direct(&mut conn)
            .await
            .map_err(StoreError::backend)?;
        sqlx::Connection::close(conn).await.map_err(db)?;
        Ok(())
    }
}

/// True for a valid, unquoted-style SQL identifier of at most 63 bytes.
pub(crate) fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

pub(crate) fn check_schema(schema: &str) -> Result<(), StoreError> {
    if valid_identifier(schema) {
        Ok(())
    } else {
        Err(StoreError::InvalidConfig(format!(
            "invalid schema name {schema:?}: use letters, digits and _ (not first), at most 63 bytes"
        )))
    }
}
