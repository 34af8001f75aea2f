//! The statement report: per-statement figures (calls, errors, time, rows, cache hits) keyed
//! by a fingerprint of the statement's normalized text, for the top statements by total
//! time. Literals (dollar-quoted ones included) are replaced by `?` and comments dropped
//! before fingerprinting, so statements that differ only in constants or comments group
//! together and no value, and no secret written in a comment, ever reaches the report.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::proto::StatementStats;
use crate::sql::fingerprint::{key_of, normalize};

/// Statements tracked at most; past this the one with the least total time makes way.
const TRACKED: usize = 1000;
/// Normalized text kept per statement, in characters.
const TEXT_CHARS: usize = 200;

#[derive(Default)]
struct Entry {
    text: String,
    calls: u64,
    errors: u64,
    total: Duration,
    max: Duration,
    rows: u64,
    cache_hits: u64,
}

/// Per-statement figures since start.
#[derive(Default)]
pub struct Report {
    entries: Mutex<HashMap<u64, Entry>>,
}

impl Report {
    /// Adds one execution of `sql`, whose report key is `key` when already known (it is
    /// worked out once per prepared statement); the text is normalized only for a new entry.
    pub fn record(
        &self,
        sql: &str,
        key: Option<u64>,
        took: Duration,
        ok: bool,
        rows: u64,
        cached: bool,
    ) {
        let key = key.unwrap_or_else(|| key_of(sql));
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if !entries.contains_key(&key) && entries.len() >= TRACKED {
            // Keep the statements that cost the most; the cheapest makes way.
            if let Some(&cheapest) = entries.iter().min_by_key(|(_, e)| e.total).map(|(k, _)| k) {
                entries.remove(&cheapest);
            }
        }
        let e = entries.entry(key).or_insert_with(|| Entry {
            text: normalize(sql).chars().take(TEXT_CHARS).collect(),
            ..Entry::default()
        });
        e.calls += 1;
        e.errors += u64::from(!ok);
        e.total += took;
        e.max = e.max.max(took);
        e.rows += rows;
        e.cache_hits += u64::from(cached);
    }

    /// The `limit` statements with the most total time, most first.
    pub fn top(&self, limit: usize) -> Vec<StatementStats> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(&u64, &Entry)> = entries.iter().collect();
        all.sort_by_key(|(_, e)| std::cmp::Reverse(e.total));
        all.into_iter()
            .take(limit)
            .map(|(k, e)| StatementStats {
                fingerprint: format!("{k:016x}"),
                query: e.text.clone(),
                calls: e.calls,
                errors: e.errors,
                total_ms: e.total.as_secs_f64() * 1000.0,
                mean_ms: e.total.as_secs_f64() * 1000.0 / e.calls.max(1) as f64,
                max_ms: e.max.as_secs_f64() * 1000.0,
                rows: e.rows,
                cache_hit_rate: e.cache_hits as f64 / e.calls.max(1) as f64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_ranks_by_total_time() {
        let r = Report::default();
        r.record("SELECT 1", None, Duration::from_millis(5), true, 1, false);
        r.record("SELECT 2", None, Duration::from_millis(5), false, 0, true);
        r.record(
            "SELECT * FROM big",
            Some(key_of("SELECT *   FROM big")),
            Duration::from_millis(30),
            true,
            100,
            true,
        );
        let top = r.top(10);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].query, "SELECT * FROM big");
        assert_eq!((top[1].calls, top[1].errors, top[1].rows), (2, 1, 1));
        assert!((top[1].mean_ms - 5.0).abs() < 1e-9);
        assert!((top[1].cache_hit_rate - 0.5).abs() < 1e-9);
    }
}
