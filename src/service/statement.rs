//! Running one statement on a leased connection: prepare (cached per connection), bind,
//! read and decode rows within the limits, and cancel it in PostgreSQL when the budget ends
//! or the caller goes away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{ClientWrapper, Object};
use futures_util::{TryStreamExt, future::join_all, pin_mut};
use prost::Message;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{CancelToken, NoTls};

use super::command_tag::command_tag;
use super::session;
use crate::codec::{Decoded, RawCell, bind_params, column_of, decode_cell};
use crate::config::Limits;
use crate::error::Error;
use crate::pool::Lease;
use crate::proto::{QueryResponse, Row, Value, value::Kind as V};

/// One statement to run.
pub struct Spec<'a> {
    /// The SQL text.
    pub sql: &'a str,
    /// Values for `$1..$n`.
    pub params: &'a [Value],
    /// Rows to return; 0 means the server's limit.
    pub max_rows: u32,
    /// Prepared statements kept per connection; 0 turns the cache off.
    pub cache_size: usize,
}

/// What running a statement produced, before `info` is filled in.
pub struct Executed {
    /// The response without `info`.
    pub response: QueryResponse,
    /// The statement was already prepared on this connection.
    pub cached: bool,
    /// From sending the statement to its last row.
    pub execution_time: Duration,
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

/// Prepares `sql` through the connection's statement cache, keeping it within `cache_size`
/// statements (0 turns caching off). Returns the statement and whether it was cached.
async fn prepare(
    client: &ClientWrapper,
    sql: &str,
    cache_size: usize,
) -> Result<(tokio_postgres::Statement, bool), Error> {
    if cache_size == 0 {
        return Ok((client.prepare(sql).await?, false));
    }
    if client.statement_cache.size() >= cache_size {
        // deadpool's cache keeps no LRU order; starting over keeps it bounded. Dropped
        // statements are closed on the server by tokio-postgres.
        client.statement_cache.clear();
    }
    let before = client.statement_cache.size();
    let stmt = client.prepare_cached(sql).await?;
    Ok((stmt, client.statement_cache.size() == before))
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
    /// The result columns.
    pub columns: Vec<crate::proto::Column>,
    /// The statement was already prepared on this connection.
    pub cached: bool,
    /// Some column needs PostgreSQL's help to become text (see `needs_server_text`).
    pub needs_server_text: bool,
    /// When execution was sent.
    pub at: Instant,
}

/// Prepares, binds and sends `spec` for execution.
pub async fn start(client: &ClientWrapper, spec: &Spec<'_>) -> Result<Started, Failed> {
    // Preparing executes nothing, so a failure up to binding means the statement never ran.
    let (stmt, cached) = prepare(client, spec.sql, spec.cache_size)
        .await
        .map_err(not_run)?;
    let params = bind_params(stmt.params(), spec.params).map_err(not_run)?;
    let columns = stmt.columns().iter().map(column_of).collect();
    let needs_server_text = stmt
        .columns()
        .iter()
        .any(|c| crate::codec::needs_server_text(c.type_()));
    let at = Instant::now();
    // A connection already closed sends nothing: tokio-postgres fails the request locally.
    let closed_before = client.is_closed();
    let rows = client
        .query_raw(&stmt, params.iter())
        .await
        .map_err(|e| Failed {
            may_have_run: !closed_before,
            error: e.into(),
        })?;
    Ok(Started {
        rows,
        columns,
        cached,
        needs_server_text,
        at,
    })
}

/// A cell to be turned into text by PostgreSQL: (row index, column index, type, raw bytes).
pub type PendingText = (usize, usize, Type, Vec<u8>);

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
pub async fn run(
    client: &ClientWrapper,
    spec: &Spec<'_>,
    limits: &Limits,
) -> Result<Executed, Failed> {
    let Started {
        rows: stream,
        columns,
        cached,
        at: started,
        ..
    } = start(client, spec).await?;
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
    fill_server_text(client, &mut rows, pending).await?;
    let execution_time = started.elapsed();

    Ok(Executed {
        response: QueryResponse {
            columns,
            rows,
            rows_affected,
            command_tag: command_tag(spec.sql, rows_affected),
            truncated: seen > max_rows,
            info: None,
        },
        cached,
        execution_time,
    })
}

/// A value in its binary form, sent back to PostgreSQL as a parameter of its own type.
#[derive(Debug)]
struct RawParam<'a>(&'a [u8]);

impl ToSql for RawParam<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Asks PostgreSQL for the text output of values whose binary form is not decoded here
/// (extension types, tsvector, geometric types, ...). The requests are pipelined on the
/// connection, so a column of such values costs about one round trip.
pub async fn fill_server_text(
    client: &ClientWrapper,
    rows: &mut [Row],
    cells: Vec<PendingText>,
) -> Result<(), Error> {
    if cells.is_empty() {
        return Ok(());
    }
    let texts = join_all(cells.iter().map(|(_, _, ty, raw)| async move {
        let stmt = client
            .prepare_typed_cached("SELECT $1::text", std::slice::from_ref(ty))
            .await?;
        let row = client.query_one(&stmt, &[&RawParam(raw)]).await?;
        row.try_get::<_, String>(0)
    }))
    .await;
    for ((r, c, _, _), text) in cells.into_iter().zip(texts) {
        rows[r].values[c] = Value {
            kind: Some(V::TextValue(text?)),
        };
    }
    Ok(())
}

/// A lease with a statement in flight. If it is dropped before [`InFlight::finish`] (the
/// caller went away, or the deadline passed) the statement is cancelled in PostgreSQL and
/// the connection discarded, so no orphan query keeps a backend busy and a late cancel can
/// never hit the next user of the connection.
pub struct InFlight {
    lease: Option<Lease>,
    token: CancelToken,
    cancel_sent: AtomicBool,
    discard: AtomicBool,
}

impl InFlight {
    /// Arms the guard for a lease about to run a statement.
    pub fn new(lease: Lease) -> Self {
        let token = lease.conn.cancel_token();
        InFlight {
            lease: Some(lease),
            token,
            cancel_sent: AtomicBool::new(false),
            discard: AtomicBool::new(false),
        }
    }

    /// The connection.
    pub fn client(&self) -> &ClientWrapper {
        &self.lease.as_ref().expect("lease held until finish").conn
    }

    /// Sends PostgreSQL a CancelRequest for whatever runs on the connection now.
    pub fn cancel(&self) {
        if !self.cancel_sent.swap(true, Ordering::Relaxed) {
            let token = self.token.clone();
            tokio::spawn(async move { token.cancel_query(NoTls).await });
        }
    }

    /// Closes the connection instead of returning it to the pool when finished.
    pub fn discard(&self) {
        self.discard.store(true, Ordering::Relaxed);
    }

    /// Finishes after `error`: when it stopped us reading a result PostgreSQL is still
    /// producing (too large, undecodable, nobody to send it to), the statement is cancelled
    /// and the connection discarded rather than left to drain a result no one wants.
    pub async fn finish_after_error(self, sql: &str, error: &Error) {
        if matches!(
            error,
            Error::ResponseTooLarge { .. } | Error::Decode(_) | Error::ClientGone
        ) {
            self.cancel();
        }
        self.finish_after(sql).await;
    }

    /// Resets the session if `sql` may have changed it, then finishes.
    pub async fn finish_after(self, sql: &str) {
        if session::may_change_session(sql)
            && !self.client().is_closed()
            && session::reset(self.client()).await.is_err()
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

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let token = self.token.clone();
            let already = self.cancel_sent.load(Ordering::Relaxed);
            tokio::spawn(async move {
                if !already {
                    let _ = token.cancel_query(NoTls).await;
                }
                drop(Object::take(lease.conn));
            });
        }
    }
}
