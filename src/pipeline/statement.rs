//! One statement on a shared connection: sent only while its caller still waits, cancelled
//! in PostgreSQL only while it is the statement that connection runs, answered to the end
//! even after its caller has gone (so the statements behind it stay in step), and judged
//! afterwards: whether it must be sent again because a neighbour's cancel or session change
//! hit it, and whether its connection is still fit to share.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio_postgres::error::SqlState;

use super::Slot;
use super::lane::Held;
use crate::config::Limits;
use crate::error::Error;
use crate::exec::{Around, Executed, Failed, Spec};
use crate::proto::QueryRequest;
use crate::telemetry::PipelineCounters as Counters;

/// Why a statement is sent again, transparently, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// A CancelRequest meant for the statement before it on the connection arrived when
    /// this one had started: PostgreSQL rolled it back (57014 "due to user request").
    CancelledNeighbour,
    /// It failed after a neighbour changed the session; an autocommit statement that fails
    /// is rolled back, so it is sent again on a connection whose session is the pool's.
    SessionChanged,
}

/// How a statement on a shared connection ended.
pub struct Ran {
    /// Its result, as the caller hears it unless it is sent again.
    pub result: Result<Executed, Failed>,
    /// Set when it must be sent again instead.
    pub resend: Option<Resend>,
}

impl From<Error> for Ran {
    fn from(error: Error) -> Self {
        Ran {
            result: Err(error.into()),
            resend: None,
        }
    }
}

/// Where a statement is, as its caller, its future and its lane agree: a state and its
/// place in the wire order.
pub(super) struct Ticket {
    state: AtomicU8,
    seq: AtomicU64,
}

/// Its caller still waits.
const WAITED_FOR: u8 = 0;
/// Its caller gave up: never send it, or cancel it when it runs.
const GIVEN_UP: u8 = 1;
/// A CancelRequest was sent for it.
const CANCELLED: u8 = 2;
/// Answered to the end.
const DONE: u8 = 3;
/// The `seq` of a statement not sent.
const NOT_SENT: u64 = u64::MAX;

impl Default for Ticket {
    fn default() -> Self {
        Ticket {
            state: AtomicU8::new(WAITED_FOR),
            seq: AtomicU64::new(NOT_SENT),
        }
    }
}

impl Ticket {
    /// Marks it given up; false if it was answered or given up already.
    pub(super) fn abandon(&self) -> bool {
        self.state
            .compare_exchange(WAITED_FOR, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether it may still be sent: its caller has not given up.
    pub(super) fn may_send(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITED_FOR
    }

    /// It went on the wire as execution `seq` of its connection.
    pub(super) fn sent_as(&self, seq: u64) {
        self.seq.store(seq, Ordering::Release);
    }

    /// Its place in the wire order, once sent.
    pub(super) fn seq(&self) -> Option<u64> {
        Some(self.seq.load(Ordering::Acquire)).filter(|s| *s != NOT_SENT)
    }

    /// Claims the one CancelRequest of a statement given up; false if it was answered (or
    /// cancelled) first.
    pub(super) fn claim_cancel(&self) -> bool {
        self.state
            .compare_exchange(GIVEN_UP, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// It was answered; returns whether a CancelRequest was sent for it.
    fn finish(&self) -> bool {
        self.state.swap(DONE, Ordering::AcqRel) == CANCELLED
    }
}

/// The running statement, polled by its caller while the caller waits and by a task of its
/// own after (see `Drop`).
struct Pending {
    run: Option<BoxFuture<'static, Ran>>,
    ticket: Arc<Ticket>,
    held: Arc<Held>,
}

impl Pending {
    /// See [`Held::give_up`].
    fn abandon(&self) -> bool {
        self.held.give_up(&self.ticket)
    }
}

impl Future for Pending {
    type Output = Ran;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ran> {
        let Some(run) = self.run.as_mut() else {
            return Poll::Pending;
        };
        let ran = std::task::ready!(run.as_mut().poll(cx));
        self.run = None;
        Poll::Ready(ran)
    }
}

impl Drop for Pending {
    /// The caller went away (or its deadline passed) with the statement still in flight:
    /// it is cancelled if it runs, never sent if it was not, and otherwise read to its end
    /// by a task of its own, so that its place on the lane is given back only when
    /// PostgreSQL is done with it and the statements behind it get their own answers.
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            self.held.give_up(&self.ticket);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                drop(runtime.spawn(run));
            }
        }
    }
}

/// Runs the statement of `request` in its place on a lane until it is answered or
/// `stop_at` passes, or `stopping` resolves. Past `stop_at` the caller hears
/// `DEADLINE_EXCEEDED` at once, or, for the statement the connection runs now, once
/// PostgreSQL confirms the cancel (by `confirm_by`, or within a second).
pub async fn run(
    slot: Slot,
    request: Arc<QueryRequest>,
    limits: Limits,
    stop_at: Option<Instant>,
    confirm_by: Option<Instant>,
    stopping: impl Future<Output = ()>,
) -> Ran {
    let ticket = Arc::new(Ticket::default());
    let held = slot.held.clone();
    let mut pending = Pending {
        run: Some(Box::pin(execute(slot, request, limits, ticket.clone()))),
        ticket,
        held,
    };
    tokio::select! {
        ran = &mut pending => ran,
        _ = crate::time::until(stop_at) => {
            let mut cause = None;
            if pending.abandon() {
                let confirm_by =
                    confirm_by.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                if let Ok(Ran { result: Err(Failed { error: Error::Postgres(e), .. }), .. }) =
                    tokio::time::timeout_at(confirm_by.into(), &mut pending).await
                    && e.as_db_error().is_some()
                {
                    cause = Some(e);
                }
            }
            Error::DeadlineExceeded { cause }.into()
        }
        // Shutdown's grace is nearly over: stop the statement rather than orphan it.
        _ = stopping => {
            pending.abandon();
            Error::ShuttingDown.into()
        }
    }
}

/// The statement's whole life on its lane; the place is given back when this ends.
async fn execute(
    slot: Slot,
    request: Arc<QueryRequest>,
    limits: Limits,
    ticket: Arc<Ticket>,
) -> Ran {
    let held = &slot.held;
    let spec = Spec {
        sql: &request.sql,
        params: &request.params,
        max_rows: request.max_rows,
        around: Around::default(),
    };
    let (result, tainted) = send_and_read(held, &spec, &limits, &ticket).await;
    if let Some(seq) = ticket.seq() {
        held.answered(seq);
    }
    let own_cancel = ticket.finish();
    let conn = held.conn();
    // Exact now that the result was read to its end (see `Conn::session_reported_change`).
    let changed = conn.session_reported_change();
    if (tainted || changed) && !held.retired() {
        held.retire_for_reset();
        Counters::bump(&slot.counters.retired);
        tracing::warn!(
            "a statement changed session parameters on a shared connection: it leaves sharing and is reset"
        );
    }
    let resend = match &result {
        Err(failed) => judge_failure(held, &slot, failed, tainted, own_cancel),
        Ok(_) if tainted => {
            Counters::bump(&slot.counters.ran_after_session_change);
            None
        }
        Ok(_) => None,
    };
    Ran { result, resend }
}

/// Prepares (or finds), sends and reads the statement, unless its caller gave up before it
/// was sent. Also says whether the session had already changed when it started.
async fn send_and_read(
    held: &Held,
    spec: &Spec<'_>,
    limits: &Limits,
    ticket: &Ticket,
) -> (Result<Executed, Failed>, bool) {
    let conn = held.conn();
    let (prepared, cached) = match crate::exec::prepare(conn, spec.sql).await {
        Ok(p) => p,
        Err(e) => {
            return (
                Err(Failed::not_run(crate::exec::explain(
                    conn,
                    e.into(),
                    limits,
                ))),
                false,
            );
        }
    };
    // Numbered and sent in one step: `start_prepared` puts the execution on the wire in
    // its first poll (and only a statement found stale waits before that).
    let mut start = std::pin::pin!(crate::exec::start_prepared(conn, prepared, cached, spec));
    let first =
        std::future::poll_fn(|cx| Poll::Ready(held.number(ticket, || start.as_mut().poll(cx))))
            .await;
    let started = match first {
        None => {
            return (
                Err(Failed::not_run(Error::DeadlineExceeded { cause: None })),
                false,
            );
        }
        Some(Poll::Ready(started)) => started,
        Some(Poll::Pending) => start.await,
    };
    let started = match started {
        Ok(started) => started,
        Err(f) => {
            let error = crate::exec::explain(conn, f.error, limits);
            return (Err(Failed { error, ..f }), false);
        }
    };
    // Taken once its BindComplete has come, after the ReadyForQuery of every statement before
    // it: every parameter they reported has been seen (see `Conn::session_reported_change`).
    let tainted = conn.session_reported_change();
    let result = crate::exec::read(conn, started, spec, limits).await;
    let result = result.map_err(|f| Failed {
        error: crate::exec::explain(conn, f.error, limits),
        ..f
    });
    (result, tainted)
}

/// What a failure means for the statement and its connection.
fn judge_failure(
    held: &Held,
    slot: &Slot,
    failed: &Failed,
    tainted: bool,
    own_cancel: bool,
) -> Option<Resend> {
    match &failed.error {
        // It stopped our reading of a result PostgreSQL is still sending: stop it there too.
        Error::ResponseTooLarge { .. } | Error::Decode(_) if !own_cancel => held.cancel(),
        Error::Postgres(e) if crate::error::Fault::of(e) == Some(crate::error::Fault::Protocol) => {
            held.retire_for_discard();
            Counters::bump(&slot.counters.retired);
        }
        _ => {}
    }
    let Error::Postgres(e) = &failed.error else {
        return None;
    };
    let db = e.as_db_error()?;
    let cancelled_by_us = *db.code() == SqlState::QUERY_CANCELED
        && db.message().contains("user request")
        && held.cancels() > slot.cancels_before;
    if cancelled_by_us && !own_cancel {
        return Some(Resend::CancelledNeighbour);
    }
    // A statement that failed in a session another statement changed may have failed
    // because of it (read-only, a role); it was rolled back, so it is sent again.
    tainted.then_some(Resend::SessionChanged)
}
