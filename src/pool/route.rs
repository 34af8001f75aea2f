//! Which pool serves a request: a pure function of its priority and the primary's
//! utilization, so the rule that keeps the reserve for critical work is tested on its own;
//! and how much of the reserve long-held transaction leases may take.

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

/// How many of a failover pool of `max_size` connections transactions may hold at once:
/// `percent` of it, rounded down, so that below 100 % at least one connection always stays
/// for critical Query calls however many critical transactions are open. A critical
/// transaction beyond it is served as if there were no reserve (by the primary, waiting like
/// normal work).
pub fn transaction_share(max_size: u32, percent: u32) -> usize {
    (u64::from(max_size) * u64::from(percent.min(100)) / 100) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_never_hold_the_whole_reserve_below_100_percent() {
        assert_eq!(transaction_share(20, 50), 10);
        assert_eq!(transaction_share(4, 50), 2);
        assert_eq!(
            transaction_share(5, 50),
            2,
            "rounded down: the rest stays for queries"
        );
        assert_eq!(transaction_share(1, 50), 0);
        assert_eq!(transaction_share(20, 0), 0);
        assert_eq!(transaction_share(20, 100), 20, "100 % is the old behaviour");
        for max in 1..=100 {
            for percent in 0..100 {
                assert!(
                    transaction_share(max, percent) < max as usize,
                    "{percent}% of {max} leaves a connection for queries"
                );
            }
        }
        assert_eq!(transaction_share(u32::MAX, 100), u32::MAX as usize);
    }

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
