//! The connection a Transaction stream leases, and what the end of the stream must do with
//! it: roll back what is open, reset a session that may have changed, or close it.

use tokio::time::timeout;

use crate::exec::{InFlight, RESET_WAIT};

/// The connection a transaction holds, and what its end must do with it.
pub(super) struct Held {
    pub(super) conn: Option<InFlight>,
    /// Still inside BEGIN ... (not yet committed or rolled back).
    pub(super) open: bool,
    /// Some statement may have changed session state: reset before reuse.
    pub(super) dirty: bool,
    /// BEGIN succeeded (the transaction counts in the metrics).
    pub(super) began: bool,
    /// How it ended, when it ended without an error: committed, rolled_back, abandoned.
    pub(super) outcome: &'static str,
}

impl Default for Held {
    fn default() -> Self {
        Held {
            conn: None,
            open: false,
            dirty: false,
            began: false,
            outcome: "abandoned",
        }
    }
}

impl Held {
    pub(super) fn client(&self) -> &crate::pool::Conn {
        self.conn
            .as_ref()
            .expect("connection held after begin")
            .client()
    }

    /// Gives the connection back: rolls back what is still open, resets a session that
    /// may have changed, and discards the connection if either fails or a cancel was sent.
    pub(super) async fn end(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.open {
            let rolled_back = timeout(RESET_WAIT, conn.client().batch_execute("ROLLBACK")).await;
            if !matches!(rolled_back, Ok(Ok(()))) {
                conn.discard();
            }
        }
        conn.finish_after(self.dirty).await;
    }

    /// The client is gone mid-statement: cancel it in PostgreSQL and close the connection,
    /// which ends the transaction (and frees its locks) without waiting for anything.
    pub(super) fn abandon(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.cancel();
            conn.finish();
        }
    }
}
