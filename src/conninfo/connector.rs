//! The connector every PostgreSQL connection is made with: libpq's sslmode carried out by
//! us (the SSLRequest, the one-byte answer, the rustls handshake), and the stream above TLS
//! wrapped in the framing guard, for plain and encrypted connections alike.
//!
//! tokio-postgres hands a `TlsConnect` the socket only for TLS, and keeps a plain one to
//! itself, out of reach. With `sslnegotiation=direct` and `sslmode=require` it hands the
//! connector the socket before sending anything, so the connector does the negotiation
//! itself and returns a guarded stream whatever it negotiated. The socket is still opened
//! by tokio-postgres (timeouts, keepalives, several hosts), and CancelRequests go through
//! the same connector, so they negotiate as the connection did.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_postgres::Socket;
use tokio_postgres::config::{SslMode as DriverMode, SslNegotiation};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::framing::{Guarded, Tripwire};
use super::tls::SslMode;

type RustlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
type RustlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// How the connector starts a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// Plain, no SSLRequest (`sslmode=disable`).
    Plain,
    /// SSLRequest; TLS on `S`, plain on `N` (`prefer`).
    Prefer,
    /// SSLRequest; TLS on `S`, no connection on `N` (`require` and the verifying modes).
    Require,
    /// The TLS handshake at once (`sslnegotiation=direct`, PostgreSQL 17+).
    Direct,
    /// tokio-postgres negotiated and calls us only for TLS: a plain stream is not ours to
    /// guard. Used for Unix-socket hosts, which tokio-postgres gives no host name, which it
    /// needs before calling a connector.
    AfterDriver,
}

/// Makes the connector of each connection (and of each CancelRequest).
#[derive(Clone)]
pub struct PgConnect {
    rustls: MakeRustlsConnect,
    start: Start,
    limit: u64,
    tripwire: Option<Arc<Tripwire>>,
}

impl PgConnect {
    /// A connector for `mode` that refuses backend messages over `limit` bytes; and sets
    /// `pg`'s sslmode and negotiation to what makes tokio-postgres hand it every socket.
    pub(super) fn configure(
        pg: &mut tokio_postgres::Config,
        mode: SslMode,
        rustls: MakeRustlsConnect,
        limit: u64,
    ) -> Result<Self, String> {
        let unix = pg.get_hosts().iter().any(|h| {
            !matches!(h, tokio_postgres::config::Host::Tcp(_)) // Unix sockets
        });
        let direct = pg.get_ssl_negotiation() == SslNegotiation::Direct;
        let start = match mode {
            _ if unix => Start::AfterDriver,
            SslMode::Disable => Start::Plain,
            SslMode::Prefer if direct => {
                return Err("sslmode=prefer may not be used with sslnegotiation=direct \
                            (use require)"
                    .into());
            }
            SslMode::Prefer => Start::Prefer,
            _ if direct => Start::Direct,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Start::Require,
        };
        if start == Start::AfterDriver {
            pg.ssl_mode(match mode {
                SslMode::Disable => DriverMode::Disable,
                SslMode::Prefer => DriverMode::Prefer,
                _ => DriverMode::Require,
            });
        } else {
            pg.ssl_mode(DriverMode::Require);
            pg.ssl_negotiation(SslNegotiation::Direct);
        }
        Ok(PgConnect {
            rustls,
            start,
            limit,
            tripwire: None,
        })
    }

    /// The connector for one new connection, and the tripwire its guard sets when it
    /// refuses a message for its size.
    pub fn for_connection(&self) -> (PgConnect, Arc<Tripwire>) {
        let tripwire = Arc::new(Tripwire::default());
        let connect = PgConnect {
            tripwire: Some(tripwire.clone()),
            ..self.clone()
        };
        (connect, tripwire)
    }
}

impl MakeTlsConnect<Socket> for PgConnect {
    type Stream = PgStream;
    type TlsConnect = PgTlsConnect;
    type Error = Infallible;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgTlsConnect, Infallible> {
        let Ok(rustls) = MakeTlsConnect::<Socket>::make_tls_connect(&mut self.rustls, domain);
        Ok(PgTlsConnect {
            rustls,
            start: self.start,
            limit: self.limit,
            // A connection made without `for_connection` (a CancelRequest) reads nothing
            // that matters; its guard reports to no one.
            tripwire: self.tripwire.clone().unwrap_or_default(),
        })
    }
}

/// The connector of one connection attempt.
pub struct PgTlsConnect {
    rustls: RustlsConnect,
    start: Start,
    limit: u64,
    tripwire: Arc<Tripwire>,
}

/// The SSLRequest: length 8, then the code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl TlsConnect<Socket> for PgTlsConnect {
    type Stream = PgStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgStream>> + Send>>;

    fn connect(self, mut socket: Socket) -> Self::Future {
        Box::pin(async move {
            let tls = match self.start {
                Start::Plain => false,
                Start::Direct | Start::AfterDriver => true,
                Start::Prefer | Start::Require => {
                    socket.write_all(&SSL_REQUEST).await?;
                    socket.flush().await?;
                    // One byte, unframed: the guard starts after it.
                    match socket.read_u8().await? {
                        b'S' => true,
                        b'N' if self.start == Start::Prefer => false,
                        b'N' => {
                            return Err(io::Error::other("server does not support TLS"));
                        }
                        other => {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("unexpected answer {other:#04x} to the SSLRequest"),
                            ));
                        }
                    }
                }
            };
            let inner = if tls {
                Inner::Tls(Box::new(self.rustls.connect(socket).await?))
            } else {
                Inner::Plain(socket)
            };
            Ok(PgStream(Guarded::new(inner, self.limit, self.tripwire)))
        })
    }
}

/// A connection's stream: plain or TLS, guarded above TLS.
pub struct PgStream(Guarded<Inner>);

enum Inner {
    Plain(Socket),
    Tls(Box<RustlsStream>),
}

impl TlsStream for PgStream {
    fn channel_binding(&self) -> ChannelBinding {
        match self.0.get_ref() {
            Inner::Plain(_) => ChannelBinding::none(),
            Inner::Tls(tls) => tls.channel_binding(),
        }
    }
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncRead for Inner {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Inner {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Inner::Plain(s) => s.is_write_vectored(),
            Inner::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(url: &str) -> (tokio_postgres::Config, Result<PgConnect, String>) {
        let (rest, tls) = super::super::tls::split(url).unwrap();
        let mut pg: tokio_postgres::Config = rest.parse().unwrap();
        let rustls = tls.connector().unwrap();
        let c = PgConnect::configure(&mut pg, tls.mode, rustls, 1 << 20);
        (pg, c)
    }

    #[test]
    fn every_tcp_socket_is_handed_to_the_connector() {
        for (url, start) in [
            ("postgres://db/app?sslmode=disable", Start::Plain),
            ("postgres://db/app", Start::Prefer),
            ("postgres://db/app?sslmode=require", Start::Require),
            (
                "postgres://db/app?sslmode=require&sslnegotiation=direct",
                Start::Direct,
            ),
        ] {
            let (pg, c) = connector(url);
            assert_eq!(c.unwrap().start, start, "{url}");
            assert_eq!(pg.get_ssl_mode(), DriverMode::Require, "{url}");
            assert_eq!(pg.get_ssl_negotiation(), SslNegotiation::Direct, "{url}");
        }
        let (_, c) = connector("postgres://db/app?sslnegotiation=direct");
        assert!(c.is_err(), "prefer cannot be direct");
    }

    #[test]
    fn a_unix_socket_host_is_left_to_the_driver() {
        let (pg, c) = connector("host=/var/run/postgresql dbname=app");
        assert_eq!(c.unwrap().start, Start::AfterDriver);
        assert_eq!(pg.get_ssl_mode(), DriverMode::Prefer);
        assert_eq!(pg.get_ssl_negotiation(), SslNegotiation::Postgres);
    }
}
