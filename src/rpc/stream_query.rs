//! StreamQuery: one statement whose rows flow to the client in bounded chunks. The client's
//! reading paces everything: a full outbound channel stops us reading rows, which stops
//! tokio-postgres reading the socket, which stops PostgreSQL sending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{TryStreamExt, pin_mut};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::deadline::Budget;
use super::{BoxStream, State};
use crate::error::Error;
use crate::exec::{InFlight, Spec, decode_row, fill_server_text};
use crate::pool::Lease;
use crate::proto::{Priority, QueryRequest, QueryResponse};
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
    let req = request.into_inner();
    super::query::validate(&req, &state)?;
    let priority = Priority::try_from(req.priority).unwrap_or(Priority::Unspecified);
    let lease = state
        .pools
        .acquire(priority, budget.stop_at)
        .await
        .map_err(Error::from)?;
    let pool = lease.pool;
    let (tx, rx) = mpsc::channel(BUFFERED_CHUNKS);
    tokio::spawn(async move {
        let result = run(&state, &req, lease, budget, &tx, priority).await;
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
        if let Err(e) = result {
            let _ = tx.send(Err(Status::from(e))).await;
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

type Sender = mpsc::Sender<Result<QueryResponse, Status>>;

/// What a finished stream reports to the figures.
#[derive(Debug, Clone, Copy)]
struct Served {
    /// Rows returned or affected.
    rows: u64,
    /// The statement was already prepared on the connection.
    cached: bool,
    /// Its statement-report key.
    report_key: u64,
}

/// Runs the statement and streams its rows; `Ok(None)` when the client went away.
async fn run(
    state: &State,
    req: &QueryRequest,
    lease: Lease,
    budget: Budget,
    tx: &Sender,
    priority: Priority,
) -> Result<Option<Served>, Error> {
    let (pool, queue_time) = (lease.pool, lease.queue_time);
    let inflight = InFlight::new(lease);
    let spec = Spec {
        sql: &req.sql,
        params: &req.params,
        max_rows: req.max_rows,
    };
    let produce = produce(state, &inflight, &spec, tx, priority, budget);
    let result = tokio::select! {
        r = produce => r.map(|(mut last, produced)| {
            last.info = Some(crate::exec::execution_info(pool, produced.cached, queue_time, produced.execution_time, 1));
            (last, produced)
        }),
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
    match result {
        Ok((last, produced)) => {
            let served = Served {
                rows: last.rows_affected,
                cached: produced.cached,
                report_key: produced.report_key,
            };
            if tx.send(Ok(last)).await.is_ok() {
                inflight.finish_after(produced.changes_session).await;
            }
            Ok(Some(served))
        }
        Err(e) => {
            inflight.finish_after_error(spec.sql, &e).await;
            Err(e)
        }
    }
}

/// What producing the stream learned, beside its last message.
struct Produced {
    cached: bool,
    execution_time: Duration,
    changes_session: bool,
    report_key: u64,
}

/// Streams every chunk but the last, which it returns with what was learned.
async fn produce(
    state: &State,
    inflight: &InFlight,
    spec: &Spec<'_>,
    tx: &Sender,
    priority: Priority,
    budget: Budget,
) -> Result<(QueryResponse, Produced), Error> {
    let client = inflight.client();
    let started = crate::exec::start(client, spec)
        .await
        .map_err(|f| f.error)?;
    // Text for exotic types is asked of PostgreSQL on a second connection: this one is
    // busy streaming.
    let helper = if started.prepared.needs_server_text {
        Some(state.pools.acquire(priority, budget.stop_at).await?)
    } else {
        None
    };
    let cap = match spec.max_rows {
        0 => u64::MAX,
        n => n.into(),
    };
    let chunk_bytes = CHUNK_BYTES.min(state.config.limits.max_message_bytes / 2);
    let mut chunk = QueryResponse {
        columns: started.prepared.columns.clone(),
        ..Default::default()
    };
    let (mut bytes, mut seen, mut pending) = (0usize, 0u64, Vec::new());
    let stream = started.rows;
    pin_mut!(stream);
    while let Some(row) = stream.try_next().await? {
        seen += 1;
        if seen > cap {
            continue;
        }
        let row = decode_row(&row, chunk.rows.len(), &mut pending)?;
        bytes += row.encoded_len();
        chunk.rows.push(row);
        if chunk.rows.len() >= CHUNK_ROWS || bytes >= chunk_bytes {
            if let Some(h) = &helper {
                fill_server_text(&h.conn, &mut chunk.rows, std::mem::take(&mut pending)).await?;
            }
            let full = std::mem::take(&mut chunk);
            bytes = 0;
            // A client that stops reading for as long as a transaction may idle is gone.
            let stalled = state.config.transaction_idle_timeout;
            if !matches!(
                tokio::time::timeout(stalled, tx.send(Ok(full))).await,
                Ok(Ok(()))
            ) {
                return Err(Error::ClientGone);
            }
        }
    }
    if let Some(h) = &helper {
        fill_server_text(&h.conn, &mut chunk.rows, pending).await?;
    }
    let rows_affected = stream.rows_affected().unwrap_or(0);
    chunk.rows_affected = rows_affected;
    chunk.command_tag = started.prepared.tag.render(rows_affected);
    chunk.truncated = seen > cap;
    let produced = Produced {
        cached: started.cached,
        execution_time: started.at.elapsed(),
        changes_session: started.prepared.changes_session,
        report_key: started.prepared.report_key,
    };
    Ok((chunk, produced))
}
