//! A guard on the bytes PostgreSQL sends: it follows the backend message framing as the
//! bytes pass (one type byte, then a four-byte big-endian length that counts itself, then
//! the body) and refuses a message whose declared length is over the limit before any of
//! its body is read, so a 1 GB field cannot make the process buffer 1 GB.
//!
//! tokio-postgres reads a whole message into memory before it parses it, and sizes its
//! buffer from the length header; so the only place the size can be refused before the
//! memory is spent is below it, on the byte stream. The guard copies nothing and looks at
//! no byte of a body: per read it steps from header to header.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between a connection's guard and its owner: set once the guard refused a message
/// for its size, so the statement that was reading can be told why the connection closed.
#[derive(Debug, Default)]
pub struct Tripwire {
    /// The refused message's declared length; 0 while nothing was refused.
    declared: AtomicU64,
}

impl Tripwire {
    /// The declared length of the message refused for its size, if one was.
    pub fn tripped(&self) -> Option<u64> {
        match self.declared.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    fn trip(&self, declared: u64) {
        self.declared.store(declared.max(1), Ordering::Release);
    }
}

/// Where the framing stands between two reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Framing {
    /// Header bytes of the current message seen so far (0 at a message boundary, at most 4:
    /// the fifth completes the header).
    header_seen: u8,
    /// The length bytes seen so far, big-endian.
    length: u32,
    /// Body bytes of the current message still to pass.
    body_left: u64,
}

/// What a read's bytes held.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// Nothing refused.
    Fine,
    /// The message starting at `at` in these bytes (0 when its header began in an earlier
    /// read) declared `declared` bytes: over the limit, or under the 4 its length counts.
    Refused { at: usize, declared: u32 },
}

impl Framing {
    /// Follows the framing over `bytes`, as the next bytes of the stream.
    fn scan(&mut self, bytes: &[u8], limit: u64) -> Scan {
        let mut pos = 0;
        let mut start = 0;
        while pos < bytes.len() {
            if self.body_left > 0 {
                let skip = self.body_left.min((bytes.len() - pos) as u64);
                self.body_left -= skip;
                pos += skip as usize;
                continue;
            }
            if self.header_seen == 0 {
                // The type byte.
                start = pos;
                self.length = 0;
            } else {
                self.length = (self.length << 8) | u32::from(bytes[pos]);
            }
            self.header_seen += 1;
            pos += 1;
            if self.header_seen == 5 {
                self.header_seen = 0;
                let declared = self.length;
                if declared < 4 || u64::from(declared) > limit {
                    return Scan::Refused {
                        at: start,
                        declared,
                    };
                }
                self.body_left = u64::from(declared) - 4;
            }
        }
        Scan::Fine
    }
}

/// A byte stream from PostgreSQL whose messages may each declare at most `limit` bytes.
/// Writes pass through untouched.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    limit: u64,
    framing: Framing,
    /// The length of the message refused, once one was: every later read fails.
    refused: Option<u32>,
    tripwire: Arc<Tripwire>,
}

impl<S> Guarded<S> {
    /// Guards `inner` from its first byte, which must start a backend message (after any
    /// SSLRequest answer and TLS handshake).
    pub fn new(inner: S, limit: u64, tripwire: Arc<Tripwire>) -> Self {
        Guarded {
            inner,
            limit,
            framing: Framing::default(),
            refused: None,
            tripwire,
        }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn error(&self, declared: u32) -> io::Error {
        let message = if declared < 4 {
            format!("PostgreSQL sent a message with an invalid length ({declared})")
        } else {
            format!(
                "PostgreSQL sent a message of {declared} bytes, over the {}-byte limit: refused \
                 before reading it",
                self.limit
            )
        };
        io::Error::new(io::ErrorKind::InvalidData, message)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(declared) = this.refused {
            return Poll::Ready(Err(this.error(declared)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        match this.framing.scan(&buf.filled()[before..], this.limit) {
            Scan::Fine => Poll::Ready(Ok(())),
            Scan::Refused { at, declared } => {
                this.refused = Some(declared);
                if declared >= 4 {
                    this.tripwire.trip(declared.into());
                }
                // The whole messages before the refused one are delivered (a pipelined
                // statement's answer, say); the refused one never is, so its memory is
                // never reserved. The next read fails.
                buf.set_filled(before + at);
                if at > 0 {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(this.error(declared)))
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// One backend message: type byte, length (counting itself), body.
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Feeds `bytes` to a fresh framing in pieces cut at `cuts`; returns the first refusal
    /// as an offset in the whole of `bytes`.
    fn scan_in_pieces(bytes: &[u8], cuts: &[usize], limit: u64) -> Option<(usize, u32)> {
        let mut framing = Framing::default();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&bytes.len())) {
            if let Scan::Refused { at, declared } = framing.scan(&bytes[from..to], limit) {
                return Some((from + at, declared));
            }
            from = to;
        }
        None
    }

    #[test]
    fn messages_under_the_limit_pass_however_the_reads_split_them() {
        let mut stream = message(b'D', &[7; 100]);
        stream.extend(message(b'C', b"SELECT 1\0"));
        stream.extend(message(b'Z', b"I"));
        stream.extend(message(b'D', &[]));
        // Every single cut, and every pair of cuts: inside headers, at boundaries, in bodies.
        for a in 0..=stream.len() {
            assert_eq!(scan_in_pieces(&stream, &[a], 104), None, "cut at {a}");
            for b in a..=stream.len() {
                assert_eq!(scan_in_pieces(&stream, &[a, b], 104), None, "cuts {a}, {b}");
            }
        }
        // One byte at a time.
        let cuts: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(scan_in_pieces(&stream, &cuts, 104), None);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_at_its_header_wherever_the_reads_split() {
        let mut stream = message(b'T', &[1; 30]);
        let huge_at = stream.len();
        // Only the header of the huge message is needed: its body never has to arrive.
        stream.push(b'D');
        stream.extend_from_slice(&1_000_000_000u32.to_be_bytes());
        stream.extend_from_slice(&[0; 16]);
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let refused = scan_in_pieces(&stream, &[a, b], 4 << 20);
                let (at, declared) = refused.unwrap_or_else(|| panic!("cuts {a}, {b}"));
                assert_eq!(declared, 1_000_000_000);
                // Reported where the message starts, or at the start of the read that
                // completed its header when the header began in an earlier one.
                assert!(
                    at == huge_at || [a, b].contains(&at),
                    "cuts {a}, {b}: at {at}"
                );
            }
        }
        // The limit itself is allowed; one more is not.
        assert_eq!(scan_in_pieces(&message(b'D', &[0; 96]), &[], 100), None);
        assert_eq!(
            scan_in_pieces(&message(b'D', &[0; 97]), &[3], 100),
            Some((3, 101))
        );
    }

    #[test]
    fn a_length_under_four_is_refused_as_malformed() {
        let mut stream = message(b'Z', b"I");
        stream.extend([b'D', 0, 0, 0, 3]);
        assert_eq!(scan_in_pieces(&stream, &[2, 5], 100), Some((6, 3)));
        // Its header split across reads: refused at the start of the read that ends it.
        assert_eq!(scan_in_pieces(&stream, &[2, 7], 100), Some((7, 3)));
    }

    /// A reader that hands out its bytes in the pieces given.
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if let Some(mut piece) = this.0.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    this.0.push_front(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_stream_delivers_whole_messages_before_the_refused_one_then_fails() {
        let first = message(b'C', b"INSERT 0 1\0");
        let mut piece = first.clone();
        piece.extend(message(b'Z', b"T"));
        let delivered = piece.len();
        piece.push(b'D');
        piece.extend_from_slice(&200_000_000u32.to_be_bytes());
        piece.extend_from_slice(&[b'x'; 64]);
        let tripwire = Arc::new(Tripwire::default());
        let mut guarded = Guarded::new(Pieces(vec![piece].into()), 4 << 20, tripwire.clone());
        let mut got = vec![0; 8192];
        let n = guarded.read(&mut got).await.expect("the messages before");
        assert_eq!(n, delivered);
        assert_eq!(tripwire.tripped(), Some(200_000_000));
        let err = guarded.read(&mut got).await.expect_err("then the refusal");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("200000000"), "{err}");
        // And it stays refused.
        assert!(guarded.read(&mut got).await.is_err());
    }

    #[tokio::test]
    async fn bytes_pass_unchanged_through_small_reads() {
        let mut stream = Vec::new();
        for i in 0..50u8 {
            stream.extend(message(b'D', &vec![i; usize::from(i) * 7]));
        }
        let pieces = stream.chunks(13).map(<[u8]>::to_vec).collect();
        let tripwire = Arc::new(Tripwire::default());
        let mut guarded = Guarded::new(Pieces(pieces), 1024, tripwire.clone());
        let mut out = Vec::new();
        guarded.read_to_end(&mut out).await.expect("read all");
        assert_eq!(out, stream);
        assert_eq!(tripwire.tripped(), None);
    }
}
