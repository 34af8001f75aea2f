//! One lane of the pipelined path and the connection it holds: whether that connection is
//! still fit to share, what it is running, the CancelRequests sent on it, and what happens
//! to it once its last statement is answered (back to the pool, reset first, or closed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::statement::Ticket;
use crate::exec::InFlight;
use crate::pool::{Conn, LaneFigures, Lease, Object};

/// A running statement that has run this long counts in a lane's expected wait: point
/// queries answer in tens of microseconds, so one running for a millisecond is a long one.
const LONG_RUNNING: Duration = Duration::from_millis(1);

/// A lane: the connection it shares now, if any, and whether one is being opened for it.
#[derive(Default)]
pub(super) struct Lane {
    held: Mutex<Option<Arc<Held>>>,
    refilling: AtomicBool,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, Option<Arc<Held>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lane's connection if it is fit to take another statement. One that is not
    /// (retired, closed, past its lifetime) is let go: it leaves when its last statement is
    /// answered, and `None` tells the caller to refill the lane.
    pub(super) fn fit(&self, now: Instant) -> Option<Arc<Held>> {
        let mut held = self.lock();
        match held.as_ref() {
            Some(h) if h.fit(now) => Some(h.clone()),
            Some(_) => {
                if let Some(h) = held.take() {
                    h.retire();
                }
                None
            }
            None => None,
        }
    }

    /// Claims the refill; false if one is already under way.
    pub(super) fn start_refill(&self) -> bool {
        !self.refilling.swap(true, Ordering::Relaxed)
    }

    /// A refill that got no connection: the next pick may try again.
    pub(super) fn end_refill(&self) {
        self.refilling.store(false, Ordering::Relaxed);
    }

    /// The refill's connection, now shared.
    pub(super) fn put(&self, held: Held) {
        *self.lock() = Some(Arc::new(held));
        self.end_refill();
    }

    /// Lets the lane's connection go if nothing has been sent on it or answered for `idle`
    /// and `empty` says nothing is in flight.
    pub(super) fn release_if_idle(&self, idle: Duration, empty: impl Fn() -> bool) {
        let mut held = self.lock();
        if held.as_ref().is_some_and(|h| h.idle_for(idle) && empty())
            && let Some(h) = held.take()
        {
            h.retire();
        }
    }

    /// Lets the lane's connection go (shutdown).
    pub(super) fn take(&self) {
        if let Some(h) = self.lock().take() {
            h.retire();
        }
    }
}

/// A primary connection shared by a lane's statements. It goes back to the pool when the
/// lane and every statement on it have let go of it.
pub(super) struct Held {
    lease: Option<Lease>,
    figures: Arc<LaneFigures>,
    /// Takes no more statements.
    retired: AtomicBool,
    /// The session may differ from the pool's: reset it (or close the connection) before
    /// it goes back.
    reset: AtomicBool,
    /// Out of step with PostgreSQL: close it.
    discard: AtomicBool,
    /// CancelRequests sent on this connection so far.
    cancels: AtomicU64,
    /// When the statement PostgreSQL runs now started, as far as we know: when the one
    /// before it was answered, or when it was sent to an idle connection
    /// ([`crate::time::clock`]).
    head_since: AtomicU64,
    /// The order of executions on the wire, and statements given up on before they ran.
    order: Mutex<Order>,
    /// How long an execution has been taking to answer once it ran, as a moving average
    /// in nanoseconds: what a statement queued behind others can expect to wait for each.
    service: AtomicU64,
    /// When the lane got it ([`crate::time::clock`]).
    opened: u64,
    retire_at: Option<Instant>,
}

/// Executions in the order they were sent. PostgreSQL answers in that order and flushes
/// nothing of a statement before its end, so the one it runs now is the oldest not yet
/// answered.
#[derive(Default)]
struct Order {
    /// The number the next execution sent gets.
    sent: u64,
    /// Every execution numbered below this has been answered.
    answered: u64,
    /// Executions whose callers gave up before they ran: cancelled when they start.
    doomed: Vec<(u64, Arc<Ticket>)>,
}

impl Held {
    pub(super) fn new(lease: Lease, figures: Arc<LaneFigures>, retire_at: Option<Instant>) -> Self {
        figures.hold();
        Held {
            lease: Some(lease),
            figures,
            retired: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            discard: AtomicBool::new(false),
            cancels: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            order: Mutex::new(Order::default()),
            service: AtomicU64::new(0),
            opened: crate::time::clock(),
            retire_at,
        }
    }

    fn lease(&self) -> &Lease {
        self.lease.as_ref().expect("held until dropped")
    }

    /// The connection.
    pub(super) fn conn(&self) -> &Conn {
        &self.lease().conn
    }

    pub(super) fn figures(&self) -> &LaneFigures {
        &self.figures
    }

    fn fit(&self, now: Instant) -> bool {
        !self.retired.load(Ordering::Relaxed)
            && !self.conn().is_closed()
            && self.retire_at.is_none_or(|at| now < at)
    }

    /// Takes the connection out of sharing.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// A statement changed the session: out of sharing, and reset before it goes back.
    pub(super) fn retire_for_reset(&self) {
        self.reset.store(true, Ordering::Relaxed);
        self.retire();
    }

    /// Out of step with PostgreSQL: out of sharing, and closed.
    pub(super) fn retire_for_discard(&self) {
        self.discard.store(true, Ordering::Relaxed);
        self.retire();
    }

    /// Whether the connection was already taken out of sharing.
    pub(super) fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// CancelRequests sent on this connection so far.
    pub(super) fn cancels(&self) -> u64 {
        self.cancels.load(Ordering::Relaxed)
    }

    fn order(&self) -> MutexGuard<'_, Order> {
        self.order.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers an execution and sends it with `send`, unless its caller has already given
    /// up (`None`: it is not sent). `send` must put it on the wire before it returns,
    /// without waiting, so that the numbers follow the wire order.
    pub(super) fn number<T>(&self, ticket: &Ticket, send: impl FnOnce() -> T) -> Option<T> {
        let mut order = self.order();
        if !ticket.may_send() {
            return None;
        }
        let seq = order.sent;
        order.sent += 1;
        ticket.sent_as(seq);
        if order.answered >= seq {
            self.head_since
                .store(crate::time::clock(), Ordering::Relaxed);
        }
        Some(send())
    }

    /// Execution `seq` has been answered: the next one, if any, runs now, and is cancelled
    /// if its caller already gave up.
    pub(super) fn answered(&self, seq: u64) {
        let mut order = self.order();
        order.answered = order.answered.max(seq + 1);
        let now = crate::time::clock();
        let took = now.saturating_sub(self.head_since.swap(now, Ordering::Relaxed));
        // An eighth of each new figure: a run of slow statements shows within a few, one
        // slow statement among fast ones fades within a few dozen.
        let average = self.service.load(Ordering::Relaxed);
        self.service
            .store(average - average / 8 + took / 8, Ordering::Relaxed);
        let running = order.answered;
        order.doomed.retain(|(seq, ticket)| {
            if *seq == running && ticket.claim_cancel() {
                self.cancel();
            }
            *seq > running
        });
    }

    /// The caller gave up: the execution is cancelled now if PostgreSQL runs it, when it
    /// starts if it waits behind others, and never sent if it was not yet. True when the
    /// CancelRequest went now.
    pub(super) fn give_up(&self, ticket: &Arc<Ticket>) -> bool {
        let mut order = self.order();
        if !ticket.abandon() {
            return false;
        }
        match ticket.seq() {
            // Not sent, so never will be; or answered already.
            None => false,
            Some(seq) if seq < order.answered => false,
            Some(seq) if seq == order.answered => {
                let claimed = ticket.claim_cancel();
                if claimed {
                    self.cancel();
                }
                claimed
            }
            Some(seq) => {
                order.doomed.push((seq, ticket.clone()));
                false
            }
        }
    }

    /// How long a statement given to it now, behind `depth` others, can expect to wait:
    /// those in flight at the recent pace of answers, plus, once the one running has run
    /// [`LONG_RUNNING`], what it has run so far (a statement that has run long tends to run
    /// longer). Below that, when the next answer comes is noise, which would only unbalance
    /// the lanes. Nothing in flight, no wait.
    pub(super) fn expected_wait(&self, depth: usize) -> Duration {
        if depth == 0 {
            return Duration::ZERO;
        }
        let running = self.running().as_nanos() as u64;
        let running = match running > LONG_RUNNING.as_nanos() as u64 {
            true => running,
            false => 0,
        };
        let queued = self
            .service
            .load(Ordering::Relaxed)
            .saturating_mul(depth as u64);
        Duration::from_nanos(running.saturating_add(queued))
    }

    /// How long the statement PostgreSQL runs now has run, as far as we know: since the
    /// last answer, or since it was sent to an idle connection.
    pub(super) fn running(&self) -> Duration {
        let since = self.head_since.load(Ordering::Relaxed);
        Duration::from_nanos(crate::time::clock().saturating_sub(since))
    }

    /// Whether nothing was sent on it or answered for `long`.
    fn idle_for(&self, long: Duration) -> bool {
        let since = self.head_since.load(Ordering::Relaxed).max(self.opened);
        crate::time::clock().saturating_sub(since) > long.as_nanos() as u64
    }

    /// Sends PostgreSQL a CancelRequest for whatever this connection runs now.
    pub(super) fn cancel(&self) {
        self.cancels.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::record_cancel();
        let token = self.conn().cancel_token();
        let tls = self.lease().tls.clone();
        crate::exec::spawn_cancel(async move {
            let _ = token.cancel_query(tls).await;
        });
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.figures.release();
        let Some(lease) = self.lease.take() else {
            return;
        };
        let runtime = tokio::runtime::Handle::try_current();
        match (self.reset.load(Ordering::Relaxed), runtime) {
            _ if self.discard.load(Ordering::Relaxed) => drop(Object::take(lease.conn)),
            // The guard the leased path uses: reset, check the reported parameters are
            // back, and close the connection if not.
            (true, Ok(runtime)) => drop(runtime.spawn(InFlight::new(lease).finish_after(true))),
            // No runtime to reset it on: no one may inherit the session, so it is closed.
            (true, Err(_)) => drop(Object::take(lease.conn)),
            (false, _) => drop(lease),
        }
    }
}
