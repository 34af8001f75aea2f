//! Who gets in and what they may do: bearer tokens on DataAccess (health stays open) and
//! their scopes, a token setting that names no token, the warning for an unguarded listener
//! beyond loopback, read-only mode, the share of the failover reserve transactions may hold,
//! and the per-connection stream limit.

use std::time::Duration;

use crate::support::*;
use futures_util::future::join_all;
use pgsidecar::proto::data_access_client::DataAccessClient;
use pgsidecar::proto::transaction_response::Event;
use pgsidecar::proto::{BeginTransaction, Priority, statement_result::Outcome};
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

/// Sets `authorization: Bearer <token>` on `req`.
fn bearer<T>(mut req: tonic::Request<T>, token: &str) -> tonic::Request<T> {
    let value = format!("Bearer {token}").parse().expect("header value");
    req.metadata_mut().insert("authorization", value);
    req
}

/// A Transaction stream opened with `token` (when given) and `begin` sent.
async fn open_tx(
    c: &mut DataAccessClient<tonic::transport::Channel>,
    token: Option<&str>,
    begin: BeginTransaction,
) -> Result<TxStream, tonic::Status> {
    use pgsidecar::proto::{TransactionRequest, transaction_request::Action};
    let (send, rx) = tokio::sync::mpsc::channel(16);
    send.send(TransactionRequest {
        action: Some(Action::Begin(begin)),
    })
    .await
    .expect("queue begin");
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(t) = token {
        req = bearer(req, t);
    }
    let recv = c.transaction(req).await?.into_inner();
    Ok(TxStream {
        send: Some(send),
        recv,
    })
}

fn critical_begin() -> BeginTransaction {
    BeginTransaction {
        priority: Priority::Critical as i32,
        ..Default::default()
    }
}

fn critical(sql: &str) -> pgsidecar::proto::QueryRequest {
    pgsidecar::proto::QueryRequest {
        priority: Priority::Critical as i32,
        ..request(sql, vec![])
    }
}

#[tokio::test]
async fn tokens_carry_scopes_read_only_and_critical_refused_without_them() {
    let table = unique("scopes");
    let db = admin().await;
    db.batch_execute(&format!("CREATE TABLE {table} (v int)"))
        .await
        .expect("create");
    let files = TempFiles::new();
    let tokens = "# a bare token keeps every right\nfull-t0ken\nreader-t0ken read\npager-t0ken read critical\n";
    // One connection: a read-only transaction left open would show in the next call.
    let sidecar = Sidecar::start(&[
        "--auth-tokens-file",
        &files.write("tokens", tokens),
        "--pool-max",
        "1",
        "--pool-min",
        "1",
    ]);
    let mut c = sidecar.client().await;
    let insert = format!("INSERT INTO {table} VALUES (1)");
    let count = format!("SELECT count(*)::int FROM {table}");

    // PRIORITY_CRITICAL without the critical scope: refused, on every RPC, before any SQL.
    let refused = |e: tonic::Status| {
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert_eq!(error_info(&e).0, "PRIORITY_NOT_ALLOWED");
        assert!(!e.message().contains("t0ken"), "never echoes tokens");
    };
    refused(
        c.query(bearer(
            tonic::Request::new(critical("SELECT 1")),
            "reader-t0ken",
        ))
        .await
        .expect_err("query"),
    );
    let stream = c
        .stream_query(bearer(
            tonic::Request::new(critical("SELECT 1")),
            "reader-t0ken",
        ))
        .await;
    refused(stream.expect_err("stream query"));
    let mut tx = open_tx(&mut c, Some("reader-t0ken"), critical_begin())
        .await
        .expect("stream opens");
    refused(tx.next().await.expect_err("begin refused"));

    // Normal priority reads work; writes fail as in read-only mode, on every RPC.
    let r = c
        .query(bearer(
            tonic::Request::new(request(&count, vec![])),
            "reader-t0ken",
        ))
        .await;
    assert_eq!(scalar(&r.expect("reads work").into_inner()), &int(0));
    let read_only_refusal = |e: tonic::Status| {
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert_eq!(error_info(&e).1["sqlstate"], "25006");
    };
    for token in ["reader-t0ken", "pager-t0ken"] {
        let e = c
            .query(bearer(tonic::Request::new(request(&insert, vec![])), token))
            .await;
        read_only_refusal(e.expect_err("write refused"));
    }
    let mut stream = c
        .stream_query(bearer(
            tonic::Request::new(request(&insert, vec![])),
            "reader-t0ken",
        ))
        .await
        .expect("stream opens")
        .into_inner();
    read_only_refusal(stream.message().await.expect_err("streamed write refused"));
    // A streamed read that needs PostgreSQL's text output runs as a cursor, inside the
    // read-only transaction.
    let sql = "SELECT 'a b'::tsvector AS v FROM generate_series(1, 3)";
    let mut stream = c
        .stream_query(bearer(
            tonic::Request::new(request(sql, vec![])),
            "reader-t0ken",
        ))
        .await
        .expect("stream opens")
        .into_inner();
    let mut rows = 0;
    while let Some(m) = stream.message().await.expect("streamed read works") {
        rows += m.rows.len();
    }
    assert_eq!(rows, 3);
    let begin = BeginTransaction {
        read_only: false,
        ..Default::default()
    };
    let mut tx = open_tx(&mut c, Some("reader-t0ken"), begin)
        .await
        .expect("stream opens");
    assert!(matches!(tx.next().await, Ok(Some(Event::Begun(_)))));
    tx.execute("1", &insert, vec![]).await;
    match tx.result().await.outcome {
        Some(Outcome::Error(status)) => {
            assert_eq!(rpc_error(&status).2.as_deref(), Some("25006"), "{status:?}");
        }
        other => panic!("a write in a read-only token's transaction ran: {other:?}"),
    }
    tx.rollback().await;
    let _ = tx.next().await;

    // The critical scope reaches the reserve; a bare token may do everything, on the same
    // single connection, which nothing above left in a transaction.
    let r = c
        .query(bearer(
            tonic::Request::new(critical("SELECT 1::int")),
            "pager-t0ken",
        ))
        .await;
    assert_eq!(scalar(&r.expect("critical allowed").into_inner()), &int(1));
    let r = c
        .query(bearer(
            tonic::Request::new(request(&insert, vec![])),
            "full-t0ken",
        ))
        .await;
    assert_eq!(r.expect("full token writes").into_inner().rows_affected, 1);
    let r = c
        .query(bearer(
            tonic::Request::new(critical("SELECT 1::int")),
            "full-t0ken",
        ))
        .await;
    r.expect("full token may ask for critical");
    let n: i64 = db
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1, "only the full token's write was committed");
}

#[test]
fn a_token_setting_that_yields_no_token_exits_64() {
    for (flags, env) in [
        (&[][..], &[("PGSIDECAR_AUTH_TOKENS", ",")][..]),
        (&[], &[("PGSIDECAR_AUTH_TOKENS", " ")]),
        (&[], &[("PGSIDECAR_AUTH_TOKENS", "#secret")]),
        (&["--auth-tokens", " , "], &[]),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgsidecar"));
        cmd.args(flags)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args([
                "--pool-max",
                "1",
                "--pool-min",
                "0",
                "--enable-failover",
                "false",
            ])
            .env_remove("DATABASE_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Bounded: a sidecar that accepts the setting serves until killed.
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn pgsidecar");
        let mut status = None;
        for _ in 0..200 {
            status = child.try_wait().expect("wait");
            if status.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = status.and_then(|s| s.code());
        assert_eq!(
            code,
            Some(64),
            "{flags:?} {env:?} (None: it started): {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains("PGSIDECAR_AUTH_TOKENS"), "{stderr:?}");
        assert!(!stderr.contains("secret"), "{stderr:?}");
    }
}

#[tokio::test]
async fn critical_transactions_leave_part_of_the_reserve_for_critical_queries() {
    // A primary of one connection held by a normal transaction is 100 % busy, so critical
    // work goes to the failover pool of 4, of which transactions may hold half.
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "1",
        "--pool-min",
        "1",
        "--failover-pool-max",
        "4",
        "--failover-pool-min",
        "0",
        "--failover-transaction-share",
        "50",
        "--connection-timeout",
        "1000",
    ]);
    let mut c = sidecar.client().await;
    let mut normal = open_tx(&mut c, None, BeginTransaction::default())
        .await
        .expect("open");
    match normal.next().await {
        Ok(Some(Event::Begun(b))) => assert_eq!(b.pool, "primary"),
        other => panic!("normal begin: {other:?}"),
    }
    // As many critical transactions as the whole reserve, held open.
    let mut held = Vec::new();
    let (mut on_failover, mut refused) = (0, 0);
    for _ in 0..4 {
        let mut tx = open_tx(&mut c, None, critical_begin()).await.expect("open");
        match tx.next().await {
            Ok(Some(Event::Begun(b))) => {
                assert_eq!(b.pool, "failover", "the primary is full");
                on_failover += 1;
            }
            Err(e) => {
                // Beyond the share it waits for the full primary, like normal work.
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert_eq!(error_info(&e).0, "POOL_EXHAUSTED");
                refused += 1;
            }
            other => panic!("critical begin: {other:?}"),
        }
        held.push(tx);
    }
    assert_eq!(
        (on_failover, refused),
        (2, 2),
        "transactions hold half the reserve"
    );
    // The rest of the reserve is there for a critical query.
    let r = c
        .query(critical("SELECT 1::int"))
        .await
        .expect("critical query served");
    let r = r.into_inner();
    assert_eq!(scalar(&r), &int(1));
    assert_eq!(r.info.expect("info").pool, "failover");
    // A transaction's place comes back when it ends.
    drop(held);
    let mut again = None;
    for _ in 0..50 {
        let mut tx = open_tx(&mut c, None, critical_begin()).await.expect("open");
        if let Ok(Some(Event::Begun(b))) = tx.next().await {
            assert_eq!(b.pool, "failover");
            again = Some(tx);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "ended transactions give their share back");
    drop(normal);
}
