//! Query figures: counters, a sliding latency window of per-second histograms, slow
//! statements, and the statement report, fed one finished statement at a time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Slow-statement log lines, at most 20 a second (the rest counted as `held_back`).
static SLOW_LOG: crate::telemetry::LogGate = crate::telemetry::LogGate::new(20);

use super::report;
use crate::proto::{QueryStats, StatementStats};

/// Width of the latency window PoolStatus reports over.
const WINDOW: Duration = Duration::from_secs(60);
/// The window is kept as this many one-second slices.
const SLICES: usize = 60;

/// One finished statement, as [`Stats::record`] takes it.
pub struct Record<'a> {
    /// Query, StreamQuery or Transaction.
    pub rpc: &'static str,
    /// The pool that served it, or "none".
    pub pool: &'static str,
    /// Its SQL text (only its fingerprint and normalized form are kept).
    pub sql: &'a str,
    /// How long it took.
    pub took: Duration,
    /// Whether it succeeded.
    pub ok: bool,
    /// Rows returned or affected.
    pub rows: u64,
    /// Whether its prepared statement was cached.
    pub cached: bool,
    /// Its statement-report key, when known from its prepared statement.
    pub report_key: Option<u64>,
}

/// Query counters and a sliding latency window of per-second histograms.
pub struct Stats {
    report: report::Report,
    total: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    slow: AtomicU64,
    slow_threshold: Duration,
    started: Instant,
    window: Mutex<Window>,
}

struct Window {
    /// One histogram (microseconds) per second; `stamps[i]` says which second it holds.
    slices: Vec<hdrhistogram::Histogram<u64>>,
    stamps: Vec<u64>,
}

impl Stats {
    /// Counters starting now; statements slower than `slow_threshold` count as slow.
    pub fn new(slow_threshold: Duration) -> Self {
        let hist =
            || hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds");
        Stats {
            report: report::Report::default(),
            total: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            slow_threshold,
            started: Instant::now(),
            window: Mutex::new(Window {
                slices: (0..SLICES).map(|_| hist()).collect(),
                stamps: vec![u64::MAX; SLICES],
            }),
        }
    }

    /// Records one statement: counters, the latency window, metrics, the statement report,
    /// and the slow log.
    pub fn record(&self, r: Record<'_>) {
        let Record {
            rpc,
            pool,
            sql,
            took: latency,
            ok,
            rows,
            cached,
            report_key,
        } = r;
        self.total.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let slow = latency >= self.slow_threshold;
        if slow {
            self.slow.fetch_add(1, Ordering::Relaxed);
            // Under overload every statement is slow (its wait counts): a line each would
            // cost the sidecar more than the statements. The counter keeps them all.
            if let Some(held_back) = SLOW_LOG.admit() {
                // The fingerprint identifies the statement without its parameter values.
                tracing::warn!(
                    rpc,
                    fingerprint = %crate::sql::fingerprint::fingerprint(sql),
                    duration_ms = latency.as_millis() as u64,
                    ok,
                    held_back,
                    "slow statement"
                );
            }
        }
        crate::telemetry::record_statement(rpc, pool, ok, latency, slow);
        self.report
            .record(sql, report_key, latency, ok, rows, cached);
        let second = self.started.elapsed().as_secs();
        let i = (second % SLICES as u64) as usize;
        let micros = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        let mut w = self.window.lock().expect("stats lock poisoned");
        if w.stamps[i] != second {
            w.slices[i].reset();
            w.stamps[i] = second;
        }
        let _ = w.slices[i].record(micros);
    }

    /// Counts a statement that needed more than one attempt.
    pub fn record_retry(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::record_retry();
    }

    /// Counters since start and latency over the window.
    pub fn snapshot(&self) -> QueryStats {
        let now = self.started.elapsed().as_secs();
        let oldest = now.saturating_sub(WINDOW.as_secs() - 1);
        let mut merged = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2)
            .expect("valid bounds");
        {
            let w = self.window.lock().expect("stats lock poisoned");
            for (slice, &stamp) in w.slices.iter().zip(&w.stamps) {
                if stamp != u64::MAX && stamp >= oldest {
                    let _ = merged.add(slice);
                }
            }
        }
        let ms = |micros: f64| micros / 1000.0;
        let pct = |q: f64| {
            if merged.is_empty() {
                0.0
            } else {
                ms(merged.value_at_quantile(q) as f64)
            }
        };
        QueryStats {
            total: self.total.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            latency_avg_ms: if merged.is_empty() {
                0.0
            } else {
                ms(merged.mean())
            },
            latency_p50_ms: pct(0.50),
            latency_p95_ms: pct(0.95),
            latency_p99_ms: pct(0.99),
            slow: self.slow.load(Ordering::Relaxed),
        }
    }

    /// Time since the sidecar started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Stats {
    /// The top `limit` statements by total time.
    pub fn top_statements(&self, limit: usize) -> Vec<StatementStats> {
        self.report.top(limit)
    }
}
