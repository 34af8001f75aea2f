//! Admission: a bounded queue of requests waiting for a connection, each waiting at most
//! until its own stop time, and connection failures retried with backoff until that stop
//! time — unless the outage is already known, which fails fast.
//!
//! An outage is *known* when reaching the database has failed, with no success since, for
//! at least the connection timeout: by requests, prewarm, maintenance or the health probe
//! (every `DB_HEALTH_CHECK_INTERVAL`), whichever noticed first. A shorter failure may be a
//! blip or a database still starting (in a pod the sidecar often starts first), so a
//! request keeps trying within its budget, with one last attempt just before its end. Once
//! known, a request makes one attempt (the database may just be back: a refused connect
//! costs a millisecond) and fails `UNAVAILABLE` without waiting; the first success, or a
//! health probe that gets through, ends the outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool::managed::{PoolError as DeadPoolError, TimeoutType, Timeouts};

use super::bounded::Pool;
use super::{Lease, PoolError};
use crate::time::Backoff;

/// The bounded queue in front of one pool: how many requests are inside `acquire` now.
#[derive(Debug)]
pub(super) struct Admission {
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// A place in the queue, given back when dropped (including by a caller that went away
/// mid-wait).
#[derive(Debug)]
pub(super) struct Ticket<'a>(&'a AtomicUsize);

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    pub(super) fn new(max_waiting: usize) -> Self {
        Admission {
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A place in the queue, or `None` when `max_waiting` requests already wait.
    pub(super) fn enter(&self) -> Option<Ticket<'_>> {
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket(&self.waiting);
        (before < self.max_waiting).then_some(ticket)
    }
}

/// How many of a pool's connections long-held leases (transactions) hold, against the most
/// they may; a [`Slot`] counts one for as long as it lives.
#[derive(Debug)]
pub(super) struct Share {
    held: AtomicUsize,
    most: usize,
}

/// One lease's place in a [`Share`], given back when dropped with the lease that holds it.
#[derive(Debug)]
pub(super) struct Slot(Arc<Share>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Share {
    pub(super) fn new(most: usize) -> Arc<Self> {
        Arc::new(Share {
            held: AtomicUsize::new(0),
            most,
        })
    }

    /// A place, or `None` when `most` are held. Never waits: the caller goes elsewhere.
    pub(super) fn take(self: &Arc<Self>) -> Option<Slot> {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held < self.most).then_some(held + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

impl Pool {
    /// Waits for a connection until `deadline`, retrying connection failures with backoff
    /// until then, with a last attempt just before it; while an outage is known (see the
    /// module), one attempt and no waiting.
    pub(super) async fn acquire(
        &self,
        deadline: Instant,
        connect_timeout: Duration,
    ) -> Result<Lease, PoolError> {
        let started = Instant::now();
        let Some(_ticket) = self.admission.enter() else {
            return Err(PoolError::Exhausted {
                pool: self.name,
                waited: Duration::ZERO,
            });
        };
        let known_down = self.down_for(connect_timeout);
        let mut backoff = Backoff::until_end(deadline);
        loop {
            // A connect cut short by this caller's own deadline says nothing of the database.
            let full_attempt =
                deadline.saturating_duration_since(Instant::now()) >= connect_timeout;
            let e = match self.try_acquire(deadline, connect_timeout, started).await {
                Ok(lease) => {
                    self.reached();
                    return Ok(lease);
                }
                Err(e @ (PoolError::Unavailable { .. } | PoolError::ConnectTimeout { .. })) => e,
                Err(e) => return Err(e),
            };
            if matches!(e, PoolError::Unavailable { .. }) || full_attempt {
                self.failed_to_reach();
            }
            let next = match known_down {
                true => None,
                false => backoff.next_at().ok(),
            };
            let Some(next) = next else {
                return Err(e);
            };
            tracing::debug!(pool = self.name, error = %e, "connecting failed; retrying");
            crate::time::until(Some(next)).await;
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
        self.lend(&timeouts, started).await
    }

    async fn lend(&self, timeouts: &Timeouts, started: Instant) -> Result<Lease, PoolError> {
        let pool = self.name;
        let conn = self
            .inner
            .timeout_get(timeouts)
            .await
            .map_err(|e| match e {
                DeadPoolError::Timeout(TimeoutType::Wait) => PoolError::Exhausted {
                    pool,
                    waited: started.elapsed(),
                },
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
            slot: None,
        })
    }

    /// Holds `count` leases at once, which makes the pool open whatever it lacks (idle
    /// connections are lent first, so asking only for the missing count opens none);
    /// dropping them returns them warm. Returns the leases' results.
    pub(super) async fn open_up_to(
        &self,
        count: u32,
        connect_timeout: Duration,
    ) -> Vec<Result<Lease, PoolError>> {
        futures_util::future::join_all(
            (0..count).map(|_| self.acquire(Instant::now() + connect_timeout, connect_timeout)),
        )
        .await
    }

    /// Opens connections up to the minimum, concurrently; returns how many are open.
    pub(super) async fn prewarm(&self, connect_timeout: Duration) -> Result<usize, PoolError> {
        let leases = self.open_up_to(self.min_idle, connect_timeout).await;
        let mut open = 0;
        for lease in leases {
            lease?;
            open += 1;
        }
        Ok(open)
    }
}

#[cfg(test)]
mod tests {
    use super::{Admission, Share};

    #[test]
    fn a_share_admits_its_most_and_takes_back_what_is_dropped() {
        let share = Share::new(2);
        let a = share.take().expect("first");
        let b = share.take().expect("second");
        assert!(share.take().is_none(), "a third is sent elsewhere");
        assert!(share.take().is_none(), "a refusal holds nothing");
        drop(a);
        let c = share.take().expect("a place freed by an ended lease");
        drop((b, c));
        assert_eq!(share.held.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert!(Share::new(0).take().is_none(), "a share of 0 admits none");
    }

    #[test]
    fn the_queue_is_bounded_and_places_are_given_back() {
        let queue = Admission::new(2);
        let a = queue.enter().expect("first place");
        let b = queue.enter().expect("second place");
        assert!(queue.enter().is_none(), "a third waiter is refused");
        drop(a);
        let c = queue.enter().expect("a place freed by a leaver");
        drop((b, c));
        assert_eq!(queue.waiting.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn a_queue_of_zero_admits_no_one() {
        let queue = Admission::new(0);
        assert!(queue.enter().is_none());
        assert_eq!(queue.waiting.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
