//! The per-connection prepared-statement cache: a bounded LRU of server-side prepared
//! statements keyed by a hash of the SQL text (checked against the text, so a collision is a
//! miss, never a wrong statement), holding what each statement needs per request so that
//! work is done once per statement: its column descriptions, whether its values need
//! PostgreSQL's text output, whether it may change session state, and its command-tag shape.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use lru::LruCache;
use tokio_postgres::Statement;

use crate::proto::{Column, StatementCacheStats};

/// A prepared statement and what was worked out about it once.
#[derive(Debug)]
pub struct Prepared {
    /// The server-side statement; dropping the last handle closes it on the server.
    pub statement: Statement,
    /// The SQL text, for the collision check.
    pub sql: Box<str>,
    /// Result columns as the API describes them.
    pub columns: Vec<Column>,
    /// Some column's values need PostgreSQL's text output (see `codec::needs_server_text`).
    pub needs_server_text: bool,
    /// The statement may leave session state behind (see `sql::session`).
    pub changes_session: bool,
    /// The statement may drop every prepared statement of the session, so its connection
    /// is closed after it (see `sql::session::drops_prepared_statements`).
    pub drops_statements: bool,
    /// How its command tag is written.
    pub tag: crate::sql::TagShape,
    /// Its key in the statement report.
    pub report_key: u64,
}

/// Cache counters, shared by every connection's cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
    cached: AtomicI64,
}

impl CacheStats {
    /// The figures PoolStatus reports.
    pub fn snapshot(&self) -> StatementCacheStats {
        StatementCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            cached_statements: self.cached.load(Ordering::Relaxed).max(0) as u64,
        }
    }
}

/// One connection's cache.
pub struct StatementCache {
    entries: Option<LruCache<u64, Arc<Prepared>>>,
    stats: Arc<CacheStats>,
}

/// The cache key of the SQL text (checked against the text on every hit).
fn key(sql: &str) -> u64 {
    crate::hash::stable(sql)
}

impl StatementCache {
    /// A cache of at most `capacity` statements; 0 caches nothing.
    pub fn new(capacity: usize, stats: Arc<CacheStats>) -> Self {
        StatementCache {
            entries: NonZeroUsize::new(capacity).map(LruCache::new),
            stats,
        }
    }

    /// The cached statement for `sql`, counting a hit or a miss.
    pub fn get(&mut self, sql: &str) -> Option<Arc<Prepared>> {
        let found = self
            .entries
            .as_mut()
            .and_then(|e| e.get(&key(sql)))
            .filter(|p| &*p.sql == sql)
            .cloned();
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps a newly prepared statement, evicting the least recently used one when full
    /// (and any entry whose text merely collided on the hash).
    pub fn insert(&mut self, prepared: Arc<Prepared>) {
        let Some(entries) = self.entries.as_mut() else {
            return;
        };
        // An entry making way is the least recently used one, or one whose text collided
        // on the hash: either way one statement out, one in.
        if entries.push(key(&prepared.sql), prepared).is_some() {
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.cached.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops `sql`'s entry because the schema changed under it (the server said so).
    pub fn invalidate(&mut self, sql: &str) {
        if let Some(entries) = self.entries.as_mut()
            && entries.pop(&key(sql)).is_some()
        {
            self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
            self.stats.cached.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Forgets everything (the server's statements are already gone, e.g. DISCARD ALL).
    pub fn clear(&mut self) {
        if let Some(entries) = self.entries.as_mut() {
            self.stats
                .cached
                .fetch_sub(entries.len() as i64, Ordering::Relaxed);
            entries.clear();
        }
    }
}

impl Drop for StatementCache {
    fn drop(&mut self) {
        self.clear();
    }
}
