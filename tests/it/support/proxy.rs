//! A small TCP proxy between the sidecar and PostgreSQL for injecting network faults: cut
//! every connection when the client side sends a given byte pattern (e.g. a COMMIT), cut
//! everything now, stall: forward nothing in either direction and connect nothing new,
//! without closing anything, as a network path that drops every packet does; or hold each
//! new connection for a while before connecting it (a CancelRequest arriving late).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    cut_on: Arc<Mutex<Option<Vec<u8>>>>,
    stalled: watch::Sender<bool>,
    delay: Arc<Mutex<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards 127.0.0.1:<ephemeral> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let cut_on: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let (stalled, stall_rx) = watch::channel(false);
        let pattern = cut_on.clone();
        let delay: Arc<Mutex<Duration>> = Arc::default();
        let delays = delay.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (pattern, mut stall_rx) = (pattern.clone(), stall_rx.clone());
                let hold = *delays.lock().expect("lock");
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    // A stalled path connects nothing: the client's handshake goes unanswered.
                    let _ = stall_rx.wait_for(|s| !*s).await;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    pipe(client, server, pattern, stall_rx).await;
                });
            }
        });
        Proxy {
            addr,
            cut_on,
            stalled,
            delay,
            task,
        }
    }

    /// A proxy in front of the local test PostgreSQL (127.0.0.1:5432).
    pub async fn in_front_of_postgres() -> Proxy {
        Proxy::start("127.0.0.1:5432".parse().expect("address")).await
    }

    /// A connection URL through the proxy, as user postgres to database postgres.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.addr)
    }

    /// From now on, a connection whose client side sends `pattern` is cut before those
    /// bytes are forwarded.
    pub fn cut_when_client_sends(&self, pattern: &[u8]) {
        *self.cut_on.lock().expect("lock") = Some(pattern.to_vec());
    }

    /// From now on, each new connection is held for `delay` before it is connected.
    pub fn delay_new_connections(&self, delay: Duration) {
        *self.delay.lock().expect("lock") = delay;
    }

    /// Stops forwarding anything, open connections and new ones alike, closing nothing.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again: what waited in the buffers flows on.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut client: TcpStream,
    mut server: TcpStream,
    cut_on: Arc<Mutex<Option<Vec<u8>>>>,
    mut stalled: watch::Receiver<bool>,
) {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut up = [0u8; 16384];
    let mut down = [0u8; 16384];
    loop {
        if *stalled.borrow_and_update() {
            if stalled.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            r = stalled.changed() => if r.is_err() { return },
            n = cr.read(&mut up) => {
                let Ok(n @ 1..) = n else { return };
                let pattern = cut_on.lock().expect("lock").clone();
                if pattern.is_some_and(|p| up[..n].windows(p.len()).any(|w| w == p.as_slice())) {
                    return;
                }
                if sw.write_all(&up[..n]).await.is_err() { return }
            }
            n = sr.read(&mut down) => {
                let Ok(n @ 1..) = n else { return };
                if cw.write_all(&down[..n]).await.is_err() { return }
            }
        }
    }
}
