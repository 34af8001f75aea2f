//! The session parameters PostgreSQL reports to the client (ParameterStatus), watched on
//! each connection: a change made where the SQL text does not show it (inside a function,
//! a view, dynamic SQL) still resets the session before anyone else uses it.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Connection};

/// The reported parameters (PostgreSQL 15) whose change is session state a later caller
/// would inherit. `server_version`, `server_encoding` and `integer_datetimes` cannot change;
/// `in_hot_standby` follows the server, not the session.
const WATCHED: [&str; 9] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "IntervalStyle",
    "is_superuser",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
];

type Values = [Option<String>; WATCHED.len()];

fn read<'a>(parameter: impl Fn(&str) -> Option<&'a str>) -> Values {
    WATCHED.map(|name| parameter(name).map(str::to_owned))
}

/// What one connection's session reported, against what it reported when it was opened.
#[derive(Debug)]
pub struct Watch {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    opened: Values,
    changed: bool,
}

impl Watch {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a watched parameter differs now from its value when the connection opened.
    ///
    /// Exact for a statement whose result the caller has read to its end: PostgreSQL sends
    /// ParameterStatus before the ReadyForQuery that ends the result, and the connection
    /// task looks at the parameters within the same poll in which it hands that
    /// ReadyForQuery on, holding this lock throughout, so taking the lock here waits out
    /// a poll in progress.
    pub fn changed(&self) -> bool {
        self.lock().changed
    }
}

/// Drives `connection` in a task of its own (as `tokio::spawn(connection)` would), watching
/// its reported parameters after every poll; `failed` hears how it ended, if by an error.
pub fn spawn<S, T>(
    mut connection: Connection<S, T>,
    failed: impl FnOnce(tokio_postgres::Error) + Send + 'static,
) -> (Arc<Watch>, JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = Arc::new(Watch {
        state: Mutex::new(State {
            opened: read(|name| connection.parameter(name)),
            changed: false,
        }),
    });
    let watched = watch.clone();
    let task = tokio::spawn(async move {
        let ended = poll_fn(|cx| {
            // Held while polling: see `Watch::changed`. Polls are short (no awaiting
            // inside), and the only other taker is a request finishing with this
            // connection, so the lock is all but never contended.
            let mut state = watched.lock();
            let polled = loop {
                match connection.poll_message(cx) {
                    Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => {
                        tracing::debug!(
                            severity = notice.severity(),
                            message = notice.message(),
                            "notice from PostgreSQL"
                        );
                    }
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => break Poll::Ready(Err(e)),
                    Poll::Ready(None) => break Poll::Ready(Ok(())),
                    Poll::Pending => break Poll::Pending,
                }
            };
            // Compared in place: nothing is allocated on this path, polled per message.
            state.changed = WATCHED
                .iter()
                .zip(&state.opened)
                .any(|(name, opened)| connection.parameter(name) != opened.as_deref());
            polled
        })
        .await;
        if let Err(e) = ended {
            failed(e);
        }
    });
    (watch, task)
}
