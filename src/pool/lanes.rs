//! The primary connections the pipelined path holds, as the pool counts them: how many it
//! holds, and how many statements are in flight on each, so that utilization, PoolStatus and
//! the metrics count a shared connection as busy only while it has work.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Figures of the pipelined path's connections, written by `crate::pipeline`, read by the
/// primary pool.
#[derive(Debug)]
pub struct LaneFigures {
    /// Statements in flight on each lane (a lane holds one connection at a time).
    depth: Box<[AtomicUsize]>,
    /// Connections the pipelined path holds now, replaced ones still draining included.
    held: AtomicUsize,
    /// Places given on the lanes since start: each is a statement served by a connection
    /// already open, which PoolStatus counts as a checkout.
    given: AtomicU64,
}

impl LaneFigures {
    /// Figures for `lanes` lanes, all empty.
    pub fn new(lanes: usize) -> Self {
        LaneFigures {
            depth: (0..lanes).map(|_| AtomicUsize::new(0)).collect(),
            held: AtomicUsize::new(0),
            given: AtomicU64::new(0),
        }
    }

    /// How many lanes there are.
    pub fn lanes(&self) -> usize {
        self.depth.len()
    }

    /// Statements in flight on `lane` now.
    pub fn depth(&self, lane: usize) -> usize {
        self.depth[lane].load(Ordering::Relaxed)
    }

    /// Takes a place on `lane` if it has fewer than `cap` statements in flight.
    pub fn enter(&self, lane: usize, cap: usize) -> bool {
        let entered = self.depth[lane]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                (d < cap).then_some(d + 1)
            })
            .is_ok();
        if entered {
            self.given.fetch_add(1, Ordering::Relaxed);
        }
        entered
    }

    /// Places given on the lanes since start.
    pub(super) fn given(&self) -> u64 {
        self.given.load(Ordering::Relaxed)
    }

    /// Gives back a place taken with [`LaneFigures::enter`].
    pub fn leave(&self, lane: usize) {
        self.depth[lane].fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection is now held by the pipelined path.
    pub fn hold(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// A held connection went back to the pool (or was closed).
    pub fn release(&self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections held, and how many of them count as busy: one per lane with a
    /// statement in flight, at most as many as are held.
    pub(super) fn held_and_busy(&self) -> (usize, usize) {
        let held = self.held.load(Ordering::Relaxed);
        let busy = self
            .depth
            .iter()
            .filter(|d| d.load(Ordering::Relaxed) > 0)
            .count();
        (held, busy.min(held))
    }

    /// In-flight statements per lane, for PoolStatus.
    pub(super) fn depths(&self) -> Vec<u32> {
        self.depth
            .iter()
            .map(|d| d.load(Ordering::Relaxed) as u32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::LaneFigures;

    #[test]
    fn a_lane_admits_up_to_its_cap_and_counts_busy_only_with_work() {
        let f = LaneFigures::new(2);
        f.hold();
        f.hold();
        assert_eq!(f.held_and_busy(), (2, 0), "held but idle");
        assert!(f.enter(0, 2));
        assert!(f.enter(0, 2));
        assert!(!f.enter(0, 2), "the cap holds");
        assert_eq!(f.held_and_busy(), (2, 1));
        assert_eq!(f.depths(), vec![2, 0]);
        f.leave(0);
        f.leave(0);
        assert_eq!(f.held_and_busy(), (2, 0));
        f.release();
        assert!(f.enter(1, 1));
        assert!(f.enter(0, 1));
        assert_eq!(f.held_and_busy(), (1, 1), "never more busy than held");
        assert_eq!(f.given(), 4, "a refused place is not counted");
    }
}
