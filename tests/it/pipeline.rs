//! The pipelined path: Query statements share a few primary connections, many in flight on
//! each, and every semantic of the leased path still holds on them: deadlines, cancels that
//! hit only what runs (and neighbours resent when one does not), statement_timeout as the
//! cap, errors kept to their own statement, re-prepare after DDL, session changes taken out
//! of sharing, connection loss, and true figures.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::proxy::Proxy;
use crate::support::*;
use futures_util::future::join_all;
use pgsidecar::proto::data_access_client::DataAccessClient;
use pgsidecar::proto::{
    BeginTransaction, PoolStatusRequest, PoolStatusResponse, QueryRequest, value::Kind,
};
use tonic::Code;
use tonic::transport::Channel;

async fn status(c: &mut DataAccessClient<Channel>) -> PoolStatusResponse {
    c.pool_status(PoolStatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

fn int_of(r: &pgsidecar::proto::QueryResponse) -> i64 {
    match scalar(r).kind {
        Some(Kind::IntValue(n)) => n,
        ref other => panic!("not an int: {other:?}"),
    }
}

/// Statements the pipelined path has sent so far.
async fn pipelined(sidecar: &Sidecar) -> f64 {
    value(
        &scrape(sidecar).await,
        "pgsidecar_pipeline_statements_total",
        &[],
    )
}

/// Waits until statements go through the pipelined path (its connections open after the
/// pools' prewarm).
async fn warmed(sidecar: &Sidecar, c: &DataAccessClient<Channel>) {
    let ok = eventually(Duration::from_secs(10), || {
        let mut c = c.clone();
        async move {
            let before = pipelined(sidecar).await;
            query(&mut c, "SELECT 1", vec![]).await.expect("warm-up");
            pipelined(sidecar).await > before
        }
    })
    .await;
    assert!(ok, "the pipelined path took statements");
}

/// The backends that answered `n` concurrent `SELECT pg_backend_pid()` calls.
async fn backends_of(c: &DataAccessClient<Channel>, n: usize) -> HashSet<i64> {
    let calls = (0..n).map(|_| {
        let mut c = c.clone();
        async move { query(&mut c, "SELECT pg_backend_pid()", vec![]).await }
    });
    join_all(calls)
        .await
        .iter()
        .map(|r| int_of(r.as_ref().expect("pid")))
        .collect()
}

#[tokio::test]
async fn concurrent_queries_share_a_few_connections_and_the_switch_turns_it_off() {
    let sidecar = Sidecar::start(&["--pool-max", "4", "--pipeline-connections", "2"]);
    let c = sidecar.client().await;
    warmed(&sidecar, &c).await;
    // Open transactions hold the two connections not shared, so no statement can take a
    // leased one however the lanes look to a sidecar on a busy test machine.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tx = TxStream::open(&mut c.clone(), BeginTransaction::default()).await;
        tx.next().await.expect("begun");
        held.push(tx);
    }
    let before = pipelined(&sidecar).await;
    let pids = backends_of(&c, 64).await;
    assert!(
        pids.len() <= 2,
        "64 concurrent calls ran on the 2 shared connections: {pids:?}"
    );
    assert!(pipelined(&sidecar).await >= before + 64.0);
    let s = status(&mut c.clone()).await;
    assert_eq!(
        s.pools[0].pipelined_in_flight.len(),
        2,
        "one entry per shared connection: {:?}",
        s.pools[0]
    );
    assert!(
        s.pools[0].checkouts >= 64,
        "a statement given a shared connection counts as a checkout: {:?}",
        s.pools[0]
    );
    assert!(s.pools[0].reuse_rate > 0.8, "{:?}", s.pools[0]);
    drop(held);

    // Turned off, each statement leases a connection of its own again.
    let leased = Sidecar::start(&["--pool-max", "10", "--pipeline-connections", "0"]);
    let c = leased.client().await;
    let mut pids = HashSet::new();
    for _ in 0..5 {
        pids.extend(backends_of(&c, 32).await);
    }
    assert!(pids.len() > 2, "leased: {pids:?}");
    let s = status(&mut c.clone()).await;
    assert!(
        s.pools[0].pipelined_in_flight.is_empty(),
        "{:?}",
        s.pools[0]
    );
    assert_eq!(pipelined(&leased).await, 0.0);
}

#[tokio::test]
async fn the_depth_cap_holds_and_figures_show_work_in_flight() {
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "10",
        "--pipeline-connections",
        "2",
        "--pipeline-depth",
        "3",
    ]);
    let c = sidecar.client().await;
    warmed(&sidecar, &c).await;
    let load = (0..40).map(|i| {
        let mut c = c.clone();
        async move {
            let r = query(&mut c, "SELECT $1::int FROM pg_sleep(0.003)", vec![int(i)]).await;
            assert_eq!(int_of(&r.expect("served")), i);
        }
    });
    let load = tokio::spawn(join_all(load));
    let mut most = 0;
    let mut c2 = c.clone();
    while !load.is_finished() {
        let s = status(&mut c2).await;
        let depths = &s.pools[0].pipelined_in_flight;
        assert!(depths.iter().all(|d| *d <= 3), "over the cap: {depths:?}");
        most = most.max(depths.iter().copied().max().unwrap_or(0));
        let p = &s.pools[0];
        assert!(
            p.active_connections + p.idle_connections == p.total_connections,
            "{p:?}"
        );
    }
    load.await.expect("load");
    assert!(
        most > 0,
        "statements were seen in flight on a shared connection"
    );
    let scraped = scrape(&sidecar).await;
    assert!(
        scraped
            .samples
            .iter()
            .any(|s| s.metric == "pgsidecar_pipeline_in_flight"),
        "the per-connection depth is a metric"
    );
}

#[tokio::test]
async fn one_failing_statement_leaves_its_neighbours_untouched() {
    let sidecar = Sidecar::start(&["--pool-max", "6"]);
    let c = sidecar.client().await;
    warmed(&sidecar, &c).await;
    let before = pipelined(&sidecar).await;
    let calls = (0..200).map(|i| {
        let mut c = c.clone();
        async move {
            let divisor = if i % 5 == 0 { 0 } else { i };
            let r = query(
                &mut c,
                "SELECT (1000 * $1::int) / $2::int",
                vec![int(i), int(divisor)],
            )
            .await;
            (i, r)
        }
    });
    for (i, r) in join_all(calls).await {
        match r {
            Ok(r) if i % 5 != 0 => assert_eq!(int_of(&r), 1000, "call {i}"),
            Err(e) if i % 5 == 0 => {
                assert_eq!(e.code(), Code::InvalidArgument, "call {i}: {e:?}");
                assert_eq!(error_info(&e).0, "DIVISION_BY_ZERO", "call {i}");
            }
            other => panic!("call {i}: {other:?}"),
        }
    }
    // Some shared connections: on a loaded test machine, where the sidecar sees answers
    // late, more of them may go to leased connections, which this test is not about.
    assert!(
        pipelined(&sidecar).await > before + 2.0,
        "they shared connections"
    );
}

#[tokio::test]
async fn a_deadline_behind_a_running_neighbour_is_answered_at_once_and_cancels_only_what_runs() {
    let sidecar = Sidecar::start(&["--pool-max", "4", "--pipeline-connections", "1"]);
    let c = sidecar.client().await;
    warmed(&sidecar, &c).await;
    let db = admin().await;
    let marker = unique("behind");
    let mut first = c.clone();
    let running = tokio::spawn(async move {
        let started = Instant::now();
        let r = query(&mut first, "SELECT 7 FROM pg_sleep(0.5)", vec![]).await;
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(3)).await;
    // The statement's budget ends at 150 ms by its own timeout; the gRPC deadline is
    // further out, so the answer seen is the sidecar's, never the client's own timer for
    // the same instant (which, on a loaded machine, can fire first and say CANCELLED).
    let mut req = tonic::Request::new(QueryRequest {
        timeout: Some(prost_types::Duration::try_from(Duration::from_millis(150)).unwrap()),
        ..request(&format!("SELECT pg_sleep(5) /* {marker} */"), vec![])
    });
    req.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let err = c.clone().query(req).await.expect_err("past its deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "answered at its deadline, not when the statement ahead ended: {:?}",
        started.elapsed()
    );
    let (r, took) = running.await.expect("join");
    assert_eq!(
        int_of(&r.expect("the running neighbour is not cancelled")),
        7
    );
    assert!(took >= Duration::from_millis(450), "{took:?}");
    // Once it ran, the given-up statement was cancelled rather than left to sleep 5 s.
    let gone = eventually(Duration::from_secs(2), || {
        let (db, marker) = (&db, &marker);
        async move { active_statements(db, marker).await == 0 }
    })
    .await;
    assert!(gone, "the given-up statement was stopped in PostgreSQL");
    let mut c = c.clone();
    let r = query(&mut c, "SELECT 1", vec![])
        .await
        .expect("still serving");
    assert_eq!(int_of(&r), 1);
}

#[tokio::test]
async fn a_statement_whose_deadline_passes_while_it_waits_for_a_place_is_never_sent() {
    // One shared connection one deep, and the one leased connection held by a transaction:
    // a second statement can only wait in the queue in front of the shared connection.
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "2",
        "--pool-min",
        "2",
        "--pipeline-connections",
        "1",
        "--pipeline-depth",
        "1",
    ]);
    let c = sidecar.client().await;
    warmed(&sidecar, &c).await;
    let db = admin().await;
    let t = unique("never_sent");
    db.batch_execute(&format!("CREATE TABLE {t} (v int)"))
        .await
        .expect("table");
    let mut tx = TxStream::open(&mut c.clone(), BeginTransaction::default()).await;
    tx.next().await.expect("begun");
    let mut first = c.clone();
    let running =
        tokio::spawn(async move { query(&mut first, "SELECT 3 FROM pg_sleep(0.6)", vec![]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut req = tonic::Request::new(request(&format!("INSERT INTO {t} VALUES (1)"), vec![]));
    req.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = c
        .clone()
        .query(req)
        .await
        .expect_err("no place before its deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(int_of(&running.await.expect("join").expect("ran")), 3);
    // The place came free after the deadline: the insert was never sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n: i64 = db
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "a statement that waited past its deadline never ran");
    let r = query(
        &mut c.clone(),
        &format!("INSERT INTO {t} VALUES (2)"),
        vec![],
    )
    .await
    .expect("the queue serves the next one");
    assert_eq!(r.rows_affected, 1);
    drop(tx);
    db.batch_execute(&format!("DROP TABLE {t}"))
        .await
        .expect("drop");
}

#[tokio::test]
async fn a_cancel_that_lands_on_a_neighbour_resends_the_neighbour_once() {
    let proxy = Proxy::in_front_of_postgres().await;
    let url = proxy.url();
    let sidecar = Sidecar::start(&[
        "--database-url",
        &url,
        "--pool-max",
        "4",
        "--pool-min",
        "4",
        "--pipeline-connections",
        "1",
    ]);
    let c = sidecar.client().await;
    warmed(&sidecar, &c).await;
    // From now on a CancelRequest (a new connection) reaches PostgreSQL 400 ms late: after
    // the statement it was meant for has ended and while the next one runs.
    proxy.delay_new_connections(Duration::from_millis(400));
    let mut first = c.clone();
    let target = tokio::spawn(async move {
        let mut req = tonic::Request::new(request("SELECT 1 FROM pg_sleep(0.3)", vec![]));
        req.set_timeout(Duration::from_millis(120));
        first.query(req).await
    });
    tokio::time::sleep(Duration::from_millis(3)).await;
    let neighbour = query(&mut c.clone(), "SELECT 42 FROM pg_sleep(0.6)", vec![])
        .await
        .expect("the neighbour is resent, not failed");
    assert_eq!(int_of(&neighbour), 42);
    let info = neighbour.info.expect("info");
    assert_eq!(info.attempts, 2, "sent twice: {info:?}");
    let err = target.await.expect("join").expect_err("deadline");
    // The sidecar answers DEADLINE_EXCEEDED when its deadline passes; on a loaded machine
    // the client's own timer for the same deadline may fire first (tonic says CANCELLED,
    // "Timeout expired"). Either way the caller got its deadline, which is not the point
    // here: the neighbour is.
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    let resent = value(
        &scrape(&sidecar).await,
        "pgsidecar_pipeline_resent_total",
        &[("reason", "cancelled_neighbour")],
    );
    assert_eq!(resent, 1.0);
}

#[tokio::test]
async fn statement_timeout_caps_execution_not_time_queued_behind_others() {
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "4",
        "--pipeline-connections",
        "1",
        "--query-timeout",
        "250",
    ]);
    let c = sidecar.client().await;
    warmed(&sidecar, &c).await;
    let mut first = c.clone();
    let long = tokio::spawn(async move { query(&mut first, "SELECT pg_sleep(2)", vec![]).await });
    tokio::time::sleep(Duration::from_millis(3)).await;
    // Queued behind the long one for 250 ms, then runs 150 ms: under the cap, which
    // measures its own execution.
    let started = Instant::now();
    let queued = query(&mut c.clone(), "SELECT 5 FROM pg_sleep(0.15)", vec![])
        .await
        .expect("within statement_timeout once it ran");
    assert_eq!(int_of(&queued), 5);
    let took = started.elapsed();
    let err = long.await.expect("join").expect_err("statement_timeout");
    let (reason, meta) = error_info(&err);
    assert_eq!(
        meta.get("sqlstate").map(String::as_str),
        Some("57014"),
        "{err:?}"
    );
    assert!(
        meta.get("message")
            .is_some_and(|m| m.contains("statement timeout")),
        "{reason}: {meta:?}"
    );
    // Either it waited behind the long one (the case this test is for) or it took a
    // leased connection; never did it fail.
    eprintln!("queued statement answered after {took:?}");
    let resent = value(
        &scrape(&sidecar).await,
        "pgsidecar_pipeline_resent_total",
        &[],
    );
    assert_eq!(
        resent, 0.0,
        "a statement timeout is not a neighbour's cancel"
    );
}

#[tokio::test]
async fn a_session_change_inside_a_function_takes_the_connection_out_of_sharing() {
    let sidecar = Sidecar::start(&["--pool-max", "4", "--pipeline-connections", "1"]);
    let c = sidecar.client().await;
    warmed(&sidecar, &c).await;
    let db = admin().await;
    let f = unique("set_zone");
    db.batch_execute(&format!(
        "CREATE FUNCTION {f}() RETURNS text LANGUAGE sql AS \
         $$ SELECT set_config('TimeZone', 'Asia/Tokyo', false) $$"
    ))
    .await
    .expect("function");
    let zone = |c: DataAccessClient<Channel>| async move {
        let r = query(&mut c.clone(), "SELECT current_setting('TimeZone')", vec![])
            .await
            .expect("zone");
        match scalar(&r).kind.clone() {
            Some(Kind::TextValue(z)) => z,
            other => panic!("{other:?}"),
        }
    };
    let original = zone(c.clone()).await;
    let changed = query(&mut c.clone(), &format!("SELECT {f}()"), vec![])
        .await
        .expect("the call itself succeeds");
    assert_eq!(scalar(&changed), &text("Asia/Tokyo"));
    let later = join_all((0..32).map(|_| zone(c.clone()))).await;
    assert!(
        later.iter().all(|z| *z == original),
        "no later caller sees the change: {later:?}"
    );
    let scraped = scrape(&sidecar).await;
    assert_eq!(
        value(
            &scraped,
            "pgsidecar_pipeline_connections_retired_total",
            &[]
        ),
        1.0
    );
    // Reset, it may come back from the pool; either way statements are shared again once
    // the lane has a connection.
    let before = pipelined(&sidecar).await;
    let shared_again = eventually(Duration::from_secs(5), || {
        let (c, original, sidecar) = (&c, &original, &sidecar);
        async move {
            let again = join_all((0..8).map(|_| zone(c.clone()))).await;
            assert!(again.iter().all(|z| z == original), "{again:?}");
            pipelined(sidecar).await > before
        }
    })
    .await;
    assert!(shared_again, "the path took statements again");
    db.batch_execute(&format!("DROP FUNCTION {f}()"))
        .await
        .expect("drop");
}

#[tokio::test]
async fn statements_re_prepare_after_ddl_under_pipelined_load() {
    let sidecar = Sidecar::start(&["--pool-max", "6"]);
    let c = sidecar.client().await;
    warmed(&sidecar, &c).await;
    let db = admin().await;
    let t = unique("ddl_pipe");
    db.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text); \
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 100) g"
    ))
    .await
    .expect("table");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sql = format!("SELECT * FROM {t} WHERE id = $1");
    let workers = (0..16).map(|w| {
        let (mut c, sql, stop) = (c.clone(), sql.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 5_000 {
                i += 1;
                match query(&mut c, &sql, vec![int(1 + (w * 7 + i) % 100)]).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        })
    });
    let workers: Vec<_> = workers.collect();
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        db.batch_execute(&format!(
            "ALTER TABLE {t} ADD COLUMN extra{n} int DEFAULT {n}"
        ))
        .await
        .expect("ddl");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, failed) = w.await.expect("worker");
        assert!(
            failed.is_empty(),
            "no statement failed across the DDL: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 100, "{total} statements ran");
    let s = status(&mut c.clone()).await;
    assert!(
        s.statement_cache.expect("cache").invalidations > 0,
        "stale statements were prepared afresh"
    );
    let r = query(&mut c.clone(), &sql, vec![int(1)])
        .await
        .expect("after");
    assert_eq!(r.columns.len(), 5, "the new columns are seen");
    db.batch_execute(&format!("DROP TABLE {t}"))
        .await
        .expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shared_connection_loses_no_acknowledged_write_and_is_replaced() {
    let (sidecar, app) =
        Sidecar::start_tagged_with("pipekill", 6, &["--pipeline-connections", "2"]);
    let c = sidecar.client().await;
    warmed(&sidecar, &c).await;
    let db = admin().await;
    let t = unique("pipe_ledger");
    db.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY)"))
        .await
        .expect("table");
    let sql = format!("INSERT INTO {t} VALUES ($1)");
    let writers = (0..32).map(|w| {
        let (mut c, sql) = (c.clone(), sql.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..60 {
                let id = w * 1000 + i;
                let r = query(&mut c, &sql, vec![int(id)]).await;
                outcomes.push((id, r.map(|_| ()).map_err(|e| e.code())));
            }
            outcomes
        })
    });
    let writers: Vec<_> = writers.collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = terminate_backends(&db, &app).await;
    assert!(killed >= 2, "killed {killed}");
    let mut outcomes = Vec::new();
    for w in writers {
        outcomes.extend(w.await.expect("writer"));
    }
    let rows = db
        .query(&format!("SELECT id FROM {t}"), &[])
        .await
        .expect("rows");
    let stored: HashSet<i64> = rows.iter().map(|r| i64::from(r.get::<_, i32>(0))).collect();
    let mut failed = 0;
    for (id, r) in &outcomes {
        match r {
            Ok(()) => assert!(stored.contains(id), "acknowledged write {id} is stored"),
            Err(code) => {
                failed += 1;
                assert_eq!(*code, Code::Unavailable, "write {id}");
            }
        }
    }
    // Only statements already written to a killed connection can fail (outcome unknown,
    // not retried): at most the depth of every connection killed, never the queue behind.
    assert!(failed <= 2 * 16 + 6, "{failed} writes failed");
    eprintln!("{} writes, {failed} failed after the kill", outcomes.len());
    let r = query(&mut c.clone(), "SELECT 1", vec![])
        .await
        .expect("served");
    assert_eq!(int_of(&r), 1);
    db.batch_execute(&format!("DROP TABLE {t}"))
        .await
        .expect("drop");
}
