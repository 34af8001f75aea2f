//! One pooled connection — the tokio-postgres client, its prepared-statement cache and the
//! watch on its reported session parameters — and how deadpool creates and recycles it.

use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;

use tokio_postgres_rustls::MakeRustlsConnect;

use super::session_watch::{self, Watch};
use super::statement_cache::{CacheStats, StatementCache};

/// A connection younger than this since its last checkout is known to work: it just did.
/// Validation spends its round trip only on connections that sat idle long enough to have
/// gone stale (a restart, a killed backend, a dropped NAT entry).
const VALIDATE_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Logs of connections found dead, a few a second at most.
static CLOSED_LOG: crate::telemetry::LogGate = crate::telemetry::LogGate::new(5);

/// A pooled connection.
pub struct Conn {
    client: ClientWrapper,
    statements: Mutex<StatementCache>,
    session: Arc<Watch>,
}

impl Conn {
    /// This connection's prepared-statement cache. Only the request holding the connection
    /// touches it, so the lock is never contended; it is never held across an await.
    pub fn statements(&self) -> MutexGuard<'_, StatementCache> {
        self.statements.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether PostgreSQL reported a session parameter (role, read-only default, time zone
    /// …) changed since the connection opened. Exact once the last result was read to
    /// its end.
    pub fn session_reported_change(&self) -> bool {
        self.session.changed()
    }
}

impl Deref for Conn {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        &self.client
    }
}

/// Opens connections (session setup is in the connection's startup options), drives each
/// in a task that watches its reported parameters, and gives each its own statement cache.
pub struct ConnManager {
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    validate: bool,
    cache_size: usize,
    cache_stats: Arc<CacheStats>,
}

impl ConnManager {
    /// A manager; `validate` checks idle connections with a round trip before reuse.
    pub fn new(
        pg: tokio_postgres::Config,
        tls: MakeRustlsConnect,
        validate: bool,
        cache_size: usize,
        cache_stats: Arc<CacheStats>,
    ) -> Self {
        ConnManager {
            pg,
            tls,
            validate,
            cache_size,
            cache_stats,
        }
    }
}

impl deadpool::managed::Manager for ConnManager {
    type Type = Conn;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = self.pg.connect(self.tls.clone()).await?;
        let (session, task) = session_watch::spawn(connection);
        Ok(Conn {
            client: ClientWrapper::new(client, task),
            session,
            statements: Mutex::new(StatementCache::new(
                self.cache_size,
                self.cache_stats.clone(),
            )),
        })
    }

    async fn recycle(
        &self,
        conn: &mut Conn,
        metrics: &Metrics,
    ) -> RecycleResult<tokio_postgres::Error> {
        if conn.client.is_closed() {
            if let Some(held_back) = CLOSED_LOG.admit() {
                tracing::info!(
                    held_back,
                    reason = "closed by the server or the network",
                    "connection closed"
                );
            }
            return Err(RecycleError::message("connection closed"));
        }
        if self.validate && metrics.last_used() >= VALIDATE_AFTER_IDLE {
            if let Err(e) = conn.client.simple_query("").await {
                if let Some(held_back) = CLOSED_LOG.admit() {
                    tracing::info!(held_back, error = %e, reason = "failed validation", "connection closed");
                }
                return Err(RecycleError::Backend(e));
            }
        }
        Ok(())
    }
}
