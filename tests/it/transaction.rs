//! Transaction streams against real PostgreSQL: commit and rollback, pipelining, in-band
//! errors and savepoints, isolation, misuse (timeouts and faults: `transaction_faults`).

use crate::support::*;
use pgsidecar::proto::transaction_request::Action;
use pgsidecar::proto::transaction_response::Event;
use pgsidecar::proto::{BeginTransaction, IsolationLevel, statement_result::Outcome};
use tonic::Code;

pub(crate) fn begin() -> BeginTransaction {
    BeginTransaction::default()
}

pub(crate) async fn table(db: &tokio_postgres::Client) -> String {
    let t = unique("tx");
    db.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text)"))
        .await
        .expect("create");
    t
}

pub(crate) async fn count(db: &tokio_postgres::Client, t: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .expect("count")
        .get(0)
}

pub(crate) async fn begun(tx: &mut TxStream) -> pgsidecar::proto::TransactionBegun {
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
    let mut t1 = TxStream::open(&mut c, serializable.clone()).await;
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
    let (sidecar, app) = Sidecar::start_tagged_with("misuse", 1, &["--failover-pool-max", "1"]);
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
