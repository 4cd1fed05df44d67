//! The writers' statements: built as text with every value inlined as a
//! literal, and sent in as few round trips as the size bound allows.

use super::Dialect;
use sqlx::Executor;
use std::marker::PhantomData;

/// SQL text sent in one round trip (several statements), under MySQL's
/// default 16 MiB packet even with hex doubling a full INSERT.
const BYTES_PER_SCRIPT: usize = 8 << 20;

/// A one-off statement of the writers, whose shape (row count, tables)
/// changes from group to group, with its values inlined as literals (see
/// [`Dialect::literal`]) and sent over the simple/text protocol: one round
/// trip, no statement to prepare and close. That halves the cost of a group
/// on PostgreSQL, and on MySQL it avoids the CLOSE of a one-off prepared
/// statement, which the server does not answer and which therefore holds the
/// next request back until the delayed ACK (~40 ms; sqlx leaves Nagle on).
pub(super) struct Statement<DB: Dialect> {
    pub(super) sql: String,
    dialect: PhantomData<DB>,
}

impl<DB> Statement<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    pub(super) fn new(sql: &str) -> Self {
        Statement {
            sql: sql.to_string(),
            dialect: PhantomData,
        }
    }

    pub(super) fn sql(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    pub(super) fn text(&mut self, value: &str) -> &mut Self {
        DB::literal(&mut self.sql, value);
        self
    }

    pub(super) fn int(&mut self, value: i64) -> &mut Self {
        self.sql.push_str(&value.to_string());
        self
    }

    fn run(self) -> sqlx::RawSql {
        // Safe: every value went through `Dialect::literal` or is a number.
        sqlx::raw_sql(sqlx::AssertSqlSafe(self.sql))
    }

    /// Several statements, as few round trips as the size bound allows
    /// (both servers take `;`-separated scripts over this protocol); the
    /// first failing statement stops the rest and is the error.
    pub(super) async fn execute_all(
        statements: Vec<Statement<DB>>,
        conn: &mut DB::Connection,
    ) -> Result<(), sqlx::Error> {
        let mut script: Option<Statement<DB>> = None;
        for statement in statements {
            script = Some(match script {
                Some(mut script) if script.sql.len() + statement.sql.len() < BYTES_PER_SCRIPT => {
                    script.sql("; ").sql(&statement.sql);
                    script
                }
                Some(full) => {
                    full.run().execute(&mut *conn).await?;
                    statement
                }
                None => statement,
            });
        }
        if let Some(script) = script {
            script.run().execute(conn).await?;
        }
        Ok(())
    }

    pub(super) async fn fetch_all(
        self,
        conn: &mut DB::Connection,
    ) -> Result<Vec<DB::Row>, sqlx::Error> {
        self.run().fetch_all(conn).await
    }
}
