//! Which pool serves a request: a pure function of its priority and the primary's
//! utilization, so the rule that keeps the reserve for critical work is tested on its own.

use crate::proto::Priority;

/// A pool a request may be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The pool for normal work.
    Primary,
    /// The reserve kept for `PRIORITY_CRITICAL` work.
    Failover,
}

/// Where a request of `priority` goes while the primary is `utilization` percent busy.
/// Critical work moves to the reserve (when there is one) at or above `threshold`; normal
/// work never does, which is what keeps the reserve free for critical work.
pub fn route(priority: Priority, utilization: f64, threshold: f64, has_failover: bool) -> Target {
    let busy = utilization >= threshold;
    match priority {
        Priority::Critical if busy && has_failover => Target::Failover,
        _ => Target::Primary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_work_never_takes_the_reserve() {
        for p in [Priority::Unspecified, Priority::Normal] {
            for u in [0.0, 79.9, 80.0, 100.0] {
                assert_eq!(route(p, u, 80.0, true), Target::Primary, "{p:?} at {u}%");
            }
        }
    }

    #[test]
    fn critical_work_moves_at_the_threshold() {
        assert_eq!(route(Priority::Critical, 79.9, 80.0, true), Target::Primary);
        assert_eq!(
            route(Priority::Critical, 80.0, 80.0, true),
            Target::Failover
        );
        assert_eq!(
            route(Priority::Critical, 100.0, 80.0, true),
            Target::Failover
        );
    }

    #[test]
    fn without_a_reserve_everything_uses_the_primary() {
        assert_eq!(
            route(Priority::Critical, 100.0, 80.0, false),
            Target::Primary
        );
    }
}
