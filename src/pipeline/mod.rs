//! The pipelined path: autocommit Query statements that cannot change session state share a
//! few hot primary connections, many in flight on each at once. tokio-postgres pipelines
//! them, each with its own Bind/Execute/Sync, so each is still its own implicit transaction
//! with its own error. The rest (transactions, streams, session-changing statements, the
//! `--read-only` and `--reset-always` wraps) keeps leased connections.
//!
//! Admission: a place on the lanes (`PGSIDECAR_PIPELINE_CONNECTIONS` ×
//! `PGSIDECAR_PIPELINE_DEPTH`), taken in FIFO order by at most `DB_POOL_MAX_WAITING`
//! waiters, each waiting no longer than its deadline or the connection timeout; then the
//! lane where it would wait least (what the statement running there has run so far, plus
//! the others in flight at the recent pace of answers). A statement that
//! finds no lane fit to take it (none open yet, every one slow behind long statements while
//! the primary has a connection free, the queue full, critical work that finds no place
//! free at once or that the primary is too busy for) takes the leased path instead, routed
//! as before.

mod lane;
mod statement;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::Config;
use crate::pool::{LaneFigures, PoolError, Pools};
use crate::proto::Priority;
use crate::telemetry::PipelineCounters as Counters;

use lane::{Held, Lane};
pub use statement::{Ran, Resend, run};

/// The pipelined path, or nothing when it is off.
#[derive(Clone)]
pub struct Pipeline(Option<Arc<Inner>>);

struct Inner {
    pools: Pools,
    figures: Arc<LaneFigures>,
    lanes: Box<[Lane]>,
    /// Most statements in flight on one lane.
    depth: usize,
    /// One permit per place on the lanes: the FIFO in front of them.
    places: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Told when the waiters should stop waiting (see [`Inner::watch`]).
    stuck: tokio::sync::Notify,
    connection_timeout: Duration,
    max_lifetime: Option<Duration>,
    counters: Arc<Counters>,
}

/// A place on a lane, held while the statement is in flight there (until PostgreSQL has
/// answered it, even when its caller has gone).
pub struct Slot {
    held: Arc<Held>,
    lane: usize,
    _permit: OwnedSemaphorePermit,
    /// Time spent waiting for the place.
    pub queue_time: Duration,
    /// CancelRequests sent on the connection before this statement was given to it.
    cancels_before: u64,
    counters: Arc<Counters>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.held.figures().leave(self.lane);
    }
}

/// A place in the queue in front of the lanes, given back when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A lane where a new statement would wait this long behind the ones in flight (the one
/// running has run this long, or those queued would take this long at their recent pace)
/// takes no more for now: long statements delay only the few already behind them, and
/// the rest go to a leased connection. Point queries take tens of microseconds; the
/// margin is for a sidecar so busy that it notices answers late, which leased
/// connections would not cure.
const STALLED_AFTER: Duration = Duration::from_millis(100);

/// How a lane ranks for a new statement, least first: its expected wait, the statements in
/// flight, how long the one running has run.
type Score = (Duration, usize, Duration);

/// How often the watchdog looks whether waiters should go to the leased path.
const WATCH_EVERY: Duration = Duration::from_millis(20);

/// After a lane could not get a connection, the wait before it tries again.
const REFILL_PAUSE: Duration = Duration::from_millis(250);

impl Pipeline {
    /// The pipelined path over the primary pool, sized by the configuration (see
    /// [`crate::pool::lanes_for`]); off when that is 0.
    pub fn new(config: &Config, pools: &Pools) -> Self {
        let figures = pools.lane_figures();
        let lanes = figures.lanes();
        if lanes == 0 {
            return Pipeline(None);
        }
        let depth = config.pipeline_depth as usize;
        Pipeline(Some(Arc::new(Inner {
            pools: pools.clone(),
            figures,
            lanes: (0..lanes).map(|_| Lane::default()).collect(),
            depth,
            places: Arc::new(Semaphore::new(lanes * depth)),
            waiting: AtomicUsize::new(0),
            max_waiting: config.pool_max_waiting as usize,
            stuck: tokio::sync::Notify::new(),
            connection_timeout: config.connection_timeout,
            max_lifetime: config.max_lifetime,
            counters: Arc::default(),
        })))
    }

    /// Whether statements can be pipelined at all.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Gives the lanes their connections and starts their watchdog: at start, after the
    /// pools' prewarm and before readiness, so that a ready sidecar shares from its first
    /// request. A lane that gets none now is refilled when statements come.
    pub async fn fill(&self) {
        let Some(inner) = &self.0 else {
            return;
        };
        for lane in inner.lanes.iter() {
            if lane.start_refill() {
                match inner.pools.acquire_lane().await {
                    Ok(lease) => lane.put(inner.held(lease)),
                    Err(_) => lane.end_refill(),
                }
            }
        }
        tokio::spawn(inner.clone().watch());
    }

    /// The counters, when the path is on.
    pub fn counters(&self) -> Option<&Counters> {
        self.0.as_ref().map(|i| &*i.counters)
    }

    /// A place on a lane for a statement of `priority`, waiting in FIFO order at most until
    /// `deadline` (or the connection timeout); `None` when the statement should take the
    /// leased path instead (see the module). A statement whose deadline passes while it
    /// waits here was never sent.
    pub async fn admit(
        &self,
        priority: Priority,
        deadline: Option<Instant>,
    ) -> Result<Option<Slot>, PoolError> {
        let Some(inner) = &self.0 else {
            return Ok(None);
        };
        // Critical work the primary is too busy for goes to the reserve, as it would leased.
        if inner.pools.sends_to_reserve(priority) {
            Counters::bump(&inner.counters.overflow_critical);
            return Ok(None);
        }
        let started = Instant::now();
        let permit = match inner.places.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(PoolError::Closed { pool: "primary" }),
            Err(TryAcquireError::NoPermits) => {
                // Critical work never queues behind normal work: the leased path routes it,
                // to the reserve if the primary is busy.
                if priority == Priority::Critical {
                    Counters::bump(&inner.counters.overflow_critical);
                    return Ok(None);
                }
                match inner.wait(started, deadline).await? {
                    Some(permit) => permit,
                    None => return Ok(None),
                }
            }
        };
        let Some((lane, held)) = inner.pick(Instant::now()) else {
            Counters::bump(&inner.counters.overflow_no_lane);
            return Ok(None);
        };
        Counters::bump(&inner.counters.statements);
        Ok(Some(Slot {
            counters: inner.counters.clone(),
            cancels_before: held.cancels(),
            held,
            lane,
            _permit: permit,
            queue_time: started.elapsed(),
        }))
    }

    /// Every `every` until `stop` changes: a lane with nothing in flight for `idle_timeout`
    /// gives its connection back to the pool (whose idle rules then apply to it), and gets
    /// a new one when statements come again.
    pub async fn run_maintenance(
        self,
        every: Duration,
        idle_timeout: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(inner) = self.0 else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            for (i, lane) in inner.lanes.iter().enumerate() {
                lane.release_if_idle(idle_timeout, || inner.figures.depth(i) == 0);
            }
        }
    }

    /// Counts a statement sent again for `why`.
    pub fn count_resend(&self, why: Resend) {
        if let Some(c) = self.counters() {
            let counter = match why {
                Resend::CancelledNeighbour => &c.resent_cancelled_neighbour,
                Resend::SessionChanged => &c.resent_session_changed,
            };
            Counters::bump(counter);
        }
    }

    /// Stops admitting: waiting statements fail `SHUTTING_DOWN`, and each connection goes
    /// back to its pool once its statements in flight are answered.
    pub fn close(&self) {
        if let Some(inner) = &self.0 {
            inner.places.close();
            for lane in inner.lanes.iter() {
                lane.take();
            }
        }
    }
}

impl Inner {
    /// Waits in the queue for a place; `None` when the statement should take the leased
    /// path instead: the queue is full, or no lane is moving (every one closed, or stalled
    /// behind a long statement), so that waiting here would be waiting for that statement.
    async fn wait(
        &self,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<Option<OwnedSemaphorePermit>, PoolError> {
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        if before >= self.max_waiting {
            Counters::bump(&self.counters.overflow_queue_full);
            return Ok(None);
        }
        if !self.moving() {
            Counters::bump(&self.counters.overflow_no_lane);
            return Ok(None);
        }
        let timeout_at = started + self.connection_timeout;
        let until = deadline.map_or(timeout_at, |d| d.min(timeout_at));
        let pool = "primary";
        tokio::select! {
            biased;
            permit = self.places.clone().acquire_owned() => match permit {
                Ok(permit) => Ok(Some(permit)),
                Err(_closed) => Err(PoolError::Closed { pool }),
            },
            // The watchdog saw every lane stop moving: waiting here would be waiting for the
            // long statements they run.
            _ = self.stuck.notified() => {
                Counters::bump(&self.counters.overflow_no_lane);
                Ok(None)
            }
            _ = tokio::time::sleep_until(until.into()) => match until < timeout_at {
                true => Err(PoolError::DeadlineExceeded { pool, waited: started.elapsed() }),
                false => Err(PoolError::Exhausted { pool, waited: started.elapsed() }),
            },
        }
    }

    /// Every [`WATCH_EVERY`] while the path is open: if statements wait for a place and no
    /// lane is moving, they are sent to the leased path. One task looks, so that thousands
    /// of waiters need no timers of their own.
    async fn watch(self: Arc<Self>) {
        while !self.places.is_closed() {
            tokio::time::sleep(WATCH_EVERY).await;
            if self.waiting.load(Ordering::Relaxed) > 0 && !self.moving() {
                self.stuck.notify_waiters();
            }
        }
    }

    /// Whether waiting for a place is better than taking the leased path: some lane is
    /// open and getting through its statements, or the primary pool has no connection free
    /// (the leased path would wait too).
    fn moving(&self) -> bool {
        if !self.pools.primary_has_room() {
            return true;
        }
        let now = Instant::now();
        self.lanes.iter().enumerate().any(|(i, lane)| {
            lane.fit(now)
                .is_some_and(|held| held.expected_wait(self.figures.depth(i)) <= STALLED_AFTER)
        })
    }

    /// The open, fit lane where a new statement would wait least (on a tie, the fewest in
    /// flight, then the one whose running statement started last: the surest to be short),
    /// with a place taken on it; none if every lane is full, or would keep it waiting
    /// [`STALLED_AFTER`] while the primary has a connection free.
    fn pick(self: &Arc<Self>, now: Instant) -> Option<(usize, Arc<Held>)> {
        let mut best: Option<(usize, Score, Arc<Held>)> = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            let Some(held) = lane.fit(now) else {
                self.refill(i);
                continue;
            };
            let depth = self.figures.depth(i);
            let running = if depth == 0 {
                Duration::ZERO
            } else {
                held.running()
            };
            let score = (held.expected_wait(depth), depth, running);
            let better = best.as_ref().is_none_or(|(_, b, _)| score < *b);
            if better && depth < self.depth {
                best = Some((i, score, held));
            }
        }
        let (lane, (wait, ..), held) = best?;
        // A slow lane still beats waiting for a leased connection when none is free.
        if wait > STALLED_AFTER && self.pools.primary_has_room() {
            return None;
        }
        self.figures.enter(lane, self.depth).then_some((lane, held))
    }

    /// A lane's hold on `lease`.
    fn held(&self, lease: crate::pool::Lease) -> Held {
        let retire_at = self.max_lifetime.map(|l| Instant::now() + l);
        Held::new(lease, self.figures.clone(), retire_at)
    }

    /// Gives `lane` a connection in the background, unless it is already getting one.
    fn refill(self: &Arc<Self>, lane: usize) {
        if !self.lanes[lane].start_refill() {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let got = inner.pools.acquire_lane().await;
            match got {
                // Closed meanwhile: the connection goes straight back.
                Ok(_) if inner.places.is_closed() => {}
                Ok(lease) => inner.lanes[lane].put(inner.held(lease)),
                Err(e) => {
                    tracing::debug!(lane, error = %e, "no connection for a pipelined lane yet");
                    tokio::time::sleep(REFILL_PAUSE).await;
                    inner.lanes[lane].end_refill();
                }
            }
        });
    }
}
