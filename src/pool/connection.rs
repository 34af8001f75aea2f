//! One pooled connection — the tokio-postgres client, its prepared-statement cache and the
//! watch on its reported session parameters, the tripwire of its size guard — and how
//! deadpool creates and recycles it.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;

use super::session_watch::{self, Watch};
use super::statement_cache::{CacheStats, StatementCache};
use crate::conninfo::{PgConnect, Tripwire};

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
    tripwire: Arc<Tripwire>,
    statements_lost: AtomicBool,
}

impl Conn {
    /// Marks the connection as having run a statement that may drop every prepared
    /// statement of its session (`DISCARD ALL`, `DEALLOCATE`): tokio-postgres's own (its
    /// type lookups) would go too, and nothing brings them back, so it is closed, never
    /// reused.
    pub fn lose_statements(&self) {
        self.statements_lost.store(true, Ordering::Relaxed);
    }

    /// Whether [`Conn::lose_statements`] was called.
    pub fn statements_lost(&self) -> bool {
        self.statements_lost.load(Ordering::Relaxed)
    }

    /// The declared size of the message PostgreSQL sent that was refused unread for being
    /// over the limit, which closed this connection; `None` if none was.
    pub fn refused_message(&self) -> Option<u64> {
        self.tripwire.tripped()
    }

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

/// Opens connections (the session settings are in the startup packet), each with its own
/// statement cache and size guard, driven in a task that watches its reported parameters.
pub struct ConnManager {
    pg: tokio_postgres::Config,
    connect: PgConnect,
    validate: bool,
    cache_size: usize,
    cache_stats: Arc<CacheStats>,
}

impl ConnManager {
    /// A manager; `validate` checks idle connections with a round trip before reuse.
    pub fn new(
        pg: tokio_postgres::Config,
        connect: PgConnect,
        validate: bool,
        cache_size: usize,
        cache_stats: Arc<CacheStats>,
    ) -> Self {
        ConnManager {
            pg,
            connect,
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
        // The connector is made per connection, so the tripwire is this connection's own.
        let (connect, tripwire) = self.connect.for_connection();
        let (client, connection) = self.pg.connect(connect).await?;
        let refused = tripwire.clone();
        let (session, task) = session_watch::spawn(connection, move |e| {
            let reason = match refused.tripped() {
                Some(_) => "a message from PostgreSQL over the size limit",
                None => "connection error",
            };
            if let Some(held_back) = CLOSED_LOG.admit() {
                tracing::info!(held_back, error = %e, reason, "connection closed");
            }
        });
        Ok(Conn {
            client: ClientWrapper::new(client, task),
            session,
            tripwire,
            statements_lost: AtomicBool::new(false),
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
        if conn.statements_lost() {
            tracing::info!(
                reason = "a statement dropped the session's prepared statements",
                "connection closed"
            );
            return Err(RecycleError::message(
                "a statement dropped the session's prepared statements",
            ));
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
