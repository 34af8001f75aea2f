//! Listening sockets that hold up under abuse: the open-files limit raised at start, an
//! accept loop that pauses when accepting fails (out of file descriptors) instead of
//! spinning, a cap on concurrent connections, and a handshake deadline for connections that
//! never start speaking HTTP/2.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The HTTP/2 client preface: the 24-byte magic and the 9-byte header of the SETTINGS frame
/// that must follow it (RFC 9113 §3.4). A client that has sent this much is speaking HTTP/2;
/// gRPC-core likewise ends its server handshake on the client's first SETTINGS frame.
const PREFACE_BYTES: usize = 24 + 9;

/// First pause after a failed accept, doubled on each failure in a row up to
/// [`MAX_PAUSE`], as Go's net/http does (5 ms … 1 s). Out of file descriptors, an accept
/// fails at once and forever; retrying without a pause spins a core and starves everything
/// else on the runtime, including the calls that would give descriptors back.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between accepts that fail.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Raises the soft limit on open files to the hard limit, so the connection caps and the
/// pools have room; returns the soft limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// A listener that hands out [`Guarded`] connections: at most `max_connections` at once
/// (more are closed as soon as they are accepted), each held to the handshake deadline.
pub struct Listener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    /// For gRPC: the time a connection has to send the HTTP/2 preface (after TLS, when
    /// `tls`). `None` for the HTTP port, whose server bounds the wait for request headers.
    handshake: Option<Duration>,
    tls: bool,
    name: &'static str,
}

impl Listener {
    /// Wraps a bound listener. `name` (grpc, http) is for log lines.
    pub fn new(
        listener: TcpListener,
        name: &'static str,
        max_connections: u32,
        handshake: Option<Duration>,
        tls: bool,
    ) -> Listener {
        Listener {
            listener,
            slots: Arc::new(Semaphore::new(max_connections as usize)),
            handshake,
            tls,
            name,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection within the cap. Never fails: errors of one connection are
    /// skipped, and errors of the process (no descriptors, no memory) are waited out.
    pub async fn accept(&self) -> Guarded {
        let mut pause = FIRST_PAUSE;
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    // Over the cap, the connection is closed at once (as Envoy does at its
                    // connection limit): the client learns now and retries, perhaps
                    // elsewhere, instead of waiting on a server that will not read.
                    let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                        tracing::debug!(listener = self.name, %peer, "connection limit reached; closed");
                        crate::telemetry::record_connection_closed(self.name, "over_limit");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    return Guarded::new(stream, slot, self.handshake, self.tls, self.name);
                }
                Err(e) if of_one_connection(&e) => continue,
                Err(e) => {
                    crate::telemetry::record_accept_error(self.name);
                    // Logged on the first failure of a run and then once per longest pause,
                    // so an exhausted process does not also flood its log.
                    if pause == FIRST_PAUSE || pause == MAX_PAUSE {
                        tracing::warn!(listener = self.name, error = %e, ?pause, "accept failed; pausing");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    /// The connections as a stream, for tonic's `serve_with_incoming`. It never yields an
    /// error: tonic retries a failed accept at once, which is the spin this module exists
    /// to prevent.
    pub fn incoming(self) -> impl futures_util::Stream<Item = io::Result<Guarded>> {
        futures_util::stream::unfold(self, |listener| async move {
            let conn = listener.accept().await;
            Some((Ok(conn), listener))
        })
    }
}

/// Accept errors that concern only the connection being accepted (it was reset while it
/// waited, say): the next accept may well succeed at once.
fn of_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// An accepted connection: holds its slot under the cap until dropped, and until its
/// handshake is done, fails its reads once the handshake deadline has passed, which makes
/// the server close it.
pub struct Guarded {
    io: TcpStream,
    handshake: Option<Handshake>,
    _slot: OwnedSemaphorePermit,
    /// The listener it came from, for the metrics.
    listener: &'static str,
}

struct Handshake {
    deadline: Pin<Box<Sleep>>,
    /// Preface bytes still to come.
    missing: usize,
    /// With TLS the bytes read are ciphertext, and TLS may read the preface ahead into its
    /// own buffer; the handshake is then done when the server starts serving the
    /// connection, which tonic does (asking for its connect info) once TLS has completed.
    tls: bool,
    served: AtomicBool,
}

impl Guarded {
    fn new(
        io: TcpStream,
        slot: OwnedSemaphorePermit,
        handshake: Option<Duration>,
        tls: bool,
        listener: &'static str,
    ) -> Guarded {
        let handshake = handshake.map(|limit| Handshake {
            deadline: Box::pin(tokio::time::sleep(limit)),
            missing: PREFACE_BYTES,
            tls,
            served: AtomicBool::new(false),
        });
        Guarded {
            io,
            handshake,
            _slot: slot,
            listener,
        }
    }

    /// Err once the handshake deadline has passed without a handshake; registers for the
    /// deadline otherwise, so a connection that sends nothing is woken to fail.
    fn check_handshake(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(h) = &mut self.handshake else {
            return Ok(());
        };
        if h.tls && h.served.load(Ordering::Relaxed) {
            self.handshake = None;
            return Ok(());
        }
        if h.deadline.as_mut().poll(cx).is_ready() {
            // Counted once: the connection is closed on this error and not read again.
            self.handshake = None;
            crate::telemetry::record_connection_closed(self.listener, "handshake_timeout");
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within the handshake timeout",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_handshake(cx)?;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(h)) = (&polled, &mut this.handshake)
            && !h.tls
        {
            h.missing = h.missing.saturating_sub(buf.filled().len() - before);
            if h.missing == 0 {
                this.handshake = None;
            }
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        if let Some(h) = &self.handshake {
            h.served.store(true, Ordering::Relaxed);
        }
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listener(max: u32, handshake: Option<Duration>) -> (Listener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (Listener::new(l, "test", max, handshake, false), addr)
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_closed_at_once_and_a_freed_slot_is_reused() {
        let (l, addr) = listener(1, None).await;
        let _first = TcpStream::connect(addr).await.unwrap();
        let held = l.accept().await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        let accepting = tokio::spawn(async move {
            let again = l.accept().await;
            (l, again)
        });
        // The second is accepted and closed: it reads end of file.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
            .await
            .expect("closed, not left waiting");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        drop(held);
        let _third = TcpStream::connect(addr).await.unwrap();
        let (_l, _third_held) = tokio::time::timeout(Duration::from_secs(5), accepting)
            .await
            .expect("a freed slot takes the next connection")
            .unwrap();
    }

    #[tokio::test]
    async fn reads_fail_after_the_deadline_unless_the_preface_came() {
        let (l, addr) = listener(4, Some(Duration::from_millis(100))).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut silent = l.accept().await;
        let mut buf = [0u8; 64];
        let err = silent.read(&mut buf).await.expect_err("deadline");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let mut talker = TcpStream::connect(addr).await.unwrap();
        let mut talked = l.accept().await;
        talker.write_all(&[0u8; PREFACE_BYTES]).await.unwrap();
        let mut got = 0;
        while got < PREFACE_BYTES {
            got += talked.read(&mut buf).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        talker.write_all(b"x").await.unwrap();
        assert_eq!(
            talked.read(&mut buf).await.unwrap(),
            1,
            "no deadline after it"
        );
    }
}
