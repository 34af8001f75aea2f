//! A database that comes up after the sidecar (a pod whose sidecar starts first): a request
//! keeps trying to connect within its budget and is served once PostgreSQL is reachable,
//! while a database known to be down for longer than the connection timeout fails fast.

use std::time::{Duration, Instant};

use crate::support::cluster::TempCluster;
use crate::support::*;
use tonic::Code;

fn with_deadline(sql: &str, deadline: Duration) -> tonic::Request<pgsidecar::proto::QueryRequest> {
    let mut req = tonic::Request::new(request(sql, vec![]));
    req.set_timeout(deadline);
    req
}

#[tokio::test]
async fn a_database_that_comes_up_late_serves_a_waiting_query() {
    // The database comes up 4 s after the query is sent: after the fourth attempt of the
    // usual schedule (0, 100, 500, 2000 ms plus up to 20 % jitter: by 3.2 s), which used to
    // be the last, but well within the call's budget (its 10 s deadline, capped by the 8 s
    // connection timeout).
    let cluster = TempCluster::start(20);
    cluster.stop();
    let url = cluster.url();
    let sidecar = Sidecar::start(&[
        "--connection-timeout",
        "8000",
        "--database-url",
        &url,
        "--pool-max",
        "2",
        "--pool-min",
        "1",
        "--enable-failover",
        "false",
    ]);
    let mut c = sidecar.client().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let call = tokio::spawn(async move {
        c.query(with_deadline("SELECT 42", Duration::from_secs(10)))
            .await
            .map(tonic::Response::into_inner)
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let started_at = tokio::task::spawn_blocking(move || {
        cluster.start_again();
        (cluster, sent.elapsed())
    });
    let answer = call.await.expect("task");
    let failed_after = sent.elapsed();
    let (_cluster, up_after) = started_at.await.expect("cluster start");
    let r = answer.unwrap_or_else(|e| {
        panic!(
            "the query failed after {failed_after:?} (the cluster was up after {up_after:?}): \
             {e:?}\n{}",
            sidecar.stderr()
        )
    });
    eprintln!("served after {failed_after:?}; the cluster was up after {up_after:?}");
    assert_eq!(scalar(&r), &int(42));
    assert!(sent.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_database_known_to_be_down_fails_fast() {
    // Nothing listens on port 1: after the start-up attempts (and the health probe) have
    // failed for longer than the connection timeout, the outage is known.
    let sidecar = Sidecar::start(&[
        "--database-url",
        "postgres://postgres@127.0.0.1:1/postgres",
        "--connection-timeout",
        "1000",
        "--health-check-interval",
        "200",
    ]);
    let mut c = sidecar.client().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let started = Instant::now();
    let err = c
        .query(with_deadline("SELECT 1", Duration::from_secs(10)))
        .await
        .expect_err("down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(error_info(&err).0, "DATABASE_UNAVAILABLE");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a known outage fails at once, not after {:?}",
        started.elapsed()
    );
}
