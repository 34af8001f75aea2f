//! Transaction: an interactive transaction over one bidirectional stream, as a lease on one
//! connection. One task per stream reads the client's messages in order, runs them, and
//! answers through a bounded channel, so a slow reader slows the task instead of growing
//! memory. However the stream ends without a commit, the transaction is rolled back at once:
//! a running statement is cancelled in PostgreSQL first and its connection discarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::time::timeout;
use tonic::{Request, Response, Status, Streaming};

mod held;

use held::Held;

use super::auth::Grant;
use super::outbound::{self, Outbound, Unsent};
use super::{BoxStream, State};
use crate::error::Error;
use crate::exec::{Around, Failed, InFlight, Spec};
use crate::proto::transaction_request::Action;
use crate::proto::transaction_response::Event;
use crate::proto::{
    BeginTransaction, IsolationLevel, Statement, StatementResult, TransactionBegun,
    TransactionCommitted, TransactionRequest, TransactionResponse, TransactionRolledBack,
    statement_result::Outcome,
};
use crate::sql::session;
use crate::telemetry::stats::Record;

/// Answers buffered ahead of a slow reader.
const BUFFERED_RESPONSES: usize = 16;
/// Margin by which PostgreSQL's own idle-in-transaction timeout trails ours, so ours fires
/// first and the client hears why.
const SERVER_IDLE_MARGIN: Duration = Duration::from_secs(5);
/// The longest idle timeout a client may ask for.
const MAX_IDLE: Duration = Duration::from_secs(86_400);

type Sender = Outbound<TransactionResponse>;

/// Starts the task that serves one Transaction stream.
pub(super) async fn transaction(
    state: Arc<State>,
    request: Request<Streaming<TransactionRequest>>,
) -> Result<Response<BoxStream<TransactionResponse>>, Status> {
    let grant = Grant::of(&request, state.config.read_only);
    let inbound = request.into_inner();
    let (tx, rx) = outbound::channel(BUFFERED_RESPONSES, state.config.stream_idle_timeout);
    tokio::spawn(async move {
        let mut lease = Held::default();
        let end = serve(&state, grant, inbound, &tx, &mut lease).await;
        lease.end().await;
        if lease.began {
            let outcome = match &end {
                Ok(()) => lease.outcome,
                Err(Error::TransactionIdleTimeout(_)) => "idle_timeout",
                Err(Error::TransactionTooLong(_)) => "max_duration",
                Err(Error::ShuttingDown) => "shutdown",
                Err(Error::CommitOutcomeUnknown { .. }) => "unknown",
                Err(Error::StreamStalled(_)) => "stalled",
                Err(_) => "error",
            };
            crate::telemetry::transaction_ended(outcome);
        }
        match end {
            Err(e @ Error::StreamStalled(_)) => tx.cut(Status::from(e)),
            Err(e) => tx.end_with(Status::from(e)).await,
            Ok(()) => {}
        }
    });
    Ok(Response::new(Box::pin(rx)))
}

/// What the next read from the client brought.
enum Next {
    Message(TransactionRequest),
    /// The client half-closed its side.
    End,
    /// The stream broke or the client cancelled.
    Gone,
    Idle,
    TooLong,
    /// The server is shutting down and its grace period is nearly over.
    Stopping,
    /// A message could not be decoded (why, as the codec said): the client's fault, so the
    /// stream ends with that error rather than quietly.
    Undecodable(String),
}

async fn next(
    state: &State,
    inbound: &mut Streaming<TransactionRequest>,
    tx: &Sender,
    idle: Duration,
    until: Option<Instant>,
) -> Next {
    tokio::select! {
        biased;
        _ = tx.closed() => Next::Gone,
        _ = crate::time::until(until) => Next::TooLong,
        _ = state.stopping() => Next::Stopping,
        m = timeout(idle, inbound.message()) => match m {
            Err(_) => Next::Idle,
            Ok(Ok(Some(m))) => Next::Message(m),
            Ok(Ok(None)) => Next::End,
            Ok(Err(status)) => match super::codec::undecodable(&status) {
                Some(why) => Next::Undecodable(why),
                None => Next::Gone,
            },
        },
    }
}

fn event(e: Event) -> Result<TransactionResponse, Status> {
    Ok(TransactionResponse { event: Some(e) })
}

/// The event that ends a transaction rolled back on the client's word, without an error.
fn rolled_back(transaction_id: String, reason: &str) -> Result<TransactionResponse, Status> {
    event(Event::RolledBack(TransactionRolledBack {
        transaction_id,
        reason: reason.into(),
        error: None,
    }))
}

/// A process-unique transaction id for logs and events.
fn new_transaction_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let boot = BOOT.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    format!("tx-{boot:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The BEGIN statement for the requested mode, with PostgreSQL's idle timeout set to trail
/// ours for this transaction only. In read-only mode (the setting, or a read-only token) the
/// transaction is READ ONLY whatever the client asked, and a first query follows at once: PostgreSQL lets `SET TRANSACTION
/// READ WRITE` through only before a transaction's first query, so the client never can.
fn begin_sql(b: &BeginTransaction, idle: Duration, read_only_mode: bool) -> String {
    let mut sql = String::from("BEGIN");
    match IsolationLevel::try_from(b.isolation).unwrap_or(IsolationLevel::Unspecified) {
        IsolationLevel::Unspecified => {}
        IsolationLevel::ReadCommitted => sql.push_str(" ISOLATION LEVEL READ COMMITTED"),
        IsolationLevel::RepeatableRead => sql.push_str(" ISOLATION LEVEL REPEATABLE READ"),
        IsolationLevel::Serializable => sql.push_str(" ISOLATION LEVEL SERIALIZABLE"),
    }
    if b.read_only || read_only_mode {
        sql.push_str(" READ ONLY");
    }
    if b.deferrable {
        sql.push_str(" DEFERRABLE");
    }
    let server_idle = (idle + SERVER_IDLE_MARGIN)
        .as_millis()
        .min(i32::MAX as u128);
    sql.push_str(&format!(
        "; SET LOCAL idle_in_transaction_session_timeout = {server_idle}"
    ));
    if read_only_mode {
        sql.push_str("; SELECT 1");
    }
    sql
}

/// The connection a transaction is leased: on a replica when it asks for one and is
/// read-only (SERIALIZABLE, which a standby cannot run, stays on the primary unless the
/// client insists with REPLICA_ONLY, and hears PostgreSQL's refusal), else as
/// [`crate::pool::Pools::acquire_transaction`] routes it.
async fn lease_for(
    state: &State,
    begin: &BeginTransaction,
    priority: crate::proto::Priority,
) -> Result<crate::pool::Lease, Error> {
    let route = super::routing::read_route(begin.read_from.as_ref(), "begin.read_from")?;
    if let Some(route) = route {
        if !begin.read_only {
            return Err(Error::invalid(
                "begin.read_from",
                "only a read-only transaction may be leased on a replica: set read_only",
            ));
        }
        let serializable = begin.isolation == IsolationLevel::Serializable as i32;
        if !(serializable && route.preference == crate::pool::Preference::ReplicaPreferred)
            && let Some(lease) = state.pools.acquire_read(&route, None).await?
        {
            return Ok(lease);
        }
        let priority = super::routing::fallback_priority(state, Some(&route), priority);
        return Ok(state.pools.acquire_transaction(priority, None).await?);
    }
    Ok(state.pools.acquire_transaction(priority, None).await?)
}

async fn serve(
    state: &State,
    grant: Grant,
    mut inbound: Streaming<TransactionRequest>,
    tx: &Sender,
    lease: &mut Held,
) -> Result<(), Error> {
    let default_idle = state.config.transaction_idle_timeout;
    let begin = match next(state, &mut inbound, tx, default_idle, None).await {
        Next::Message(TransactionRequest {
            action: Some(Action::Begin(b)),
        }) => b,
        Next::Message(TransactionRequest { action: None }) => {
            return Err(Error::invalid(
                "action",
                "empty message: set exactly one action",
            ));
        }
        Next::Message(_) => {
            return Err(Error::invalid("action", "the first message must be begin"));
        }
        Next::End | Next::Gone => return Ok(()),
        Next::Idle => return Err(Error::TransactionIdleTimeout(default_idle)),
        Next::TooLong => unreachable!("no duration limit before begin"),
        Next::Stopping => return Err(Error::ShuttingDown),
        Next::Undecodable(why) => return Err(Error::invalid("request", why)),
    };
    // A day at most: an absurd value from a client must not overflow the clock or hold a
    // connection indefinitely. Zero or negative is refused, as a negative Query timeout is:
    // taking it for "the default" would hide the client's mistake.
    let idle = match begin.idle_timeout.map(Duration::try_from) {
        None => default_idle,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => {
            return Err(Error::invalid(
                "begin.idle_timeout",
                format!(
                    "must be positive; leave it unset for the server's default ({} ms)",
                    default_idle.as_millis()
                ),
            ));
        }
    }
    .min(MAX_IDLE);
    let until = state
        .config
        .transaction_max_duration
        .map(|d| Instant::now() + d);
    let priority = grant.priority(begin.priority)?;
    let acquired = lease_for(state, &begin, priority).await?;
    let pool = acquired.pool;
    lease.conn = Some(InFlight::new(acquired));
    lease
        .client()
        .batch_execute(&begin_sql(&begin, idle, grant.read_only))
        .await?;
    lease.open = true;
    lease.began = true;
    lease.dirty = state.config.reset_always;
    crate::telemetry::transaction_began();
    let transaction_id = new_transaction_id();
    tracing::debug!(%transaction_id, pool, "transaction begun");
    let begun = TransactionBegun {
        transaction_id: transaction_id.clone(),
        pool: pool.to_owned(),
    };
    if tx.send(event(Event::Begun(begun))).await.is_err() {
        return Ok(());
    }
    let open = Open {
        state,
        tx,
        pool,
        want_lsn: begin.return_lsn && super::routing::on_primary(state, pool),
        idle,
        until,
        transaction_id,
    };
    open.serve(inbound, lease).await
}

/// A begun transaction and what serving it needs.
struct Open<'a> {
    state: &'a State,
    tx: &'a Sender,
    pool: &'static str,
    /// The client asked for the commit LSN, and the transaction is on the primary.
    want_lsn: bool,
    idle: Duration,
    /// When the maximum transaction duration ends it, if there is one.
    until: Option<Instant>,
    transaction_id: String,
}

impl Open<'_> {
    /// Serves the stream after BEGIN: statements in order, then commit or rollback.
    async fn serve(
        self,
        mut inbound: Streaming<TransactionRequest>,
        lease: &mut Held,
    ) -> Result<(), Error> {
        let Open {
            state,
            tx,
            idle,
            until,
            want_lsn,
            ..
        } = self;
        let transaction_id = self.transaction_id.clone();
        // The error that aborted the transaction, until a statement succeeds again (ROLLBACK TO
        // SAVEPOINT): PostgreSQL refuses everything else meanwhile.
        let mut aborted_by: Option<tonic_types::pb::Status> = None;
        loop {
            let request = match next(state, &mut inbound, tx, idle, until).await {
                Next::Message(m) => m,
                Next::End => {
                    // Half-closed without a commit: roll back and say so.
                    lease.end().await;
                    let _ = tx
                        .send(rolled_back(
                            transaction_id,
                            "the stream ended without a commit",
                        ))
                        .await;
                    return Ok(());
                }
                Next::Gone => return Ok(()),
                Next::Idle => return Err(Error::TransactionIdleTimeout(idle)),
                Next::Stopping => return Err(Error::ShuttingDown),
                Next::Undecodable(why) => return Err(Error::invalid("request", why)),
                Next::TooLong => {
                    return Err(Error::TransactionTooLong(
                        state.config.transaction_max_duration.unwrap_or_default(),
                    ));
                }
            };
            match request.action {
                None => {
                    return Err(Error::invalid(
                        "action",
                        "empty message: set exactly one action",
                    ));
                }
                Some(Action::Begin(_)) => {
                    return Err(Error::invalid(
                        "action",
                        "begin was already sent on this stream",
                    ));
                }
                Some(Action::Execute(stmt)) => {
                    let Some(result) = self.execute(lease, &stmt, &mut aborted_by).await? else {
                        return Ok(());
                    };
                    // A client that stops reading for the idle timeout (or the stream idle
                    // timeout, if shorter) is stuck: the transaction must not hold its
                    // connection for it.
                    match tx.send_within(event(Event::Result(result)), idle).await {
                        Ok(()) => {}
                        Err(Unsent::Gone) => return Ok(()),
                        Err(Unsent::Stalled) => {
                            return Err(Error::StreamStalled(idle.min(tx.idle())));
                        }
                    }
                }
                Some(Action::Rollback(_)) => {
                    lease.outcome = "rolled_back";
                    lease.end().await;
                    let _ = tx
                        .send(rolled_back(transaction_id, "rollback requested"))
                        .await;
                    return refuse_trailing(&mut inbound);
                }
                Some(Action::Commit(_)) => {
                    let outcome = commit(lease, &transaction_id, aborted_by, want_lsn).await?;
                    lease.outcome = match outcome {
                        Event::Committed(_) => "committed",
                        _ => "rolled_back",
                    };
                    lease.end().await;
                    let _ = tx.send(event(outcome)).await;
                    return refuse_trailing(&mut inbound);
                }
            }
        }
    }

    /// Runs one statement inside the transaction. `None` means the client went away meanwhile
    /// (the statement was cancelled and the connection discarded).
    async fn execute(
        &self,
        lease: &mut Held,
        stmt: &Statement,
        aborted_by: &mut Option<tonic_types::pb::Status>,
    ) -> Result<Option<StatementResult>, Error> {
        let (state, tx, pool, until) = (self.state, self.tx, self.pool, self.until);
        let answer = |outcome| {
            Some(StatementResult {
                request_id: stmt.request_id.clone(),
                outcome: Some(outcome),
            })
        };
        // Refused before sending: these leave the transaction as it was.
        let refused = crate::exec::validate(&stmt.sql, &stmt.params, &state.config.limits)
            .err()
            .or_else(|| {
                session::transaction_control(&stmt.sql).map(|cmd| {
                    Error::invalid(
                        "sql",
                        format!(
                            "{cmd} is not allowed here: use the begin, commit and rollback messages"
                        ),
                    )
                })
            });
        if let Some(e) = refused {
            return Ok(answer(Outcome::Error(e.to_rpc_status())));
        }
        let spec = Spec {
            sql: &stmt.sql,
            params: &stmt.params,
            max_rows: stmt.max_rows,
            // Inside the transaction: its BEGIN made it READ ONLY in read-only mode, and
            // its end resets.
            around: Around::default(),
        };
        let started = Instant::now();
        let result = tokio::select! {
            r = crate::exec::run(lease.client(), &spec, &state.config.limits) => r,
            _ = tx.closed() => {
                lease.abandon();
                return Ok(None);
            }
            _ = crate::time::until(until) => {
                lease.abandon();
                return Err(Error::TransactionTooLong(state.config.transaction_max_duration.unwrap_or_default()));
            }
            _ = state.stopping() => {
                lease.abandon();
                return Err(Error::ShuttingDown);
            }
        };
        let (rows, cached, report_key) = result.as_ref().map_or((0, false, None), |e| {
            (e.response.rows_affected, e.cached, Some(e.report_key))
        });
        state.stats.record(Record {
            rpc: "Transaction",
            pool,
            sql: &stmt.sql,
            took: started.elapsed(),
            ok: result.is_ok(),
            rows,
            cached,
            report_key,
        });
        Ok(match result {
            Ok(executed) => {
                *aborted_by = None;
                lease.dirty |= executed.changes_session;
                let mut response = executed.response;
                response.info = Some(crate::exec::execution_info(
                    pool,
                    executed.cached,
                    Duration::ZERO,
                    executed.execution_time,
                    1,
                ));
                answer(Outcome::Response(response))
            }
            Err(failed) => return self.failed(lease, stmt, failed, aborted_by).map(answer),
        })
    }

    /// What a statement that failed inside the transaction leaves: an in-band error while
    /// the transaction can go on (aborted or not), or the end of the stream when it cannot.
    fn failed(
        &self,
        lease: &mut Held,
        stmt: &Statement,
        failed: Failed,
        aborted_by: &mut Option<tonic_types::pb::Status>,
    ) -> Result<Outcome, Error> {
        use crate::error::Fault;
        if matches!(
            failed.error,
            Error::ResponseTooLarge { .. } | Error::RowTooLarge { .. } | Error::Decode(_)
        ) {
            // The result was not read to its end, so its outcome (a late error, say) is
            // unknown: the transaction cannot go on. Cancel, close, and say why.
            lease.abandon();
            return Err(failed.error);
        }
        lease.dirty |= session::may_change_session(&stmt.sql);
        if let Error::Postgres(e) = &failed.error {
            match Fault::of(e) {
                // PostgreSQL refused it: the transaction is aborted.
                None => {
                    aborted_by.get_or_insert_with(|| failed.error.to_rpc_status());
                }
                // The connection is gone, and the transaction with it.
                Some(Fault::Connection) => {
                    lease.open = false;
                    return Err(failed.error);
                }
                // Out of step with PostgreSQL: the connection cannot go on, nor may anyone
                // else have it.
                Some(Fault::Protocol) => {
                    lease.abandon();
                    return Err(failed.error);
                }
                // It could not be sent: the transaction is as it was.
                Some(Fault::Encode | Fault::Param(_)) => {}
            }
        }
        Ok(Outcome::Error(failed.error.to_rpc_status()))
    }
}

/// After the final event: a message the client already sent (execute after commit) is
/// misuse. Only what has already arrived is looked at; the stream then ends.
fn refuse_trailing(inbound: &mut Streaming<TransactionRequest>) -> Result<(), Error> {
    use futures_util::FutureExt;
    match inbound.message().now_or_never() {
        Some(Ok(Some(_))) => Err(Error::invalid(
            "action",
            "the transaction is over: nothing may follow commit or rollback",
        )),
        _ => Ok(()),
    }
}

/// Commits, or rolls back a transaction that an error aborted. A lost connection during
/// COMMIT leaves the outcome unknown: the stream ends UNAVAILABLE with the transaction id
/// learned just before, for `txid_status()`. With `want_lsn`, a commit is answered with the
/// commit LSN (empty if the connection was lost just after COMMIT succeeded: committed is
/// still the truth).
async fn commit(
    lease: &mut Held,
    transaction_id: &str,
    aborted_by: Option<tonic_types::pb::Status>,
    want_lsn: bool,
) -> Result<Event, Error> {
    let client = lease.client();
    if let Some(error) = aborted_by {
        return Ok(Event::RolledBack(TransactionRolledBack {
            transaction_id: transaction_id.to_owned(),
            reason: "the transaction was aborted by an earlier error".into(),
            error: Some(error),
        }));
    }
    // The id is learned before COMMIT is sent, in its own round trip, so that whatever
    // happens to COMMIT the client can be told which transaction to look up. The same query
    // fails if the transaction is aborted (or the connection gone), which COMMIT itself would
    // not say: it would quietly roll back.
    let txid = match client
        .query_one("SELECT txid_current_if_assigned()::text", &[])
        .await
    {
        Ok(row) => row.get::<_, Option<String>>(0),
        Err(e) if e.as_db_error().is_some() => {
            return Ok(Event::RolledBack(TransactionRolledBack {
                transaction_id: transaction_id.to_owned(),
                reason: "the transaction was aborted by an earlier error".into(),
                error: Some(Error::Postgres(e).to_rpc_status()),
            }));
        }
        // The connection is gone before COMMIT was sent: the transaction rolled back.
        Err(e) => {
            lease.open = false;
            return Err(Error::Postgres(e));
        }
    };
    let txid = Some(txid);
    match client.batch_execute("COMMIT").await {
        Ok(()) => {
            let mut commit_lsn = String::new();
            if want_lsn {
                match super::routing::commit_lsn(client).await {
                    Ok(text) => commit_lsn = text,
                    Err(e) => {
                        tracing::warn!(error = %e, "the commit LSN could not be read after COMMIT")
                    }
                }
            }
            lease.open = false;
            Ok(Event::Committed(TransactionCommitted {
                transaction_id: transaction_id.to_owned(),
                commit_lsn,
            }))
        }
        Err(e) if e.as_db_error().is_some() => {
            // PostgreSQL refused the commit (a serialization failure at commit): it rolled
            // the transaction back.
            lease.open = false;
            Ok(Event::RolledBack(TransactionRolledBack {
                transaction_id: transaction_id.to_owned(),
                reason: "commit failed".into(),
                error: Some(Error::Postgres(e).to_rpc_status()),
            }))
        }
        Err(_) => {
            lease.open = false;
            Err(Error::CommitOutcomeUnknown {
                wrote: txid.as_ref().map(Option::is_some),
                txid: txid.flatten(),
            })
        }
    }
}
