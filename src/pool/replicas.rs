//! Read replicas: one bounded pool per standby, the probe that measures how far each one is
//! behind the primary, and which of them may serve a read under a staleness bound and a
//! read-your-writes token.
//!
//! Staleness is measured, not trusted from the standby's own clock: every probe round first
//! reads the primary's WAL position (sampled with the time it was asked), then each
//! replica's replay position. A replica that has replayed a sample's position holds every
//! commit acknowledged before that sample was taken, so its staleness is at most the age of
//! the newest such sample. A replica whose replay is paused, whose WAL receiver is cut off,
//! or that was never caught up, ages past any bound however its clock reads; one that is
//! caught up stays within about two probe intervals of the primary (the sample it replayed
//! may be the one before last, and each ages until the next round).
//!
//! A read with a read-your-writes token is always checked on the connection it is given:
//! `pg_last_wal_replay_lsn()` of the very server that will answer it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::bounded::{Pool, Probe};
use super::lsn::Lsn;
use super::statement_cache::CacheStats;
use super::{Lease, PoolError};
use crate::config::{Config, PoolConfig};
use crate::proto::ReplicaState;
use crate::telemetry::LogGate;

/// Probe failures, logged once a second at most.
static PROBE_LOG: LogGate = LogGate::new(1);

/// Primary positions older than this are forgotten: a replica further behind is stale
/// under any bound worth having.
const HISTORY: Duration = Duration::from_secs(600);

/// Which servers a read may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// A qualifying replica, else the primary.
    ReplicaPreferred,
    /// A qualifying replica, else UNAVAILABLE.
    ReplicaOnly,
}

/// How a read that may leave the primary is routed.
#[derive(Debug, Clone, Copy)]
pub struct ReadRoute {
    /// Where it may go.
    pub preference: Preference,
    /// The staleness bound; `None` = the server's default.
    pub max_staleness: Option<Duration>,
    /// Read-your-writes: only a server that has replayed this position may serve it.
    pub min_lsn: Option<Lsn>,
}

/// What the last probe learned of one replica.
#[derive(Debug, Clone, Copy, Default)]
struct Probed {
    /// The probe ran at least once.
    probed: bool,
    reachable: bool,
    in_recovery: bool,
    /// Replayed position, as the last probe read it.
    replay: Option<Lsn>,
    /// When the newest primary position this replica had replayed was sampled.
    fresh_as_of: Option<Instant>,
    lag_bytes: u64,
    /// Whether it qualified under the default bound when last probed, for the event log.
    serving: bool,
}

impl Probed {
    /// How far behind the primary the replica may be now, at most.
    fn staleness(&self, now: Instant) -> Option<Duration> {
        self.fresh_as_of.map(|t| now.saturating_duration_since(t))
    }

    /// Why it may not serve a read with `bound` (and, ignoring tokens, nothing if it may).
    fn unfit(&self, bound: Duration, now: Instant) -> Option<String> {
        if !self.probed {
            return Some("not probed yet".into());
        }
        if !self.reachable {
            return Some("unreachable".into());
        }
        if !self.in_recovery {
            return Some("not in recovery (promoted, or not a standby)".into());
        }
        match self.staleness(now) {
            None => Some("behind every primary position sampled".into()),
            Some(s) if s > bound => Some(format!("{s:.1?} behind (bound {bound:?})")),
            Some(_) => None,
        }
    }
}

/// One replica: its pool and what was measured of it.
pub(super) struct Replica {
    pub(super) pool: Pool,
    /// The connection string without its password, for PoolStatus and logs.
    target: String,
    probed: Mutex<Probed>,
}

impl Replica {
    fn probed(&self) -> Probed {
        *self.probed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Probed)) {
        f(&mut self.probed.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Every replica, the primary positions sampled, and the default bound.
pub(super) struct Replicas {
    pub(super) list: Vec<Replica>,
    /// `(when asked, primary position)`, oldest first.
    history: Mutex<VecDeque<(Instant, Lsn)>>,
    default_bound: Duration,
}

impl Replicas {
    /// The pools of `config.replica_urls`, named `replica-0`, `replica-1`, ...; their
    /// sessions start read-only, so a write fails even on a standby promoted behind our back.
    pub(super) fn new(config: &Config, cache_stats: &Arc<CacheStats>) -> Result<Self, PoolError> {
        let mut session = config.clone();
        session.read_only = true;
        let list = config
            .replica_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                // Named once per replica at start, for the life of the process.
                let name: &'static str = Box::leak(format!("replica-{i}").into_boxed_str());
                let sizes = PoolConfig {
                    database_url: url.clone(),
                    ..config.replica_pool.clone()
                };
                Ok(Replica {
                    pool: Pool::new(name, &sizes, &session, cache_stats)?,
                    target: crate::conninfo::redact_url(url),
                    probed: Mutex::default(),
                })
            })
            .collect::<Result<_, PoolError>>()?;
        Ok(Replicas {
            list,
            history: Mutex::default(),
            default_bound: config.replica_max_staleness,
        })
    }

    /// One probe round: the primary's position, then each replica's state against it.
    pub(super) async fn probe(&self, primary: &Pool, every: Duration) {
        if self.list.is_empty() {
            return;
        }
        let asked = Instant::now();
        // Allowed to queue for a while: a busy primary must still be sampled, or every
        // replica would age past its bound for want of a fresh position.
        let budget = every.max(Duration::from_secs(1));
        let sql = super::lsn::INSERT_POSITION_SQL;
        if let Probe::Row(row) = primary.probe_row(every, budget, sql, false).await
            && let Some(lsn) = super::lsn::insert_position(&row)
        {
            let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            // A position lower than the last one is a new primary (a failover): what was
            // sampled of the old one says nothing about the new.
            if h.back().is_some_and(|&(_, last)| lsn < last) {
                h.clear();
            }
            h.push_back((asked, lsn));
            while h
                .front()
                .is_some_and(|&(t, _)| asked.duration_since(t) > HISTORY)
            {
                h.pop_front();
            }
        }
        let sql = "SELECT pg_is_in_recovery()::text, pg_last_wal_replay_lsn()::text";
        // All at once, each queueing like a request: a busy replica is still measured.
        let probes = self
            .list
            .iter()
            .map(|r| r.pool.probe_row(every, budget, sql, true));
        let probes = futures_util::future::join_all(probes).await;
        for (r, probe) in self.list.iter().zip(probes) {
            let before = r.probed();
            let mut now = before;
            now.probed = true;
            match probe {
                Probe::Row(row) => {
                    now.reachable = true;
                    now.in_recovery = row.first().and_then(|v| v.as_deref()) == Some("true");
                    // As read, never raised by what an earlier probe saw: a restarted
                    // standby may serve again from a point below it.
                    now.replay = row.get(1).and_then(|v| v.as_deref()?.parse::<Lsn>().ok());
                    (now.fresh_as_of, now.lag_bytes) = self.freshness(now.replay);
                }
                // Still busy after a wait: nothing learned; it ages from what was known.
                Probe::Busy => {}
                Probe::Down => {
                    now = Probed {
                        probed: true,
                        ..Probed::default()
                    };
                }
            }
            now.serving = now.unfit(self.default_bound, Instant::now()).is_none();
            r.update(|p| *p = now);
            self.report(r, &before, &now);
        }
    }

    /// When the newest primary position at or below `replay` was sampled, and how many
    /// bytes the newest sample is ahead of `replay`.
    fn freshness(&self, replay: Option<Lsn>) -> (Option<Instant>, u64) {
        let Some(replay) = replay else {
            return (None, 0);
        };
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = h
            .iter()
            .rev()
            .find(|&&(_, lsn)| lsn <= replay)
            .map(|&(t, _)| t);
        let behind = h
            .back()
            .map_or(0, |&(_, lsn)| lsn.0.saturating_sub(replay.0));
        (fresh, behind)
    }

    /// A log line when a replica starts or stops qualifying under the default bound.
    fn report(&self, r: &Replica, before: &Probed, now: &Probed) {
        let at = Instant::now();
        let name = r.pool.name;
        let is = now.unfit(self.default_bound, at);
        match (before.serving, &is) {
            (false, None) => tracing::info!(pool = name, "replica serving reads"),
            (true, Some(why)) => {
                tracing::warn!(pool = name, reason = %why, "replica not serving reads")
            }
            (false, Some(why)) if !before.probed => {
                tracing::warn!(pool = name, reason = %why, "replica not serving reads");
            }
            _ => {}
        }
        if let (Some(why), Some(held_back)) = (&is, PROBE_LOG.admit())
            && !now.reachable
        {
            tracing::debug!(pool = name, reason = %why, held_back, "replica probe failed");
        }
    }

    /// A connection on the least-behind replica that may serve `route` now, or `None` with
    /// why none may.
    pub(super) async fn acquire(
        &self,
        route: &ReadRoute,
        until: Instant,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<Result<Lease, String>, PoolError> {
        if self.list.is_empty() {
            return Ok(Err("no replica is configured (DB_REPLICA_URLS)".into()));
        }
        let bound = route.max_staleness.unwrap_or(self.default_bound);
        let now = Instant::now();
        let mut why = Vec::new();
        let mut fit: Vec<(&Replica, Probed)> = Vec::new();
        for r in &self.list {
            let p = r.probed();
            match p.unfit(bound, now) {
                Some(reason) => why.push(format!("{}: {reason}", r.pool.name)),
                None => fit.push((r, p)),
            }
        }
        // Those with a connection free first, then the least behind.
        fit.sort_by_key(|(r, p)| (!r.pool.has_room(), p.staleness(now)));
        for (r, _) in fit {
            let lease = match super::lend(&r.pool, deadline, timeout).await {
                Ok(lease) => lease,
                Err(PoolError::Unavailable { .. } | PoolError::ConnectTimeout { .. }) => {
                    r.update(|p| p.reachable = false);
                    why.push(format!("{}: unreachable", r.pool.name));
                    continue;
                }
                Err(PoolError::Exhausted { .. }) => {
                    why.push(format!("{}: no free connection", r.pool.name));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(token) = route.min_lsn else {
                return Ok(Ok(lease));
            };
            // Asked of the very server this connection reached, every time: the probe's
            // view is a moment old, and a replica string may name a server other than the
            // one probed (a restart, a load balancer).
            let sql = "SELECT pg_last_wal_replay_lsn()::text";
            let asked = tokio::time::timeout_at(until.into(), lease.conn.simple_query(sql));
            let replay = match asked.await {
                Ok(Ok(messages)) => super::first_row(&messages)
                    .first()
                    .and_then(|v| v.as_deref()?.parse().ok()),
                _ => {
                    // A connection that could not answer is not given to anyone else.
                    drop(super::Object::take(lease.conn));
                    why.push(format!(
                        "{}: did not say how far it has replayed",
                        r.pool.name
                    ));
                    continue;
                }
            };
            if replay.is_some_and(|replay: Lsn| replay >= token) {
                return Ok(Ok(lease));
            }
            why.push(format!(
                "{}: has not replayed {token} (at {})",
                r.pool.name,
                replay.map_or_else(|| "unknown".into(), |l| l.to_string())
            ));
        }
        Ok(Err(why.join("; ")))
    }

    /// PoolStatus's view of replica `i`.
    pub(super) fn state(&self, i: usize) -> ReplicaState {
        let r = &self.list[i];
        let p = r.probed();
        let now = Instant::now();
        ReplicaState {
            target: r.target.clone(),
            reachable: p.reachable,
            in_recovery: p.in_recovery,
            replay_lsn: p.replay.map(|l| l.to_string()).unwrap_or_default(),
            lag: p.staleness(now).and_then(|s| s.try_into().ok()),
            lag_bytes: p.lag_bytes,
            serving: p.unfit(self.default_bound, now).is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probed(staleness: Option<Duration>, now: Instant) -> Probed {
        Probed {
            probed: true,
            reachable: true,
            in_recovery: true,
            replay: Some(Lsn(100)),
            fresh_as_of: staleness.map(|s| now - s),
            lag_bytes: 0,
            serving: true,
        }
    }

    #[test]
    fn a_replica_serves_only_within_the_bound_and_in_recovery() {
        let now = Instant::now() + Duration::from_secs(60);
        let bound = Duration::from_secs(1);
        assert!(
            probed(Some(Duration::from_millis(900)), now)
                .unfit(bound, now)
                .is_none()
        );
        assert!(
            probed(Some(Duration::from_millis(1100)), now)
                .unfit(bound, now)
                .is_some()
        );
        assert!(
            probed(None, now).unfit(bound, now).is_some(),
            "never caught up"
        );
        let promoted = Probed {
            in_recovery: false,
            ..probed(Some(Duration::ZERO), now)
        };
        assert!(promoted.unfit(bound, now).is_some());
        let down = Probed {
            reachable: false,
            ..probed(Some(Duration::ZERO), now)
        };
        assert!(down.unfit(bound, now).is_some());
        assert!(Probed::default().unfit(bound, now).is_some(), "not probed");
    }
}
