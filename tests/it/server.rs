//! The binary as operators meet it: configuration errors exit 64 with one line, secrets stay
//! out of the output, default addresses, health, HTTP endpoints, and a graceful drain on
//! SIGTERM.

use std::process::Command;
use std::time::Duration;

use crate::support::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsidecar"));
    cmd.args(args).env_remove("DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run pgsidecar")
}

/// (flags, environment, the setting the message must name)
type BadSetting = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn bad_settings_exit_64_with_one_line_naming_the_setting() {
    let cases: &[BadSetting] = &[
        (&["--pool-max", "lots"], &[], "DB_POOL_MAX"),
        (&[], &[("DB_POOL_MAX", "-3")], "DB_POOL_MAX"),
        (
            &[],
            &[("DB_FAILOVER_THRESHOLD", "150")],
            "DB_FAILOVER_THRESHOLD",
        ),
        (
            &[],
            &[("DB_POOL_MIN", "50"), ("DB_POOL_MAX", "10")],
            "DB_POOL_MIN",
        ),
        (&[], &[("DB_QUERY_TIMEOUT", "soon")], "DB_QUERY_TIMEOUT"),
        (
            &[],
            &[("DB_CONNECTION_VALIDATION_ENABLED", "maybe")],
            "DB_CONNECTION_VALIDATION_ENABLED",
        ),
        (
            &[],
            &[("PGSIDECAR_GRPC_ADDR", "localhost")],
            "PGSIDECAR_GRPC_ADDR",
        ),
        (
            &[],
            &[("PGSIDECAR_LOG_FORMAT", "xml")],
            "PGSIDECAR_LOG_FORMAT",
        ),
        (
            &["--config", "/nonexistent/pgsidecar.toml"],
            &[],
            "--config",
        ),
        (&["--no-such-flag"], &[], "--no-such-flag"),
    ];
    for (args, env, setting) in cases {
        let out = run_binary(args, env);
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(setting), "{stderr:?} names {setting}");
    }
    let help = run_binary(&["--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("DB_POOL_MAX"));
}

#[test]
fn the_database_password_is_never_printed() {
    let out = run_binary(
        &[],
        &[(
            "DATABASE_URL",
            "postgres://app:hunter2secret@127.0.0.1:5432/postgres?bogus=1",
        )],
    );
    assert_eq!(out.status.code(), Some(64));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("DATABASE_URL"), "{all}");
    assert!(!all.contains("hunter2secret"), "{all}");
}

#[tokio::test]
async fn a_running_sidecar_logs_no_password() {
    // Trust auth ignores the password, so the pool connects and logs its events.
    let url = "postgres://postgres:hunter2secret@127.0.0.1:5432/postgres";
    let sidecar = Sidecar::start(&["--database-url", url, "--log-level", "debug"]);
    let mut c = sidecar.client().await;
    query(&mut c, "SELECT 1", vec![]).await.expect("query");
    let (_, metrics) = http_get(sidecar.http, "/metrics").await;
    assert!(!sidecar.stderr().contains("hunter2secret"));
    assert!(!metrics.contains("hunter2secret"));
}

#[tokio::test]
async fn health_and_http_endpoints_answer() {
    let sidecar = Sidecar::start(&[]);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", sidecar.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let status = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };
    let live = health
        .check(status(""))
        .await
        .expect("liveness")
        .into_inner();
    assert_eq!(live.status(), ServingStatus::Serving);
    let ready = eventually(Duration::from_secs(5), || {
        let mut h = health.clone();
        async move {
            h.check(status("dataaccess.v1.DataAccess"))
                .await
                .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
        }
    })
    .await;
    assert!(ready, "readiness SERVING once the primary is warm");
    let (code, body) = http_get(sidecar.http, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("pgsidecar_pool_max_connections"), "{body}");
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_and_exits_zero() {
    let mut sidecar = Sidecar::start(&["--shutdown-grace", "10000"]);
    let mut c = sidecar.client().await;
    let in_flight =
        tokio::spawn(async move { query(&mut c, "SELECT pg_sleep(1)::text", vec![]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = sidecar.terminate();
        (s, sidecar)
    })
    .await
    .expect("join");
    let answer = in_flight.await.expect("join");
    assert!(answer.is_ok(), "the in-flight call finished: {answer:?}");
    assert_eq!(status.0.code(), Some(0));
}

#[test]
fn defaults_listen_on_loopback_50051_and_9898() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        line.trim(),
        "pgsidecar listening grpc=127.0.0.1:50051 http=127.0.0.1:9898"
    );
}

#[tokio::test]
async fn slow_statements_are_logged_without_parameter_values() {
    let sidecar = Sidecar::start(&["--slow-query-ms", "100"]);
    let mut c = sidecar.client().await;
    query(
        &mut c,
        "SELECT pg_sleep(0.2)::text || $1::text",
        vec![text("s3cret-param")],
    )
    .await
    .expect("query");
    let logged = eventually(Duration::from_secs(3), || {
        let has = sidecar.stderr().contains("slow statement");
        async move { has }
    })
    .await;
    assert!(logged, "slow statement logged: {}", sidecar.stderr());
    assert!(!sidecar.stderr().contains("s3cret-param"));
}
