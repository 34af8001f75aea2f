//! Telemetry: every metric's name and description in one place, the Prometheus recorder
//! with explicit histogram buckets, the gRPC server metrics layer, and logging setup.

pub mod grpc;
mod pipeline;
pub mod report;
pub mod stats;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use pipeline::{PipelineCounters, export_pipeline};

use crate::config::{Config, LogFormat};
use crate::proto::{PoolStats, StatementCacheStats};

/// Metric handles made once per label set and kept, by the label set's place in a fixed
/// table: the `counter!`/`histogram!` macros build and hash a key on every call, which the
/// hot path would do several times per request.
pub(crate) struct Memo<H, const N: usize>([OnceLock<H>; N]);

impl<H, const N: usize> Memo<H, N> {
    pub(crate) const fn new() -> Self {
        Memo([const { OnceLock::new() }; N])
    }

    /// The handle at `index`, made by `make` the first time.
    pub(crate) fn get(&self, index: usize, make: impl FnOnce() -> H) -> &H {
        self.0[index].get_or_init(make)
    }
}

/// The `rpc` and `pool` label values of statement metrics that get kept handles.
const RPCS: [&str; 3] = ["Query", "StreamQuery", "Transaction"];
const POOLS: [&str; 3] = ["primary", "failover", "none"];

/// Metric names. Prometheus conventions: `pgsidecar_` prefix, base units, `_total` on
/// counters; pool gauges follow pgbouncer-exporter's naming so dashboards feel familiar.
pub mod names {
    pub const GRPC_STARTED: &str = "grpc_server_started_total";
    pub const GRPC_HANDLED: &str = "grpc_server_handled_total";
    pub const GRPC_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
    pub const POOL_MAX: &str = "pgsidecar_pool_max_connections";
    pub const POOL_TOTAL: &str = "pgsidecar_pool_server_connections";
    pub const POOL_ACTIVE: &str = "pgsidecar_pool_server_active_connections";
    pub const POOL_IDLE: &str = "pgsidecar_pool_server_idle_connections";
    pub const POOL_WAITING: &str = "pgsidecar_pool_client_waiting_connections";
    pub const POOL_UTILIZATION: &str = "pgsidecar_pool_utilization_ratio";
    pub const POOL_CREATED: &str = "pgsidecar_pool_connections_created_total";
    pub const POOL_CHECKOUTS: &str = "pgsidecar_pool_checkouts_total";
    pub const POOL_WAIT_SECONDS: &str = "pgsidecar_pool_wait_seconds";
    pub const QUERY_SECONDS: &str = "pgsidecar_query_duration_seconds";
    pub const QUERIES_FAILED: &str = "pgsidecar_queries_failed_total";
    pub const QUERIES_RETRIED: &str = "pgsidecar_queries_retried_total";
    pub const QUERIES_CANCELLED: &str = "pgsidecar_queries_cancelled_total";
    pub const QUERIES_SLOW: &str = "pgsidecar_queries_slow_total";
    pub const CACHE_HITS: &str = "pgsidecar_statement_cache_hits_total";
    pub const CACHE_MISSES: &str = "pgsidecar_statement_cache_misses_total";
    pub const CACHE_EVICTIONS: &str = "pgsidecar_statement_cache_evictions_total";
    pub const CACHE_INVALIDATIONS: &str = "pgsidecar_statement_cache_invalidations_total";
    pub const CACHE_STATEMENTS: &str = "pgsidecar_statement_cache_statements";
    pub const TRANSACTIONS_ACTIVE: &str = "pgsidecar_transactions_active";
    pub const TRANSACTIONS: &str = "pgsidecar_transactions_total";
    pub const DATABASE_REACHABLE: &str = "pgsidecar_database_reachable";
    pub const LISTENER_CLOSED: &str = "pgsidecar_listener_connections_closed_total";
    pub const LISTENER_ACCEPT_ERRORS: &str = "pgsidecar_listener_accept_errors_total";
    pub const PIPELINE_IN_FLIGHT: &str = "pgsidecar_pipeline_in_flight";
    pub const PIPELINE_STATEMENTS: &str = "pgsidecar_pipeline_statements_total";
    pub const PIPELINE_OVERFLOW: &str = "pgsidecar_pipeline_overflow_total";
    pub const PIPELINE_RESENT: &str = "pgsidecar_pipeline_resent_total";
    pub const PIPELINE_AFTER_SESSION_CHANGE: &str =
        "pgsidecar_pipeline_ran_after_session_change_total";
    pub const REPLICA_LAG_SECONDS: &str = "pgsidecar_replica_lag_seconds";
    pub const REPLICA_LAG_BYTES: &str = "pgsidecar_replica_lag_bytes";
    pub const ROUTED_READS: &str = "pgsidecar_routed_reads_total";
    pub const PIPELINE_RETIRED: &str = "pgsidecar_pipeline_connections_retired_total";
}

/// Latency buckets in seconds, 250 µs to 30 s: sidecar queries are sub-millisecond when
/// healthy, and the tail matters up to the query timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

fn describe() {
    use names::*;
    describe_counter!(GRPC_STARTED, "RPCs started, by type, service and method");
    describe_counter!(
        GRPC_HANDLED,
        "RPCs completed, by type, service, method and gRPC code"
    );
    describe_histogram!(
        GRPC_HANDLING_SECONDS,
        Unit::Seconds,
        "RPC handling time, to the last message"
    );
    describe_gauge!(POOL_MAX, "Configured maximum connections per pool");
    describe_gauge!(POOL_TOTAL, "Open connections per pool");
    describe_gauge!(POOL_ACTIVE, "Connections lent to requests per pool");
    describe_gauge!(POOL_IDLE, "Open idle connections per pool");
    describe_gauge!(POOL_WAITING, "Requests waiting for a connection per pool");
    describe_gauge!(
        POOL_UTILIZATION,
        "Active connections / maximum, per pool (0-1)"
    );
    describe_counter!(POOL_CREATED, "Connections opened since start, per pool");
    describe_counter!(POOL_CHECKOUTS, "Connections lent since start, per pool");
    describe_counter!(
        LISTENER_CLOSED,
        "Client connections closed unserved, by listener and reason (over_limit, handshake_timeout)"
    );
    describe_counter!(
        LISTENER_ACCEPT_ERRORS,
        "Failed accepts (out of file descriptors, say), by listener; each pauses the listener"
    );
    describe_histogram!(
        POOL_WAIT_SECONDS,
        Unit::Seconds,
        "Time requests waited for a connection, per pool"
    );
    describe_histogram!(
        QUERY_SECONDS,
        Unit::Seconds,
        "Statement time by RPC, pool and outcome"
    );
    describe_counter!(QUERIES_FAILED, "Statements that failed, by RPC");
    describe_counter!(QUERIES_RETRIED, "Statements sent more than once");
    describe_counter!(
        QUERIES_CANCELLED,
        "Statements cancelled in PostgreSQL (deadline or client gone)"
    );
    describe_counter!(QUERIES_SLOW, "Statements slower than DB_SLOW_QUERY_MS");
    describe_counter!(CACHE_HITS, "Statements found prepared on their connection");
    describe_counter!(CACHE_MISSES, "Statements that had to be prepared");
    describe_counter!(
        CACHE_EVICTIONS,
        "Prepared statements closed to stay within the cache size"
    );
    describe_counter!(
        CACHE_INVALIDATIONS,
        "Prepared statements dropped after a schema change"
    );
    describe_gauge!(
        CACHE_STATEMENTS,
        "Prepared statements held, over all connections"
    );
    describe_gauge!(
        TRANSACTIONS_ACTIVE,
        "Transaction streams holding a connection now"
    );
    describe_counter!(TRANSACTIONS, "Transactions ended, by outcome");
    describe_gauge!(
        REPLICA_LAG_SECONDS,
        Unit::Seconds,
        "How far behind the primary each replica is known to be, at most, as last probed"
    );
    describe_gauge!(
        REPLICA_LAG_BYTES,
        Unit::Bytes,
        "WAL bytes between the primary's position and each replica's replay, as last probed"
    );
    describe_counter!(
        ROUTED_READS,
        "Reads that asked for a replica, by the target that served them (none: refused)"
    );
    describe_gauge!(
        DATABASE_REACHABLE,
        "1 when the primary pool reached PostgreSQL at the last probe"
    );
    describe_gauge!(
        PIPELINE_IN_FLIGHT,
        "Statements in flight on each connection the pipelined path holds"
    );
    describe_counter!(
        PIPELINE_STATEMENTS,
        "Statements sent on a shared, pipelined connection"
    );
    describe_counter!(
        PIPELINE_OVERFLOW,
        "Pipelinable statements that took a leased connection instead, by reason"
    );
    describe_counter!(
        PIPELINE_RESENT,
        "Pipelined statements sent again transparently, by reason (rolled back by a neighbour's cancel or session change)"
    );
    describe_counter!(
        PIPELINE_AFTER_SESSION_CHANGE,
        "Pipelined statements that ran right after a neighbour changed the session"
    );
    describe_counter!(
        PIPELINE_RETIRED,
        "Shared connections taken out of sharing (session changed, out of step)"
    );
}

/// The process-wide Prometheus recorder, installed on first use (a process has one).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("bucket list is not empty");
            let handle = builder
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
            describe();
            handle
        })
        .clone()
}

/// Records one statement: its duration by RPC, pool and outcome; failures; slowness.
pub fn record_statement(
    rpc: &'static str,
    pool: &'static str,
    ok: bool,
    took: Duration,
    slow: bool,
) {
    static SECONDS: Memo<metrics::Histogram, { RPCS.len() * POOLS.len() * 2 }> = Memo::new();
    static FAILED: Memo<metrics::Counter, { RPCS.len() }> = Memo::new();
    let r = RPCS.iter().position(|n| *n == rpc);
    let p = POOLS.iter().position(|n| *n == pool);
    let outcome = if ok { "ok" } else { "error" };
    match (r, p) {
        (Some(r), Some(p)) => SECONDS
            .get((r * POOLS.len() + p) * 2 + usize::from(ok), || {
                histogram!(names::QUERY_SECONDS, "rpc" => rpc, "pool" => pool, "outcome" => outcome)
            })
            .record(took.as_secs_f64()),
        _ => histogram!(names::QUERY_SECONDS, "rpc" => rpc, "pool" => pool, "outcome" => outcome)
            .record(took.as_secs_f64()),
    }
    if !ok {
        match r {
            Some(r) => FAILED
                .get(r, || counter!(names::QUERIES_FAILED, "rpc" => rpc))
                .increment(1),
            None => counter!(names::QUERIES_FAILED, "rpc" => rpc).increment(1),
        }
    }
    if slow {
        counter!(names::QUERIES_SLOW).increment(1);
    }
}

/// Records a statement sent more than once.
pub fn record_retry() {
    counter!(names::QUERIES_RETRIED).increment(1);
}

/// Records a client connection a listener closed before serving it: over its connection
/// cap (`over_limit`) or without its handshake in time (`handshake_timeout`).
pub fn record_connection_closed(listener: &'static str, reason: &'static str) {
    counter!(names::LISTENER_CLOSED, "listener" => listener, "reason" => reason).increment(1);
}

/// Records a failed accept (out of file descriptors, say), after which the listener pauses.
pub fn record_accept_error(listener: &'static str) {
    counter!(names::LISTENER_ACCEPT_ERRORS, "listener" => listener).increment(1);
}

/// Records a statement cancelled in PostgreSQL.
pub fn record_cancel() {
    counter!(names::QUERIES_CANCELLED).increment(1);
}

/// Counts a read that asked for a replica, by where it went.
pub fn routed_read(target: &'static str) {
    counter!(names::ROUTED_READS, "target" => target).increment(1);
}

/// Records the time a request waited for a connection.
pub fn record_pool_wait(pool: &'static str, waited: Duration) {
    histogram!(names::POOL_WAIT_SECONDS, "pool" => pool).record(waited.as_secs_f64());
}

/// A transaction began (the gauge goes up until [`transaction_ended`]).
pub fn transaction_began() {
    gauge!(names::TRANSACTIONS_ACTIVE).increment(1.0);
}

/// A transaction ended with `outcome` (committed, rolled_back, abandoned, idle_timeout,
/// max_duration, shutdown, unknown, stalled, error).
pub fn transaction_ended(outcome: &'static str) {
    gauge!(names::TRANSACTIONS_ACTIVE).decrement(1.0);
    counter!(names::TRANSACTIONS, "outcome" => outcome).increment(1);
}

/// Copies the live pool and cache figures into their gauges and counters; called at scrape
/// time, so what is read is current.
pub fn export_pools(pools: &[PoolStats], c: &StatementCacheStats, reachable: bool) {
    for p in pools {
        let pool = p.name.clone();
        gauge!(names::POOL_MAX, "pool" => pool.clone()).set(p.max_connections);
        gauge!(names::POOL_TOTAL, "pool" => pool.clone()).set(p.total_connections);
        gauge!(names::POOL_ACTIVE, "pool" => pool.clone()).set(p.active_connections);
        gauge!(names::POOL_IDLE, "pool" => pool.clone()).set(p.idle_connections);
        gauge!(names::POOL_WAITING, "pool" => pool.clone()).set(p.waiting_requests);
        gauge!(names::POOL_UTILIZATION, "pool" => pool.clone()).set(p.utilization_percent / 100.0);
        counter!(names::POOL_CREATED, "pool" => pool.clone()).absolute(p.connections_created);
        counter!(names::POOL_CHECKOUTS, "pool" => pool).absolute(p.checkouts);
        if let Some(r) = &p.replica {
            // Unknown (down, promoted, never caught up) is +Inf: as far behind as can be,
            // never the last small figure left standing.
            let lag = r.lag.and_then(|l| Duration::try_from(l).ok());
            let lag = lag.map_or(f64::INFINITY, |l| l.as_secs_f64());
            gauge!(names::REPLICA_LAG_SECONDS, "pool" => p.name.clone()).set(lag);
            gauge!(names::REPLICA_LAG_BYTES, "pool" => p.name.clone()).set(r.lag_bytes as f64);
        }
        for (i, depth) in p.pipelined_in_flight.iter().enumerate() {
            gauge!(names::PIPELINE_IN_FLIGHT, "connection" => i.to_string()).set(*depth);
        }
    }
    counter!(names::CACHE_HITS).absolute(c.hits);
    counter!(names::CACHE_MISSES).absolute(c.misses);
    counter!(names::CACHE_EVICTIONS).absolute(c.evictions);
    counter!(names::CACHE_INVALIDATIONS).absolute(c.invalidations);
    gauge!(names::CACHE_STATEMENTS).set(c.cached_statements as f64);
    gauge!(names::DATABASE_REACHABLE).set(if reachable { 1.0 } else { 0.0 });
}

/// Starts logging to stderr: human-readable text, or one JSON object per line.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour codes only for a person at a terminal, never into files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Lets through at most `per_second` log lines of one kind each second, so a storm of the
/// same event (a pool at its limit, connections failing) cannot flood the logs. The lines
/// held back are counted and reported with the next line let through.
pub struct LogGate {
    per_second: u32,
    state: std::sync::Mutex<(u64, u32, u64)>,
}

impl LogGate {
    /// A gate for `per_second` lines a second.
    pub const fn new(per_second: u32) -> Self {
        LogGate {
            per_second,
            state: std::sync::Mutex::new((0, 0, 0)),
        }
    }

    /// `Some(suppressed since the last line let through)` if this line may be logged now.
    pub fn admit(&self) -> Option<u64> {
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        self.admit_at(
            START
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_secs(),
        )
    }

    fn admit_at(&self, second: u64) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (window, used, suppressed) = &mut *s;
        if *window != second {
            *window = second;
            *used = 0;
        }
        if *used < self.per_second {
            *used += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_lets_a_few_through_and_counts_the_rest() {
        let gate = LogGate::new(2);
        assert_eq!(gate.admit_at(7), Some(0));
        assert_eq!(gate.admit_at(7), Some(0));
        assert_eq!(gate.admit_at(7), None);
        assert_eq!(gate.admit_at(7), None);
        assert_eq!(
            gate.admit_at(8),
            Some(2),
            "the next line reports what was held back"
        );
        assert_eq!(gate.admit_at(8), Some(0));
    }
}
