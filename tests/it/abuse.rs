//! Abusive connections: out of file descriptors, silent and slow clients, more connections
//! than the cap. The sidecar must keep serving, spend no CPU spinning, and close what
//! does not speak.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Sidecar, eventually, http_get, int, query, scalar};

/// The soft and hard open-files limits of process `pid`.
fn fd_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let mut words = line.split_whitespace().skip(3);
    (
        words.next().expect("soft").to_owned(),
        words.next().expect("hard").to_owned(),
    )
}

/// CPU time (user + system) process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second: u64 = String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf")
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    Duration::from_millis(ticks * 1000 / per_second)
}

fn lower_fd_limit(pid: u32, limit: u32) {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
}

/// Reads until the peer closes; true if it did within `limit` (a reset counts as closed).
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A Query through a fresh connection, bounded: true when it answered.
async fn serves_grpc(sidecar: &Sidecar) -> bool {
    let call = async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", sidecar.grpc))
            .unwrap()
            .connect()
            .await
            .ok()?;
        let mut client = pgsidecar::proto::data_access_client::DataAccessClient::new(channel);
        query(&mut client, "SELECT 1::int8", vec![]).await.ok()
    };
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Some(resp)) => *scalar(&resp) == int(1),
        _ => false,
    }
}

async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    held
}

#[tokio::test]
async fn the_soft_fd_limit_is_raised_to_the_hard_limit_at_start() {
    let sidecar = Sidecar::start_wrapped(&["prlimit", "--nofile=256:4096", "--"], &[], &[]);
    assert_eq!(
        fd_limits(sidecar.child.id()),
        ("4096".to_owned(), "4096".to_owned())
    );
}

#[tokio::test]
async fn out_of_descriptors_it_pauses_instead_of_spinning_and_serves_once_idle_ones_close() {
    // A cap above the limit, so that accepting runs out of descriptors.
    let sidecar = Sidecar::start(&[
        "--grpc-max-connections",
        "2000",
        "--handshake-timeout",
        "1500",
    ]);
    let pid = sidecar.child.id();
    assert!(serves_grpc(&sidecar).await);
    lower_fd_limit(pid, 128);
    let mut held = idle_connections(sidecar.grpc, 300).await;
    // Let the first accepts fail, then measure: a spinning accept loop burns a core.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (cpu0, wall0) = (cpu_time(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu, wall) = (cpu_time(pid) - cpu0, wall0.elapsed());
    assert!(
        cpu < wall / 4,
        "{cpu:?} of CPU in {wall:?}: the accept loop spins"
    );
    // The silent connections are closed by the handshake timeout, those in the backlog
    // are accepted in turn and closed too; then new clients are served again.
    assert!(
        eventually(Duration::from_secs(30), || serves_grpc(&sidecar)).await,
        "gRPC never served again; stderr: {}",
        sidecar.stderr()
    );
    let (code, _) = http_get(sidecar.http, "/health/pool").await;
    assert_eq!(code, 200);
    let (_, metrics) = http_get(sidecar.http, "/metrics").await;
    let accept_errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("pgsidecar_listener_accept_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(accept_errors >= 1.0, "the failed accepts are counted");
    for conn in held.iter_mut().take(10) {
        assert!(closed_within(conn, Duration::from_secs(10)).await);
    }
}

#[tokio::test]
async fn a_connection_that_never_sends_the_preface_is_closed_and_a_quiet_http2_one_is_not() {
    let sidecar = Sidecar::start(&["--handshake-timeout", "500"]);
    let mut silent = TcpStream::connect(sidecar.grpc).await.unwrap();
    let mut half = TcpStream::connect(sidecar.grpc).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    assert!(closed_within(&mut half, Duration::from_secs(10)).await);
    assert_eq!(
        closed_count(&sidecar, "grpc", "handshake_timeout").await,
        2.0,
        "both closes are counted"
    );

    // A client that sent its preface and then idles past the timeout keeps its connection.
    let tcp = TcpStream::connect(sidecar.grpc).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let mut conn = tokio::spawn(conn);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!conn.is_finished(), "the connection was closed");
    let health = crate::stalled::grpc_call(
        &mut send,
        sidecar.grpc,
        "/grpc.health.v1.Health/Check",
        &tonic_health::pb::HealthCheckRequest::default(),
    )
    .await;
    let (_, trailers) = crate::stalled::read_to_end(health).await;
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    drop(send);
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut conn).await;
}

#[tokio::test]
async fn the_connection_caps_hold_on_both_listeners() {
    let sidecar = Sidecar::start(&[
        "--grpc-max-connections",
        "3",
        "--http-max-connections",
        "2",
        "--handshake-timeout",
        "30000",
    ]);
    let mut grpc = idle_connections(sidecar.grpc, 3).await;
    let mut over = TcpStream::connect(sidecar.grpc).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(5)).await,
        "a connection over the cap is closed at once"
    );
    assert!(
        !closed_within(&mut grpc[0], Duration::from_millis(300)).await,
        "those within the cap stay open"
    );
    assert!(!serves_grpc(&sidecar).await, "no room for a fourth client");
    grpc.pop();
    assert!(eventually(Duration::from_secs(10), || serves_grpc(&sidecar)).await);

    let mut http = idle_connections(sidecar.http, 2).await;
    let mut over = TcpStream::connect(sidecar.http).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(5)).await);
    assert!(!closed_within(&mut http[0], Duration::from_millis(300)).await);
    http.pop();
    let served = eventually(Duration::from_secs(10), || async {
        tokio::time::timeout(Duration::from_secs(2), http_get(sidecar.http, "/metrics"))
            .await
            .is_ok_and(|(code, _)| code == 200)
    });
    assert!(served.await);
    assert!(closed_count(&sidecar, "grpc", "over_limit").await >= 1.0);
    assert!(closed_count(&sidecar, "http", "over_limit").await >= 1.0);
}

/// `pgsidecar_listener_connections_closed_total` for `listener` and `reason`, from /metrics
/// (0 when the series is absent).
async fn closed_count(sidecar: &Sidecar, listener: &str, reason: &str) -> f64 {
    let (code, body) = http_get(sidecar.http, "/metrics").await;
    assert_eq!(code, 200);
    let labels = [
        format!("listener=\"{listener}\""),
        format!("reason=\"{reason}\""),
    ];
    body.lines()
        .filter(|l| l.starts_with("pgsidecar_listener_connections_closed_total{"))
        .filter(|l| labels.iter().all(|want| l.contains(want.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn slow_and_idle_http1_clients_are_closed() {
    let sidecar = Sidecar::start(&["--handshake-timeout", "500"]);
    // Slowloris: headers a byte at a time, never finished.
    let mut slow = TcpStream::connect(sidecar.http).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        for _ in 0..100 {
            if slow.write_all(b"X").await.is_err() {
                return true;
            }
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf));
            if let Ok(Ok(0) | Err(_)) = read.await {
                return true;
            }
        }
        false
    };
    assert!(trickle.await, "a slowloris client was held for 10 s");

    // Keep-alive: a request answered, then nothing; the server closes the idle connection.
    let mut idle = TcpStream::connect(sidecar.http).await.unwrap();
    idle.write_all(b"GET /health/pool HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut got)).await;
    assert!(ended.is_ok(), "an idle keep-alive connection was held");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}
