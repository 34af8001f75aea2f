//! Bugs the old layout hid, each driven from outside: readiness under a busy pool, a
//! session reset that must leave the connection fully usable, StreamQuery's figures, and
//! server-side text output costing one round trip per result batch.

use std::time::{Duration, Instant};

use pgsidecar::proto::data_access_client::DataAccessClient;
use pgsidecar::proto::{PoolStatusRequest, StatementReportRequest};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::*;

#[tokio::test]
async fn readiness_stays_serving_while_every_connection_is_busy() {
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "2",
        "--pool-min",
        "2",
        "--health-check-interval",
        "100",
    ]);
    let channel = sidecar.channel().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            readiness(&channel).await == ServingStatus::Serving
        })
        .await,
        "ready once warm"
    );
    let busy = (0..2).map(|_| {
        let mut c = DataAccessClient::new(channel.clone());
        async move { query(&mut c, "SELECT pg_sleep(2)", vec![]).await }
    });
    let busy = tokio::spawn(futures_util::future::join_all(busy));
    // Both connections are lent out for two seconds: readiness must not follow that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let until = Instant::now() + Duration::from_millis(1200);
    let mut checks = 0;
    while Instant::now() < until {
        assert_eq!(
            readiness(&channel).await,
            ServingStatus::Serving,
            "a busy pool is not an unreachable database"
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(checks >= 5, "readiness was checked during the busy spell");
    for r in busy.await.expect("join") {
        r.expect("the slow queries finish");
    }
}

#[tokio::test]
async fn a_reset_session_still_looks_up_new_types() {
    let db = admin().await;
    let (m1, m2) = (unique("m1"), unique("m2"));
    db.batch_execute(&format!(
        "CREATE TYPE {m1} AS ENUM ('a'); CREATE TYPE {m2} AS ENUM ('x');"
    ))
    .await
    .expect("types");
    let sidecar = Sidecar::start(&["--pool-max", "1", "--pool-min", "1"]);
    let mut c = sidecar.client().await;
    let a = query(&mut c, &format!("SELECT 'a'::{m1}"), vec![])
        .await
        .expect("first type");
    assert_eq!(scalar(&a), &text("a"));
    query(&mut c, "SET work_mem = '8MB'", vec![])
        .await
        .expect("a session change, reset afterwards");
    let x = query(&mut c, &format!("SELECT 'x'::{m2}"), vec![])
        .await
        .expect("a type looked up after the reset");
    assert_eq!(scalar(&x), &text("x"));
    let work_mem = query(&mut c, "SHOW work_mem", vec![]).await.expect("show");
    assert_ne!(scalar(&work_mem), &text("8MB"), "the setting was reset");
    db.batch_execute(&format!("DROP TYPE {m1}; DROP TYPE {m2};"))
        .await
        .expect("drop");
}

#[tokio::test]
async fn the_reset_drops_what_a_client_prepared_cursors_and_temp_tables() {
    let sidecar = Sidecar::start(&["--pool-max", "1", "--pool-min", "1"]);
    let mut c = sidecar.client().await;
    for sql in [
        "PREPARE \"odd name\" AS SELECT 1",
        "CREATE TEMP TABLE leftover (a int)",
        "DECLARE cur CURSOR WITH HOLD FOR SELECT 1",
    ] {
        query(&mut c, sql, vec![]).await.expect(sql);
    }
    let left = query(
        &mut c,
        "SELECT format('%s prepared, %s cursors, %s temp tables', \
             (SELECT count(*) FROM pg_prepared_statements WHERE from_sql), \
             (SELECT count(*) FROM pg_cursors WHERE is_holdable), \
             (SELECT count(*) FROM pg_class WHERE relname = 'leftover' \
              AND relnamespace = pg_my_temp_schema()))",
        vec![],
    )
    .await
    .expect("count leftovers");
    assert_eq!(
        scalar(&left),
        &text("0 prepared, 0 cursors, 0 temp tables"),
        "nothing is left for the next caller"
    );
    let err = query(&mut c, "EXECUTE \"odd name\"", vec![])
        .await
        .expect_err("deallocated");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn stream_query_reports_its_rows_and_cache_use() {
    let sidecar = Sidecar::start(&["--pool-max", "1", "--pool-min", "1"]);
    let mut c = sidecar.client().await;
    let marker = unique("streamed");
    // An alias, not a comment: the report drops comments.
    let sql = format!("SELECT g AS {marker} FROM generate_series(1, 2500) g");
    for _ in 0..2 {
        let mut s = c
            .stream_query(request(&sql, vec![]))
            .await
            .expect("stream")
            .into_inner();
        while s.message().await.expect("chunk").is_some() {}
    }
    let report = c
        .statement_report(StatementReportRequest { limit: 1000 })
        .await
        .expect("report")
        .into_inner();
    let entry = report
        .statements
        .iter()
        .find(|s| s.query.contains(&marker))
        .expect("the streamed statement is in the report");
    assert_eq!((entry.calls, entry.rows), (2, 5000), "{entry:?}");
    assert!(
        (entry.cache_hit_rate - 0.5).abs() < 1e-9,
        "the second stream used the cached statement: {entry:?}"
    );
    let status = c
        .pool_status(PoolStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let cache = status.statement_cache.expect("cache figures");
    assert!(cache.hits >= 1, "{cache:?}");
}

/// Transactions committed in `db` so far, once the statistics have settled.
async fn commits(admin: &tokio_postgres::Client, db: &str) -> i64 {
    let read = || async {
        admin
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
                &[&db],
            )
            .await
            .expect("pg_stat_database")
            .get::<_, i64>(0)
    };
    // Backends report their counts within about a second of going idle.
    let mut last = read().await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = read().await;
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test]
async fn server_text_costs_one_round_trip_per_result_not_one_per_cell() {
    // A database of its own, so its commit counter counts only this sidecar's statements.
    let admin = admin().await;
    let db = unique("onetrip");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create database");
    let base = database_url();
    let url = format!(
        "{}/{db}",
        base.rsplit_once('/').expect("a URL with a database").0
    );
    let sidecar = Sidecar::start(&[
        "--database-url",
        &url,
        "--pool-max",
        "1",
        "--pool-min",
        "1",
        "--health-check-interval",
        "600000",
    ]);
    let mut c = sidecar.client().await;
    // Warm: the statement's own round trips and the type lookups are not what is counted.
    let sql =
        "SELECT point(g, g), box(point(g, g), point(0, 0)) FROM generate_series(1, $1::int) g";
    query(&mut c, sql, vec![int(2)]).await.expect("warm");
    let before = commits(&admin, &db).await;
    let r = query(&mut c, sql, vec![int(300)]).await.expect("600 cells");
    assert_eq!(r.rows.len(), 300);
    assert_eq!(r.rows[299].values[0], text("(300,300)"));
    assert_eq!(r.rows[0].values[1], text("(1,1),(0,0)"));
    let spent = commits(&admin, &db).await - before;
    // The statement itself and one batch of text output; a little slack for the sidecar's
    // own maintenance, far under the 600 a round trip per cell would take.
    assert!(spent <= 10, "{spent} transactions for one result");
    drop(sidecar);
    let _ = admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await;
}
