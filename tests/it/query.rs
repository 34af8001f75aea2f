//! Query end to end: rows and columns, command tags and counts, max_rows, execution info,
//! statement reuse, response limits, priorities, and PoolStatus's live pool figures.

use std::time::Duration;

use crate::support::*;
use pgsidecar::proto::{PoolStatusRequest, Priority, QueryRequest};
use tonic::Code;

#[tokio::test]
async fn writes_report_tags_and_counts_and_reads_return_rows() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let t = unique("q");
    let r = query(
        &mut c,
        &format!("CREATE TABLE {t} (id int PRIMARY KEY, name text)"),
        vec![],
    )
    .await
    .expect("create");
    assert_eq!(
        (r.command_tag.as_str(), r.rows_affected),
        ("CREATE TABLE", 0)
    );
    assert!(r.columns.is_empty() && r.rows.is_empty());

    let r = query(
        &mut c,
        &format!("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, $1::int) g"),
        vec![int(25)],
    )
    .await
    .expect("insert");
    assert_eq!(
        (r.command_tag.as_str(), r.rows_affected),
        ("INSERT 0 25", 25)
    );

    let r = query(
        &mut c,
        &format!("UPDATE {t} SET name = upper(name) WHERE id <= $1"),
        vec![int(10)],
    )
    .await
    .expect("update");
    assert_eq!((r.command_tag.as_str(), r.rows_affected), ("UPDATE 10", 10));

    let r = query(
        &mut c,
        &format!("DELETE FROM {t} WHERE id > 20 RETURNING id"),
        vec![],
    )
    .await
    .expect("delete");
    assert_eq!(
        (r.command_tag.as_str(), r.rows_affected, r.rows.len()),
        ("DELETE 5", 5, 5)
    );

    let r = query(
        &mut c,
        &format!("SELECT id, name FROM {t} WHERE id IN (1, 15) ORDER BY id"),
        vec![],
    )
    .await
    .expect("select");
    assert_eq!(r.command_tag, "SELECT 2");
    assert_eq!(
        r.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["id", "name"]
    );
    assert_eq!(r.rows[0].values, vec![int(1), text("N1")]);
    assert_eq!(r.rows[1].values, vec![int(15), text("n15")]);
    assert!(!r.truncated);

    let r = query(
        &mut c,
        &format!("WITH d AS (DELETE FROM {t} WHERE id = 1 RETURNING *) SELECT count(*) FROM d"),
        vec![],
    )
    .await
    .expect("cte");
    assert_eq!(r.command_tag, "SELECT 1");
    assert_eq!(scalar(&r), &int(1));
    query(&mut c, &format!("DROP TABLE {t}"), vec![])
        .await
        .expect("drop");
}

#[tokio::test]
async fn max_rows_truncates_but_keeps_the_true_count() {
    let sidecar = Sidecar::start(&["--max-rows", "50"]);
    let mut c = sidecar.client().await;
    let mut req = request("SELECT g FROM generate_series(1, 100) g", vec![]);
    req.max_rows = 10;
    let r = c.query(req.clone()).await.expect("query").into_inner();
    assert_eq!(r.rows.len(), 10);
    assert!(r.truncated);
    assert_eq!(r.rows_affected, 100);
    assert_eq!(r.rows[9].values, vec![int(10)]);
    // 0 means the server's limit; a larger ask is capped to it.
    for max_rows in [0, 500] {
        req.max_rows = max_rows;
        let r = c.query(req.clone()).await.expect("query").into_inner();
        assert_eq!(
            (r.rows.len(), r.truncated),
            (50, true),
            "max_rows {max_rows}"
        );
    }
    req.max_rows = 100;
    req.sql = "SELECT g FROM generate_series(1, 50) g".into();
    let r = c.query(req).await.expect("query").into_inner();
    assert_eq!((r.rows.len(), r.truncated), (50, false));
}

#[tokio::test]
async fn results_over_the_message_limit_are_refused_clearly() {
    let sidecar = Sidecar::start(&["--max-message-bytes", "65536"]);
    let mut c = sidecar.client().await;
    let err = query(
        &mut c,
        "SELECT repeat('x', 1000) FROM generate_series(1, 100)",
        vec![],
    )
    .await
    .expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(error_info(&err).0, "RESPONSE_TOO_LARGE");
    // A result under the limit on the same connection still works.
    let r = query(
        &mut c,
        "SELECT repeat('x', 1000) FROM generate_series(1, 10)",
        vec![],
    )
    .await
    .expect("fits");
    assert_eq!(r.rows.len(), 10);
}

#[tokio::test]
async fn execution_info_tells_pool_cache_and_timings() {
    let sidecar = Sidecar::start(&["--pool-max", "1"]);
    let mut c = sidecar.client().await;
    let sql = "SELECT $1::int + 1";
    let first = query(&mut c, sql, vec![int(1)]).await.expect("first");
    let second = query(&mut c, sql, vec![int(2)]).await.expect("second");
    let (a, b) = (
        first.info.clone().expect("info"),
        second.info.clone().expect("info"),
    );
    assert_eq!(a.pool, "primary");
    assert_eq!(a.attempts, 1);
    assert!(!a.statement_cached, "first use prepares");
    assert!(
        b.statement_cached,
        "one connection: second use reuses the statement"
    );
    assert!(b.execution_time.is_some() && b.queue_time.is_some());
    assert_eq!(scalar(&second), &int(3));
}

#[tokio::test]
async fn normal_priority_never_uses_the_failover_pool() {
    // Threshold 1%: any use of the primary counts as "busy".
    let sidecar = Sidecar::start(&["--failover-threshold", "1", "--pool-max", "2"]);
    let mut c = sidecar.client().await;
    let mut c2 = sidecar.client().await;
    // Hold one primary connection busy.
    let busy = tokio::spawn(async move { query(&mut c2, "SELECT pg_sleep(1.5)", vec![]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let normal = c
        .query(request("SELECT 1", vec![]))
        .await
        .expect("normal")
        .into_inner();
    assert_eq!(normal.info.expect("info").pool, "primary");
    let critical = c
        .query(QueryRequest {
            priority: Priority::Critical as i32,
            ..request("SELECT 1", vec![])
        })
        .await
        .expect("critical")
        .into_inner();
    assert_eq!(critical.info.expect("info").pool, "failover");
    busy.await.expect("join").expect("sleep query");
}

#[tokio::test]
async fn pool_status_reports_live_primary_figures() {
    let sidecar = Sidecar::start(&["--pool-max", "3", "--pool-min", "2"]);
    let mut c = sidecar.client().await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = c.clone();
            async move {
                let s = c
                    .pool_status(PoolStatusRequest {})
                    .await
                    .expect("status")
                    .into_inner();
                s.database_reachable && s.pools[0].total_connections >= 2
            }
        })
        .await,
        "prewarmed to the minimum"
    );
    for _ in 0..5 {
        query(&mut c, "SELECT 1", vec![]).await.expect("query");
    }
    let mut c2 = c.clone();
    let busy = tokio::spawn(async move { query(&mut c2, "SELECT pg_sleep(1)", vec![]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = c
        .pool_status(PoolStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let p = &s.pools[0];
    assert_eq!(p.name, "primary");
    assert_eq!((p.max_connections, p.min_idle), (3, 2));
    assert_eq!(p.active_connections, 1, "{p:?}");
    assert_eq!(
        p.total_connections,
        p.active_connections + p.idle_connections
    );
    assert!((p.utilization_percent - 100.0 / 3.0).abs() < 0.01);
    assert!(p.checkouts >= 6 && p.connections_created >= 2);
    assert!(
        (p.reuse_rate - (1.0 - p.connections_created as f64 / p.checkouts as f64)).abs() < 1e-9
    );
    let q = s.queries.expect("queries");
    assert!(q.total >= 5 && q.latency_p50_ms > 0.0 && q.latency_p99_ms >= q.latency_p50_ms);
    assert_eq!(s.pools.len(), 2, "primary and failover");
    busy.await.expect("join").expect("sleep");

    let (code, body) = http_get(sidecar.http, "/health/pool").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    for key in [
        "activeConnections",
        "idleConnections",
        "totalConnections",
        "utilizationPercentage",
        "averageQueryTime",
        "failedQueries",
    ] {
        assert!(json.get(key).is_some(), "{key} in {body}");
    }
}

#[tokio::test]
async fn idle_connections_above_the_minimum_close_after_the_idle_timeout() {
    // Leased connections only, so that four concurrent calls take four connections.
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "4",
        "--pool-min",
        "1",
        "--pool-idle-timeout",
        "300",
        "--pipeline-connections",
        "0",
    ]);
    let c = sidecar.client().await;
    let calls = (0..4).map(|_| {
        let mut c = c.clone();
        async move { query(&mut c, "SELECT pg_sleep(0.3)::text", vec![]).await }
    });
    for r in futures_util::future::join_all(calls).await {
        r.expect("sleep");
    }
    let total = |mut c: pgsidecar::proto::data_access_client::DataAccessClient<_>| async move {
        c.pool_status(PoolStatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .pools[0]
            .total_connections
    };
    assert_eq!(
        total(c.clone()).await,
        4,
        "four concurrent calls opened four connections"
    );
    let shrunk = eventually(Duration::from_secs(5), || {
        let c = c.clone();
        async move { total(c).await == 1 }
    })
    .await;
    assert!(shrunk, "idle connections closed down to the minimum");
}

#[tokio::test]
async fn statement_cache_can_be_turned_off() {
    let sidecar = Sidecar::start(&["--pool-max", "1", "--statement-cache-size", "0"]);
    let mut c = sidecar.client().await;
    for _ in 0..2 {
        let r = query(&mut c, "SELECT $1::int", vec![int(7)])
            .await
            .expect("query");
        assert!(!r.info.as_ref().expect("info").statement_cached);
        assert_eq!(scalar(&r), &int(7));
    }
}

#[tokio::test]
async fn every_session_starts_with_the_sidecar_settings() {
    let sidecar = Sidecar::start(&[
        "--query-timeout",
        "12000",
        "--transaction-idle-timeout",
        "240000",
    ]);
    let mut c = sidecar.client().await;
    let r = query(
        &mut c,
        "SELECT current_setting('application_name'), current_setting('statement_timeout'),
                current_setting('idle_in_transaction_session_timeout'), current_setting('TimeZone'),
                current_setting('DateStyle'), current_setting('IntervalStyle')",
        vec![],
    )
    .await
    .expect("settings");
    assert_eq!(
        r.rows[0].values,
        vec![
            text("pgsidecar"),
            text("12s"),
            text("4min"),
            text("UTC"),
            text("ISO, MDY"),
            text("postgres")
        ]
    );
}

#[tokio::test]
async fn an_oversized_result_is_cancelled_not_drained() {
    // One connection: if the refused result were left draining, the next call would wait.
    let sidecar = Sidecar::start(&["--pool-max", "1", "--max-message-bytes", "65536"]);
    let mut c = sidecar.client().await;
    let err = query(&mut c, "SELECT generate_series(1, 2000000000)", vec![])
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let started = std::time::Instant::now();
    let r = query(&mut c, "SELECT 1", vec![]).await.expect("next call");
    assert_eq!(scalar(&r), &int(1));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
