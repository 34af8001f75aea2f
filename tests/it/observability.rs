//! What operators see: Prometheus metrics that parse and move with traffic, gRPC server
//! reflection (on by default, off on request), and health Watch following shutdown.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;
use pgsidecar::proto::BeginTransaction;
use pgsidecar::proto::transaction_response::Event;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn metrics_parse_cover_the_pools_statements_and_rpcs_and_move_with_traffic() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    for i in 0..5 {
        query(
            &mut c,
            "SELECT $1::int /* metrics-secret-text */",
            vec![int(i)],
        )
        .await
        .expect("query");
    }
    query(&mut c, "SELECT * FROM no_such_table_metrics", vec![])
        .await
        .expect_err("not found");
    let mut tx = TxStream::open(&mut c, BeginTransaction::default()).await;
    tx.execute("a", "SELECT 1", vec![]).await;
    tx.commit().await;
    while let Ok(Some(e)) = tx.next().await {
        if matches!(e, Event::Committed(_)) {
            break;
        }
    }
    let mut s = c
        .stream_query(request("SELECT generate_series(1, 10)", vec![]))
        .await
        .expect("stream")
        .into_inner();
    while s.message().await.expect("chunk").is_some() {}

    let before = scrape(&sidecar).await;
    let q = [("grpc_method", "Query")];
    assert!(
        value(
            &before,
            "grpc_server_handled_total",
            &[q[0], ("grpc_code", "OK")]
        ) >= 5.0
    );
    assert!(
        value(
            &before,
            "grpc_server_handled_total",
            &[q[0], ("grpc_code", "NotFound")]
        ) >= 1.0
    );
    assert!(
        value(
            &before,
            "grpc_server_handled_total",
            &[("grpc_method", "StreamQuery"), ("grpc_code", "OK")]
        ) >= 1.0
    );
    assert!(
        value(
            &before,
            "grpc_server_handled_total",
            &[("grpc_method", "Transaction"), ("grpc_type", "bidi_stream")]
        ) >= 1.0
    );
    assert!(value(&before, "grpc_server_started_total", &q) >= 6.0);
    assert!(
        value(
            &before,
            "pgsidecar_transactions_total",
            &[("outcome", "committed")]
        ) >= 1.0
    );
    assert!(
        value(
            &before,
            "pgsidecar_queries_failed_total",
            &[("rpc", "Query")]
        ) >= 1.0
    );
    let cache = value(&before, "pgsidecar_statement_cache_hits_total", &[])
        + value(&before, "pgsidecar_statement_cache_misses_total", &[]);
    assert!(cache >= 5.0, "cache lookups counted: {cache}");
    assert!(
        value(
            &before,
            "pgsidecar_pool_max_connections",
            &[("pool", "primary")]
        ) == 4.0
    );
    assert!(
        value(
            &before,
            "pgsidecar_pool_checkouts_total",
            &[("pool", "primary")]
        ) >= 7.0
    );

    // Every named metric is there; histograms are real histograms with explicit buckets.
    let names: HashMap<&str, &prometheus_parse::Value> = before
        .samples
        .iter()
        .map(|x| (x.metric.as_str(), &x.value))
        .collect();
    for name in [
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds",
        "pgsidecar_pool_max_connections",
        "pgsidecar_pool_server_connections",
        "pgsidecar_pool_server_active_connections",
        "pgsidecar_pool_server_idle_connections",
        "pgsidecar_pool_client_waiting_connections",
        "pgsidecar_pool_utilization_ratio",
        "pgsidecar_pool_connections_created_total",
        "pgsidecar_pool_checkouts_total",
        "pgsidecar_pool_wait_seconds",
        "pgsidecar_query_duration_seconds",
        "pgsidecar_queries_failed_total",
        "pgsidecar_statement_cache_hits_total",
        "pgsidecar_statement_cache_misses_total",
        "pgsidecar_statement_cache_statements",
        "pgsidecar_transactions_active",
        "pgsidecar_transactions_total",
        "pgsidecar_database_reachable",
    ] {
        assert!(names.contains_key(name), "{name} missing");
    }
    for hist in [
        "grpc_server_handling_seconds",
        "pgsidecar_query_duration_seconds",
        "pgsidecar_pool_wait_seconds",
    ] {
        assert!(
            matches!(names[hist], prometheus_parse::Value::Histogram(_)),
            "{hist} is a histogram"
        );
    }
    let (_, text) = http_get(sidecar.http, "/metrics").await;
    assert!(
        !text.contains("metrics-secret-text") && !text.contains("no_such_table"),
        "no SQL in labels"
    );

    for _ in 0..3 {
        query(&mut c, "SELECT 1", vec![])
            .await
            .expect("more traffic");
    }
    let after = scrape(&sidecar).await;
    assert_eq!(
        value(
            &after,
            "grpc_server_handled_total",
            &[q[0], ("grpc_code", "OK")]
        ),
        value(
            &before,
            "grpc_server_handled_total",
            &[q[0], ("grpc_code", "OK")]
        ) + 3.0
    );
}

async fn list_services(addr: std::net::SocketAddr) -> Result<Vec<String>, tonic::Status> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await?
        .into_inner();
    let msg = answers.message().await?.expect("an answer");
    match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            Ok(l.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_the_services_and_can_be_turned_off() {
    let on = Sidecar::start(&[]);
    let services = list_services(on.grpc).await.expect("reflection");
    for s in ["dataaccess.v1.DataAccess", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|x| x == s), "{s} in {services:?}");
    }
    let off = Sidecar::start(&["--reflection", "false"]);
    let err = list_services(off.grpc).await.expect_err("reflection off");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn health_watch_turns_not_serving_when_shutdown_begins() {
    let mut sidecar = Sidecar::start(&["--shutdown-grace", "2000"]);
    let channel = Channel::from_shared(format!("http://{}", sidecar.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "dataaccess.v1.DataAccess".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(m)) = watch.message().await {
            seen.push(m.status());
            if m.status() == ServingStatus::Serving {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "readiness SERVING once warm: {seen:?}");
    let pid = sidecar.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("an update");
    let status = next.ok().flatten().map(|m| m.status());
    assert_eq!(
        status,
        Some(ServingStatus::NotServing),
        "NOT_SERVING before the drain"
    );
    let exit = tokio::task::spawn_blocking(move || sidecar.terminate())
        .await
        .expect("join");
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn analyze_prints_top_statements_slow_ones_and_pools_without_values() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    for i in 0..5 {
        query(
            &mut c,
            &format!("SELECT {i} + $1::int"),
            vec![int(1000 + i)],
        )
        .await
        .expect("query");
    }
    query(
        &mut c,
        "SELECT pg_sleep(0.2)::text, 'hunter-literal'",
        vec![],
    )
    .await
    .expect("slow");
    let grpc = sidecar.grpc.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
            .args(["analyze", "--addr", &grpc, "--slow-ms", "100"])
            .output()
            .expect("run analyze")
    })
    .await
    .expect("join");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for part in [
        "Pool utilization",
        "primary",
        "average query time",
        "Top statements by total time",
        "Slow statements",
    ] {
        assert!(text.contains(part), "{part} in:\n{text}");
    }
    assert!(
        text.contains("SELECT ? + $1::int"),
        "statements differing in literals group together:\n{text}"
    );
    let slow = text.split("Slow statements").nth(1).expect("slow section");
    assert!(slow.contains("SELECT pg_sleep(?)::text, ?"), "{text}");
    assert!(
        !text.contains("hunter-literal") && !text.contains("1003"),
        "no values in the report"
    );

    let unreachable = std::process::Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
        .args(["analyze", "--addr", "127.0.0.1:1"])
        .output()
        .expect("run analyze");
    assert_eq!(unreachable.status.code(), Some(69));
}

#[tokio::test]
async fn pool_status_percentiles_agree_with_the_client() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let mut client_ms = Vec::new();
    for i in 0..200 {
        // One in four sleeps 20 ms: p50 is fast, p99 is a sleeper.
        let sql = if i % 4 == 0 {
            "SELECT pg_sleep(0.02)::text"
        } else {
            "SELECT 'fast'"
        };
        let t = std::time::Instant::now();
        query(&mut c, sql, vec![]).await.expect("query");
        client_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    client_ms.sort_by(f64::total_cmp);
    let pct = |q: f64| client_ms[((client_ms.len() as f64 * q) as usize).min(client_ms.len() - 1)];
    let s = c
        .pool_status(pgsidecar::proto::PoolStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let q = s.queries.expect("queries");
    assert_eq!(q.total, 200);
    // The server measures less than the client (no network, no gRPC), never more.
    assert!(
        q.latency_p99_ms >= 18.0 && q.latency_p99_ms <= pct(0.99) + 2.0,
        "p99 {} vs client {}",
        q.latency_p99_ms,
        pct(0.99)
    );
    assert!(
        q.latency_p50_ms <= pct(0.50) + 1.0,
        "p50 {} vs client {}",
        q.latency_p50_ms,
        pct(0.50)
    );
    assert!(
        q.latency_p50_ms < 10.0,
        "p50 is a fast query: {}",
        q.latency_p50_ms
    );
    assert!(q.latency_p95_ms >= q.latency_p50_ms && q.latency_p99_ms >= q.latency_p95_ms);
    let mean: f64 = client_ms.iter().sum::<f64>() / client_ms.len() as f64;
    assert!(
        q.latency_avg_ms > 0.0 && q.latency_avg_ms <= mean + 1.0,
        "avg {} vs client {mean}",
        q.latency_avg_ms
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let sidecar = Sidecar::start(&["--log-format", "json", "--slow-query-ms", "10"]);
    let mut c = sidecar.client().await;
    query(&mut c, "SELECT pg_sleep(0.05)::text", vec![])
        .await
        .expect("slow query");
    let logged = eventually(Duration::from_secs(3), || {
        let has = sidecar.stderr().contains("slow statement");
        async move { has }
    })
    .await;
    assert!(logged);
    for line in sidecar.stderr().lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}
