//! Read replicas and failover on real streaming replication: private primaries and
//! standbys made with `initdb` and `pg_basebackup -R`, on loopback. Replica reads land on a
//! replica; a lagging one (replay paused) is skipped beyond the bound; read-your-writes
//! holds across 1,000 write-then-read pairs; a replica that goes down is routed around; a
//! write sent to a replica is refused and never reaches the primary; and a primary killed
//! under write load, its synchronous standby promoted, loses no acknowledged write.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::cluster::TempCluster;
use crate::support::*;
use pgsidecar::proto::data_access_client::DataAccessClient;
use pgsidecar::proto::statement_result::Outcome;
use pgsidecar::proto::transaction_response::Event;
use pgsidecar::proto::{
    BeginTransaction, PoolStatusRequest, QueryRequest, ReadFrom, ReadPreference,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

/// A primary and one streaming standby, both durable.
fn replicated() -> (TempCluster, TempCluster) {
    let primary = TempCluster::start_durable(40);
    let standby = TempCluster::standby_of(&primary, 40);
    (primary, standby)
}

/// A sidecar over `primary` with `standby` as replica-0, probed every 100 ms, with a
/// default staleness bound of one second.
fn sidecar(primary: &TempCluster, standby: &TempCluster) -> Sidecar {
    Sidecar::start(&[
        "--database-url",
        &primary.url(),
        "--replica-urls",
        &standby.url(),
        "--replica-probe-interval",
        "100",
        "--replica-max-staleness",
        "1000",
        "--replica-pool-max",
        "3",
        "--replica-pool-min",
        "1",
    ])
}

fn read_from(preference: ReadPreference, staleness_ms: u64, min_lsn: &str) -> Option<ReadFrom> {
    Some(ReadFrom {
        preference: preference as i32,
        max_staleness: (staleness_ms > 0)
            .then(|| prost_types::Duration::try_from(Duration::from_millis(staleness_ms)).unwrap()),
        min_lsn: min_lsn.to_owned(),
    })
}

/// A read of `sql` routed by `read`.
fn routed(sql: &str, params: Vec<pgsidecar::proto::Value>, read: Option<ReadFrom>) -> QueryRequest {
    QueryRequest {
        read_from: read,
        ..request(sql, params)
    }
}

/// Which pool served a read of `pg_is_in_recovery()` with `preference` and `bound`, and
/// what the server said (true on a standby); the error if it failed.
async fn where_served(
    c: &mut DataAccessClient<Channel>,
    preference: ReadPreference,
    bound_ms: u64,
) -> Result<(String, bool), tonic::Status> {
    let r = c
        .query(routed(
            "SELECT pg_is_in_recovery()",
            vec![],
            read_from(preference, bound_ms, ""),
        ))
        .await?
        .into_inner();
    let in_recovery = *scalar(&r) == boolean(true);
    Ok((r.info.unwrap().pool, in_recovery))
}

/// Whether, within `limit`, a read with `preference` and `bound_ms` is served by `pool`
/// (a replica answers `pg_is_in_recovery()` true, the primary false).
async fn lands_on(
    c: &DataAccessClient<Channel>,
    preference: ReadPreference,
    bound_ms: u64,
    pool: &str,
    limit: Duration,
) -> bool {
    let want = (pool.to_owned(), pool != "primary");
    eventually(limit, || {
        let (mut c, want) = (c.clone(), want.clone());
        async move { where_served(&mut c, preference, bound_ms).await.ok() == Some(want) }
    })
    .await
}

/// Waits until the replica serves REPLICA_ONLY reads (its first probes are in).
async fn serving_reads(c: &DataAccessClient<Channel>, sc: &Sidecar) {
    let serving = lands_on(
        c,
        ReadPreference::ReplicaOnly,
        0,
        "replica-0",
        Duration::from_secs(10),
    );
    assert!(serving.await, "the replica serves reads; {}", sc.stderr());
}

/// Waits until the standby has replayed everything the primary has written.
async fn caught_up(primary: &tokio_postgres::Client, standby: &tokio_postgres::Client) {
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let done = eventually(Duration::from_secs(20), || async {
        standby
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    })
    .await;
    assert!(done, "the standby replays the primary's WAL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_land_on_the_replica_and_a_lagging_one_is_skipped_beyond_the_bound() {
    let (primary, standby) = replicated();
    let (p, s) = (primary.connect().await, standby.connect().await);
    p.batch_execute("CREATE TABLE ticks (n int)").await.unwrap();
    let sc = sidecar(&primary, &standby);
    let mut c = sc.client().await;

    // Within the bound: served by the standby itself.
    let on_replica = lands_on(
        &c,
        ReadPreference::ReplicaPreferred,
        0,
        "replica-0",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        on_replica,
        "a replica-preferred read lands on the replica; {}",
        sc.stderr()
    );
    assert_eq!(
        where_served(&mut c, ReadPreference::ReplicaOnly, 0)
            .await
            .unwrap(),
        ("replica-0".into(), true)
    );
    // No preference, or PRIMARY: the primary, as before replicas existed.
    for pref in [ReadPreference::Unspecified, ReadPreference::Primary] {
        assert_eq!(
            where_served(&mut c, pref, 0).await.unwrap(),
            ("primary".into(), false)
        );
    }
    let status = c
        .pool_status(PoolStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let replica = status
        .pools
        .iter()
        .find(|p| p.name == "replica-0")
        .expect("replica pool");
    let state = replica.replica.as_ref().expect("replica state");
    assert!(
        state.reachable && state.in_recovery && state.serving,
        "{state:?}"
    );
    assert!(!state.replay_lsn.is_empty() && state.target.contains(&standby.port.to_string()));
    assert!(
        status
            .pools
            .iter()
            .find(|p| p.name == "primary")
            .unwrap()
            .replica
            .is_none()
    );

    // Replay paused while the primary keeps writing: the replica ages past a 1 s bound.
    s.batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let started = Instant::now();
    let skipped = eventually(Duration::from_secs(10), || {
        let (mut c, p) = (c.clone(), &p);
        async move {
            p.batch_execute("INSERT INTO ticks VALUES (1)")
                .await
                .unwrap();
            where_served(&mut c, ReadPreference::ReplicaPreferred, 1000)
                .await
                .ok()
                == Some(("primary".into(), false))
        }
    })
    .await;
    assert!(skipped, "a replica paused past the bound is skipped");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the bound"
    );
    let refused = where_served(&mut c, ReadPreference::ReplicaOnly, 1000)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(error_info(&refused).0, "NO_REPLICA");
    assert!(
        refused.message().contains("replica-0"),
        "{}",
        refused.message()
    );
    assert!(refused.get_error_details().retry_info().is_some());
    // A wider bound is the caller's to choose: the same replica still serves it.
    assert_eq!(
        where_served(&mut c, ReadPreference::ReplicaOnly, 600_000)
            .await
            .unwrap(),
        ("replica-0".into(), true)
    );
    // The probe's own view follows: PoolStatus, the event log and the lag gauge.
    let not_serving = eventually(Duration::from_secs(5), || {
        let mut c = c.clone();
        async move {
            let status = c
                .pool_status(PoolStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            let state = status.pools.iter().find_map(|p| p.replica.clone()).unwrap();
            !state.serving && state.lag.is_some_and(|l| l.seconds >= 1)
        }
    })
    .await;
    assert!(
        not_serving,
        "PoolStatus shows the paused replica lagging and not serving"
    );
    let logged = eventually(Duration::from_secs(5), || async {
        sc.stderr().contains("replica not serving reads")
    })
    .await;
    assert!(
        logged,
        "the pool event log tells the replica stopped serving: {}",
        sc.stderr()
    );
    let (_, metrics) = http_get(sc.http, "/metrics").await;
    let lag = metrics
        .lines()
        .find(|l| l.starts_with("pgsidecar_replica_lag_seconds{pool=\"replica-0\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("a lag gauge for the replica");
    assert!(lag >= 1.0, "the lag gauge shows the pause: {lag}");
    assert!(metrics.contains("pgsidecar_routed_reads_total{target=\"replica-0\"}"));
    assert!(metrics.contains("pgsidecar_routed_reads_total{target=\"primary\"}"));
    assert!(metrics.contains("pgsidecar_routed_reads_total{target=\"none\"}"));

    // Replay resumed: back on the replica once it has caught up.
    s.batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let back = lands_on(
        &c,
        ReadPreference::ReplicaPreferred,
        1000,
        "replica-0",
        Duration::from_secs(10),
    )
    .await;
    assert!(back, "a replica that caught up serves again");
    let logged = eventually(Duration::from_secs(5), || async {
        sc.stderr().matches("replica serving reads").count() >= 2
    })
    .await;
    assert!(
        logged,
        "the pool event log tells it serves again: {}",
        sc.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_holds_across_a_thousand_write_then_read_pairs() {
    let (primary, standby) = replicated();
    let p = primary.connect().await;
    p.batch_execute("CREATE TABLE ryw (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    caught_up(&p, &standby.connect().await).await;
    let sc = sidecar(&primary, &standby);
    let mut c = sc.client().await;
    serving_reads(&c, &sc).await;
    let mut served: HashMap<String, u32> = HashMap::new();
    let mut stale = 0;
    for i in 0..1000i64 {
        let write = QueryRequest {
            return_lsn: true,
            ..request("INSERT INTO ryw VALUES ($1, 'v')", vec![int(i)])
        };
        let info = c.query(write).await.unwrap().into_inner().info.unwrap();
        assert!(
            info.commit_lsn.contains('/'),
            "a write returns its LSN: {info:?}"
        );
        let read = routed(
            "SELECT count(*) FROM ryw WHERE id = $1",
            vec![int(i)],
            read_from(ReadPreference::ReplicaPreferred, 0, &info.commit_lsn),
        );
        let r = c.query(read).await.unwrap().into_inner();
        if *scalar(&r) != int(1) {
            stale += 1;
        }
        *served.entry(r.info.unwrap().pool).or_default() += 1;
    }
    eprintln!("read-your-writes: 1000 pairs, {stale} stale, served by {served:?}");
    assert_eq!(stale, 0, "no read misses the write before it: {served:?}");
    assert!(
        served.get("replica-0").copied().unwrap_or(0) > 0,
        "replicas are used: {served:?}"
    );

    // A transaction's commit LSN works the same way.
    let begin = BeginTransaction {
        return_lsn: true,
        ..Default::default()
    };
    let mut tx = TxStream::open(&mut c, begin).await;
    assert!(matches!(tx.next().await.unwrap(), Some(Event::Begun(_))));
    tx.execute("w", "INSERT INTO ryw VALUES (5000, 'tx')", vec![])
        .await;
    assert!(matches!(
        tx.result().await.outcome,
        Some(Outcome::Response(_))
    ));
    tx.commit().await;
    let Some(Event::Committed(done)) = tx.next().await.unwrap() else {
        panic!("committed expected");
    };
    assert!(done.commit_lsn.contains('/'), "{done:?}");
    let read = routed(
        "SELECT v FROM ryw WHERE id = 5000",
        vec![],
        read_from(ReadPreference::ReplicaOnly, 60_000, &done.commit_lsn),
    );
    // REPLICA_ONLY never waits: UNAVAILABLE until the replica has replayed it, then served.
    let seen = eventually(Duration::from_secs(10), || {
        let (mut c, read) = (c.clone(), read.clone());
        async move {
            match c.query(read).await {
                Ok(r) => *scalar(r.get_ref()) == text("tx"),
                Err(e) => {
                    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                    false
                }
            }
        }
    })
    .await;
    assert!(
        seen,
        "the transaction's write is read back from the replica"
    );
    // Without return_lsn nothing extra is read.
    let plain = query(&mut c, "SELECT 1", vec![]).await.unwrap();
    assert_eq!(plain.info.unwrap().commit_lsn, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_to_a_replica_is_refused_and_never_reaches_the_primary() {
    let (primary, standby) = replicated();
    let p = primary.connect().await;
    p.batch_execute("CREATE TABLE guarded (id int)")
        .await
        .unwrap();
    caught_up(&p, &standby.connect().await).await;
    let sc = sidecar(&primary, &standby);
    let mut c = sc.client().await;
    serving_reads(&c, &sc).await;
    for pref in [
        ReadPreference::ReplicaOnly,
        ReadPreference::ReplicaPreferred,
    ] {
        let write = routed(
            "INSERT INTO guarded VALUES (1)",
            vec![],
            read_from(pref, 0, ""),
        );
        let e = c.query(write).await.unwrap_err();
        let (reason, meta) = error_info(&e);
        assert_eq!(
            meta.get("sqlstate").map(String::as_str),
            Some("25006"),
            "{reason} {e:?}"
        );
        let mut stream = c
            .stream_query(routed(
                "DELETE FROM guarded",
                vec![],
                read_from(pref, 0, ""),
            ))
            .await
            .unwrap()
            .into_inner();
        let e = stream_error(&mut stream, "a write streamed to a replica").await;
        assert_eq!(
            error_info(&e).1.get("sqlstate").map(String::as_str),
            Some("25006")
        );
    }
    let n: i64 = p
        .query_one("SELECT count(*) FROM guarded", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing reached the primary");

    // Bad routing fields are named.
    let bad = routed(
        "SELECT 1",
        vec![],
        read_from(ReadPreference::ReplicaOnly, 0, "12"),
    );
    let e = c.query(bad).await.unwrap_err();
    assert_eq!(
        (e.code(), bad_field(&e).as_deref()),
        (Code::InvalidArgument, Some("read_from.min_lsn"))
    );
    let mut unknown = routed(
        "SELECT 1",
        vec![],
        read_from(ReadPreference::ReplicaOnly, 0, ""),
    );
    unknown.read_from.as_mut().unwrap().preference = 42;
    let e = c.query(unknown).await.unwrap_err();
    assert_eq!(bad_field(&e).as_deref(), Some("read_from.preference"));

    // Only a read-only transaction may be leased on a replica.
    let begin = |read_only| BeginTransaction {
        read_only,
        read_from: read_from(ReadPreference::ReplicaPreferred, 0, ""),
        ..Default::default()
    };
    let mut tx = TxStream::open(&mut c, begin(false)).await;
    let e = tx.next().await.unwrap_err();
    assert_eq!(
        (e.code(), bad_field(&e).as_deref()),
        (Code::InvalidArgument, Some("begin.read_from"))
    );
    let mut tx = TxStream::open(&mut c, begin(true)).await;
    let Some(Event::Begun(begun)) = tx.next().await.unwrap() else {
        panic!("begun expected");
    };
    assert_eq!(begun.pool, "replica-0");
    tx.execute("r", "SELECT pg_is_in_recovery()", vec![]).await;
    let Some(Outcome::Response(r)) = tx.result().await.outcome else {
        panic!("a read on the replica");
    };
    assert_eq!(*scalar(&r), boolean(true));
    tx.execute("w", "INSERT INTO guarded VALUES (2)", vec![])
        .await;
    let Some(Outcome::Error(err)) = tx.result().await.outcome else {
        panic!("a write in a replica transaction fails");
    };
    assert_eq!(rpc_error(&err).2.as_deref(), Some("25006"));
    tx.rollback().await;
    assert!(matches!(
        tx.next().await.unwrap(),
        Some(Event::RolledBack(_))
    ));
    // A read-only transaction on a replica commits; it has no commit LSN to give.
    let asks_lsn = BeginTransaction {
        return_lsn: true,
        ..begin(true)
    };
    let mut tx = TxStream::open(&mut c, asks_lsn).await;
    let Some(Event::Begun(begun)) = tx.next().await.unwrap() else {
        panic!("begun expected");
    };
    assert_eq!(begun.pool, "replica-0");
    tx.execute("r", "SELECT count(*) FROM guarded", vec![])
        .await;
    assert!(matches!(
        tx.result().await.outcome,
        Some(Outcome::Response(_))
    ));
    tx.commit().await;
    let Some(Event::Committed(done)) = tx.next().await.unwrap() else {
        panic!("a read-only replica transaction commits");
    };
    assert_eq!(done.commit_lsn, "");
    // SERIALIZABLE, which a standby cannot run, stays on the primary when only preferred.
    let serializable = BeginTransaction {
        isolation: pgsidecar::proto::IsolationLevel::Serializable as i32,
        ..begin(true)
    };
    let mut tx = TxStream::open(&mut c, serializable).await;
    let Some(Event::Begun(begun)) = tx.next().await.unwrap() else {
        panic!("begun expected");
    };
    assert_eq!(begun.pool, "primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_goes_down_is_routed_around() {
    let (primary, standby) = replicated();
    let sc = sidecar(&primary, &standby);
    let mut c = sc.client().await;
    serving_reads(&c, &sc).await;
    standby.stop();
    // Every preferred read succeeds: a dead replica connection is retried elsewhere, and
    // once the probe sees it down, reads go straight to the primary.
    let mut by_pool: HashMap<String, u32> = HashMap::new();
    for _ in 0..50 {
        let (pool, _) = where_served(&mut c, ReadPreference::ReplicaPreferred, 0)
            .await
            .unwrap_or_else(|e| panic!("a read with a replica down: {e:?}; {}", sc.stderr()));
        *by_pool.entry(pool).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(by_pool.get("primary"), Some(&50), "{by_pool:?}");
    let e = where_served(&mut c, ReadPreference::ReplicaOnly, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let status = c
        .pool_status(PoolStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let state = status.pools.iter().find_map(|p| p.replica.clone()).unwrap();
    assert!(!state.reachable && !state.serving, "{state:?}");
    assert!(
        status.database_reachable,
        "a replica down is not the database down"
    );
    assert_eq!(readiness(&sc.channel().await).await, ServingStatus::Serving);

    standby.start_again();
    let back = lands_on(
        &c,
        ReadPreference::ReplicaOnly,
        0,
        "replica-0",
        Duration::from_secs(15),
    )
    .await;
    assert!(back, "a replica back up serves again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_followed_to_its_promoted_standby_losing_no_acknowledged_write() {
    let (primary, standby) = replicated();
    let p = primary.connect().await;
    p.batch_execute("CREATE TABLE ledger (id bigint)")
        .await
        .unwrap();
    // Synchronous replication: a commit is acknowledged only once the standby has it.
    primary.reconfigure("synchronous_standby_names = '*'\n");
    let sync = eventually(Duration::from_secs(20), || async {
        p.query_opt(
            "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'",
            &[],
        )
        .await
        .unwrap()
        .is_some()
    })
    .await;
    assert!(sync, "the standby is synchronous");
    drop(p);
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let sc = Sidecar::start(&[
        "--database-url",
        &url,
        "--health-check-interval",
        "100",
        "--connection-timeout",
        "1000",
        "--enable-failover",
        "false",
    ]);
    let channel = sc.channel().await;
    assert!(
        eventually(Duration::from_secs(10), || {
            let ch = channel.clone();
            async move { readiness(&ch).await == ServingStatus::Serving }
        })
        .await
    );

    // Four writers, each id written once and never sent again by the test.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let (mut c, stop) = (DataAccessClient::new(channel.clone()), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failures: HashMap<Code, u32> = HashMap::new();
            let mut last_failure = None;
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let id = w * 1_000_000 + n;
                n += 1;
                let mut req =
                    tonic::Request::new(request("INSERT INTO ledger VALUES ($1)", vec![int(id)]));
                req.set_timeout(Duration::from_secs(5));
                match c.query(req).await {
                    Ok(_) => acked.push((id, Instant::now())),
                    Err(e) => {
                        *failures.entry(e.code()).or_default() += 1;
                        last_failure = Some(Instant::now());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (acked, failures, last_failure)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    primary.stop();
    let killed = Instant::now();
    let mut saw_not_ready = false;
    while killed.elapsed() < Duration::from_millis(800) {
        saw_not_ready |= readiness(&channel).await == ServingStatus::NotServing;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    standby.promote();
    let promoted = Instant::now();
    let ready = eventually(Duration::from_secs(15), || {
        let ch = channel.clone();
        async move { readiness(&ch).await == ServingStatus::Serving }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failures: HashMap<Code, u32> = HashMap::new();
    let mut resumed_after = Duration::ZERO;
    for w in writers {
        let (a, f, _) = w.await.unwrap();
        // The first write of this writer acknowledged after the promotion.
        let first = a.iter().find(|(_, at)| *at > promoted).map(|(_, at)| *at);
        let first = first.expect("writes resume after the promotion");
        resumed_after = resumed_after.max(first.duration_since(promoted));
        acked.extend(a.into_iter().map(|(id, _)| id));
        for (code, n) in f {
            *failures.entry(code).or_default() += n;
        }
    }
    eprintln!(
        "failover: {} acknowledged, failures {failures:?}, writes resumed {resumed_after:?} after promotion",
        acked.len()
    );
    assert!(
        saw_not_ready,
        "readiness said NOT_SERVING while there was no primary"
    );
    assert!(
        ready,
        "readiness SERVING again on the new primary; {}",
        sc.stderr()
    );
    assert!(
        resumed_after < Duration::from_secs(5),
        "writes resume within seconds"
    );
    for code in failures.keys() {
        assert!(
            [Code::Unavailable, Code::DeadlineExceeded].contains(code),
            "a write during the switch fails UNAVAILABLE, got {code:?}"
        );
    }
    assert!(failures.contains_key(&Code::Unavailable), "{failures:?}");
    // Every acknowledged write is on the new primary, exactly once.
    let s = standby.connect().await;
    let rows = s
        .query("SELECT id, count(*) FROM ledger GROUP BY id", &[])
        .await
        .unwrap();
    let on_new: HashMap<i64, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut missing = 0;
    for id in &acked {
        match on_new.get(id) {
            Some(1) => {}
            Some(n) => panic!("write {id} is on the new primary {n} times"),
            None => missing += 1,
        }
    }
    assert_eq!(missing, 0, "acknowledged writes lost at the failover");
    assert!(on_new.values().all(|&n| n == 1), "no write applied twice");
}
