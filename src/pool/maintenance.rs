//! Maintenance of one pool: idle connections above the minimum are closed after the idle
//! timeout, connections older than their (jittered) max lifetime are replaced, and the
//! pool is refilled to its minimum.

use std::time::{Duration, Instant};

use super::bounded::Pool;
use crate::time::jitter_fraction;

/// What is known of one open, idle connection when the sweep looks at it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    /// When it was opened (also the seed of its lifetime jitter).
    pub(super) created: Instant,
    /// Time since it was opened.
    pub(super) age: Duration,
    /// Time since it was last lent.
    pub(super) idle: Duration,
}

/// One pass over a pool's idle connections: decides, connection by connection, which to
/// close, keeping at least the minimum open.
#[derive(Debug)]
pub(super) struct Sweep {
    /// Connections that may still close for idleness without going under the minimum.
    spare: usize,
    idle_timeout: Duration,
    max_lifetime: Option<Duration>,
}

impl Sweep {
    pub(super) fn new(
        open: usize,
        min_idle: u32,
        idle_timeout: Duration,
        max_lifetime: Option<Duration>,
    ) -> Self {
        Sweep {
            spare: open.saturating_sub(min_idle as usize),
            idle_timeout,
            max_lifetime,
        }
    }

    /// Whether the connection described by `facts` is closed.
    pub(super) fn closes(&mut self, facts: Facts) -> bool {
        let expired = self
            .max_lifetime
            .is_some_and(|life| facts.age >= jittered(life, facts.created));
        let idle_too_long = facts.idle >= self.idle_timeout && self.spare > 0;
        if expired || idle_too_long {
            self.spare = self.spare.saturating_sub(1);
        }
        expired || idle_too_long
    }
}

/// A connection's lifetime shortened by up to 10 %, varying per connection, so connections
/// opened together (at prewarm) are not all closed and reopened in the same instant.
fn jittered(lifetime: Duration, created: Instant) -> Duration {
    lifetime.mul_f64(1.0 - 0.1 * jitter_fraction(created))
}

impl Pool {
    /// Closes idle connections past the idle timeout (keeping the minimum) and those older
    /// than their max lifetime, then opens connections back up to the minimum.
    pub(super) async fn maintain(
        &self,
        idle_timeout: Duration,
        max_lifetime: Option<Duration>,
        connect: Duration,
    ) {
        let open = self.inner.status().size;
        let mut sweep = Sweep::new(open, self.min_idle, idle_timeout, max_lifetime);
        let retained = self.inner.retain(|_, m| {
            !sweep.closes(Facts {
                created: m.created,
                age: m.age(),
                idle: m.last_used(),
            })
        });
        if !retained.removed.is_empty() {
            tracing::debug!(
                pool = self.name,
                closed = retained.removed.len(),
                "closed idle or expired connections"
            );
        }
        if self.inner.status().size < self.min_idle as usize {
            let opened = self.open_up_to(self.min_idle, connect).await;
            let failed = opened.iter().filter(|r| r.is_err()).count();
            if failed > 0 {
                tracing::debug!(pool = self.name, failed, "could not refill to the minimum");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn conn(age_s: u64, idle_s: u64) -> Facts {
        Facts {
            created: Instant::now(),
            age: SEC * age_s as u32,
            idle: SEC * idle_s as u32,
        }
    }

    #[test]
    fn idle_connections_close_down_to_the_minimum_and_no_further() {
        // Five open, minimum two, all idle for a minute with a 30 s idle timeout.
        let mut sweep = Sweep::new(5, 2, 30 * SEC, None);
        let closed = (0..5).filter(|_| sweep.closes(conn(60, 60))).count();
        assert_eq!(closed, 3);
    }

    #[test]
    fn recently_used_connections_stay() {
        let mut sweep = Sweep::new(5, 0, 30 * SEC, None);
        assert!(!sweep.closes(conn(600, 29)));
        assert!(sweep.closes(conn(600, 30)));
    }

    #[test]
    fn expired_connections_close_even_below_the_minimum() {
        // The lifetime is shortened by at most 10 % of jitter: 100 s is past a 100 s life,
        // 89 s is not past it.
        let mut sweep = Sweep::new(2, 2, 30 * SEC, Some(100 * SEC));
        assert!(sweep.closes(conn(100, 0)));
        assert!(!sweep.closes(conn(89, 0)));
    }
}
