//! A request's time budget: the gRPC deadline (the `grpc-timeout` header) and the request's
//! own timeout, whichever ends first.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

/// When a request must be answered by, and when its statement must stop.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// When the statement is cancelled: the earlier of the request's timeout and a moment
    /// before the gRPC deadline, so our own DEADLINE_EXCEEDED, with PostgreSQL's answer to the
    /// cancel, reaches the client before tonic's deadline timer ends the call blankly.
    pub stop_at: Option<Instant>,
    /// How long to wait, after cancelling, for PostgreSQL's answer to the cancel.
    pub confirm_by: Option<Instant>,
}

/// Parses `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Budget {
    /// The budget of a Query or StreamQuery received at `start`: the gRPC deadline and the
    /// request's own `timeout`, whichever ends first.
    pub fn of_query(start: Instant, request: &tonic::Request<crate::proto::QueryRequest>) -> Self {
        let timeout = request
            .get_ref()
            .timeout
            .and_then(|d| Duration::try_from(d).ok());
        Self::new(start, request.metadata(), timeout)
    }

    /// The budget of a request received at `start`, with the request's own `timeout`.
    pub fn new(start: Instant, metadata: &MetadataMap, timeout: Option<Duration>) -> Self {
        // An absurd timeout (years) cannot overflow the clock: it means no limit.
        let respond_by = grpc_timeout(metadata).and_then(|d| start.checked_add(d));
        // Stop the statement with a fifth of the budget (at most 100 ms) left, to cancel it
        // and hear PostgreSQL confirm; answer with a twentieth (at most 20 ms) still left.
        let before_end = |fraction: u32, cap_ms: u64| {
            respond_by.map(|t| {
                let total = t.saturating_duration_since(start);
                t - (total / fraction).min(Duration::from_millis(cap_ms))
            })
        };
        let early = before_end(5, 100);
        let confirm_by = before_end(20, 20);
        let own = timeout.and_then(|d| start.checked_add(d));
        let stop_at = match (early, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Budget {
            stop_at,
            confirm_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let cases = [
            ("5S", Some(Duration::from_secs(5))),
            ("250m", Some(Duration::from_millis(250))),
            ("1H", Some(Duration::from_secs(3600))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5", None),
            ("5x", None),
            ("123456789S", None),
        ];
        for (raw, want) in cases {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", raw.parse().expect("ascii"));
            assert_eq!(grpc_timeout(&m), want, "{raw}");
        }
    }

    #[test]
    fn stop_at_is_the_earlier_limit() {
        let start = Instant::now();
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", "1S".parse().expect("ascii"));
        let b = Budget::new(start, &m, Some(Duration::from_millis(100)));
        assert_eq!(b.stop_at, Some(start + Duration::from_millis(100)));
        let b = Budget::new(start, &m, None);
        assert_eq!(b.stop_at, Some(start + Duration::from_millis(900)));
        assert_eq!(b.confirm_by, Some(start + Duration::from_millis(980)));
        let b = Budget::new(start, &MetadataMap::new(), None);
        assert!(b.stop_at.is_none());
        let b = Budget::new(start, &MetadataMap::new(), Some(Duration::MAX));
        assert!(
            b.stop_at.is_none(),
            "an overflowing timeout is no limit, not a panic"
        );
    }
}
