//! The guard around a statement in flight: if its caller goes away or its budget ends, the
//! statement is cancelled in PostgreSQL and the connection discarded; a session it may have
//! changed is reset before the connection goes back; and shutdown can wait for the
//! CancelRequests still on their way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::pool::{Conn, Lease, Object};
use crate::sql::session;

/// Longest wait for a session reset (or a rollback before it) before the connection is
/// closed instead.
pub const RESET_WAIT: Duration = Duration::from_secs(2);

/// A lease with a statement in flight. If it is dropped before [`InFlight::finish`] (the
/// caller went away, or the deadline passed) the statement is cancelled in PostgreSQL and
/// the connection discarded, so no orphan query keeps a backend busy and a late cancel can
/// never hit the next user of the connection.
pub struct InFlight {
    lease: Option<Lease>,
    cancel_sent: AtomicBool,
    discard: AtomicBool,
}

impl InFlight {
    /// Arms the guard for a lease about to run a statement.
    pub fn new(lease: Lease) -> Self {
        InFlight {
            lease: Some(lease),
            cancel_sent: AtomicBool::new(false),
            discard: AtomicBool::new(false),
        }
    }

    /// The connection.
    pub fn client(&self) -> &Conn {
        &self.lease.as_ref().expect("lease held until finish").conn
    }

    /// Sends PostgreSQL a CancelRequest for whatever runs on the connection now.
    pub fn cancel(&self) {
        if !self.cancel_sent.swap(true, Ordering::Relaxed) {
            crate::telemetry::record_cancel();
            // Made only when needed: building a cancel token copies connection settings.
            let token = self.client().cancel_token();
            let tls = self
                .lease
                .as_ref()
                .expect("lease held until finish")
                .tls
                .clone();
            spawn_cancel(async move {
                let _ = token.cancel_query(tls).await;
            });
        }
    }

    /// Closes the connection instead of returning it to the pool when finished.
    pub fn discard(&self) {
        self.discard.store(true, Ordering::Relaxed);
    }

    /// Takes back [`InFlight::discard`]: the state that made the connection unfit for reuse
    /// is over (a cancel sent still discards it).
    pub fn keep(&self) {
        self.discard.store(false, Ordering::Relaxed);
    }

    /// Finishes after `error`: when it stopped us reading a result PostgreSQL is still
    /// producing (too large, undecodable, nobody to send it to), the statement is cancelled
    /// and the connection discarded rather than left to drain a result no one wants.
    pub async fn finish_after_error(self, sql: &str, error: &Error) {
        if matches!(
            error,
            Error::ResponseTooLarge { .. }
                | Error::HeldTooLarge { .. }
                | Error::RowTooLarge { .. }
                | Error::Decode(_)
                | Error::ClientGone
                | Error::StreamStalled(_)
        ) {
            self.cancel();
        }
        // Out of step with PostgreSQL (inside a COPY, say): no one else may use it.
        if let Error::Postgres(e) = error
            && crate::error::Fault::of(e) == Some(crate::error::Fault::Protocol)
        {
            self.discard();
        }
        self.finish_after(session::may_change_session(sql)).await;
    }

    /// Resets the session if its text says the statement may have changed it, or if
    /// PostgreSQL reported a changed parameter (a function's `set_config`, say), then
    /// finishes. A reset that fails or does not take, or takes longer than
    /// [`RESET_WAIT`], closes the connection instead: no one inherits a session in doubt.
    pub async fn finish_after(self, changes_session: bool) {
        let client = self.client();
        if client.statements_lost() {
            self.discard();
        }
        let doomed =
            self.cancel_sent.load(Ordering::Relaxed) || self.discard.load(Ordering::Relaxed);
        if !doomed && !client.is_closed() && (changes_session || client.session_reported_change()) {
            let reset = tokio::time::timeout(RESET_WAIT, crate::pool::reset(client)).await;
            if !matches!(reset, Ok(Ok(()))) || client.session_reported_change() {
                self.discard();
            }
        }
        self.finish();
    }

    /// The statement is over: the connection goes back to its pool, unless a cancel was
    /// sent or it was marked for discarding.
    pub fn finish(mut self) {
        if let Some(lease) = self.lease.take()
            && (self.cancel_sent.load(Ordering::Relaxed) || self.discard.load(Ordering::Relaxed))
        {
            drop(Object::take(lease.conn));
        }
    }
}

/// CancelRequests on their way. Shutdown waits for them, so that no statement is left
/// running in PostgreSQL, orphaned, after the process exits.
static CANCELS_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `cancel` in a task of its own, counted while it runs.
pub fn spawn_cancel(cancel: impl Future<Output = ()> + Send + 'static) {
    CANCELS_IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        cancel.await;
        CANCELS_IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Waits until every CancelRequest sent so far has been delivered, or `limit` has passed.
pub async fn cancels_delivered(limit: Duration) {
    let end = Instant::now() + limit;
    while CANCELS_IN_FLIGHT.load(Ordering::Relaxed) > 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let token = lease.conn.cancel_token();
            let already = self.cancel_sent.load(Ordering::Relaxed);
            let tls = lease.tls.clone();
            spawn_cancel(async move {
                if !already {
                    crate::telemetry::record_cancel();
                    let _ = token.cancel_query(tls).await;
                }
                drop(Object::take(lease.conn));
            });
        }
    }
}
