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
    let cluster = TempCluster::start(20);
    cluster.stop();
    let url = cluster.url();
    let sidecar = Sidecar::start(&[
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::spawn_blocking(move || {
        cluster.start_again();
        cluster
    });
    let answer = call.await.expect("task");
    let r = answer.unwrap_or_else(|e| {
        panic!(
            "the query failed after {:?}: {e:?}\n{}",
            sent.elapsed(),
            sidecar.stderr()
        )
    });
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
