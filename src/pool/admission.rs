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
        let pool = self.name;
        let conn = self
            .inner
            .timeout_get(&timeouts)
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
    use super::Admission;

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
