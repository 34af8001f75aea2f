//! Running one statement on a leased connection: prepare (cached per connection), bind,
//! read and decode rows within the limits, and cancel it in PostgreSQL when the budget ends
//! or the caller goes away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use futures_util::{TryStreamExt, pin_mut};
use prost::Message;

use crate::codec::{Decoded, RawCell, bind_params, column_of, decode_cell, needs_server_text};
use crate::config::Limits;
use crate::error::Error;
use crate::pool::{Conn, Lease, Object, Prepared};
use crate::proto::{ExecutionInfo, QueryResponse, Row, Value};
use crate::sql::{command_tag, session};

/// One statement to run.
pub struct Spec<'a> {
    /// The SQL text.
    pub sql: &'a str,
    /// Values for `$1..$n`.
    pub params: &'a [Value],
    /// Rows to return; 0 means the server's limit.
    pub max_rows: u32,
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
    }
}

/// Checks a statement's text and parameters against the limits before it is sent.
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
    Ok(())
}

/// Bytes reserved in a response for the command tag, counters and `info`.
const RESPONSE_TRAILER: usize = 512;

/// Finds `sql` in the connection's statement cache, or prepares it there, working out once
/// what every later execution needs. Returns the statement and whether it was cached.
async fn prepare(conn: &Conn, sql: &str) -> Result<(Arc<Prepared>, bool), tokio_postgres::Error> {
    if let Some(p) = conn.statements().get(sql) {
        return Ok((p, true));
    }
    let statement = conn.prepare(sql).await?;
    let prepared = Arc::new(Prepared {
        columns: statement.columns().iter().map(column_of).collect(),
        needs_server_text: statement
            .columns()
            .iter()
            .any(|c| needs_server_text(c.type_())),
        changes_session: session::may_change_session(sql),
        report_key: crate::sql::fingerprint::key_of(sql),
        tag: command_tag::shape(sql),
        sql: sql.into(),
        statement,
    });
    conn.statements().insert(prepared.clone());
    Ok((prepared, false))
}

/// PostgreSQL's word that a cached statement no longer fits the schema ("cached plan must
/// not change result type") or no longer exists: it did not run, so it can be prepared
/// afresh and sent again.
fn stale_statement(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code == "26000" || (code == "0A000" && db.message().contains("cached plan"))
    })
}

/// A statement that failed, and whether it may have run in PostgreSQL: what decides if it
/// can be sent again.
#[derive(Debug)]
pub struct Failed {
    /// The error.
    pub error: Error,
    /// False when it failed before its execution was sent (prepare, bind, a connection
    /// already closed): running it again cannot run it twice.
    pub may_have_run: bool,
}

impl<E: Into<Error>> From<E> for Failed {
    /// Errors by default count as "may have run": the safe assumption.
    fn from(e: E) -> Self {
        Failed {
            error: e.into(),
            may_have_run: true,
        }
    }
}

fn not_run(e: impl Into<Error>) -> Failed {
    Failed {
        error: e.into(),
        may_have_run: false,
    }
}

/// A statement whose execution has been sent: its rows are read from `rows`.
pub struct Started {
    /// The result rows as PostgreSQL sends them.
    pub rows: tokio_postgres::RowStream,
    /// The statement and what is known about it.
    pub prepared: Arc<Prepared>,
    /// The statement was already prepared on this connection.
    pub cached: bool,
    /// When execution was sent.
    pub at: Instant,
}

/// Prepares (or finds), binds and sends `spec` for execution. A cached statement the
/// schema changed under is dropped, prepared afresh and sent once more.
pub async fn start(conn: &Conn, spec: &Spec<'_>) -> Result<Started, Failed> {
    let (prepared, cached) = prepare(conn, spec.sql).await.map_err(not_run)?;
    match send(conn, &prepared, spec).await {
        Err(Failed {
            error: Error::Postgres(e),
            ..
        }) if cached && stale_statement(&e) => {
            conn.statements().invalidate(spec.sql);
            let (prepared, _) = prepare(conn, spec.sql).await.map_err(not_run)?;
            let (rows, at) = send(conn, &prepared, spec).await?;
            Ok(Started {
                rows,
                prepared,
                cached: false,
                at,
            })
        }
        sent => {
            let (rows, at) = sent?;
            Ok(Started {
                rows,
                prepared,
                cached,
                at,
            })
        }
    }
}

/// Binds the parameters and sends the execution.
async fn send(
    conn: &Conn,
    prepared: &Prepared,
    spec: &Spec<'_>,
) -> Result<(tokio_postgres::RowStream, Instant), Failed> {
    let params = bind_params(prepared.statement.params(), spec.params).map_err(not_run)?;
    let at = Instant::now();
    // A connection already closed sends nothing: tokio-postgres fails the request locally.
    let closed_before = conn.is_closed();
    let rows = conn
        .query_raw(&prepared.statement, params.iter())
        .await
        .map_err(|e| Failed {
            may_have_run: !closed_before,
            error: e.into(),
        })?;
    Ok((rows, at))
}

mod server_text;

pub use server_text::{PendingText, fill_server_text};

/// Decodes one row; cells that need PostgreSQL's text output get a placeholder and an entry
/// in `pending` (as row `index`).
pub fn decode_row(
    row: &tokio_postgres::Row,
    index: usize,
    pending: &mut Vec<PendingText>,
) -> Result<Row, Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let RawCell(raw) = row.try_get(i)?;
        match decode_cell(col.type_(), raw)? {
            Decoded::Value(v) => values.push(v),
            Decoded::NeedsServer => {
                let raw = raw.unwrap_or_default().to_vec();
                pending.push((index, i, col.type_().clone(), raw));
                values.push(Value::default());
            }
        }
    }
    Ok(Row { values })
}

/// The row cap for a request's `max_rows` (0 = the server's limit, larger asks capped).
pub fn row_cap(max_rows: u32, limits: &Limits) -> u64 {
    match max_rows {
        0 => limits.max_rows,
        n => n.min(limits.max_rows),
    }
    .into()
}

/// Runs `spec` on `client` and collects its result within `limits`.
pub async fn run(conn: &Conn, spec: &Spec<'_>, limits: &Limits) -> Result<Executed, Failed> {
    let Started {
        rows: stream,
        prepared,
        cached,
        at: started,
    } = start(conn, spec).await?;
    let columns = prepared.columns.clone();
    let max_rows = row_cap(spec.max_rows, limits);
    pin_mut!(stream);
    let mut rows: Vec<Row> = Vec::new();
    let mut pending = Vec::new();
    // The response is counted as it grows, so an oversized result fails cleanly here rather
    // than in tonic's encoder after all of it was built.
    let mut bytes = RESPONSE_TRAILER + columns.iter().map(|c| c.encoded_len() + 2).sum::<usize>();
    let mut seen = 0u64;
    while let Some(row) = stream.try_next().await? {
        seen += 1;
        // Rows past the limit are read, not decoded, so the count and the command tag stay
        // exact and the connection is left ready for the next statement.
        if seen > max_rows {
            continue;
        }
        let row = decode_row(&row, rows.len(), &mut pending)?;
        bytes += row.encoded_len() + 4;
        if bytes > limits.max_message_bytes {
            return Err(Error::ResponseTooLarge {
                limit: limits.max_message_bytes,
            }
            .into());
        }
        rows.push(row);
    }
    let rows_affected = stream.rows_affected().unwrap_or(0);
    fill_server_text(conn, &mut rows, pending).await?;
    let execution_time = started.elapsed();

    Ok(Executed {
        response: QueryResponse {
            columns,
            rows,
            rows_affected,
            command_tag: prepared.tag.render(rows_affected),
            truncated: seen > max_rows,
            info: None,
        },
        cached,
        execution_time,
        changes_session: prepared.changes_session,
        report_key: prepared.report_key,
    })
}

/// A lease with a statement in flight. If it is dropped before [`InFlight::finish`] (the
/// caller went away, or the deadline passed) the statement is cancelled in PostgreSQL and
/// the connection discarded, so no orphan query keeps a backend busy and a late cancel can
/// never hit the next user of the connection.
pub struct InFlight {
    lease: Option<Lease>,
    cancel_sent: AtomicBool,
    discard: AtomicBool,
}

impl InFlight {
    /// Arms the guard for a lease about to run a statement.
    pub fn new(lease: Lease) -> Self {
        InFlight {
            lease: Some(lease),
            cancel_sent: AtomicBool::new(false),
            discard: AtomicBool::new(false),
        }
    }

    /// The connection.
    pub fn client(&self) -> &Conn {
        &self.lease.as_ref().expect("lease held until finish").conn
    }

    /// Sends PostgreSQL a CancelRequest for whatever runs on the connection now.
    pub fn cancel(&self) {
        if !self.cancel_sent.swap(true, Ordering::Relaxed) {
            crate::telemetry::record_cancel();
            // Made only when needed: building a cancel token copies connection settings.
            let token = self.client().cancel_token();
            let tls = self
                .lease
                .as_ref()
                .expect("lease held until finish")
                .tls
                .clone();
            spawn_cancel(async move {
                let _ = token.cancel_query(tls).await;
            });
        }
    }

    /// Closes the connection instead of returning it to the pool when finished.
    pub fn discard(&self) {
        self.discard.store(true, Ordering::Relaxed);
    }

    /// Finishes after `error`: when it stopped us reading a result PostgreSQL is still
    /// producing (too large, undecodable, nobody to send it to, no second connection for
    /// text output), the statement is cancelled
    /// and the connection discarded rather than left to drain a result no one wants.
    pub async fn finish_after_error(self, sql: &str, error: &Error) {
        if matches!(
            error,
            Error::ResponseTooLarge { .. } | Error::Decode(_) | Error::ClientGone | Error::Pool(_)
        ) {
            self.cancel();
        }
        self.finish_after(session::may_change_session(sql)).await;
    }

    /// Resets the session if the statement may have changed it, then finishes.
    pub async fn finish_after(self, changes_session: bool) {
        let doomed =
            self.cancel_sent.load(Ordering::Relaxed) || self.discard.load(Ordering::Relaxed);
        if changes_session
            && !doomed
            && !self.client().is_closed()
            && crate::pool::reset(self.client()).await.is_err()
        {
            self.discard();
        }
        self.finish();
    }

    /// The statement is over: the connection goes back to its pool, unless a cancel was
    /// sent or it was marked for discarding.
    pub fn finish(mut self) {
        if let Some(lease) = self.lease.take()
            && (self.cancel_sent.load(Ordering::Relaxed) || self.discard.load(Ordering::Relaxed))
        {
            drop(Object::take(lease.conn));
        }
    }
}

/// CancelRequests on their way. Shutdown waits for them, so that no statement is left
/// running in PostgreSQL, orphaned, after the process exits.
static CANCELS_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `cancel` in a task of its own, counted while it runs.
fn spawn_cancel(cancel: impl Future<Output = ()> + Send + 'static) {
    CANCELS_IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        cancel.await;
        CANCELS_IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Waits until every CancelRequest sent so far has been delivered, or `limit` has passed.
pub async fn cancels_delivered(limit: Duration) {
    let end = Instant::now() + limit;
    while CANCELS_IN_FLIGHT.load(Ordering::Relaxed) > 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let token = lease.conn.cancel_token();
            let already = self.cancel_sent.load(Ordering::Relaxed);
            let tls = lease.tls.clone();
            spawn_cancel(async move {
                if !already {
                    crate::telemetry::record_cancel();
                    let _ = token.cancel_query(tls).await;
                }
                drop(Object::take(lease.conn));
            });
        }
    }
}
