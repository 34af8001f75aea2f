//! Transaction streams when time runs out or things break: idle and maximum-duration
//! timeouts, abandoned streams releasing locks at once, atomicity when cut, many concurrent
//! streams on a small pool, COMMIT of unknown outcome, results cut short, slow readers.

use std::time::{Duration, Instant};

use crate::support::proxy::Proxy;
use crate::support::*;
use crate::transaction::{begin, begun, count, table};
use pgsidecar::proto::transaction_response::Event;
use pgsidecar::proto::{BeginTransaction, Priority, statement_result::Outcome};
use tonic::Code;

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
    let proxy = Proxy::in_front_of_postgres().await;
    // Plaintext, so the proxy can see the COMMIT go by.
    let url = format!("{}?sslmode=disable", proxy.url());
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
