//! StreamQuery: one statement whose rows flow to the client in bounded chunks. The client's
//! reading paces everything: a full outbound channel stops us reading rows, which stops
//! tokio-postgres reading the socket, which stops PostgreSQL sending. A client that takes
//! nothing for the stream idle timeout has its stream ended and its statement cancelled:
//! PostgreSQL blocked writing to us is out of reach of statement_timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use prost::Message;
use tonic::{Request, Response, Status};

use super::auth::Grant;
use super::deadline::Budget;
use super::outbound::{self, Outbound, Unsent};
use super::{BoxStream, State};
use crate::error::Error;
use crate::exec::{InFlight, PendingText, Spec, Trailer, decode_row, fill_server_text};
use crate::pool::Lease;
use crate::pool::{Conn, Prepared};
use crate::proto::{QueryRequest, QueryResponse};
use crate::telemetry::stats::Record;

/// Most rows in one message.
const CHUNK_ROWS: usize = 1000;
/// Most row bytes in one message, also kept under half the message limit.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Messages buffered ahead of the client.
const BUFFERED_CHUNKS: usize = 2;

/// Serves one StreamQuery call: checks and a connection first (errors end the call at
/// once), then a task that streams the rows.
pub(super) async fn stream_query(
    state: Arc<State>,
    request: Request<QueryRequest>,
) -> Result<Response<BoxStream<QueryResponse>>, Status> {
    let start = Instant::now();
    let budget = Budget::of_query(start, &request);
    let grant = Grant::of(&request, state.config.read_only);
    let req = request.into_inner();
    super::query::validate(&req, &state)?;
    let priority = grant.priority(req.priority)?;
    let route = super::routing::read_route(req.read_from.as_ref(), "read_from")?;
    let priority = super::routing::fallback_priority(&state, route.as_ref(), priority);
    let replica = match &route {
        Some(route) => state.pools.acquire_read(route, budget.stop_at).await,
        None => Ok(None),
    };
    let lease = match replica.map_err(Error::from)? {
        Some(lease) => lease,
        None => state
            .pools
            .acquire(priority, budget.stop_at)
            .await
            .map_err(Error::from)?,
    };
    let pool = lease.pool;
    let (tx, rx) = outbound::channel(BUFFERED_CHUNKS, state.config.stream_idle_timeout);
    tokio::spawn(async move {
        let result = run(&state, &req, lease, grant, budget, &tx).await;
        let served = result.as_ref().ok().copied().flatten();
        state.stats.record(Record {
            rpc: "StreamQuery",
            pool,
            sql: &req.sql,
            took: start.elapsed(),
            ok: result.is_ok(),
            rows: served.map_or(0, |s| s.rows),
            cached: served.is_some_and(|s| s.cached),
            report_key: served.map(|s| s.report_key),
        });
        match result {
            Err(e @ Error::StreamStalled(_)) => tx.cut(Status::from(e)),
            Err(e) => tx.end_with(Status::from(e)).await,
            Ok(_) => {}
        }
    });
    Ok(Response::new(Box::pin(rx)))
}

type Sender = Outbound<QueryResponse>;

/// Runs the statement and streams its rows; `Ok(None)` when the client went away.
async fn run(
    state: &State,
    req: &QueryRequest,
    lease: Lease,
    grant: Grant,
    budget: Budget,
    tx: &Sender,
) -> Result<Option<Produced>, Error> {
    let (pool, queue_time) = (lease.pool, lease.queue_time);
    let inflight = InFlight::new(lease);
    let spec = Spec {
        sql: &req.sql,
        params: &req.params,
        max_rows: req.max_rows,
        around: super::autocommit(state, grant),
    };
    let produce = produce(state, &inflight, &spec, tx);
    let want_lsn = req.return_lsn && super::routing::on_primary(state, pool);
    let result = tokio::select! {
        r = produce => match r {
            Ok((mut last, produced)) => {
                let mut info = crate::exec::execution_info(pool, produced.cached, queue_time, produced.execution_time, 1);
                if want_lsn {
                    // Committed already: a failure to read the LSN leaves it empty, not the
                    // statement failed.
                    match super::routing::commit_lsn(inflight.client()).await {
                        Ok(text) => info.commit_lsn = text,
                        Err(e) => tracing::warn!(error = %e, "the commit LSN could not be read after a statement"),
                    }
                }
                last.info = Some(info);
                Ok((last, produced))
            }
            Err(e) => Err(e),
        },
        // The client went away: dropping `inflight` below cancels the statement.
        _ = tx.closed() => return Ok(None),
        _ = crate::time::until(budget.stop_at) => {
            inflight.cancel();
            Err(Error::DeadlineExceeded { cause: None })
        }
        // Shutdown's grace is nearly over: stop the statement and say why.
        _ = state.stopping() => {
            inflight.cancel();
            Err(Error::ShuttingDown)
        }
    };
    let limit = state.config.limits.max_message_bytes;
    match result.and_then(|(last, produced)| Ok((super::chunks::fit(last, limit)?, produced))) {
        Ok((last, produced)) => match send_all(tx, last).await {
            Ok(()) => {
                inflight.finish_after(produced.changes_session).await;
                Ok(Some(produced))
            }
            // Dropping `inflight` discards the connection: the client never heard the end.
            Err(Unsent::Gone) => Ok(None),
            // The statement is over and its connection fit for reuse; only the client is
            // stuck.
            Err(Unsent::Stalled) => {
                inflight.finish_after(produced.changes_session).await;
                Err(Error::StreamStalled(tx.idle()))
            }
        },
        Err(e) => {
            let e = crate::exec::explain(inflight.client(), e, &state.config.limits);
            inflight.finish_after_error(spec.sql, &e).await;
            Err(e)
        }
    }
}

/// What producing the stream learned, beside its last message; also what a finished
/// stream reports to the figures.
#[derive(Debug, Clone, Copy)]
struct Produced {
    /// Rows returned or affected.
    rows: u64,
    /// The statement was already prepared on the connection.
    cached: bool,
    /// From the statement's start to its last row.
    execution_time: Duration,
    /// The statement may have changed session state, so the connection is reset.
    changes_session: bool,
    /// Its statement-report key.
    report_key: u64,
}

/// Where the rows come from. A statement whose values all decode here streams straight from
/// its execution. One that needs PostgreSQL's text output runs, when it is a plain query, as
/// a cursor fetched a batch at a time, so that between batches the same connection is free
/// to turn the batch's cells into text; anything else is read whole first (see `produce`).
enum Source<'a> {
    Rows(std::pin::Pin<Box<tokio_postgres::RowStream>>, Trailer<'a>),
    Cursor {
        fetch: tokio_postgres::Statement,
        batch: std::collections::VecDeque<tokio_postgres::Row>,
        done: bool,
        seen: u64,
    },
}

/// The cursor a statement needing text output is read through, in its own transaction.
const CURSOR: &str = "pgsidecar_stream";

impl Source<'_> {
    /// Declares the cursor for `prepared` with the request's parameters, in a transaction
    /// (READ ONLY in read-only mode).
    async fn cursor(client: &Conn, prepared: &Prepared, spec: &Spec<'_>) -> Result<Self, Error> {
        let begin = match spec.around.read_only {
            true => "BEGIN READ ONLY",
            false => "BEGIN",
        };
        client.batch_execute(begin).await?;
        let declare = client
            .prepare_typed(
                &format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR {}", spec.sql),
                prepared.statement.params(),
            )
            .await?;
        let params = crate::codec::bind_params(declare.params(), spec.params)?;
        client.execute_raw(&declare, params.iter()).await?;
        let fetch = client
            .prepare(&format!("FETCH FORWARD {CHUNK_ROWS} FROM {CURSOR}"))
            .await?;
        Ok(Source::Cursor {
            fetch,
            batch: Default::default(),
            done: false,
            seen: 0,
        })
    }

    async fn next(&mut self, client: &Conn) -> Result<Option<tokio_postgres::Row>, Error> {
        match self {
            Source::Rows(rows, _) => Ok(rows.try_next().await?),
            Source::Cursor {
                fetch,
                batch,
                done,
                seen,
                ..
            } => {
                if batch.is_empty() && !*done {
                    // Read whole, so the connection is idle again before the next await.
                    let rows: Vec<tokio_postgres::Row> = client.query(&*fetch, &[]).await?;
                    *done = rows.len() < CHUNK_ROWS;
                    batch.extend(rows);
                }
                let row = batch.pop_front();
                *seen += u64::from(row.is_some());
                Ok(row)
            }
        }
    }

    /// Rows the statement produced (or affected), once every row was read, and whether
    /// what followed it failed (leaving the session in doubt); ends the cursor's
    /// transaction.
    async fn finish(self, client: &Conn) -> Result<(u64, bool), Error> {
        match self {
            Source::Rows(rows, trailer) => {
                let affected = rows.rows_affected().unwrap_or(0);
                Ok((affected, trailer.finish().await.is_err()))
            }
            Source::Cursor { seen, .. } => {
                client
                    .batch_execute(&format!("CLOSE {CURSOR}; COMMIT"))
                    .await?;
                Ok((seen, false))
            }
        }
    }
}

/// Streams every chunk but the last, which it returns with what was learned.
async fn produce(
    state: &State,
    inflight: &InFlight,
    spec: &Spec<'_>,
    tx: &Sender,
) -> Result<(QueryResponse, Produced), Error> {
    let client = inflight.client();
    let (prepared, cached) = crate::exec::prepare(client, spec.sql).await?;
    let by_cursor = prepared.needs_server_text && crate::sql::is_cursor_query(spec.sql);
    let at = std::time::Instant::now();
    let (mut source, prepared, cached) = if by_cursor {
        // A failure inside the cursor's transaction leaves it open: that connection is
        // closed, not reused.
        inflight.discard();
        let source = Source::cursor(client, &prepared, spec).await?;
        (source, prepared, cached)
    } else {
        let started = crate::exec::start_prepared(client, prepared, cached, spec)
            .await
            .map_err(|f| f.error)?;
        let source = Source::Rows(Box::pin(started.rows), started.trailer);
        (source, started.prepared, started.cached)
    };
    // A statement that needs text output but cannot be a cursor (a write with RETURNING,
    // SHOW …) keeps its connection busy until its last row: its chunks are held, within the
    // response limit, and get their text and go out once it has finished.
    let hold = prepared.needs_server_text && !by_cursor;
    let hold_limit = state.config.limits.max_message_bytes;
    let mut held: Vec<(QueryResponse, Vec<PendingText>)> = Vec::new();
    let mut held_bytes = 0usize;
    let cap = match spec.max_rows {
        0 => u64::MAX,
        n => n.into(),
    };
    let chunk_bytes = CHUNK_BYTES.min(state.config.limits.max_message_bytes / 2);
    let limit = state.config.limits.max_message_bytes;
    let mut chunk = QueryResponse {
        columns: prepared.columns.clone(),
        ..Default::default()
    };
    let (mut bytes, mut seen, mut pending) = (0usize, 0u64, Vec::new());
    while let Some(row) = source.next(client).await? {
        seen += 1;
        if seen > cap {
            continue;
        }
        let row = decode_row(&row, chunk.rows.len(), &mut pending)?;
        let row_len = row.encoded_len();
        // Too large for any message already (text still to fill only adds to it).
        if row_len > limit {
            return Err(Error::ResponseTooLarge { limit });
        }
        bytes += row_len;
        chunk.rows.push(row);
        if hold {
            held_bytes += row_bytes(&chunk);
            if held_bytes > hold_limit {
                return Err(Error::HeldTooLarge { limit: hold_limit });
            }
        }
        if chunk.rows.len() >= CHUNK_ROWS || bytes >= chunk_bytes {
            let full = std::mem::take(&mut chunk);
            let texts = std::mem::take(&mut pending);
            bytes = 0;
            if hold {
                held.push((full, texts));
            } else {
                send(client, tx, full, texts, limit).await?;
            }
        }
    }
    let (rows_affected, trailer_failed) = source.finish(client).await?;
    if by_cursor {
        // The cursor's transaction is over: the connection is reusable again.
        inflight.keep();
    }
    for (full, texts) in held {
        send(client, tx, full, texts, limit).await?;
    }
    fill_server_text(client, &mut chunk.rows, pending).await?;
    chunk.rows_affected = rows_affected;
    chunk.command_tag = prepared.tag.render(rows_affected);
    chunk.truncated = seen > cap;
    let produced = Produced {
        rows: rows_affected,
        cached,
        execution_time: at.elapsed(),
        // The cursor's statements are not followed by a reset: the guard resets always.
        changes_session: crate::exec::session_left_changed(&prepared, spec)
            || trailer_failed
            || (by_cursor && spec.around.reset),
        report_key: prepared.report_key,
    };
    Ok((chunk, produced))
}

/// The encoded size of the row just pushed onto `chunk`, with its framing.
fn row_bytes(chunk: &QueryResponse) -> usize {
    chunk.rows.last().map_or(0, |r| r.encoded_len() + 4)
}

/// Fills a chunk's text cells on the (idle) connection and sends it, in messages within
/// `limit`, waiting at most the stream idle timeout for the client to make room.
async fn send(
    client: &Conn,
    tx: &Sender,
    mut chunk: QueryResponse,
    texts: Vec<PendingText>,
    limit: usize,
) -> Result<(), Error> {
    fill_server_text(client, &mut chunk.rows, texts).await?;
    send_all(tx, super::chunks::fit(chunk, limit)?)
        .await
        .map_err(|unsent| match unsent {
            Unsent::Gone => Error::ClientGone,
            Unsent::Stalled => Error::StreamStalled(tx.idle()),
        })
}

/// Sends `parts` in order, stopping at the first that cannot be sent.
async fn send_all(tx: &Sender, parts: Vec<QueryResponse>) -> Result<(), Unsent> {
    for part in parts {
        tx.send(Ok(part)).await?;
    }
    Ok(())
}
