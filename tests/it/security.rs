//! Who gets in and what they may do: bearer tokens on DataAccess (health stays open), the
//! warning for an unguarded listener beyond loopback, read-only mode, and the per-connection
//! stream limit.

use std::time::Duration;

use crate::support::*;
use futures_util::future::join_all;
use pgsidecar::proto::transaction_response::Event;
use pgsidecar::proto::{BeginTransaction, statement_result::Outcome};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn with_token(sql: &str, token: Option<&str>) -> tonic::Request<pgsidecar::proto::QueryRequest> {
    let mut req = tonic::Request::new(request(sql, vec![]));
    if let Some(t) = token {
        let value = format!("Bearer {t}").parse().expect("header value");
        req.metadata_mut().insert("authorization", value);
    }
    req
}

#[tokio::test]
async fn data_access_needs_a_token_and_health_does_not() {
    let files = TempFiles::new();
    let tokens = "# current, then the one being retired\nt0ken-new\nt0ken-old\n";
    let sidecar = Sidecar::start(&["--auth-tokens-file", &files.write("tokens", tokens)]);
    let mut c = sidecar.client().await;
    for token in ["t0ken-new", "t0ken-old"] {
        let r = c.query(with_token("SELECT 1::int", Some(token))).await;
        assert_eq!(scalar(&r.expect("accepted").into_inner()), &int(1));
    }
    for token in [None, Some("t0ken-ne"), Some("t0ken-new2"), Some("")] {
        let e = c
            .query(with_token("SELECT 1", token))
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}: {e:?}");
        assert_eq!(error_info(&e).0, "UNAUTHENTICATED");
        assert!(
            !e.message().contains("t0ken"),
            "the message never echoes tokens"
        );
    }
    // Streams are guarded too, before any statement runs.
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let e = c
        .transaction(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::Unauthenticated);
    // Probes carry no token.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", sidecar.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "health needs no token: {health:?}");
    assert!(!sidecar.stderr().contains("t0ken"), "tokens never logged");
}

#[tokio::test]
async fn an_unguarded_listener_beyond_loopback_is_warned_about() {
    let sidecar = Sidecar::start(&["--grpc-addr", "0.0.0.0:0"]);
    let warned = eventually(Duration::from_secs(5), || {
        let has = sidecar.stderr().contains("without protection");
        async move { has }
    })
    .await;
    assert!(warned, "stderr: {}", sidecar.stderr());
    let loopback = Sidecar::start(&[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!loopback.stderr().contains("without protection"));
}

#[tokio::test]
async fn read_only_mode_refuses_writes_and_cannot_be_talked_out_of_it() {
    let table = unique("ro");
    admin()
        .await
        .batch_execute(&format!("CREATE TABLE {table} (v int)"))
        .await
        .expect("create");
    // One connection, so a session change would be seen by the next request.
    let sidecar = Sidecar::start(&["--read-only", "--pool-max", "1", "--pool-min", "1"]);
    let mut c = sidecar.client().await;
    let insert = format!("INSERT INTO {table} VALUES (1)");
    let e = query(&mut c, &insert, vec![]).await.expect_err("refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let (reason, meta) = error_info(&e);
    assert_eq!(reason, "READ_ONLY_SQL_TRANSACTION");
    assert_eq!(meta["sqlstate"], "25006");
    let r = query(
        &mut c,
        &format!("SELECT count(*)::int FROM {table}"),
        vec![],
    )
    .await;
    assert_eq!(scalar(&r.expect("reads work")), &int(0));

    // A session-level escape is undone before the connection is reused.
    let escape = "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE";
    query(&mut c, escape, vec![]).await.expect("set runs");
    let e = query(&mut c, &insert, vec![])
        .await
        .expect_err("still refused");
    assert_eq!(e.code(), Code::PermissionDenied);

    // A transaction is read-only whatever it asks, and cannot switch itself back.
    let begin = BeginTransaction {
        read_only: false,
        ..Default::default()
    };
    let mut tx = TxStream::open(&mut c, begin).await;
    assert!(matches!(tx.next().await, Ok(Some(Event::Begun(_)))));
    tx.execute("1", "SET TRANSACTION READ WRITE", vec![]).await;
    match tx.result().await.outcome {
        Some(Outcome::Error(status)) => {
            let (code, _, sqlstate) = rpc_error(&status);
            assert_eq!(sqlstate.as_deref(), Some("25001"), "{status:?}");
            assert_eq!(code, Code::FailedPrecondition);
        }
        other => panic!("SET TRANSACTION READ WRITE was allowed: {other:?}"),
    }
    tx.rollback().await;
    let _ = tx.next().await;
    let count: i64 = admin()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 0, "nothing was written");
}

#[tokio::test]
async fn streams_per_connection_are_limited() {
    let marker = unique("streamlimit");
    let sidecar = Sidecar::start(&["--max-concurrent-streams", "2", "--pool-max", "4"]);
    let mut c = sidecar.client().await;
    // One call first, so the client has the server's SETTINGS (with the limit) before the
    // burst; streams opened before that arrives are refused (REFUSED_STREAM: UNAVAILABLE,
    // never processed, safe to retry), as HTTP/2 specifies.
    query(&mut c, "SELECT 1", vec![]).await.expect("first call");
    let db = admin().await;
    let sql = format!("SELECT pg_sleep(0.4)::text AS {marker}");
    let calls = (0..6).map(|_| {
        let (mut c, sql) = (c.clone(), sql.clone());
        async move { query(&mut c, &sql, vec![]).await.map(|_| ()) }
    });
    let calls = tokio::spawn(join_all(calls));
    // Sample how many run at once in PostgreSQL while the calls are in flight.
    let mut most = 0;
    while !calls.is_finished() {
        most = most.max(active_statements(&db, &marker).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in calls.await.expect("join") {
        r.expect("every call is served, in turn");
    }
    assert!(most >= 1, "the sampling saw the statements run");
    assert!(
        most <= 2,
        "{most} ran at once on one connection limited to 2 streams"
    );
}
