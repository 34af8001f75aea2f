//! Transaction streams against real PostgreSQL: commit and rollback, pipelining, in-band
//! errors and savepoints, isolation, misuse, timeouts, abandoned streams releasing locks at
//! once, atomicity when cut, many concurrent streams, and COMMIT of unknown outcome.

use std::time::{Duration, Instant};

use crate::support::proxy::Proxy;
use crate::support::*;
use pgsidecar::proto::transaction_request::Action;
use pgsidecar::proto::transaction_response::Event;
use pgsidecar::proto::{BeginTransaction, IsolationLevel, Priority, statement_result::Outcome};
use tonic::Code;

fn begin() -> BeginTransaction {
    BeginTransaction::default()
}

async fn table(db: &tokio_postgres::Client) -> String {
    let t = unique("tx");
    db.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text)"))
        .await
        .expect("create");
    t
}

async fn count(db: &tokio_postgres::Client, t: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .expect("count")
        .get(0)
}

async fn begun(tx: &mut TxStream) -> pgsidecar::proto::TransactionBegun {
    match tx.next().await {
        Ok(Some(Event::Begun(b))) => b,
        other => panic!("expected begun, got {other:?}"),
    }
}

#[tokio::test]
async fn commit_makes_writes_visible_and_rollback_discards_them() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = table(&db).await;

    let mut tx = TxStream::open(&mut c, begin()).await;
    let b = begun(&mut tx).await;
    assert!(!b.transaction_id.is_empty());
    assert_eq!(b.pool, "primary");
    tx.execute(
        "a",
        &format!("INSERT INTO {t} VALUES ($1, 'x')"),
        vec![int(1)],
    )
    .await;
    tx.execute("b", &format!("SELECT count(*)::int FROM {t}"), vec![])
        .await;
    let a = tx.result().await;
    assert_eq!(a.request_id, "a");
    let Some(Outcome::Response(r)) = a.outcome else {
        panic!("{a:?}")
    };
    assert_eq!(r.command_tag, "INSERT 0 1");
    let b2 = tx.result().await;
    assert_eq!(b2.request_id, "b");
    let Some(Outcome::Response(r)) = b2.outcome else {
        panic!()
    };
    assert_eq!(scalar(&r), &int(1), "the transaction sees its own write");
    assert_eq!(count(&db, &t).await, 0, "others do not, yet");
    tx.commit().await;
    assert!(
        matches!(tx.next().await, Ok(Some(Event::Committed(c))) if c.transaction_id == b.transaction_id)
    );
    assert!(
        matches!(tx.next().await, Ok(None)),
        "the stream ends OK after committed"
    );
    assert_eq!(count(&db, &t).await, 1);

    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.execute("a", &format!("INSERT INTO {t} VALUES (2, 'y')"), vec![])
        .await;
    tx.rollback().await;
    assert!(matches!(
        tx.result().await.outcome,
        Some(Outcome::Response(_))
    ));
    match tx.next().await {
        Ok(Some(Event::RolledBack(r))) => assert_eq!(r.reason, "rollback requested"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(tx.next().await, Ok(None)));
    assert_eq!(count(&db, &t).await, 1);
}

#[tokio::test]
async fn a_thousand_pipelined_statements_run_and_answer_in_order() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = table(&db).await;
    let mut tx = TxStream::open(&mut c, begin()).await;
    for i in 0..1000 {
        tx.execute(
            &format!("r{i}"),
            &format!("INSERT INTO {t} VALUES ($1, 'p')"),
            vec![int(i)],
        )
        .await;
    }
    tx.commit().await;
    begun(&mut tx).await;
    for i in 0..1000 {
        let r = tx.result().await;
        assert_eq!(r.request_id, format!("r{i}"));
        assert!(matches!(r.outcome, Some(Outcome::Response(_))), "{r:?}");
    }
    assert!(matches!(tx.next().await, Ok(Some(Event::Committed(_)))));
    assert_eq!(count(&db, &t).await, 1000);
}

#[tokio::test]
async fn errors_are_in_band_abort_the_transaction_and_savepoints_recover() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = table(&db).await;
    db.batch_execute(&format!("INSERT INTO {t} VALUES (1, 'existing')"))
        .await
        .expect("seed");

    // An error aborts: later statements answer 25P02, commit answers rolled_back.
    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.execute("dup", &format!("INSERT INTO {t} VALUES (1, 'dup')"), vec![])
        .await;
    tx.execute("after", "SELECT 1", vec![]).await;
    tx.commit().await;
    let dup = tx.result().await;
    let Some(Outcome::Error(e)) = &dup.outcome else {
        panic!("{dup:?}")
    };
    assert_eq!(
        rpc_error(e),
        (
            Code::AlreadyExists,
            "UNIQUE_VIOLATION".into(),
            Some("23505".into())
        )
    );
    let after = tx.result().await;
    let Some(Outcome::Error(e)) = &after.outcome else {
        panic!("{after:?}")
    };
    assert_eq!(rpc_error(e).2.as_deref(), Some("25P02"));
    assert_eq!(Code::from_i32(e.code), Code::FailedPrecondition);
    match tx.next().await {
        Ok(Some(Event::RolledBack(r))) => {
            let error = r.error.expect("the error that aborted it");
            assert_eq!(rpc_error(&error).2.as_deref(), Some("23505"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(tx.next().await, Ok(None)));

    // A savepoint recovers, and the commit keeps what came after it.
    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.execute(
        "1",
        &format!("INSERT INTO {t} VALUES (2, 'before')"),
        vec![],
    )
    .await;
    tx.execute("2", "SAVEPOINT s", vec![]).await;
    tx.execute("3", &format!("INSERT INTO {t} VALUES (1, 'dup')"), vec![])
        .await;
    tx.execute("4", "ROLLBACK TO SAVEPOINT s", vec![]).await;
    tx.execute("5", &format!("INSERT INTO {t} VALUES (3, 'after')"), vec![])
        .await;
    tx.commit().await;
    let outcomes: Vec<bool> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(matches!(
                tx.result().await.outcome,
                Some(Outcome::Response(_))
            ));
        }
        v
    };
    assert_eq!(outcomes, [true, true, false, true, true]);
    assert!(matches!(tx.next().await, Ok(Some(Event::Committed(_)))));
    assert_eq!(count(&db, &t).await, 3);

    // A bad parameter is refused before sending: the transaction is not aborted.
    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.execute("bad", "SELECT $1::int", vec![boolean(true)])
        .await;
    tx.execute("good", &format!("INSERT INTO {t} VALUES (4, 'ok')"), vec![])
        .await;
    tx.execute("ctl", "COMMIT", vec![]).await;
    tx.commit().await;
    let Some(Outcome::Error(e)) = tx.result().await.outcome else {
        panic!()
    };
    assert_eq!(Code::from_i32(e.code), Code::InvalidArgument);
    assert!(matches!(
        tx.result().await.outcome,
        Some(Outcome::Response(_))
    ));
    let Some(Outcome::Error(e)) = tx.result().await.outcome else {
        panic!()
    };
    assert_eq!(
        Code::from_i32(e.code),
        Code::InvalidArgument,
        "transaction control is refused"
    );
    assert!(matches!(tx.next().await, Ok(Some(Event::Committed(_)))));
    assert_eq!(count(&db, &t).await, 4);
}

#[tokio::test]
async fn isolation_levels_and_read_only_are_honoured() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = table(&db).await;
    db.batch_execute(&format!("INSERT INTO {t} VALUES (1, 'a'), (2, 'b')"))
        .await
        .expect("seed");

    let serializable = BeginTransaction {
        isolation: IsolationLevel::Serializable as i32,
        ..begin()
    };
    let mut t1 = TxStream::open(&mut c, serializable).await;
    let mut t2 = TxStream::open(&mut c, serializable).await;
    begun(&mut t1).await;
    begun(&mut t2).await;
    t1.execute("iso", "SHOW transaction_isolation", vec![])
        .await;
    let Some(Outcome::Response(r)) = t1.result().await.outcome else {
        panic!()
    };
    assert_eq!(scalar(&r), &text("serializable"));
    // Write skew: each reads both rows, then writes the row the other read.
    for (tx, id) in [(&mut t1, 1), (&mut t2, 2)] {
        tx.execute(
            "read",
            &format!("SELECT count(*) FROM {t} WHERE v IN ('a', 'b')"),
            vec![],
        )
        .await;
        assert!(matches!(
            tx.result().await.outcome,
            Some(Outcome::Response(_))
        ));
        tx.execute(
            "write",
            &format!("UPDATE {t} SET v = 'z' WHERE id = {}", 3 - id),
            vec![],
        )
        .await;
        assert!(matches!(
            tx.result().await.outcome,
            Some(Outcome::Response(_))
        ));
    }
    t1.commit().await;
    assert!(matches!(t1.next().await, Ok(Some(Event::Committed(_)))));
    t2.commit().await;
    match t2.next().await {
        Ok(Some(Event::RolledBack(r))) => {
            let e = r.error.expect("commit error");
            assert_eq!(
                rpc_error(&e),
                (
                    Code::Aborted,
                    "SERIALIZATION_FAILURE".into(),
                    Some("40001".into())
                )
            );
        }
        other => panic!("expected a serialization failure at commit, got {other:?}"),
    }

    let read_only = BeginTransaction {
        read_only: true,
        ..begin()
    };
    let mut tx = TxStream::open(&mut c, read_only).await;
    begun(&mut tx).await;
    tx.execute("w", &format!("INSERT INTO {t} VALUES (9, 'no')"), vec![])
        .await;
    let Some(Outcome::Error(e)) = tx.result().await.outcome else {
        panic!()
    };
    assert_eq!(rpc_error(&e).2.as_deref(), Some("25006"));
}

#[tokio::test]
async fn misuse_ends_the_stream_with_invalid_argument_and_a_clean_connection() {
    // One connection: if misuse left it dirty, the follow-up checks would see it.
    let app = unique("misuse");
    let url = format!("{}?application_name={app}", database_url());
    let sidecar = Sidecar::start(&[
        "--database-url",
        &url,
        "--pool-max",
        "1",
        "--pool-min",
        "1",
        "--failover-pool-max",
        "1",
    ]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = table(&db).await;
    let expect_invalid = |r: Result<Option<Event>, tonic::Status>| {
        let err = r.expect_err("misuse ends the stream with an error");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_eq!(error_info(&err).0, "INVALID_REQUEST");
    };

    // No begin.
    let (send, rx) = tokio::sync::mpsc::channel(4);
    send.send(pgsidecar::proto::TransactionRequest {
        action: Some(Action::Execute(pgsidecar::proto::Statement {
            sql: "SELECT 1".into(),
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let mut s = c
        .transaction(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open")
        .into_inner();
    let first = s.message().await;
    assert_eq!(first.expect_err("no begin").code(), Code::InvalidArgument);

    // A second begin, after a write.
    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.execute("w", &format!("INSERT INTO {t} VALUES (1, 'x')"), vec![])
        .await;
    tx.send(Action::Begin(begin())).await;
    tx.result().await;
    expect_invalid(tx.next().await);

    // An empty action.
    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.send
        .as_ref()
        .unwrap()
        .send(pgsidecar::proto::TransactionRequest { action: None })
        .await
        .unwrap();
    expect_invalid(tx.next().await);

    // Execute after commit (already on the wire when the commit is answered).
    let mut tx = TxStream::open(&mut c, begin()).await;
    tx.execute("w", &format!("INSERT INTO {t} VALUES (2, 'y')"), vec![])
        .await;
    tx.commit().await;
    tx.execute("late", "SELECT 1", vec![]).await;
    begun(&mut tx).await;
    tx.result().await;
    assert!(matches!(tx.next().await, Ok(Some(Event::Committed(_)))));
    expect_invalid(tx.next().await);

    // The write before the second begin was rolled back; the committed one stayed; the
    // connection carries no open transaction into the next request.
    assert_eq!(count(&db, &t).await, 1);
    let open: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'",
            &[&app],
        )
        .await
        .expect("activity")
        .get(0);
    assert_eq!(
        open, 0,
        "no connection of this sidecar is left in a transaction"
    );
    let r = query(&mut c, "SELECT 1", vec![])
        .await
        .expect("the connection serves again");
    assert_eq!(scalar(&r), &int(1));
}

#[tokio::test]
async fn an_idle_transaction_is_rolled_back_and_ended_aborted() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = table(&db).await;
    let b = BeginTransaction {
        idle_timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: 300_000_000,
        }),
        ..begin()
    };
    let mut tx = TxStream::open(&mut c, b).await;
    begun(&mut tx).await;
    tx.execute("w", &format!("INSERT INTO {t} VALUES (1, 'x')"), vec![])
        .await;
    tx.result().await;
    let started = Instant::now();
    let err = tx.next().await.expect_err("idle timeout");
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(error_info(&err).0, "TRANSACTION_IDLE_TIMEOUT");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(count(&db, &t).await, 0);
}

#[tokio::test]
async fn the_max_duration_ends_a_transaction() {
    let sidecar = Sidecar::start(&["--transaction-max-duration", "500"]);
    let mut c = sidecar.client().await;
    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.execute("slow", "SELECT pg_sleep(5)", vec![]).await;
    let err = tx.next().await.expect_err("max duration");
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(error_info(&err).0, "TRANSACTION_MAX_DURATION");
}

/// Waits until `sql` (an UPDATE of the row the abandoned stream locked) succeeds with a
/// lock timeout, and returns how long that took.
async fn time_to_write(db: &tokio_postgres::Client, sql: &str) -> Duration {
    let started = Instant::now();
    db.batch_execute("SET lock_timeout = '3s'")
        .await
        .expect("lock_timeout");
    db.batch_execute(sql)
        .await
        .expect("the row is writable again");
    started.elapsed()
}

#[tokio::test]
async fn an_abandoned_stream_releases_its_locks_at_once() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = table(&db).await;
    db.batch_execute(&format!("INSERT INTO {t} VALUES (1, 'a')"))
        .await
        .expect("seed");
    let marker = unique("abandoned");

    // Idle holder: locks the row, then the client vanishes.
    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.execute(
        "lock",
        &format!("UPDATE {t} SET v = 'held' WHERE id = 1"),
        vec![],
    )
    .await;
    tx.result().await;
    drop(tx);
    let took = time_to_write(&db, &format!("UPDATE {t} SET v = 'mine' WHERE id = 1")).await;
    assert!(
        took < Duration::from_secs(1),
        "idle abandoned lock released in {took:?}"
    );

    // Busy holder: locks the row and is running a long statement when the client vanishes.
    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.execute(
        "lock",
        &format!("UPDATE {t} SET v = 'held' WHERE id = 1"),
        vec![],
    )
    .await;
    tx.result().await;
    tx.execute(
        "sleep",
        &format!("SELECT pg_sleep(30) /* {marker} */"),
        vec![],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tx);
    let took = time_to_write(&db, &format!("UPDATE {t} SET v = 'again' WHERE id = 1")).await;
    assert!(
        took < Duration::from_secs(1),
        "busy abandoned lock released in {took:?}"
    );
    let running: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
            &[&format!("%{marker}%")],
        )
        .await
        .expect("activity")
        .get(0);
    assert_eq!(running, 0, "the running statement was cancelled");
    assert_eq!(count(&db, &t).await, 1);
}

#[tokio::test]
async fn a_stream_cut_midway_leaves_no_partial_writes() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = table(&db).await;
    for cut_after in [0, 1, 5, 20] {
        let mut tx = TxStream::open(&mut c, begin()).await;
        begun(&mut tx).await;
        for i in 0..cut_after {
            tx.execute(
                "w",
                &format!("INSERT INTO {t} VALUES ($1, 'partial')"),
                vec![int(i)],
            )
            .await;
            tx.result().await;
        }
        if cut_after % 2 == 0 {
            drop(tx); // reset
        } else {
            tx.half_close(); // ended without commit
            assert!(matches!(tx.next().await, Ok(Some(Event::RolledBack(_)))));
        }
        let empty = eventually(Duration::from_secs(2), || async {
            count(&db, &t).await == 0
        })
        .await;
        assert!(empty, "no rows after a cut at {cut_after}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&db, &t).await, 0);
}

#[tokio::test]
async fn two_hundred_concurrent_streams_share_a_small_pool() {
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "8",
        "--pool-min",
        "2",
        "--connection-timeout",
        "30000",
    ]);
    let db = admin().await;
    let t = table(&db).await;
    let mut handles = Vec::new();
    for i in 0..200 {
        let mut c = sidecar.client().await;
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let priority = if i % 10 == 0 {
                Priority::Critical
            } else {
                Priority::Normal
            };
            let mut tx = TxStream::open(
                &mut c,
                BeginTransaction {
                    priority: priority as i32,
                    ..begin()
                },
            )
            .await;
            tx.execute(
                "a",
                &format!("INSERT INTO {t} VALUES ($1, 'c')"),
                vec![int(i)],
            )
            .await;
            tx.execute(
                "b",
                &format!("UPDATE {t} SET v = 'd' WHERE id = $1"),
                vec![int(i)],
            )
            .await;
            tx.commit().await;
            begun(&mut tx).await;
            tx.result().await;
            tx.result().await;
            matches!(tx.next().await, Ok(Some(Event::Committed(_))))
        }));
    }
    let mut committed = 0;
    for h in handles {
        committed += usize::from(h.await.expect("join"));
    }
    assert_eq!(committed, 200);
    assert_eq!(count(&db, &t).await, 200);
}

#[tokio::test]
async fn a_connection_lost_during_commit_reports_an_unknown_outcome_with_the_txid() {
    let db = admin().await;
    let t = table(&db).await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    // Plaintext, so the proxy can see the COMMIT go by.
    let url = format!(
        "postgres://postgres@{}/postgres?sslmode=disable",
        proxy.addr
    );
    let sidecar = Sidecar::start(&[
        "--database-url",
        &url,
        "--pool-min",
        "0",
        "--failover-pool-min",
        "0",
    ]);
    let mut c = sidecar.client().await;
    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.execute("w", &format!("INSERT INTO {t} VALUES (1, 'maybe')"), vec![])
        .await;
    tx.result().await;
    proxy.cut_when_client_sends(b"COMMIT");
    tx.commit().await;
    let err = tx.next().await.expect_err("outcome unknown");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let (reason, meta) = error_info(&err);
    assert_eq!(reason, "COMMIT_OUTCOME_UNKNOWN");
    assert_eq!(meta.get("wrote").map(String::as_str), Some("true"));
    let txid: i64 = meta["txid"].parse().expect("numeric txid");
    // The documented recipe: ask PostgreSQL what became of it, again while "in progress"
    // (the backend has not yet noticed its client is gone).
    let mut fate = String::new();
    for _ in 0..100 {
        fate = db
            .query_one("SELECT txid_status($1)", &[&txid])
            .await
            .expect("txid_status")
            .get(0);
        if fate != "in progress" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        fate, "aborted",
        "COMMIT never reached the server, so it rolled back"
    );
    assert_eq!(count(&db, &t).await, 0);
}

#[tokio::test]
async fn a_result_cut_short_ends_the_transaction_instead_of_a_false_commit() {
    let sidecar = Sidecar::start(&["--max-message-bytes", "1024"]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = table(&db).await;
    let mut tx = TxStream::open(&mut c, begin()).await;
    begun(&mut tx).await;
    tx.execute("a", &format!("INSERT INTO {t} VALUES (1, 'x')"), vec![])
        .await;
    // Too large to return, and it would fail in PostgreSQL after the part we read.
    tx.execute(
        "b",
        "SELECT CASE WHEN g < 3 THEN repeat('x', 2000) ELSE (1 / (g - 3))::text END FROM generate_series(1, 3) g",
        vec![],
    )
    .await;
    tx.commit().await;
    assert!(matches!(
        tx.result().await.outcome,
        Some(Outcome::Response(_))
    ));
    let end = tx.next().await;
    let err = end.expect_err("the transaction cannot go on after an unread result");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        count(&db, &t).await,
        0,
        "rolled back, and not reported as committed"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_lease_after_the_idle_timeout() {
    let sidecar = Sidecar::start(&["--transaction-idle-timeout", "500", "--pool-max", "2"]);
    let mut c = sidecar.client().await;
    let tx = TxStream::open(&mut c, begin()).await;
    for i in 0..40 {
        tx.execute(&format!("s{i}"), "SELECT repeat('x', 1000000)", vec![])
            .await;
    }
    let released = eventually(Duration::from_secs(8), || {
        let mut c = c.clone();
        async move {
            let s = c
                .pool_status(pgsidecar::proto::PoolStatusRequest {})
                .await
                .expect("status")
                .into_inner();
            s.pools[0].active_connections == 0
        }
    })
    .await;
    assert!(
        released,
        "the lease of a client that stopped reading was released"
    );
    drop(tx);
}

#[tokio::test]
async fn an_absurd_idle_timeout_is_capped_not_a_crash() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let b = BeginTransaction {
        idle_timeout: Some(prost_types::Duration {
            seconds: i64::MAX,
            nanos: 0,
        }),
        ..begin()
    };
    let mut tx = TxStream::open(&mut c, b).await;
    begun(&mut tx).await;
    tx.execute("a", "SELECT 1", vec![]).await;
    tx.commit().await;
    assert!(matches!(
        tx.result().await.outcome,
        Some(Outcome::Response(_))
    ));
    assert!(matches!(tx.next().await, Ok(Some(Event::Committed(_)))));
    assert!(!sidecar.stderr().contains("panicked"));
}
