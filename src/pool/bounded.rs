//! One bounded pool (deadpool over our connection manager): its name, sizes and the
//! counters deadpool does not keep, its live figures, and the readiness probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool::Runtime;
use deadpool::managed::{Hook, Pool as DeadPool, PoolError as DeadPoolError, Timeouts};

use super::PoolError;
use super::admission::Admission;
use super::connection::ConnManager;
use super::lanes::LaneFigures;
use super::statement_cache::CacheStats;
use crate::config::{Config, PoolConfig};
use crate::conninfo::{PgConnect, SessionSettings, session_config};
use crate::proto::PoolStats;
use crate::telemetry::LogGate;

/// Connections opened, logged a few times a second at most.
static OPENED_LOG: LogGate = LogGate::new(5);

/// Counters and flags deadpool does not keep.
pub(super) struct Counters {
    pub(super) created: AtomicU64,
    pub(super) checkouts: AtomicU64,
    /// Since when reaching the database has failed without a success since (by requests,
    /// prewarm, maintenance or the health probe), as [`clock`] time; 0 while it is
    /// believed reachable. See `admission.rs` for what a long failure means.
    pub(super) failing_since: AtomicU64,
}

/// What a probe found.
pub(super) enum Probe {
    /// The database answered; the first row of the answer (empty if none), as text.
    Row(Vec<Option<String>>),
    /// Every connection was lent out: nothing was learned.
    Busy,
    /// The database could not be reached, or did not answer in time.
    Down,
}

/// One deadpool pool with its name, sizes and counters.
#[derive(Clone)]
pub(super) struct Pool {
    pub(super) name: &'static str,
    pub(super) inner: DeadPool<ConnManager>,
    pub(super) min_idle: u32,
    pub(super) admission: Arc<Admission>,
    pub(super) counters: Arc<Counters>,
    pub(super) tls: PgConnect,
    /// For the primary: the connections the pipelined path holds, counted busy only while
    /// they have a statement in flight.
    pub(super) lanes: Option<Arc<LaneFigures>>,
}

/// How far past the gRPC message limit one message from PostgreSQL may go before it is
/// refused unread. A row's size on the wire is close to its size in a response (a text or
/// bytea cell is its bytes either way), so a row past the limit by more than this can never
/// be sent; the slack covers framing, the non-row messages a statement gets (a
/// RowDescription of 1664 columns, a ParameterDescription of 65535 parameters), and rows
/// whose binary form is somewhat larger than their response (numbers in arrays).
const WIRE_SLACK: u64 = 1 << 20;

impl Pool {
    pub(super) fn new(
        name: &'static str,
        pool: &PoolConfig,
        config: &Config,
        cache_stats: &Arc<CacheStats>,
    ) -> Result<Self, PoolError> {
        let settings = SessionSettings {
            statement_timeout: config.query_timeout,
            idle_in_transaction_timeout: config.transaction_idle_timeout,
            read_only: config.read_only,
            connect_timeout: config.connection_timeout,
            max_backend_message: (config.limits.max_message_bytes as u64)
                .saturating_add(WIRE_SLACK),
        };
        let (pg, tls) =
            session_config(&pool.database_url, &settings).map_err(|message| PoolError::Config {
                pool: name,
                message,
            })?;
        let manager = ConnManager::new(
            pg,
            tls.clone(),
            config.connection_validation,
            config.statement_cache_size,
            cache_stats.clone(),
        );
        let counters = Arc::new(Counters {
            created: AtomicU64::new(0),
            checkouts: AtomicU64::new(0),
            failing_since: AtomicU64::new(0),
        });
        let created = counters.clone();
        let inner = DeadPool::builder(manager)
            .max_size(pool.max_size as usize)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connection_timeout))
            .create_timeout(Some(config.connection_timeout))
            .recycle_timeout(Some(config.connection_timeout))
            .post_create(Hook::sync_fn(move |_, _| {
                created.created.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = OPENED_LOG.admit() {
                    tracing::info!(pool = name, held_back, "connection opened");
                }
                Ok(())
            }))
            .build()
            .map_err(|e| PoolError::Config {
                pool: name,
                message: e.to_string(),
            })?;
        Ok(Pool {
            name,
            inner,
            min_idle: pool.min_idle,
            admission: Arc::new(Admission::new(config.pool_max_waiting as usize)),
            counters,
            tls,
            lanes: None,
        })
    }

    /// Connections busy and idle now. A connection the pipelined path holds is busy while
    /// it has a statement in flight and idle otherwise, like a pooled one.
    fn active_and_idle(&self, s: &deadpool::managed::Status) -> (usize, usize) {
        let lent = s.size.saturating_sub(s.available);
        let (held, busy) = self.lanes.as_ref().map_or((0, 0), |l| l.held_and_busy());
        let held = held.min(lent);
        (
            lent - held + busy.min(held),
            s.available + held - busy.min(held),
        )
    }

    /// Active connections (see [`Pool::active_and_idle`]) as a percentage of the maximum.
    pub(super) fn utilization_percent(&self) -> f64 {
        let s = self.inner.status();
        if s.max_size == 0 {
            return 100.0;
        }
        let (active, _) = self.active_and_idle(&s);
        active as f64 * 100.0 / s.max_size as f64
    }

    /// Whether the last attempt to reach the database through this pool succeeded.
    pub(super) fn reachable(&self) -> bool {
        self.counters.failing_since.load(Ordering::Relaxed) == 0
    }

    /// The database was reached: any outage is over.
    pub(super) fn reached(&self) {
        self.counters.failing_since.store(0, Ordering::Relaxed);
    }

    /// Reaching the database failed; an outage starts now unless one already had.
    pub(super) fn failed_to_reach(&self) {
        let _ = self.counters.failing_since.compare_exchange(
            0,
            crate::time::clock(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Whether reaching the database has failed, with no success since, for at least `long`.
    pub(super) fn down_for(&self, long: Duration) -> bool {
        match self.counters.failing_since.load(Ordering::Relaxed) {
            0 => false,
            since => {
                crate::time::clock().saturating_sub(since)
                    >= u64::try_from(long.as_nanos()).unwrap_or(u64::MAX)
            }
        }
    }

    /// A round trip on an idle or newly opened connection, taken without queueing behind
    /// requests; when every connection is lent out, busy is not down, so the answer is what
    /// the pool last learned about reaching the database.
    pub(super) async fn probe(&self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.probe_row(Duration::ZERO, left, "", true).await {
            Probe::Row(_) => true,
            Probe::Busy => self.reachable(),
            Probe::Down => false,
        }
    }

    /// Whether the pool could lend a connection now without a wait.
    pub(super) fn has_room(&self) -> bool {
        let s = self.inner.status();
        s.available > 0 || s.size < s.max_size
    }

    /// Runs `sql` (simple protocol) on an idle or newly opened connection, waiting at most
    /// `wait` for one to come free and giving the rest `budget`, and returns its first row
    /// as text. With `counts`, a failure counts as the database unreachable (for readiness
    /// and fast failing); a probe of our own, such as the primary's WAL position, does not
    /// speak for the database's health.
    pub(super) async fn probe_row(
        &self,
        wait: Duration,
        budget: Duration,
        sql: &str,
        counts: bool,
    ) -> Probe {
        let budget = budget.max(Duration::from_millis(1));
        let timeouts = Timeouts {
            wait: Some(wait),
            create: Some(budget),
            recycle: Some(budget),
        };
        match self.inner.timeout_get(&timeouts).await {
            Ok(conn) => {
                match tokio::time::timeout(budget, conn.simple_query(sql)).await {
                    Ok(Ok(messages)) => {
                        self.reached();
                        Probe::Row(super::first_row(&messages))
                    }
                    _ => {
                        // A connection that cannot answer is not given to anyone else.
                        drop(super::Object::take(conn));
                        if counts {
                            self.failed_to_reach();
                        }
                        Probe::Down
                    }
                }
            }
            Err(DeadPoolError::Timeout(deadpool::managed::TimeoutType::Wait)) => Probe::Busy,
            Err(DeadPoolError::Closed) => Probe::Down,
            Err(_) => {
                if counts {
                    self.failed_to_reach();
                }
                Probe::Down
            }
        }
    }

    /// Live figures for PoolStatus.
    pub(super) fn stats(&self) -> PoolStats {
        let s = self.inner.status();
        let created = self.counters.created.load(Ordering::Relaxed);
        let checkouts = self.counters.checkouts.load(Ordering::Relaxed)
            + self.lanes.as_ref().map_or(0, |l| l.given());
        let (active, idle) = self.active_and_idle(&s);
        PoolStats {
            name: self.name.to_owned(),
            max_connections: s.max_size as u32,
            min_idle: self.min_idle,
            total_connections: s.size as u32,
            active_connections: active as u32,
            idle_connections: idle as u32,
            waiting_requests: s.waiting as u32,
            utilization_percent: self.utilization_percent(),
            connections_created: created,
            checkouts,
            reuse_rate: reuse_rate(created, checkouts),
            pipelined_in_flight: self.lanes.as_ref().map_or_else(Vec::new, |l| l.depths()),
            replica: None,
        }
    }

    pub(super) fn close(&self) {
        self.inner.close();
    }
}

/// 1 − created ÷ checkouts: the share of checkouts served by a connection already open.
fn reuse_rate(created: u64, checkouts: u64) -> f64 {
    if checkouts == 0 {
        0.0
    } else {
        (1.0 - created as f64 / checkouts as f64).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reuse_rate_is_the_share_of_checkouts_that_opened_nothing() {
        assert_eq!(super::reuse_rate(0, 0), 0.0);
        assert_eq!(super::reuse_rate(5, 100), 0.95);
        // Prewarmed connections never checked out yet: not negative.
        assert_eq!(super::reuse_rate(10, 4), 0.0);
    }
}
