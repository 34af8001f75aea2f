//! Query: one statement in autocommit on a pooled connection, within the request's budget.

use std::time::Instant;

use tokio::time::timeout_at;
use tonic::{Request, Response, Status};

use super::State;
use super::deadline::Budget;
use super::statement::{self, InFlight, Spec};
use crate::error::Error;
use crate::proto::{ExecutionInfo, Priority, QueryRequest, QueryResponse};

/// Checks what can be checked before a connection is taken.
pub(super) fn validate(req: &QueryRequest, state: &State) -> Result<(), Error> {
    let limits = &state.config.limits;
    if req.sql.trim().is_empty() {
        return Err(Error::invalid("sql", "must contain a statement"));
    }
    if req.sql.len() > limits.max_sql_bytes {
        return Err(Error::invalid(
            "sql",
            format!(
                "is {} bytes; the limit is {}",
                req.sql.len(),
                limits.max_sql_bytes
            ),
        ));
    }
    if req.params.len() > limits.max_params {
        return Err(Error::invalid(
            "params",
            format!(
                "{} values; the limit is {}",
                req.params.len(),
                limits.max_params
            ),
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
    let req_timeout = request
        .get_ref()
        .timeout
        .and_then(|d| std::time::Duration::try_from(d).ok());
    let budget = Budget::new(start, request.metadata(), req_timeout);
    let req = request.into_inner();
    let result = run(state, &req, budget).await;
    let elapsed = start.elapsed();
    state.stats.record(elapsed, result.is_ok());
    if elapsed >= state.config.slow_query {
        // The fingerprint identifies the statement without its parameter values.
        tracing::warn!(
            fingerprint = %fingerprint(&req.sql),
            duration_ms = elapsed.as_millis() as u64,
            ok = result.is_ok(),
            "slow statement"
        );
    }
    result.map(Response::new).map_err(Status::from)
}

/// A stable 64-bit fingerprint of the SQL text (SipHash with fixed keys), in hex.
fn fingerprint(sql: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    sql.hash(&mut h);
    format!("{:016x}", h.finish())
}

async fn run(state: &State, req: &QueryRequest, budget: Budget) -> Result<QueryResponse, Error> {
    validate(req, state)?;
    let priority = Priority::try_from(req.priority).unwrap_or(Priority::Unspecified);
    let lease = state.pools.acquire(priority, budget.stop_at).await?;
    let (pool, queue_time) = (lease.pool, lease.queue_time);
    let spec = Spec {
        sql: &req.sql,
        params: &req.params,
        max_rows: req.max_rows,
        cache_size: state.config.statement_cache_size,
    };
    let inflight = InFlight::new(lease);
    let result = {
        let fut = statement::run(inflight.client(), &spec, &state.config.limits);
        tokio::pin!(fut);
        match budget.stop_at {
            None => fut.await,
            Some(stop_at) => match timeout_at(stop_at.into(), &mut fut).await {
                Ok(result) => result,
                Err(_) => {
                    // Out of time: cancel in PostgreSQL, then give it until the client's
                    // deadline (or a second) to confirm, so the error can carry its answer.
                    inflight.cancel();
                    let confirm_by = budget
                        .respond_by
                        .unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(1));
                    match timeout_at(confirm_by.into(), &mut fut).await {
                        Ok(Err(Error::Postgres(e))) if e.as_db_error().is_some() => {
                            Err(Error::DeadlineExceeded { cause: Some(e) })
                        }
                        _ => Err(Error::DeadlineExceeded { cause: None }),
                    }
                }
            },
        }
    };
    inflight.finish();
    let executed = result?;
    let mut response = executed.response;
    response.info = Some(ExecutionInfo {
        pool: pool.to_owned(),
        statement_cached: executed.cached,
        queue_time: prost_types::Duration::try_from(queue_time).ok(),
        execution_time: prost_types::Duration::try_from(executed.execution_time).ok(),
        attempts: 1,
    });
    Ok(response)
}
