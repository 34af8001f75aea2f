//! The primary and failover connection pools: connection setup, routing by priority,
//! bounded waiting for a connection, and the live figures PoolStatus reports.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod conn;
pub mod tls;

pub use conn::Conn;

use deadpool::Runtime;
use deadpool::managed::{
    Hook, Object as DeadObject, Pool as DeadPoolOf, PoolError as DeadPoolError, Timeouts,
};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};

use crate::statements::CacheStats;
use conn::ConnManager;

type DeadPool = DeadPoolOf<ConnManager>;
/// A connection checked out of a pool; back to the pool when dropped.
pub type Object = DeadObject<ConnManager>;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Config, PoolConfig};
use crate::proto::{PoolStats, Priority};

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
    /// A configured connection string is not valid (caught by config validation first).
    #[error("invalid connection settings for the {pool} pool: {message}")]
    Config {
        /// Pool name.
        pool: &'static str,
        /// Why.
        message: String,
    },
}

/// Pool event logs, each kind let through at most a few times a second.
static OPENED_LOG: crate::telemetry::LogGate = crate::telemetry::LogGate::new(5);
static BUSY_LOG: crate::telemetry::LogGate = crate::telemetry::LogGate::new(1);
static FAILOVER_LOG: crate::telemetry::LogGate = crate::telemetry::LogGate::new(1);

/// Counters and flags deadpool does not keep.
struct Counters {
    created: AtomicU64,
    checkouts: AtomicU64,
    /// Requests inside `acquire` now: the admission queue's length.
    waiting: AtomicUsize,
    /// False after connecting failed even with retries; while false, requests that need a
    /// new connection try once and fail fast instead of queueing behind backoff.
    reachable: AtomicBool,
}

/// Backoff before each retry of opening a connection: 100, 500, 2000 ms (the first try is
/// immediate), each plus up to 20 % jitter, all within `CONNECT_RETRY_BUDGET`.
const CONNECT_BACKOFF: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_millis(2000),
];
const CONNECT_RETRY_BUDGET: Duration = Duration::from_secs(5);

/// A pseudo-random fraction in [0, 1) for jitter, from `seed`; no RNG crate for this.
pub(crate) fn jitter_fraction(seed: impl std::hash::Hash) -> f64 {
    use std::hash::{BuildHasher, RandomState};
    static KEYS: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    (KEYS.get_or_init(RandomState::new).hash_one(seed) % 10_000) as f64 / 10_000.0
}

/// One deadpool pool with its name, sizes and counters.
#[derive(Clone)]
pub struct Pool {
    name: &'static str,
    inner: DeadPool,
    min_idle: u32,
    max_waiting: usize,
    counters: Arc<Counters>,
    tls: MakeRustlsConnect,
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
    pub tls: MakeRustlsConnect,
}

impl Pool {
    fn new(
        name: &'static str,
        pool: &PoolConfig,
        config: &Config,
        cache_stats: &Arc<CacheStats>,
    ) -> Result<Self, PoolError> {
        let (pg, tls) =
            session_config(&pool.database_url, config).map_err(|message| PoolError::Config {
                pool: name,
                message,
            })?;
        // Validation is ours (ConnManager::recycle), so deadpool-postgres only connects.
        let recycling_method = RecyclingMethod::Fast;
        let manager = ConnManager::new(
            Manager::from_config(pg, tls.clone(), ManagerConfig { recycling_method }),
            config.connection_validation,
            config.statement_cache_size,
            cache_stats.clone(),
        );
        let counters = Arc::new(Counters {
            created: AtomicU64::new(0),
            checkouts: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            reachable: AtomicBool::new(true),
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
            max_waiting: config.pool_max_waiting as usize,
            counters,
            tls,
        })
    }

    /// Active connections as a percentage of the maximum.
    pub fn utilization_percent(&self) -> f64 {
        let s = self.inner.status();
        let active = s.size.saturating_sub(s.available);
        if s.max_size == 0 {
            return 100.0;
        }
        active as f64 * 100.0 / s.max_size as f64
    }

    /// Whether the last attempt to reach the database through this pool succeeded.
    pub fn reachable(&self) -> bool {
        self.counters.reachable.load(Ordering::Relaxed)
    }

    /// Waits for a connection until `deadline`, retrying connection failures with backoff
    /// while the database is believed reachable (a blip), and failing fast once it is known
    /// to be down (an outage: the health probe notices its return).
    async fn acquire(
        &self,
        deadline: Instant,
        connect_timeout: Duration,
    ) -> Result<Lease, PoolError> {
        let waiting = self.counters.waiting.fetch_add(1, Ordering::Relaxed);
        // Decrements on every exit path, including the caller going away mid-wait.
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _leave = Leave(&self.counters.waiting);
        let started = Instant::now();
        if waiting >= self.max_waiting {
            return Err(PoolError::Exhausted {
                pool: self.name,
                waited: Duration::ZERO,
            });
        }
        let mut backoff = CONNECT_BACKOFF.iter();
        loop {
            match self.try_acquire(deadline, connect_timeout, started).await {
                Ok(lease) => {
                    self.counters.reachable.store(true, Ordering::Relaxed);
                    return Ok(lease);
                }
                Err(e @ (PoolError::Unavailable { .. } | PoolError::ConnectTimeout { .. })) => {
                    let delay = backoff
                        .next()
                        .map(|d| d.mul_f64(1.0 + 0.2 * jitter_fraction(Instant::now())));
                    let retry_at = delay.map(|d| Instant::now() + d);
                    let exhausted = retry_at
                        .is_none_or(|at| at.duration_since(started) >= CONNECT_RETRY_BUDGET);
                    let past_deadline = retry_at.is_some_and(|at| at >= deadline);
                    if !self.reachable() || exhausted || past_deadline {
                        // A refused connection, or retries run out, says the database is
                        // down; a connect cut short by this caller's own deadline says
                        // nothing about it.
                        if exhausted || matches!(e, PoolError::Unavailable { .. }) {
                            self.counters.reachable.store(false, Ordering::Relaxed);
                        }
                        return Err(e);
                    }
                    tracing::debug!(pool = self.name, error = %e, "connecting failed; retrying");
                    tokio::time::sleep_until(retry_at.expect("in budget").into()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt at a connection: an idle one, or a new one if the pool has room.
    async fn try_acquire(
        &self,
        deadline: Instant,
        connect_timeout: Duration,
        started: Instant,
    ) -> Result<Lease, PoolError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let timeouts = Timeouts {
            wait: Some(wait),
            create: Some(connect_timeout.min(wait.max(Duration::from_millis(1)))),
            recycle: Some(connect_timeout),
        };
        let pool = self.name;
        let conn = self
            .inner
            .timeout_get(&timeouts)
            .await
            .map_err(|e| match e {
                DeadPoolError::Timeout(deadpool::managed::TimeoutType::Wait) => {
                    PoolError::Exhausted {
                        pool,
                        waited: started.elapsed(),
                    }
                }
                DeadPoolError::Timeout(_) => PoolError::ConnectTimeout { pool },
                DeadPoolError::Backend(source) => PoolError::Unavailable { pool, source },
                DeadPoolError::Closed => PoolError::Closed { pool },
                other => PoolError::Config {
                    pool,
                    message: other.to_string(),
                },
            })?;
        self.counters.checkouts.fetch_add(1, Ordering::Relaxed);
        let queue_time = started.elapsed();
        crate::telemetry::record_pool_wait(pool, queue_time);
        Ok(Lease {
            conn,
            pool,
            queue_time,
            tls: self.tls.clone(),
        })
    }

    /// Opens connections up to the minimum, concurrently; returns how many are open.
    async fn prewarm(&self, connect_timeout: Duration) -> Result<usize, PoolError> {
        let want = self.min_idle as usize;
        let mut leases = Vec::with_capacity(want);
        let results = futures_util::future::join_all(
            (0..want).map(|_| self.acquire(Instant::now() + connect_timeout, connect_timeout)),
        )
        .await;
        for r in results {
            leases.push(r?);
        }
        // Dropping the leases returns them to the pool, warm.
        Ok(leases.len())
    }

    /// Live figures for PoolStatus.
    pub fn stats(&self) -> PoolStats {
        let s = self.inner.status();
        let created = self.counters.created.load(Ordering::Relaxed);
        let checkouts = self.counters.checkouts.load(Ordering::Relaxed);
        let active = s.size.saturating_sub(s.available);
        PoolStats {
            name: self.name.to_owned(),
            max_connections: s.max_size as u32,
            min_idle: self.min_idle,
            total_connections: s.size as u32,
            active_connections: active as u32,
            idle_connections: s.available as u32,
            waiting_requests: s.waiting as u32,
            utilization_percent: self.utilization_percent(),
            connections_created: created,
            checkouts,
            reuse_rate: if checkouts == 0 {
                0.0
            } else {
                (1.0 - created as f64 / checkouts as f64).max(0.0)
            },
        }
    }

    fn close(&self) {
        self.inner.close();
    }

    /// Closes idle connections past the idle timeout (keeping the minimum) and those older
    /// than their max lifetime, then opens connections back up to the minimum.
    async fn maintain(
        &self,
        idle_timeout: Duration,
        max_lifetime: Option<Duration>,
        connect: Duration,
    ) {
        let mut spare = self
            .inner
            .status()
            .size
            .saturating_sub(self.min_idle as usize);
        let retained = self.inner.retain(|_, m| {
            let expired = max_lifetime.is_some_and(|life| m.age() >= jittered(life, m.created));
            let idle_too_long = m.last_used() >= idle_timeout && spare > 0;
            if expired || idle_too_long {
                spare = spare.saturating_sub(1);
                return false;
            }
            true
        });
        if !retained.removed.is_empty() {
            tracing::debug!(
                pool = self.name,
                closed = retained.removed.len(),
                "closed idle or expired connections"
            );
        }
        let size = self.inner.status().size;
        if size < self.min_idle as usize {
            // Holding `min_idle` leases at once makes the pool open whatever it lacks (idle
            // connections are lent first, so asking only for the missing count opens none).
            let opened = futures_util::future::join_all(
                (0..self.min_idle).map(|_| self.acquire(Instant::now() + connect, connect)),
            )
            .await;
            let failed = opened.iter().filter(|r| r.is_err()).count();
            if failed > 0 {
                tracing::debug!(pool = self.name, failed, "could not refill to the minimum");
            }
        }
    }
}

/// A connection's lifetime shortened by up to 10 %, varying per connection, so connections
/// opened together (at prewarm) are not all closed and reopened in the same instant.
fn jittered(lifetime: Duration, created: Instant) -> Duration {
    lifetime.mul_f64(1.0 - 0.1 * jitter_fraction(created))
}

/// The connection settings every pooled session starts with. Set in the startup packet, so
/// they cost no round trip and `RESET ALL` returns to them.
fn session_config(
    url: &str,
    config: &Config,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), String> {
    let (url, tls) = tls::split(url)?;
    let mut pg = tokio_postgres::Config::from_str(&url).map_err(|e| e.to_string())?;
    pg.ssl_mode(tls.driver_mode());
    if pg.get_application_name().is_none() {
        pg.application_name("pgsidecar");
    }
    let statement_timeout = config.query_timeout.map_or(0, |d| d.as_millis());
    // Result text forms (interval, timestamps inside composites) assume these settings.
    let ours = format!(
        "-c statement_timeout={statement_timeout} \
         -c idle_in_transaction_session_timeout={} \
         -c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres",
        config.transaction_idle_timeout.as_millis()
    );
    // Read-only mode: RESET and DISCARD ALL return to this startup value, so a session that
    // changed it is put back before reuse.
    let ours = if config.read_only {
        ours + " -c default_transaction_read_only=on"
    } else {
        ours
    };
    let options = match pg.get_options() {
        Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    pg.options(&options);
    pg.connect_timeout(config.connection_timeout);
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(30));
    Ok((pg, tls.connector()?))
}

/// Both pools and the rule that routes a request to one of them.
#[derive(Clone)]
pub struct Pools {
    primary: Pool,
    failover: Option<Pool>,
    threshold_percent: f64,
    connection_timeout: Duration,
    cache_stats: Arc<CacheStats>,
}

impl Pools {
    /// Builds the pools; no connection is opened until [`Pools::prewarm`] or first use.
    pub fn new(config: &Config) -> Result<Self, PoolError> {
        let cache_stats = Arc::new(CacheStats::default());
        let primary = Pool::new("primary", &config.primary, config, &cache_stats)?;
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
        Ok(Pools {
            primary,
            failover,
            threshold_percent: config.failover_threshold_percent,
            connection_timeout: config.connection_timeout,
            cache_stats,
        })
    }

    /// The pool that serves a request of this priority now. Critical work moves to the
    /// reserve when the primary is at or above the threshold; normal work never does, which
    /// is what keeps the reserve free for it.
    pub fn route(&self, priority: Priority) -> &Pool {
        let utilization = self.primary.utilization_percent();
        let busy = utilization >= self.threshold_percent;
        if busy && let Some(held_back) = BUSY_LOG.admit() {
            tracing::warn!(
                utilization_percent = utilization,
                threshold_percent = self.threshold_percent,
                held_back,
                "primary pool at or above the failover threshold"
            );
        }
        match (&self.failover, priority) {
            (Some(failover), Priority::Critical) if busy => {
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
        let pool = self.route(priority);
        let started = Instant::now();
        let timeout_at = started + self.connection_timeout;
        let until = deadline.map_or(timeout_at, |d| d.min(timeout_at));
        match pool.acquire(until, self.connection_timeout).await {
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

    /// Opens every pool's minimum of connections.
    pub async fn prewarm(&self) -> Result<usize, PoolError> {
        let mut opened = self.primary.prewarm(self.connection_timeout).await?;
        if let Some(failover) = &self.failover {
            opened += failover.prewarm(self.connection_timeout).await?;
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
            for pool in std::iter::once(&self.primary).chain(self.failover.as_ref()) {
                pool.maintain(idle_timeout, max_lifetime, self.connection_timeout)
                    .await;
            }
        }
    }

    /// Prepared-statement cache counters over every connection of both pools.
    pub fn cache_stats(&self) -> &CacheStats {
        &self.cache_stats
    }

    /// The primary pool.
    pub fn primary(&self) -> &Pool {
        &self.primary
    }

    /// Figures for every pool, primary first.
    pub fn stats(&self) -> Vec<PoolStats> {
        std::iter::once(&self.primary)
            .chain(self.failover.as_ref())
            .map(Pool::stats)
            .collect()
    }

    /// Closes both pools: waiting requests fail, lent connections close when returned.
    pub fn close(&self) {
        self.primary.close();
        if let Some(f) = &self.failover {
            f.close();
        }
    }
}
