//! The outbound half of a streaming call: a bounded queue of messages whose sender waits
//! at most the stream idle timeout for the client to take one, and which can be cut short
//! with a final status that drops whatever the client has not taken.
//!
//! A client that stops reading (or never opens its HTTP/2 flow-control window) stops
//! hyper polling the response body, so nothing written into the body after that reaches
//! it; the handler must give up on its own clock, and what it held is freed here.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::Status;

/// Why a message could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unsent {
    /// The client went away (the response stream was dropped).
    Gone,
    /// The client took nothing for the stream idle timeout.
    Stalled,
}

/// The handler's side.
pub(super) struct Outbound<T> {
    tx: mpsc::Sender<Result<T, Status>>,
    shared: Arc<Mutex<Shared<T>>>,
    idle: Duration,
}

/// The response stream tonic polls.
pub(super) struct OutboundStream<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

/// Held by both sides, so that the handler can drop the queue while hyper, waiting for a
/// flow-control window that never opens, does not poll the stream.
struct Shared<T> {
    /// The queue; `None` once cut.
    rx: Option<mpsc::Receiver<Result<T, Status>>>,
    /// The final status of a cut stream, until the stream yields it.
    status: Option<Status>,
    /// The stream's task, to wake when cut while it waits for a message.
    waker: Option<Waker>,
}

/// A queue of `capacity` messages whose sends wait at most `idle` for room.
pub(super) fn channel<T>(capacity: usize, idle: Duration) -> (Outbound<T>, OutboundStream<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    let shared = Arc::new(Mutex::new(Shared {
        rx: Some(rx),
        status: None,
        waker: None,
    }));
    let stream = OutboundStream {
        shared: shared.clone(),
    };
    (Outbound { tx, shared, idle }, stream)
}

impl<T> Outbound<T> {
    /// Queues `message`, waiting at most `idle` (or the stream idle timeout, if shorter)
    /// for the client to make room.
    pub(super) async fn send_within(
        &self,
        message: Result<T, Status>,
        idle: Duration,
    ) -> Result<(), Unsent> {
        match tokio::time::timeout(idle.min(self.idle), self.tx.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Unsent::Gone),
            Err(_) => Err(Unsent::Stalled),
        }
    }

    /// Queues `message`, waiting at most the stream idle timeout.
    pub(super) async fn send(&self, message: Result<T, Status>) -> Result<(), Unsent> {
        self.send_within(message, self.idle).await
    }

    /// Ends the stream with `status` after what is queued, if the client makes room in
    /// time; else cuts it.
    pub(super) async fn end_with(&self, status: Status) {
        match tokio::time::timeout(self.idle, self.tx.reserve()).await {
            Ok(Ok(permit)) => permit.send(Err(status)),
            Ok(Err(_)) => {}
            Err(_) => self.cut(status),
        }
    }

    /// Ends the stream with `status` at once, dropping what is queued: the client is not
    /// reading it, and it would stay in memory as long as the connection.
    pub(super) fn cut(&self, status: Status) {
        let mut shared = self.shared.lock().expect("outbound lock");
        shared.rx = None;
        shared.status = Some(status);
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
    }

    /// The stream idle timeout.
    pub(super) fn idle(&self) -> Duration {
        self.idle
    }

    /// Resolves when the client has gone away (or the stream was cut).
    pub(super) async fn closed(&self) {
        self.tx.closed().await
    }
}

impl<T> Stream for OutboundStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut shared = self.shared.lock().expect("outbound lock");
        if let Some(status) = shared.status.take() {
            return Poll::Ready(Some(Err(status)));
        }
        shared.waker = Some(cx.waker().clone());
        match shared.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        }
    }
}

// The queue is shared, so tonic dropping the stream (the client went away) must close it
// by hand for the handler's `closed` and sends to notice.
impl<T> Drop for OutboundStream<T> {
    fn drop(&mut self) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.rx = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_stalled_send_gives_up_and_the_cut_drops_what_was_queued() {
        let (out, mut stream) = channel::<u32>(1, Duration::from_millis(50));
        out.send(Ok(1)).await.unwrap();
        assert_eq!(out.send(Ok(2)).await, Err(Unsent::Stalled));
        out.cut(Status::aborted("stalled"));
        let first = stream.next().await.expect("the final status");
        assert_eq!(first.unwrap_err().code(), tonic::Code::Aborted);
        assert!(stream.next().await.is_none(), "message 1 was dropped");
    }

    #[tokio::test]
    async fn a_reader_in_time_gets_the_messages_then_the_status() {
        let (out, mut stream) = channel::<u32>(1, Duration::from_secs(5));
        out.send(Ok(1)).await.unwrap();
        let reader = tokio::spawn(async move { stream.by_ref().collect::<Vec<_>>().await });
        out.end_with(Status::internal("late error")).await;
        drop(out);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(*got[0].as_ref().unwrap(), 1);
        assert_eq!(got[1].as_ref().unwrap_err().code(), tonic::Code::Internal);
    }

    #[tokio::test]
    async fn a_stream_that_stays_stalled_is_cut_by_end_with() {
        let (out, mut stream) = channel::<u32>(1, Duration::from_millis(50));
        out.send(Ok(1)).await.unwrap();
        out.end_with(Status::internal("late error")).await;
        let first = stream.next().await.expect("the final status");
        assert_eq!(first.unwrap_err().code(), tonic::Code::Internal);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_dropped_stream_is_gone() {
        let (out, stream) = channel::<u32>(1, Duration::from_secs(5));
        drop(stream);
        assert_eq!(out.send(Ok(1)).await, Err(Unsent::Gone));
    }
}
