//! Time on the data path: the retry backoff (one schedule for reconnecting and for resending
//! a statement), the stop time that may never come, and a clock that fits in an atomic.

use std::time::{Duration, Instant};

/// Nanoseconds of a monotonic clock since its first reading, plus one, so that an atomic
/// holding 0 can mean "never".
pub fn clock() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let nanos = EPOCH.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
}

/// Pauses before the second, third and fourth attempt; each gets up to 20 % jitter.
const SCHEDULE: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_millis(2000),
];
/// Every attempt starts within this long of the first.
const BUDGET: Duration = Duration::from_secs(5);
/// How long before the end of its budget a schedule that keeps trying makes its last
/// attempt: time for one connection to open (TCP, TLS, authentication) on a slow network.
const LAST_ATTEMPT_LEAD: Duration = Duration::from_millis(250);

/// A pseudo-random fraction in [0, 1) for jitter, from `seed`; no RNG crate for this.
pub fn jitter_fraction(seed: impl std::hash::Hash) -> f64 {
    (crate::hash::stable(seed) % 10_000) as f64 / 10_000.0
}

/// Why there is no next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// Every pause of the schedule is used, or the next would start past the retry budget.
    Exhausted,
    /// The next attempt would start at or past the caller's deadline.
    PastDeadline,
}

/// The retry schedule of one operation: 100, 500, 2000 ms plus jitter, all attempts
/// within five seconds of the first and before the deadline; or, for something that may
/// come up at any moment, attempts until a stop time (see [`Backoff::until_end`]).
#[derive(Debug)]
pub struct Backoff {
    next: std::slice::Iter<'static, Duration>,
    started: Instant,
    deadline: Option<Instant>,
    /// Keep trying until `deadline` rather than for the schedule and the budget.
    keep_trying: bool,
    /// The last attempt before `deadline` was given.
    last_given: bool,
}

impl Backoff {
    /// The schedule of an operation whose first attempt starts now.
    pub fn new(deadline: Option<Instant>) -> Self {
        Self::starting_at(Instant::now(), deadline)
    }

    /// The schedule of connecting until `end`: the pauses above, then the last one again and
    /// again; and when the next pause would leave no time to connect before `end`, one last
    /// attempt just before it instead of giving up. A database that comes up late (the
    /// sidecar often starts before it in a pod) is then found within the caller's budget
    /// however the pauses fall.
    pub fn until_end(end: Instant) -> Self {
        Backoff {
            keep_trying: true,
            ..Self::starting_at(Instant::now(), Some(end))
        }
    }

    fn starting_at(started: Instant, deadline: Option<Instant>) -> Self {
        Backoff {
            next: SCHEDULE.iter(),
            started,
            deadline,
            keep_trying: false,
            last_given: false,
        }
    }

    /// When the next attempt may start, or why there is none.
    pub fn next_at(&mut self) -> Result<Instant, GiveUp> {
        let now = Instant::now();
        if let (true, Some(end)) = (self.keep_trying, self.deadline) {
            return self.next_until(now, end);
        }
        let Some(pause) = self.next.next() else {
            return Err(GiveUp::Exhausted);
        };
        let at = now + pause.mul_f64(1.0 + 0.2 * jitter_fraction(now));
        if at.duration_since(self.started) >= BUDGET {
            return Err(GiveUp::Exhausted);
        }
        if self.deadline.is_some_and(|d| at >= d) {
            return Err(GiveUp::PastDeadline);
        }
        Ok(at)
    }

    fn next_until(&mut self, now: Instant, end: Instant) -> Result<Instant, GiveUp> {
        let pause = *self.next.next().unwrap_or(&SCHEDULE[SCHEDULE.len() - 1]);
        let at = now + pause.mul_f64(1.0 + 0.2 * jitter_fraction(now));
        let last = end.checked_sub(LAST_ATTEMPT_LEAD).unwrap_or(end);
        if at <= last {
            return Ok(at);
        }
        if !self.last_given && now < last {
            self.last_given = true;
            return Ok(last);
        }
        Err(GiveUp::PastDeadline)
    }
}

/// Resolves at `at`, or never when there is no stop time.
pub async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_three_pauses_with_bounded_jitter() {
        let mut b = Backoff::new(None);
        for pause in SCHEDULE {
            let at = b.next_at().expect("within the budget");
            let waited = at.saturating_duration_since(Instant::now());
            assert!(
                waited <= pause.mul_f64(1.2),
                "{waited:?} > {pause:?} + 20 %"
            );
        }
        assert_eq!(b.next_at(), Err(GiveUp::Exhausted));
    }

    #[test]
    fn the_deadline_and_the_budget_end_the_schedule() {
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            Backoff::new(Some(soon)).next_at(),
            Err(GiveUp::PastDeadline)
        );
        // Started long ago: even the first pause is past the budget.
        let long_ago = Instant::now() - BUDGET;
        let mut b = Backoff::starting_at(long_ago, None);
        assert_eq!(b.next_at(), Err(GiveUp::Exhausted));
    }

    #[test]
    fn keeping_on_until_the_end_ends_with_a_last_attempt_just_before_it() {
        // 1.5 s: after the 100 and 500 ms pauses, the 2 s one would overrun; instead one
        // last attempt 250 ms before the end, then no more.
        let end = Instant::now() + Duration::from_millis(1500);
        let mut b = Backoff::until_end(end);
        let first = b.next_at().expect("first pause");
        assert!(first <= Instant::now() + Duration::from_millis(120));
        b.next_at().expect("second pause");
        assert_eq!(b.next_at(), Ok(end - LAST_ATTEMPT_LEAD));
        assert_eq!(b.next_at(), Err(GiveUp::PastDeadline));
        // A long budget keeps pausing 2 s (plus jitter) past the usual three pauses and 5 s.
        let end = Instant::now() + Duration::from_secs(60);
        let mut b = Backoff::until_end(end);
        for _ in 0..10 {
            assert!(b.next_at().is_ok_and(|at| at < end - LAST_ATTEMPT_LEAD));
        }
        // Too little left for an attempt: none.
        let end = Instant::now() + Duration::from_millis(100);
        assert_eq!(Backoff::until_end(end).next_at(), Err(GiveUp::PastDeadline));
    }

    #[test]
    fn jitter_is_a_fraction() {
        for seed in 0..1000 {
            let f = jitter_fraction(seed);
            assert!((0.0..1.0).contains(&f));
        }
    }
}
