//! The connection pools: a primary pool for normal work, a reserved failover pool for
//! critical work and one pool per read replica, each bounded, prewarmed and maintained;
//! routing by priority and read preference; bounded waiting for a connection; and the live
//! figures PoolStatus and the metrics report.

mod admission;
mod bounded;
mod connection;
mod lanes;
mod lsn;
mod maintenance;
mod replicas;
mod reset;
pub mod route;
mod session_watch;
mod statement_cache;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::proto::{PoolStats, Priority, StatementCacheStats};
use crate::telemetry::LogGate;

use bounded::Pool;
pub use connection::Conn;
pub use lanes::LaneFigures;
pub use lsn::{INSERT_POSITION_SQL, Lsn, insert_position};
pub use replicas::{Preference, ReadRoute};
pub use reset::{COMMIT_THEN_RESET_SQL, RESET_AFTER_EACH_SQL, reset};
pub use route::Target;
pub use statement_cache::{CacheStats, Prepared};

/// A connection checked out of a pool; back to the pool when dropped.
pub type Object = deadpool::managed::Object<connection::ConnManager>;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection stayed busy for as long as the request could wait.
    #[error("the {pool} pool has no free connection after waiting {waited:?}")]
    Exhausted {
        /// Pool name.
        pool: &'static str,
        /// How long the request waited.
        waited: Duration,
    },
    /// The request's own deadline ended the wait for a connection (busy connections, or a
    /// connection still opening), before the pool's connection timeout would have.
    #[error("no connection from the {pool} pool within the request's deadline (waited {waited:?})")]
    DeadlineExceeded {
        /// Pool name.
        pool: &'static str,
        /// How long the request waited.
        waited: Duration,
    },
    /// A new connection could not be opened.
    #[error("cannot connect to PostgreSQL for the {pool} pool: {source}")]
    Unavailable {
        /// Pool name.
        pool: &'static str,
        /// The connection error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Opening a connection took longer than the connection timeout.
    #[error("connecting to PostgreSQL for the {pool} pool timed out")]
    ConnectTimeout {
        /// Pool name.
        pool: &'static str,
    },
    /// The pool is closed: the sidecar is shutting down.
    #[error("the {pool} pool is closed: the sidecar is shutting down")]
    Closed {
        /// Pool name.
        pool: &'static str,
    },
    /// A read that may only go to a replica found none that may serve it.
    #[error("no replica may serve this read: {why}")]
    NoReplica {
        /// What each replica lacked.
        why: String,
    },
    /// A configured connection string is not valid (caught by config validation first).
    #[error("invalid connection settings for the {pool} pool: {message}")]
    Config {
        /// Pool name.
        pool: &'static str,
        /// Why.
        message: String,
    },
}

/// How many connections the pipelined path holds: as configured, but at most half the
/// primary pool, so that leased work (transactions, streams, session-changing statements)
/// always keeps the other half; a pool of one has no pipelined path.
pub fn lanes_for(config: &Config) -> usize {
    config.pipeline_connections.min(config.primary.max_size / 2) as usize
}

/// The first row of a simple-protocol answer, each cell as text; empty when it has none.
pub fn first_row(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Option<String>> {
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// A connection lent to one request; it goes back to its pool when dropped.
pub struct Lease {
    /// The connection.
    pub conn: Object,
    /// Name of the pool that lent it.
    pub pool: &'static str,
    /// Time spent waiting for it.
    pub queue_time: Duration,
    /// How to reach the server for a CancelRequest (the same TLS as the connection).
    pub tls: crate::conninfo::PgConnect,
    /// For a transaction on the failover pool: its place in the share transactions may
    /// hold, given back with the connection.
    slot: Option<admission::Slot>,
}

/// A connection from `pool`, waiting at most `timeout` and never past `deadline`; a wait
/// cut short by the deadline is reported as one, not as exhaustion.
async fn lend(
    pool: &Pool,
    deadline: Option<Instant>,
    timeout: Duration,
) -> Result<Lease, PoolError> {
    let started = Instant::now();
    let timeout_at = started + timeout;
    let until = deadline.map_or(timeout_at, |d| d.min(timeout_at));
    match pool.acquire(until, timeout).await {
        // Cut short by the caller's deadline, not by the pool: a deadline, not exhaustion.
        Err(PoolError::Exhausted { pool, .. } | PoolError::ConnectTimeout { pool })
            if until < timeout_at =>
        {
            Err(PoolError::DeadlineExceeded {
                pool,
                waited: started.elapsed(),
            })
        }
        other => other,
    }
}

/// Routing events, each let through at most once a second.
static BUSY_LOG: LogGate = LogGate::new(1);
static FAILOVER_LOG: LogGate = LogGate::new(1);
static SHARE_LOG: LogGate = LogGate::new(1);

/// Both pools and the rule that routes a request to one of them.
#[derive(Clone)]
pub struct Pools {
    primary: Pool,
    failover: Option<Pool>,
    threshold_percent: f64,
    connection_timeout: Duration,
    cache_stats: Arc<CacheStats>,
    /// How many failover connections transactions hold, and the most they may.
    transaction_share: Arc<admission::Share>,
    /// The read replicas (none unless `DB_REPLICA_URLS` names some).
    replicas: Arc<replicas::Replicas>,
}

impl Pools {
    /// Builds the pools; no connection is opened until [`Pools::prewarm`] or first use.
    pub fn new(config: &Config) -> Result<Self, PoolError> {
        let cache_stats = Arc::new(CacheStats::default());
        let mut primary = Pool::new("primary", &config.primary, config, &cache_stats)?;
        primary.lanes = Some(Arc::new(LaneFigures::new(lanes_for(config))));
        let failover = if config.enable_failover {
            Some(Pool::new(
                "failover",
                &config.failover,
                config,
                &cache_stats,
            )?)
        } else {
            None
        };
        let transaction_share = admission::Share::new(route::transaction_share(
            config.failover.max_size,
            config.failover_transaction_share_percent,
        ));
        let replicas = Arc::new(replicas::Replicas::new(config, &cache_stats)?);
        Ok(Pools {
            replicas,
            primary,
            failover,
            threshold_percent: config.failover_threshold_percent,
            connection_timeout: config.connection_timeout,
            cache_stats,
            transaction_share,
        })
    }

    /// The figures of the connections the pipelined path holds, which it keeps up to date.
    pub fn lane_figures(&self) -> Arc<LaneFigures> {
        self.primary
            .lanes
            .clone()
            .expect("the primary pool has lane figures")
    }

    /// Whether the primary pool could lend a connection now without a wait: one is idle,
    /// or it may open another.
    pub fn primary_has_room(&self) -> bool {
        self.primary.has_room()
    }

    /// Whether a request of this priority would be served by the reserve now.
    pub fn sends_to_reserve(&self, priority: Priority) -> bool {
        priority == Priority::Critical
            && self.failover.is_some()
            && self.route(priority) == Target::Failover
    }

    /// Where a request of this priority goes now (see [`route::route`]).
    fn route(&self, priority: Priority) -> Target {
        let utilization = self.primary.utilization_percent();
        let target = route::route(
            priority,
            utilization,
            self.threshold_percent,
            self.failover.is_some(),
        );
        if utilization >= self.threshold_percent
            && let Some(held_back) = BUSY_LOG.admit()
        {
            tracing::warn!(
                utilization_percent = utilization,
                threshold_percent = self.threshold_percent,
                held_back,
                "primary pool at or above the failover threshold"
            );
        }
        target
    }

    /// The pool of `target`.
    fn pool(&self, target: Target) -> &Pool {
        match (target, &self.failover) {
            (Target::Failover, Some(failover)) => {
                if let Some(held_back) = FAILOVER_LOG.admit() {
                    tracing::info!(held_back, "critical work served by the failover pool");
                }
                failover
            }
            _ => &self.primary,
        }
    }

    /// Lends a connection for a request of this priority, waiting at most the connection
    /// timeout and never past `deadline`.
    pub async fn acquire(
        &self,
        priority: Priority,
        deadline: Option<Instant>,
    ) -> Result<Lease, PoolError> {
        let pool = self.pool(self.route(priority));
        self.acquire_from(pool, deadline).await
    }

    /// Lends a primary connection to the pipelined path, which holds it for as long as it
    /// stays fit to share. It waits in the pool's queue like any request (at most the
    /// connection timeout), so that under saturation a lane still gets its turn.
    pub async fn acquire_lane(&self) -> Result<Lease, PoolError> {
        let deadline = Instant::now() + self.connection_timeout;
        self.acquire_from(&self.primary, Some(deadline)).await
    }

    /// Lends a connection for a transaction, held for the life of its stream: routed as
    /// [`Pools::acquire`] routes, except that transactions hold at most their share of the
    /// failover pool (`DB_FAILOVER_TRANSACTION_SHARE`), so that however many critical
    /// transactions are open the rest of the reserve stays for critical queries. A critical
    /// transaction beyond the share is served by the primary, waiting like normal work.
    pub async fn acquire_transaction(
        &self,
        priority: Priority,
        deadline: Option<Instant>,
    ) -> Result<Lease, PoolError> {
        let (target, slot) = match self.route(priority) {
            Target::Failover => match self.transaction_share.take() {
                Some(slot) => (Target::Failover, Some(slot)),
                None => {
                    if let Some(held_back) = SHARE_LOG.admit() {
                        tracing::info!(
                            held_back,
                            "transactions hold their share of the failover pool: a critical transaction waits for the primary"
                        );
                    }
                    (Target::Primary, None)
                }
            },
            Target::Primary => (Target::Primary, None),
        };
        let mut lease = self.acquire_from(self.pool(target), deadline).await?;
        lease.slot = slot;
        Ok(lease)
    }

    /// Lends a replica connection for a read routed by `route`: the least-behind replica
    /// that qualifies (reachable, in recovery, within the staleness bound, and past
    /// `route.min_lsn` when given). `Ok(None)`: none qualifies and the read may go to the
    /// primary; under [`Preference::ReplicaOnly`] that is [`PoolError::NoReplica`] instead.
    pub async fn acquire_read(
        &self,
        route: &ReadRoute,
        deadline: Option<Instant>,
    ) -> Result<Option<Lease>, PoolError> {
        let until = deadline.unwrap_or_else(|| Instant::now() + self.connection_timeout);
        let chosen = self
            .replicas
            .acquire(route, until, deadline, self.connection_timeout)
            .await?;
        let target = match &chosen {
            Ok(lease) => lease.pool,
            Err(_) if route.preference == Preference::ReplicaPreferred => "primary",
            Err(_) => "none",
        };
        crate::telemetry::routed_read(target);
        match chosen {
            Ok(lease) => Ok(Some(lease)),
            Err(why) if route.preference == Preference::ReplicaOnly => {
                Err(PoolError::NoReplica { why })
            }
            Err(why) => {
                tracing::debug!(%why, "read served by the primary: no replica qualifies");
                Ok(None)
            }
        }
    }

    /// Measures every replica's recovery state and lag every `every` until `stop` changes.
    pub async fn run_replica_probe(
        self,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.replicas.list.is_empty() {
            return;
        }
        loop {
            self.replicas.probe(&self.primary, every).await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn acquire_from(
        &self,
        pool: &Pool,
        deadline: Option<Instant>,
    ) -> Result<Lease, PoolError> {
        lend(pool, deadline, self.connection_timeout).await
    }

    /// Whether the primary pool reaches PostgreSQL, by a round trip on an idle (or newly
    /// opened) connection taken without queueing. A pool busy to its maximum is not a
    /// database that is down: then the answer is what its connections last showed.
    pub async fn probe_primary(&self, deadline: Instant) -> bool {
        self.primary.probe(deadline).await
    }

    /// Opens every pool's minimum of connections.
    pub async fn prewarm(&self) -> Result<usize, PoolError> {
        let mut opened = self.primary.prewarm(self.connection_timeout).await?;
        if let Some(failover) = &self.failover {
            opened += failover.prewarm(self.connection_timeout).await?;
        }
        // A replica that is down must not hold back the primary: it is probed and routed
        // around until it comes back.
        for r in &self.replicas.list {
            match r.pool.prewarm(self.connection_timeout).await {
                Ok(n) => opened += n,
                Err(e) => tracing::warn!(pool = r.pool.name, error = %e, "replica prewarm failed"),
            }
        }
        Ok(opened)
    }

    /// Runs pool maintenance every `every` until `stop` changes: idle timeout, max lifetime,
    /// refill to the minimum.
    pub async fn run_maintenance(
        self,
        every: Duration,
        idle_timeout: Duration,
        max_lifetime: Option<Duration>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            for pool in self.all() {
                pool.maintain(idle_timeout, max_lifetime, self.connection_timeout)
                    .await;
            }
        }
    }

    fn all(&self) -> impl Iterator<Item = &Pool> {
        std::iter::once(&self.primary)
            .chain(self.failover.as_ref())
            .chain(self.replicas.list.iter().map(|r| &r.pool))
    }

    /// Prepared-statement cache counters over every connection of both pools.
    pub fn cache_stats(&self) -> StatementCacheStats {
        self.cache_stats.snapshot()
    }

    /// Figures for the primary pool.
    pub fn primary_stats(&self) -> PoolStats {
        self.primary.stats()
    }

    /// Figures for every pool: primary, failover, then each replica with what its probe
    /// found.
    pub fn stats(&self) -> Vec<PoolStats> {
        let mut stats: Vec<PoolStats> = self.all().map(Pool::stats).collect();
        let replicas = stats.len() - self.replicas.list.len();
        for (i, s) in stats[replicas..].iter_mut().enumerate() {
            s.replica = Some(self.replicas.state(i));
        }
        stats
    }

    /// Closes every pool: waiting requests fail, lent connections close when returned.
    pub fn close(&self) {
        self.all().for_each(Pool::close);
    }
}
