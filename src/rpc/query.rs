//! Query: one statement in autocommit on a pooled connection, within the request's budget,
//! sent again only when that is safe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::timeout_at;
use tokio_postgres::error::SqlState;
use tonic::{Request, Response, Status};

use super::State;
use super::auth::Grant;
use super::deadline::Budget;
use crate::error::Error;
use crate::exec::{Around, Executed, Failed, InFlight, Spec};
use crate::proto::{QueryRequest, QueryResponse};
use crate::telemetry::stats::Record;

/// Checks what can be checked before a connection is taken.
pub(super) fn validate(req: &QueryRequest, state: &State) -> Result<(), Error> {
    crate::exec::validate(&req.sql, &req.params, &state.config.limits)?;
    if let Some(cmd) = crate::sql::session::transaction_control(&req.sql) {
        return Err(Error::invalid(
            "sql",
            format!("{cmd} is not allowed in Query, which runs in autocommit: use Transaction"),
        ));
    }
    if let Some(t) = &req.timeout
        && (t.seconds < 0 || t.nanos < 0)
    {
        return Err(Error::invalid("timeout", "must not be negative"));
    }
    Ok(())
}

/// Serves one Query call.
pub(super) async fn query(
    state: &State,
    request: Request<QueryRequest>,
) -> Result<Response<QueryResponse>, Status> {
    let start = Instant::now();
    let budget = Budget::of_query(start, &request);
    let grant = Grant::of(&request, state.config.read_only);
    // Shared with a statement that may outlive the call on a pipelined connection.
    let req = Arc::new(request.into_inner());
    let (result, served) = run(state, &req, grant, budget).await;
    let (rows, cached) = result.as_ref().map_or((0, false), |r| {
        let cached = r.info.as_ref().is_some_and(|i| i.statement_cached);
        (r.rows_affected, cached)
    });
    state.stats.record(Record {
        rpc: "Query",
        pool: served.pool,
        sql: &req.sql,
        took: start.elapsed(),
        ok: result.is_ok(),
        rows,
        cached,
        report_key: served.report_key,
    });
    result.map(Response::new).map_err(Status::from)
}

/// Whether a failed attempt may be sent again: when it never reached PostgreSQL, or when
/// the caller declared it idempotent and it failed by connection loss, serialization
/// failure or deadlock. A write whose outcome is unknown is otherwise never re-run.
fn retryable(failed: &Failed, idempotent: bool) -> bool {
    let Error::Postgres(e) = &failed.error else {
        return false;
    };
    let connection_lost = match e.as_db_error() {
        // Without a SQLSTATE it is a lost connection, unless the request itself could not be
        // encoded or PostgreSQL answered out of protocol: sending either again fails again.
        None => crate::error::Fault::of(e) == Some(crate::error::Fault::Connection),
        Some(db) => {
            let code = db.code();
            // Class 08 is connection exceptions: no constant names a class.
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                ]
                .contains(code)
        }
    };
    let conflict = e.as_db_error().is_some_and(|db| {
        [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
        ]
        .contains(db.code())
    });
    (connection_lost && !failed.may_have_run) || (idempotent && (connection_lost || conflict))
}

/// Who served a request, for the figures.
struct Served {
    /// The pool, or "none" if the request got no connection.
    pool: &'static str,
    /// The statement's report key, once it was prepared.
    report_key: Option<u64>,
}

/// Runs the request; also says who served it.
async fn run(
    state: &State,
    req: &Arc<QueryRequest>,
    grant: Grant,
    budget: Budget,
) -> (Result<QueryResponse, Error>, Served) {
    let mut served = Served {
        pool: "none",
        report_key: None,
    };
    let result = run_on(state, req, grant, budget, &mut served).await;
    (result, served)
}

async fn run_on(
    state: &State,
    req: &Arc<QueryRequest>,
    grant: Grant,
    budget: Budget,
    served: &mut Served,
) -> Result<QueryResponse, Error> {
    validate(req, state)?;
    let priority = grant.priority(req.priority)?;
    let route = super::routing::read_route(req.read_from.as_ref(), "read_from")?;
    let priority = super::routing::fallback_priority(state, route.as_ref(), priority);
    let spec = Spec {
        sql: &req.sql,
        params: &req.params,
        max_rows: req.max_rows,
        around: super::autocommit(state, grant),
    };
    // Shared connections take what cannot leave session state behind for a neighbour, as
    // far as the text shows; what a statement did anyway is caught after it (see
    // `pipeline`).
    // A replica read leases a replica connection; one that asks for its commit LSN reads
    // it on the connection that committed, after the statement.
    let pipelined = state.pipeline.enabled()
        && spec.around == Around::default()
        && !req.return_lsn
        && !crate::sql::session::may_change_session(&req.sql);
    let mut backoff = crate::time::Backoff::new(budget.stop_at);
    let mut attempts = 0u32;
    let mut resent = false;
    loop {
        attempts += 1;
        let replica = match &route {
            Some(route) => state.pools.acquire_read(route, budget.stop_at).await?,
            None => None,
        };
        let slot = match pipelined && replica.is_none() {
            true => state.pipeline.admit(priority, budget.stop_at).await?,
            false => None,
        };
        let mut commit_lsn = String::new();
        let (pool, queue_time, outcome) = match slot {
            Some(slot) => {
                let queue_time = slot.queue_time;
                let ran = crate::pipeline::run(
                    slot,
                    req.clone(),
                    state.config.limits,
                    budget.stop_at,
                    budget.confirm_by,
                    state.stopping(),
                )
                .await;
                match ran.resend {
                    // Rolled back by PostgreSQL for a neighbour's sake: sent again at once.
                    Some(why) if !resent => {
                        resent = true;
                        state.pipeline.count_resend(why);
                        if attempts == 1 {
                            state.stats.record_retry();
                        }
                        tracing::debug!(reason = ?why, "sending a pipelined statement again");
                        continue;
                    }
                    _ => ("primary", queue_time, ran.result),
                }
            }
            None => {
                let lease = match replica {
                    Some(lease) => lease,
                    None => state.pools.acquire(priority, budget.stop_at).await?,
                };
                let (pool, queue_time) = (lease.pool, lease.queue_time);
                // Never on a replica: its position is not the primary's.
                let want_lsn = req.return_lsn && super::routing::on_primary(state, pool);
                let (outcome, lsn) = attempt(lease, &spec, state, budget, want_lsn).await;
                commit_lsn = lsn;
                (pool, queue_time, outcome)
            }
        };
        served.pool = pool;
        match outcome {
            Ok(executed) => {
                served.report_key = Some(executed.report_key);
                let mut response = executed.response;
                let mut info = crate::exec::execution_info(
                    pool,
                    executed.cached,
                    queue_time,
                    executed.execution_time,
                    attempts,
                );
                info.commit_lsn = commit_lsn;
                response.info = Some(info);
                return Ok(response);
            }
            Err(failed) => {
                let retry_at = match retryable(&failed, req.idempotent) {
                    true => backoff.next_at().ok(),
                    false => None,
                };
                let Some(retry_at) = retry_at else {
                    return Err(failed.error);
                };
                if attempts == 1 {
                    state.stats.record_retry();
                }
                tracing::debug!(attempt = attempts, error = %failed.error, "retrying statement");
                tokio::time::sleep_until(retry_at.into()).await;
            }
        }
    }
}

/// One attempt on one leased connection: runs the statement until the budget ends (then
/// cancels it in PostgreSQL), and resets the session if the statement may have changed it.
/// With `want_lsn`, also reads the commit LSN once the statement has committed: empty if
/// that read fails, since the statement did commit and must be reported as done.
async fn attempt(
    lease: crate::pool::Lease,
    spec: &Spec<'_>,
    state: &State,
    budget: Budget,
    want_lsn: bool,
) -> (Result<Executed, Failed>, String) {
    let inflight = InFlight::new(lease);
    let result = {
        let fut = crate::exec::run(inflight.client(), spec, &state.config.limits);
        tokio::pin!(fut);
        tokio::select! {
            result = &mut fut => result,
            _ = crate::time::until(budget.stop_at) => {
                // Out of time: cancel in PostgreSQL, then give it until the client's
                // deadline (or a second) to confirm, so the error can carry its answer.
                inflight.cancel();
                let confirm_by = budget
                    .confirm_by
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                let cause = match timeout_at(confirm_by.into(), &mut fut).await {
                    Ok(Err(Failed {
                        error: Error::Postgres(e),
                        ..
                    })) if e.as_db_error().is_some() => Some(e),
                    _ => None,
                };
                Err(Error::DeadlineExceeded { cause }.into())
            }
            // Shutdown's grace is nearly over: stop the statement rather than orphan it.
            _ = state.stopping() => {
                inflight.cancel();
                Err(Error::ShuttingDown.into())
            }
        }
    };
    let mut lsn = String::new();
    if want_lsn && result.is_ok() {
        match super::routing::commit_lsn(inflight.client()).await {
            Ok(text) => lsn = text,
            Err(e) => {
                tracing::warn!(error = %e, "the commit LSN could not be read after a statement")
            }
        }
    }
    match &result {
        Ok(executed) => inflight.finish_after(executed.changes_session).await,
        Err(failed) => inflight.finish_after_error(spec.sql, &failed.error).await,
    }
    (result, lsn)
}
