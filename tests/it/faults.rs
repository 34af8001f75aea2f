//! The fault suite: real faults against the real binary, each with what must hold.
//! A PostgreSQL restart under a write load (an acknowledged-write ledger), every pool
//! connection killed mid-load, a stalled network path, a storm of 10,000 concurrent calls,
//! and a graceful shutdown under load. docs/RELIABILITY.md lists what each one proves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::cluster::TempCluster;
use crate::support::proxy::Proxy;
use crate::support::*;
use futures_util::future::join_all;
use pgsidecar::proto::data_access_client::DataAccessClient;
use pgsidecar::proto::{BeginTransaction, QueryRequest};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A Query with a deadline; the outcome and how long it took.
async fn timed(
    c: &mut DataAccessClient<Channel>,
    sql: &str,
    params: Vec<pgsidecar::proto::Value>,
    deadline: Duration,
) -> (Result<(), tonic::Status>, Duration) {
    let mut req = tonic::Request::new(request(sql, params));
    req.set_timeout(deadline);
    let started = Instant::now();
    let r = c.query(req).await.map(|_| ());
    (r, started.elapsed())
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to sidecar")
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_postgres_restart_exactly_once() {
    let cluster = TempCluster::start_durable(50);
    let url = cluster.url();
    pg(&url)
        .await
        .batch_execute("CREATE TABLE ledger (id bigint NOT NULL)")
        .await
        .expect("create ledger");
    let sidecar = Sidecar::start(&[
        "--database-url",
        &url,
        "--pool-max",
        "6",
        "--pool-min",
        "2",
        "--failover-pool-min",
        "0",
        "--health-check-interval",
        "200",
        "--connection-timeout",
        "1000",
    ]);
    let channel = channel(sidecar.grpc).await;
    let deadline = Duration::from_secs(1);
    // Four writers, each inserting ids of its own one at a time, for as long as the test runs.
    // An INSERT is not idempotent: the sidecar must never resend one that may have run.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = (0..4i64).map(|w| {
        let (stop, mut c) = (stop.clone(), DataAccessClient::new(channel.clone()));
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let end = Instant::now() + Duration::from_secs(40);
            for n in 0.. {
                if stop.load(Ordering::Relaxed) || Instant::now() > end {
                    break;
                }
                let id = w * 1_000_000 + n;
                let sql = "INSERT INTO ledger (id) VALUES ($1)";
                let (r, took) = timed(&mut c, sql, vec![int(id)], deadline).await;
                outcomes.push((id, r.map_err(|e| e.code()), took, Instant::now()));
            }
            outcomes
        })
    });
    let writers: Vec<_> = writers.collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.start_again();
    let back = Instant::now();
    // Enough time after the return for the writers to be acknowledged again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for w in writers {
        outcomes.extend(w.await.expect("writer"));
    }

    let rows = pg(&url)
        .await
        .query("SELECT id, count(*) FROM ledger GROUP BY id", &[])
        .await
        .expect("read the ledger");
    let stored: HashMap<i64, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ids stored more than once: {twice:?}");
    let acked: Vec<i64> = outcomes
        .iter()
        .filter(|o| o.1.is_ok())
        .map(|o| o.0)
        .collect();
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains_key(id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    for (id, r, took, _) in &outcomes {
        assert!(
            *took < deadline + Duration::from_millis(500),
            "write {id} took {took:?}, past its 1 s deadline"
        );
        if let Err(code) = r {
            assert!(
                matches!(code, Code::Unavailable | Code::DeadlineExceeded),
                "write {id} failed with {code:?}"
            );
        }
    }
    let failed = outcomes.iter().filter(|o| o.1.is_err()).count();
    assert!(failed > 0, "the outage was visible to the writers");
    let acked_after = outcomes
        .iter()
        .filter(|o| o.1.is_ok() && o.3 > back)
        .count();
    assert!(
        acked_after > 0,
        "writes acknowledged again after the restart, no sidecar restart needed"
    );
    eprintln!(
        "ledger: {} writes, {} acknowledged (all stored once), {failed} failed, {} stored",
        outcomes.len(),
        acked.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pool_connection_killed_mid_load_then_all_served() {
    let (sidecar, app) = Sidecar::start_tagged("killall", 4);
    let channel = channel(sidecar.grpc).await;
    let db = admin().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = (0..8).map(|i| {
        let (stop, mut c) = (stop.clone(), DataAccessClient::new(channel.clone()));
        tokio::spawn(async move {
            let mut codes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sql = "SELECT pg_sleep(0.02), $1::int";
                let (r, _) = timed(&mut c, sql, vec![int(i)], Duration::from_secs(5)).await;
                codes.push(r.map_err(|e| e.code()));
            }
            codes
        })
    });
    let load: Vec<_> = load.collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = terminate_backends(&db, &app).await;
    assert!(killed >= 4, "killed {killed}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    let mut codes = Vec::new();
    for l in load {
        codes.extend(l.await.expect("load"));
    }
    // A statement running when its backend died fails as UNAVAILABLE (57P01); nothing else
    // may fail, and nothing surfaces as INTERNAL or UNKNOWN.
    for code in codes.iter().filter_map(|r| r.err()) {
        assert_eq!(
            code,
            Code::Unavailable,
            "a killed statement failed with {code:?}"
        );
    }
    assert!(codes.iter().filter(|r| r.is_ok()).count() > 8);
    // After the kill, every request is served: dead connections are noticed and replaced.
    let mut c = DataAccessClient::new(channel);
    for i in 0..20 {
        let r = query(&mut c, "SELECT $1::int", vec![int(i)]).await;
        assert_eq!(scalar(&r.expect("served after the kill")), &int(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_network_path_fails_within_deadlines_and_recovers() {
    let proxy = Proxy::in_front_of_postgres().await;
    let url = proxy.url();
    let sidecar = Sidecar::start(&[
        "--database-url",
        &url,
        "--pool-max",
        "3",
        "--pool-min",
        "3",
        "--failover-pool-min",
        "0",
        "--health-check-interval",
        "200",
    ]);
    let channel = channel(sidecar.grpc).await;
    let mut c = DataAccessClient::new(channel.clone());
    let warm = eventually(Duration::from_secs(5), || {
        let mut c = c.clone();
        async move { query(&mut c, "SELECT 1", vec![]).await.is_ok() }
    })
    .await;
    assert!(warm, "served before the fault");

    proxy.stall();
    let deadline = Duration::from_secs(1);
    // More calls than connections: some wait on stalled connections, some for new ones that
    // never finish their handshake.
    let calls = (0..6).map(|i| {
        let mut c = c.clone();
        async move { timed(&mut c, "SELECT $1::int", vec![int(i)], deadline).await }
    });
    for (r, took) in join_all(calls).await {
        assert!(
            took < deadline + Duration::from_millis(500),
            "took {took:?} past a 1 s deadline"
        );
        let code = r.expect_err("nothing is served over a dead path").code();
        assert!(
            matches!(code, Code::Unavailable | Code::DeadlineExceeded),
            "failed with {code:?}"
        );
    }
    // Generous: the timed-out calls' connections are held until their cancels give up on
    // the dead path, and only then does the probe try a new connection and fail.
    let not_ready = eventually(Duration::from_secs(15), || async {
        readiness(&channel).await == ServingStatus::NotServing
    })
    .await;
    assert!(
        not_ready,
        "readiness turns NOT_SERVING while the path is dead"
    );

    proxy.resume();
    let back = eventually(Duration::from_secs(10), || {
        let mut c = c.clone();
        async move {
            timed(&mut c, "SELECT 1", vec![], Duration::from_secs(1))
                .await
                .0
                .is_ok()
        }
    })
    .await;
    assert!(back, "served again once the path returns");
    for i in 0..20 {
        let r = query(&mut c, "SELECT $1::int", vec![int(i)]).await;
        assert_eq!(scalar(&r.expect("served after recovery")), &int(i));
    }
    let ready = eventually(Duration::from_secs(5), || async {
        readiness(&channel).await == ServingStatus::Serving
    })
    .await;
    assert!(ready, "readiness SERVING again");
}

/// Peak resident memory of a process, from /proc (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib = line.split_whitespace().nth(1).expect("value");
    kib.parse().expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_ten_thousand_concurrent_calls_is_answered_or_shed() {
    const CALLS: usize = 10_000;
    const CONNECTIONS: usize = 50;
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "20",
        "--pool-min",
        "20",
        "--failover-pool-min",
        "0",
    ]);
    // 50 HTTP/2 connections × 200 streams: every call is in flight at the server at once.
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(channel(sidecar.grpc).await);
    }
    let started = Instant::now();
    let calls = (0..CALLS).map(|i| {
        let mut c = DataAccessClient::new(channels[i % CONNECTIONS].clone());
        tokio::spawn(async move {
            let mut req = tonic::Request::new(QueryRequest {
                sql: "SELECT pg_sleep(0.01), $1::int".into(),
                params: vec![int(i as i64)],
                ..Default::default()
            });
            req.set_timeout(Duration::from_secs(60));
            c.query(req).await.map(|_| ()).map_err(|e| e.code())
        })
    });
    let calls: Vec<_> = calls.collect();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for call in calls {
        let r = call.await.expect("call task");
        let key = match r {
            Ok(()) => "OK".to_owned(),
            Err(code) => format!("{code:?}"),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    let took = started.elapsed();
    let peak = peak_rss_kib(sidecar.child.id());
    eprintln!(
        "storm: {outcomes:?} in {took:?}, sidecar peak RSS {} MiB",
        peak / 1024
    );
    let served = outcomes.get("OK").copied().unwrap_or(0);
    let shed = outcomes.get("ResourceExhausted").copied().unwrap_or(0);
    assert_eq!(
        served + shed,
        CALLS,
        "every call is served or shed with RESOURCE_EXHAUSTED: {outcomes:?}"
    );
    assert!(served > 0, "some calls were served: {outcomes:?}");
    assert!(
        peak < 256 * 1024,
        "peak RSS {} MiB, over 256 MiB",
        peak / 1024
    );
    // Still healthy afterwards.
    let mut c = sidecar.client().await;
    let r = query(&mut c, "SELECT 1::int", vec![]).await;
    assert_eq!(scalar(&r.expect("served after the storm")), &int(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_flips_health_drains_and_rolls_back() {
    let table = unique("shutdown_tx");
    let db = admin().await;
    db.batch_execute(&format!("CREATE TABLE {table} (v text)"))
        .await
        .expect("create");
    let mut sidecar = Sidecar::start(&["--shutdown-grace", "3000"]);
    let channel = channel(sidecar.grpc).await;
    // Traffic starts once the sidecar is ready, as behind a readiness probe: its pipelined
    // connections are open by then.
    let ready = eventually(Duration::from_secs(10), || async {
        readiness(&channel).await == ServingStatus::Serving
    })
    .await;
    assert!(ready, "ready");
    // Liveness watched from before the signal: it must say NOT_SERVING before anything fails.
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("first").expect("status");
    assert_eq!(first.status(), ServingStatus::Serving);
    let flipped = tokio::spawn(async move {
        while let Ok(Some(m)) = watch.message().await {
            if m.status() == ServingStatus::NotServing {
                return Some(Instant::now());
            }
        }
        None
    });
    // An open transaction holding an uncommitted row.
    let mut c = DataAccessClient::new(channel.clone());
    let mut tx = TxStream::open(&mut c, BeginTransaction::default()).await;
    tx.next().await.expect("begun");
    let insert = format!("INSERT INTO {table} VALUES ('uncommitted')");
    tx.execute("1", &insert, vec![]).await;
    tx.result().await;
    // A streaming query that would outlive the grace period (pool of 4: it and the Query
    // below start before the load takes the other connections).
    let long_stream = {
        let mut c = DataAccessClient::new(channel.clone());
        tokio::spawn(async move {
            let req = request("SELECT pg_sleep(30)::text AS shutdown_stream_probe", vec![]);
            let mut stream = c.stream_query(req).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok::<(), tonic::Status>(())
        })
    };
    // A Query that would outlive the grace period too.
    let long_query = {
        let mut c = DataAccessClient::new(channel.clone());
        tokio::spawn(async move {
            let sql = "SELECT pg_sleep(30)::text AS shutdown_query_probe";
            timed(&mut c, sql, vec![], Duration::from_secs(60)).await.0
        })
    };
    // Query load: workers calling back to back until the server stops answering.
    let load = (0..4).map(|_| {
        let mut c = DataAccessClient::new(channel.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let sql = "SELECT pg_sleep(0.2)::text";
                let started = Instant::now();
                let (r, _) = timed(&mut c, sql, vec![], Duration::from_secs(10)).await;
                let failed = r.is_err();
                outcomes.push((r.map_err(|e| e.code()), started, Instant::now()));
                if failed {
                    return outcomes;
                }
            }
        })
    });
    let load: Vec<_> = load.collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    let (status, sidecar) = tokio::task::spawn_blocking(move || (sidecar.terminate(), sidecar))
        .await
        .expect("terminate");
    let exited = Instant::now();
    assert_eq!(status.code(), Some(0), "exit code 0");
    assert!(
        exited - signalled < Duration::from_millis(4500),
        "exited {:?} after SIGTERM with a 3 s grace",
        exited - signalled
    );
    let flipped = flipped
        .await
        .expect("watch task")
        .expect("NOT_SERVING seen");
    // The streaming query was ended by the server with a reason, not cut off.
    for (call, marker) in [
        (long_stream, "shutdown_stream_probe"),
        (long_query, "shutdown_query_probe"),
    ] {
        let ended = call.await.expect("call task").expect_err("call ended");
        assert_eq!(ended.code(), Code::Unavailable, "{marker}: {ended:?}");
        assert_eq!(error_info(&ended).0, "SHUTTING_DOWN", "{marker}");
        let stopped = eventually(Duration::from_secs(3), || async {
            active_statements(&db, marker).await == 0
        })
        .await;
        assert!(stopped, "{marker}: the statement was stopped in PostgreSQL");
    }
    // The transaction was ended by the server, with a reason, and rolled back.
    let ended = tx.next().await;
    let ended = ended.expect_err("the transaction was ended");
    assert_eq!(
        ended.code(),
        Code::Unavailable,
        "transaction ended with {ended:?}"
    );
    assert_eq!(error_info(&ended).0, "SHUTTING_DOWN");
    let rows: i64 = db
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0, "the open transaction rolled back");
    // Calls in flight at the signal finished; nothing failed before health flipped, and
    // every call ended by the time the process exited. (A call made after the signal may
    // fail any way the client library reports a connection going away: tonic's client can
    // queue one on the draining connection until it closes, then say UNKNOWN.)
    let mut finished_after_signal = 0;
    for l in load {
        for (r, started, at) in l.await.expect("load") {
            assert!(
                at <= exited + Duration::from_millis(500),
                "a call outlived the process"
            );
            match r {
                Ok(()) if at > signalled => finished_after_signal += 1,
                Ok(()) => {}
                Err(code) => {
                    assert!(at >= flipped, "a call failed before health flipped");
                    if started < signalled {
                        assert_eq!(
                            code,
                            Code::Unavailable,
                            "an in-flight call failed with {code:?}"
                        );
                    }
                }
            }
        }
    }
    assert!(
        finished_after_signal > 0,
        "calls in flight at SIGTERM finished"
    );
    drop(sidecar);
}
