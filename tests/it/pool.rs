//! Pools under load and faults, against real PostgreSQL: the original design's load tests
//! made strict, saturation with critical work beside it, admission limits, cancellation
//! reaching PostgreSQL, safe retries, session hygiene, killed backends, and a restart of a
//! private cluster under load.

use std::time::{Duration, Instant};

use crate::support::cluster::TempCluster;
use crate::support::*;
use futures_util::future::join_all;
use pgsidecar::proto::data_access_client::DataAccessClient;
use pgsidecar::proto::{PoolStatusRequest, Priority, QueryRequest};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

/// `n` clients on separate HTTP/2 connections, so many streams are really concurrent.
async fn clients(sidecar: &Sidecar, n: usize) -> Vec<DataAccessClient<Channel>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(sidecar.client().await);
    }
    v
}

async fn status(c: &mut DataAccessClient<Channel>) -> pgsidecar::proto::PoolStatusResponse {
    c.pool_status(PoolStatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

#[tokio::test]
async fn hundred_concurrent_thousand_sequential_and_reuse() {
    let sidecar = Sidecar::start(&["--pool-max", "10", "--pool-min", "2"]);
    let cs = clients(&sidecar, 4).await;
    let calls = (0..100).map(|i| {
        let mut c = cs[i % cs.len()].clone();
        async move { query(&mut c, "SELECT $1::int", vec![int(i as i64)]).await }
    });
    let results = join_all(calls).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(scalar(r.as_ref().expect("concurrent call")), &int(i as i64));
    }
    let mut c = cs[0].clone();
    for i in 0..1000 {
        let r = query(&mut c, "SELECT $1::int * 2", vec![int(i)])
            .await
            .expect("sequential call");
        assert_eq!(scalar(&r), &int(i * 2));
    }
    let p = &status(&mut c).await.pools[0];
    assert!(p.connections_created <= 10, "{p:?}");
    assert!(p.checkouts >= 1100, "{p:?}");
    assert!(p.reuse_rate > 0.99, "connections are reused: {p:?}");
}

#[tokio::test]
async fn thousand_concurrent_requests_on_a_pool_of_twenty_all_succeed() {
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "20",
        "--pool-min",
        "5",
        "--failover-pool-min",
        "0",
    ]);
    let cs = clients(&sidecar, 8).await;
    let calls = (0..1000).map(|i| {
        let mut c = cs[i % cs.len()].clone();
        async move {
            query(
                &mut c,
                "SELECT pg_sleep(0.005), $1::int",
                vec![int(i as i64)],
            )
            .await
        }
    });
    let results = join_all(calls).await;
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    let mut c = cs[0].clone();
    assert!(status(&mut c).await.pools[0].connections_created <= 20);
}

#[tokio::test]
async fn hundred_fifty_concurrent_over_a_pool_of_a_hundred_all_succeed() {
    // A private cluster: 100 connections would not fit beside the other tests on the shared one.
    let cluster = TempCluster::start(150);
    let url = cluster.url();
    let sidecar = Sidecar::start(&[
        "--database-url",
        &url,
        "--pool-max",
        "100",
        "--pool-min",
        "10",
        "--failover-pool-max",
        "5",
        "--failover-pool-min",
        "0",
    ]);
    let cs = clients(&sidecar, 8).await;
    let calls = (0..150).map(|i| {
        let mut c = cs[i % cs.len()].clone();
        async move { query(&mut c, "SELECT pg_sleep(0.2)::text", vec![]).await }
    });
    let results = join_all(calls).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        failed,
        0,
        "first error: {:?}",
        results.iter().find_map(|r| r.as_ref().err())
    );
    let mut c = cs[0].clone();
    assert_eq!(
        status(&mut c).await.pools[0].connections_created,
        100,
        "the pool grew to its maximum"
    );
}

#[tokio::test]
async fn critical_work_is_served_while_normal_load_saturates_the_primary() {
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "20",
        "--pool-min",
        "5",
        "--failover-pool-max",
        "5",
        "--failover-pool-min",
        "2",
        "--connection-timeout",
        "30000",
    ]);
    let cs = clients(&sidecar, 8).await;
    let normal = (0..500).map(|i| {
        let mut c = cs[i % cs.len()].clone();
        async move { query(&mut c, "SELECT pg_sleep(0.2)::text", vec![]).await }
    });
    let normal = tokio::spawn(join_all(normal));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = sidecar.client().await;
    let mut worst = Duration::ZERO;
    let mut on_failover = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let r = c
            .query(QueryRequest {
                priority: Priority::Critical as i32,
                ..request("SELECT 'ledger'::text", vec![])
            })
            .await
            .expect("critical request served")
            .into_inner();
        worst = worst.max(started.elapsed());
        on_failover += usize::from(r.info.expect("info").pool == "failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = status(&mut c).await;
    assert!(
        s.pools[0].waiting_requests > 0 || s.pools[0].active_connections == 20,
        "still saturated: {:?}",
        s.pools[0]
    );
    assert!(
        worst < Duration::from_secs(1),
        "critical requests answered promptly, worst {worst:?}"
    );
    assert!(
        on_failover >= 15,
        "{on_failover}/20 critical requests used the reserve"
    );
    let normal = normal.await.expect("join");
    assert!(
        normal.iter().all(|r| r.is_ok()),
        "normal requests all finish too"
    );
    let p = &status(&mut c).await.pools[1];
    assert_eq!(p.name, "failover");
}

#[tokio::test]
async fn a_full_queue_and_a_long_wait_are_resource_exhausted() {
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "1",
        "--pool-min",
        "1",
        "--pool-max-waiting",
        "2",
        "--connection-timeout",
        "400",
    ]);
    let cs = clients(&sidecar, 4).await;
    let mut hold = cs[0].clone();
    let held =
        tokio::spawn(async move { query(&mut hold, "SELECT pg_sleep(1.5)::text", vec![]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiters = (1..4).map(|i| {
        let mut c = cs[i].clone();
        async move {
            let started = Instant::now();
            (query(&mut c, "SELECT 1", vec![]).await, started.elapsed())
        }
    });
    let results = join_all(waiters).await;
    for (r, took) in &results {
        let err = r.as_ref().expect_err("no connection within 400 ms");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert_eq!(error_info(err).0, "POOL_EXHAUSTED");
        assert!(
            tonic_types::StatusExt::get_error_details(err)
                .retry_info()
                .is_some()
        );
        assert!(*took < Duration::from_secs(2), "{took:?}");
    }
    held.await.expect("join").expect("holder finishes");
}

#[tokio::test]
async fn a_client_cancel_stops_the_statement_in_postgres() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let marker = unique("cancelme");
    let sql = format!("SELECT pg_sleep(30)::text /* {marker} */");
    // The client gives up without a gRPC deadline: the call is dropped, the stream reset.
    let call = tokio::time::timeout(Duration::from_millis(500), query(&mut c, &sql, vec![])).await;
    assert!(
        call.is_err(),
        "the call was still running when the client gave up"
    );
    let gave_up = Instant::now();
    let stopped = eventually(Duration::from_secs(3), || async {
        active_statements(&db, &marker).await == 0
    })
    .await;
    assert!(stopped, "the backend stopped running the statement");
    assert!(
        gave_up.elapsed() < Duration::from_secs(1),
        "within a second: {:?}",
        gave_up.elapsed()
    );
}

#[tokio::test]
async fn idempotent_statements_are_retried_on_serialization_failure_others_are_not() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let (seq, func) = (unique("flaky_seq"), unique("flaky"));
    db.batch_execute(&format!(
        "CREATE SEQUENCE {seq};
         CREATE FUNCTION {func}() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('{seq}') % 3 <> 0 THEN
             RAISE EXCEPTION 'try again' USING ERRCODE = '40001';
           END IF;
           RETURN 7;
         END $$;"
    ))
    .await
    .expect("setup");
    let req = QueryRequest {
        idempotent: true,
        ..request(&format!("SELECT {func}()"), vec![])
    };
    let r = c
        .query(req)
        .await
        .expect("retried until it succeeds")
        .into_inner();
    assert_eq!(scalar(&r), &int(7));
    assert_eq!(r.info.expect("info").attempts, 3);
    let err = query(&mut c, &format!("SELECT {func}()"), vec![])
        .await
        .expect_err("not idempotent");
    assert_eq!(err.code(), Code::Aborted);
    assert!(status(&mut c).await.queries.expect("queries").retried >= 1);
    db.batch_execute(&format!("DROP FUNCTION {func}(); DROP SEQUENCE {seq};"))
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn session_state_does_not_leak_to_the_next_request() {
    // One connection, so every request lands on the same session.
    let sidecar = Sidecar::start(&["--pool-max", "1", "--pool-min", "1"]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let role = unique("hygiene_role");
    db.batch_execute(&format!("CREATE ROLE {role}"))
        .await
        .expect("role");
    let lock_key = (std::process::id() as i64) << 8;
    let one = |r: &pgsidecar::proto::QueryResponse| scalar(r).clone();
    let cases: Vec<(String, String, pgsidecar::proto::Value)> = vec![
        ("SET search_path = pg_catalog".into(), "SHOW search_path".into(), text("\"$user\", public")),
        ("SET statement_timeout = '1ms'".into(), "SELECT current_setting('statement_timeout')".into(), text("30s")),
        ("SET TimeZone = 'Asia/Tokyo'".into(), "SHOW TimeZone".into(), text("UTC")),
        (format!("SET ROLE {role}"), "SELECT current_user::text".into(), text("postgres")),
        ("CREATE TEMP TABLE hygiene_tmp (a int)".into(), "SELECT count(*)::int FROM pg_class WHERE relname = 'hygiene_tmp' AND relpersistence = 't'".into(), int(0)),
        ("LISTEN hygiene_chan".into(), "SELECT count(*)::int FROM pg_catalog.pg_listening_channels() c".into(), int(0)),
        ("PREPARE hygiene_p AS SELECT 1".into(), "SELECT count(*)::int FROM pg_prepared_statements WHERE name = 'hygiene_p'".into(), int(0)),
        (format!("SELECT pg_advisory_lock({lock_key})::text"), format!("SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = {lock_key}"), int(0)),
    ];
    for (change, probe, want) in cases {
        query(&mut c, &change, vec![])
            .await
            .unwrap_or_else(|e| panic!("{change}: {e:?}"));
        let got = query(&mut c, &probe, vec![])
            .await
            .unwrap_or_else(|e| panic!("{probe}: {e:?}"));
        assert_eq!(one(&got), want, "after {change:?}, {probe:?}");
    }
    // Cached statements still work after a reset emptied the cache.
    for _ in 0..2 {
        let r = query(&mut c, "SELECT $1::int", vec![int(5)])
            .await
            .expect("after reset");
        assert_eq!(scalar(&r), &int(5));
    }
    db.batch_execute(&format!("DROP ROLE {role}"))
        .await
        .expect("drop role");
}

#[tokio::test]
async fn killed_backends_are_replaced_without_client_errors() {
    let (sidecar, app) = Sidecar::start_tagged("killtest", 4);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let warm = eventually(Duration::from_secs(5), || {
        let mut c = c.clone();
        async move { status(&mut c).await.pools[0].total_connections == 4 }
    })
    .await;
    assert!(warm);
    let killed = terminate_backends(&db, &app).await;
    assert!(killed >= 4, "killed {killed}");
    for i in 0..20 {
        let r = query(&mut c, "SELECT $1::int", vec![int(i)])
            .await
            .expect("served after the kill");
        assert_eq!(scalar(&r), &int(i));
    }
}

#[tokio::test]
async fn a_postgres_restart_under_load_needs_no_sidecar_restart() {
    let cluster = TempCluster::start(50);
    let url = cluster.url();
    let sidecar = Sidecar::start(&[
        "--database-url",
        &url,
        "--pool-max",
        "5",
        "--pool-min",
        "2",
        "--failover-pool-min",
        "0",
        "--health-check-interval",
        "200",
        "--connection-timeout",
        "1000",
    ]);
    let channel = Channel::from_shared(format!("http://{}", sidecar.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    assert!(
        eventually(Duration::from_secs(5), || async {
            readiness(&channel).await == ServingStatus::Serving
        })
        .await
    );

    // Load: a request every 20 ms with a 1 s deadline, for as long as the test runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let mut c = DataAccessClient::new(channel.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                let mut req = tonic::Request::new(request("SELECT 1", vec![]));
                req.set_timeout(Duration::from_secs(1));
                let started = Instant::now();
                let r = c.query(req).await;
                outcomes.push((
                    Instant::now(),
                    r.map(|_| ()).map_err(|e| e.code()),
                    started.elapsed(),
                ));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        readiness(&channel).await,
        ServingStatus::NotServing,
        "readiness follows the database down"
    );
    cluster.start_again();
    let back = Instant::now();
    let ready = eventually(Duration::from_secs(2), || async {
        readiness(&channel).await == ServingStatus::Serving
    })
    .await;
    assert!(ready, "readiness SERVING within 2 s of PostgreSQL's return");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes = load.await.expect("join");

    for (_, r, took) in &outcomes {
        assert!(
            *took < Duration::from_millis(1500),
            "no request hangs past its deadline: {took:?}"
        );
        if let Err(code) = r {
            assert!(
                matches!(code, Code::Unavailable | Code::DeadlineExceeded),
                "failed with {code:?}"
            );
        }
    }
    assert!(
        outcomes.iter().any(|(_, r, _)| r.is_err()),
        "the outage was visible"
    );
    let first_ok_after = outcomes
        .iter()
        .find(|(at, r, _)| *at > back && r.is_ok())
        .map(|(at, _, _)| at.duration_since(back))
        .expect("requests succeed again");
    assert!(
        first_ok_after < Duration::from_secs(2),
        "served again {first_ok_after:?} after the restart"
    );
    let last = outcomes.last().expect("outcomes");
    assert!(last.1.is_ok(), "the latest request succeeded");
}
