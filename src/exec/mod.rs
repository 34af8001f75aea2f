//! Running one statement on a leased connection: prepare (cached per connection), bind,
//! read and decode rows within the limits, and cancel it in PostgreSQL when the budget ends
//! or the caller goes away.

mod guard;
mod prepare;
mod rows;
mod server_text;

use std::time::Duration;

use crate::config::Limits;
use crate::error::Error;
use crate::pool::Conn;
use crate::proto::{ExecutionInfo, QueryResponse, Value};

pub use guard::{InFlight, RESET_WAIT, cancels_delivered, spawn_cancel};
pub use prepare::{Failed, Started, Trailer, prepare, start, start_prepared};
pub use rows::{decode_row, read, row_cap, run, session_left_changed};
pub use server_text::{PendingText, fill_server_text};

/// One statement to run.
pub struct Spec<'a> {
    /// The SQL text.
    pub sql: &'a str,
    /// Values for `$1..$n`.
    pub params: &'a [Value],
    /// Rows to return; 0 means the server's limit.
    pub max_rows: u32,
    /// What is sent around an autocommit statement; nothing inside a transaction.
    pub around: Around,
}

/// What is sent with an autocommit statement, pipelined so that it costs no round trip of
/// its own: the READ ONLY transaction it runs in, and the session reset that follows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Around {
    /// Run it in `BEGIN READ ONLY … COMMIT`: no session default a function may have
    /// changed can make it writable.
    pub read_only: bool,
    /// Reset the session right after it, whatever it did.
    pub reset: bool,
}

/// What running a statement produced, before `info` is filled in.
pub struct Executed {
    /// The response without `info`.
    pub response: QueryResponse,
    /// The statement was already prepared on this connection.
    pub cached: bool,
    /// From sending the statement to its last row.
    pub execution_time: Duration,
    /// The statement may have left session state behind.
    pub changes_session: bool,
    /// Its key in the statement report.
    pub report_key: u64,
}

/// The `info` of a response: who served it, from the cache or not, how long it queued and
/// ran, and how many times it was sent.
pub fn execution_info(
    pool: &str,
    cached: bool,
    queue_time: Duration,
    execution_time: Duration,
    attempts: u32,
) -> ExecutionInfo {
    ExecutionInfo {
        pool: pool.to_owned(),
        statement_cached: cached,
        queue_time: prost_types::Duration::try_from(queue_time).ok(),
        execution_time: prost_types::Duration::try_from(execution_time).ok(),
        attempts,
        commit_lsn: String::new(),
    }
}

/// The error a statement on `conn` ended with, as its caller must hear it: the connection
/// closed by its size guard means a row too large for any response, not a lost database
/// (which a retry would only make worse).
pub fn explain(conn: &Conn, error: Error, limits: &Limits) -> Error {
    match (&error, conn.refused_message()) {
        (Error::Postgres(e), Some(size)) if e.as_db_error().is_none() => Error::RowTooLarge {
            size,
            limit: limits.max_message_bytes,
        },
        _ => error,
    }
}

/// What to use instead of a COPY to or from the client.
fn copy_advice(statement: &str) -> &'static str {
    match statement {
        "COPY FROM STDIN" => {
            "the sidecar does not carry PostgreSQL's copy sub-protocol (and COPY FROM a file \
             reads the database server's disk, not the client's). Load rows with one \
             statement and an array parameter per column, INSERT INTO t (a, b) SELECT * FROM \
             unnest($1::int[], $2::text[]), or with batched INSERTs in a Transaction"
        }
        _ => {
            "the sidecar does not carry PostgreSQL's copy sub-protocol (and COPY TO a file \
             writes to the database server's disk, not the client's). Read the rows with \
             StreamQuery, which streams any number of them in bounded chunks"
        }
    }
}

/// Checks a statement's text and parameters against the limits before it is sent, and
/// refuses what PostgreSQL could not be sent or answered through the sidecar.
pub fn validate(sql: &str, params: &[Value], limits: &Limits) -> Result<(), Error> {
    if sql.trim().is_empty() {
        return Err(Error::invalid("sql", "must contain a statement"));
    }
    if sql.len() > limits.max_sql_bytes {
        return Err(Error::invalid(
            "sql",
            format!(
                "is {} bytes; the limit is {}",
                sql.len(),
                limits.max_sql_bytes
            ),
        ));
    }
    if params.len() > limits.max_params {
        return Err(Error::invalid(
            "params",
            format!(
                "{} values; the limit is {}",
                params.len(),
                limits.max_params
            ),
        ));
    }
    // PostgreSQL's protocol ends a string at NUL, so tokio-postgres cannot even encode
    // it: refused here, it is a clear INVALID_ARGUMENT rather than a failure to send
    // that looks like a lost connection.
    if let Some(at) = sql.find('\0') {
        return Err(Error::invalid(
            "sql",
            format!("contains a NUL character (at byte {at}), which PostgreSQL does not accept"),
        ));
    }
    if let Some(statement) = crate::sql::copy_with_client(sql) {
        return Err(Error::Unsupported {
            statement,
            advice: copy_advice(statement),
        });
    }
    Ok(())
}
