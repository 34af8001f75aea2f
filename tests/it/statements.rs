//! The per-connection statement cache against real PostgreSQL: hits and misses, a bounded
//! LRU whose evictions close server-side statements, and schema changes under load that
//! clients never see.

use std::time::Duration;

use crate::support::*;
use futures_util::future::join_all;
use pgsidecar::proto::PoolStatusRequest;

#[tokio::test]
async fn the_cache_is_a_bounded_lru_that_closes_what_it_evicts() {
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "1",
        "--pool-min",
        "1",
        "--statement-cache-size",
        "3",
    ]);
    let mut c = sidecar.client().await;
    for i in 0..5 {
        query(&mut c, &format!("SELECT {i} AS n"), vec![])
            .await
            .expect("query");
    }
    // The most recent three are cached; the first two were evicted and closed on the server.
    let r = query(
        &mut c,
        "SELECT count(*)::int FROM pg_prepared_statements",
        vec![],
    )
    .await
    .expect("count");
    let on_server = match scalar(&r).kind {
        Some(pgsidecar::proto::value::Kind::IntValue(n)) => n,
        ref other => panic!("{other:?}"),
    };
    assert!(
        on_server <= 3,
        "{on_server} statements prepared on the server"
    );
    let hit = query(&mut c, "SELECT 4 AS n", vec![])
        .await
        .expect("recent");
    assert!(
        hit.info.expect("info").statement_cached,
        "a recent statement is still cached"
    );
    let miss = query(&mut c, "SELECT 0 AS n", vec![])
        .await
        .expect("evicted");
    assert!(
        !miss.info.expect("info").statement_cached,
        "an evicted one is prepared again"
    );
    let s = c
        .pool_status(PoolStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let cache = s.statement_cache.expect("cache figures");
    assert!(cache.evictions >= 3, "{cache:?}");
    assert!(cache.hits >= 1 && cache.misses >= 7, "{cache:?}");
    assert!(cache.cached_statements <= 3, "{cache:?}");
}

#[tokio::test]
async fn a_schema_change_under_load_is_invisible_to_clients() {
    let sidecar = Sidecar::start(&["--pool-max", "4", "--pool-min", "4"]);
    let db = admin().await;
    let t = unique("schema");
    db.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, a text); INSERT INTO {t} SELECT g, 'x' FROM generate_series(1, 100) g"
    ))
    .await
    .expect("setup");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut c = sidecar.client().await;
        let (t, stop) = (t.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut errors) = (0u32, Vec::new());
            let end = std::time::Instant::now() + Duration::from_secs(20);
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < end
            {
                i += 1;
                // SELECT *: the result type changes with the table.
                match query(
                    &mut c,
                    &format!("SELECT * FROM {t} WHERE id = $1"),
                    vec![int(1 + (i * 7 + w) % 100)],
                )
                .await
                {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(e),
                }
            }
            (ok, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for step in 0..3 {
        db.batch_execute(&format!(
            "ALTER TABLE {t} ADD COLUMN c{step} int DEFAULT {step}"
        ))
        .await
        .expect("add");
        tokio::time::sleep(Duration::from_millis(150)).await;
        db.batch_execute(&format!("ALTER TABLE {t} DROP COLUMN a, ADD COLUMN a text"))
            .await
            .expect("drop");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results = join_all(workers).await;
    let mut total = 0;
    for r in results {
        let (ok, errors) = r.expect("join");
        assert!(
            errors.is_empty(),
            "client-visible errors: {:?}",
            errors.first()
        );
        total += ok;
    }
    assert!(total > 100, "load ran: {total}");
    let mut c = sidecar.client().await;
    let s = c
        .pool_status(PoolStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(
        s.statement_cache.expect("cache").invalidations >= 1,
        "the cache noticed the schema change"
    );
    let r = query(&mut c, &format!("SELECT * FROM {t} WHERE id = 1"), vec![])
        .await
        .expect("final shape");
    assert_eq!(
        r.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["id", "c0", "c1", "c2", "a"]
    );
    db.batch_execute(&format!("DROP TABLE {t}"))
        .await
        .expect("drop");
}

#[tokio::test]
async fn the_report_shows_no_literal_or_comment_of_any_form() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let role = unique("report_role");
    let secrets = [
        "pw-dollar-secret",
        "tag-secret",
        "euro-secret",
        "hunter2-line",
        "tok-block",
    ];
    let statements = [
        format!("CREATE ROLE {role} LOGIN PASSWORD $$pw-dollar-secret$$"),
        format!("DROP ROLE {role} /* token=tok-block */"),
        "SELECT $tag$tag-secret$tag$ AS a".to_owned(),
        "SELECT $€$euro-secret$€$ AS b".to_owned(),
        "SELECT 1 AS c -- password=hunter2-line".to_owned(),
    ];
    for sql in &statements {
        query(&mut c, sql, vec![]).await.expect(sql);
    }
    let report = c
        .statement_report(pgsidecar::proto::StatementReportRequest { limit: 1000 })
        .await
        .expect("report")
        .into_inner();
    let texts: Vec<&str> = report.statements.iter().map(|s| s.query.as_str()).collect();
    for secret in secrets {
        assert!(
            texts.iter().all(|t| !t.contains(secret)),
            "{secret} in {texts:#?}"
        );
    }
    for want in [
        format!("CREATE ROLE {role} LOGIN PASSWORD ?"),
        format!("DROP ROLE {role}"),
        "SELECT ? AS a".to_owned(),
        "SELECT ? AS b".to_owned(),
        "SELECT ? AS c".to_owned(),
    ] {
        assert!(texts.contains(&want.as_str()), "{want} in {texts:#?}");
    }
    // `pgsidecar analyze` prints the same texts.
    let grpc = sidecar.grpc.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
            .args(["analyze", "--addr", &grpc, "--top", "1000"])
            .output()
            .expect("run analyze")
    })
    .await
    .expect("join");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    for secret in secrets {
        assert!(!printed.contains(secret), "{secret} in:\n{printed}");
    }
}

#[tokio::test]
async fn a_cached_statement_keeps_what_postgresql_fixed_at_parse_time_and_now_does_not() {
    // One connection, so the second call reuses the first one's prepared statement.
    let sidecar = Sidecar::start(&["--pool-max", "1", "--pool-min", "1"]);
    let c = sidecar.client().await;
    let twice = |sql: &'static str| {
        let mut c = c.clone();
        async move {
            let a = query(&mut c, sql, vec![]).await.expect("first");
            tokio::time::sleep(Duration::from_millis(400)).await;
            let b = query(&mut c, sql, vec![]).await.expect("second");
            assert!(
                b.info.as_ref().expect("info").statement_cached,
                "{sql}: cached"
            );
            (scalar(&a).clone(), scalar(&b).clone())
        }
    };
    // 'now' is a literal PostgreSQL turns into a constant when it parses the statement: the
    // cached statement answers the instant it was prepared (documented in README).
    let (a, b) = twice("SELECT 'now'::timestamptz").await;
    assert_eq!(a, b, "a prepared 'now' literal is frozen");
    // The documented remedy: now() is evaluated per execution (per autocommit transaction).
    let (a, b) = twice("SELECT now()").await;
    assert_ne!(a, b, "now() moves with each statement");
}
