//! The pipelined path's counters: kept as atomics on the data path (no metric lookup per
//! statement) and copied into Prometheus at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::counter;

use super::names;

/// What the pipelined path did since start.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    /// Statements sent on a shared connection.
    pub statements: AtomicU64,
    /// Statements that took the leased path instead: no lane open or fit to take them.
    pub overflow_no_lane: AtomicU64,
    /// … the queue in front of the lanes was full.
    pub overflow_queue_full: AtomicU64,
    /// … critical work that found no place free at once.
    pub overflow_critical: AtomicU64,
    /// Statements sent again because a CancelRequest meant for a neighbour stopped them.
    pub resent_cancelled_neighbour: AtomicU64,
    /// Statements sent again because they failed after a neighbour changed the session.
    pub resent_session_changed: AtomicU64,
    /// Statements that succeeded after a neighbour changed the session (see SECURITY.md).
    pub ran_after_session_change: AtomicU64,
    /// Connections taken out of sharing because the session changed or fell out of step.
    pub retired: AtomicU64,
}

impl PipelineCounters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Copies the counters into their Prometheus counters; called at scrape time.
pub fn export_pipeline(c: &PipelineCounters) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter!(names::PIPELINE_STATEMENTS).absolute(get(&c.statements));
    for (reason, n) in [
        ("no_lane", &c.overflow_no_lane),
        ("queue_full", &c.overflow_queue_full),
        ("critical", &c.overflow_critical),
    ] {
        counter!(names::PIPELINE_OVERFLOW, "reason" => reason).absolute(get(n));
    }
    for (reason, n) in [
        ("cancelled_neighbour", &c.resent_cancelled_neighbour),
        ("session_changed", &c.resent_session_changed),
    ] {
        counter!(names::PIPELINE_RESENT, "reason" => reason).absolute(get(n));
    }
    counter!(names::PIPELINE_AFTER_SESSION_CHANGE).absolute(get(&c.ran_after_session_change));
    counter!(names::PIPELINE_RETIRED).absolute(get(&c.retired));
}
