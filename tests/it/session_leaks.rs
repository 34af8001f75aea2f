//! Session state changed where the SQL text does not show it (inside a function, a view,
//! dynamic SQL) must not reach later callers of the same pooled connection: a change
//! PostgreSQL reports (role, read-only default, time zone …) resets the connection by
//! default; everything else is caught with `--reset-always`; read-only mode holds whatever a
//! function did to the session defaults.

use futures_util::future::join_all;
use pgsidecar::proto::Value;
use tonic::Code;

use crate::support::*;

/// Probes run after the trigger: with two connections, a leak on one reaches about half.
const PROBES: usize = 20;

/// Starts a sidecar of two connections with `args`, runs `trigger` once through Query (it
/// must succeed), then `probe` from `PROBES` concurrent callers; returns their results.
async fn after(args: &[&str], trigger: &str, probe: &str) -> Vec<Result<Value, tonic::Status>> {
    let mut all = vec!["--pool-max", "2", "--pool-min", "2"];
    all.extend_from_slice(args);
    let sidecar = Sidecar::start(&all);
    let channel = sidecar.channel().await;
    let mut c = pgsidecar::proto::data_access_client::DataAccessClient::new(channel.clone());
    query(&mut c, trigger, vec![])
        .await
        .expect("the trigger runs");
    let probes = (0..PROBES).map(|_| {
        let mut c = pgsidecar::proto::data_access_client::DataAccessClient::new(channel.clone());
        async move {
            query(&mut c, probe, vec![]).await.map(|r| {
                r.rows
                    .first()
                    .map(|row| row.values[0].clone())
                    .unwrap_or_default()
            })
        }
    });
    join_all(probes).await
}

/// Asserts every probe answered `want`.
fn all_answer(results: &[Result<Value, tonic::Status>], want: &Value, what: &str) {
    assert_eq!(results.len(), PROBES);
    for r in results {
        match r {
            Ok(v) => assert_eq!(v, want, "{what}: a later caller saw leaked state"),
            Err(e) => panic!("{what}: a later caller failed: {e:?}"),
        }
    }
}

/// Runs `sql` as the admin, for the objects a test needs.
async fn setup(sql: &str) {
    admin().await.batch_execute(sql).await.expect("setup");
}

#[tokio::test]
async fn a_function_setting_statement_timeout_is_reset_when_resetting_always() {
    let f = unique("leak_timeout");
    setup(&format!(
        "CREATE FUNCTION {f}() RETURNS text LANGUAGE sql AS \
         $$SELECT set_config('statement_timeout', '1', false)$$"
    ))
    .await;
    let results = after(
        &["--reset-always", "true"],
        &format!("SELECT {f}()"),
        "SELECT pg_sleep(0.01)::text",
    )
    .await;
    all_answer(&results, &text(""), "statement_timeout set in a function");
}

#[tokio::test]
async fn a_role_set_in_dynamic_sql_is_reported_and_reset_by_default() {
    // No CREATE needed: query_to_xml runs SQL the text only spells in pieces. Becoming a
    // non-superuser changes `is_superuser`, which PostgreSQL reports.
    let role = unique("leak_role");
    setup(&format!("CREATE ROLE {role}")).await;
    let trigger = format!(
        "SELECT query_to_xml('SELECT set_'||'config(''role'', ''{role}'', false)', true, true, '')"
    );
    let results = after(&[], &trigger, "SELECT current_user::text").await;
    all_answer(&results, &text("postgres"), "role set through query_to_xml");
    let _ = admin()
        .await
        .batch_execute(&format!("DROP ROLE {role}"))
        .await;
}

#[tokio::test]
async fn a_role_set_through_a_unicode_escaped_name_is_reset_by_default() {
    let role = unique("leak_uescape");
    setup(&format!("CREATE ROLE {role}")).await;
    let trigger = format!("SELECT U&\"set\\005fconfig\"('role', '{role}', false)");
    let results = after(&[], &trigger, "SELECT current_user::text").await;
    all_answer(
        &results,
        &text("postgres"),
        "role set through U&\"set\\005fconfig\"",
    );
    let _ = admin()
        .await
        .batch_execute(&format!("DROP ROLE {role}"))
        .await;
}

#[tokio::test]
async fn a_time_zone_set_in_a_function_is_reported_and_reset_by_default() {
    let f = unique("leak_tz");
    setup(&format!(
        "CREATE FUNCTION {f}() RETURNS text LANGUAGE sql AS \
         $$SELECT set_config('TimeZone', 'Asia/Tokyo', false)$$"
    ))
    .await;
    let results = after(&[], &format!("SELECT {f}()"), "SHOW TimeZone").await;
    all_answer(&results, &text("UTC"), "TimeZone set in a function");
}

#[tokio::test]
async fn a_search_path_set_in_a_function_is_reset_when_resetting_always() {
    let (f, evil, table) = (unique("leak_path"), unique("evil"), unique("accounts"));
    setup(&format!(
        "CREATE TABLE {table} (tag text); INSERT INTO {table} VALUES ('honest'); \
         CREATE SCHEMA {evil}; CREATE TABLE {evil}.{table} (tag text); \
         INSERT INTO {evil}.{table} VALUES ('evil'); \
         CREATE FUNCTION {f}() RETURNS void LANGUAGE plpgsql AS \
         $$BEGIN SET search_path = {evil}, public; END$$"
    ))
    .await;
    let results = after(
        &["--reset-always", "true"],
        &format!("SELECT {f}()"),
        &format!("SELECT tag FROM {table}"),
    )
    .await;
    all_answer(&results, &text("honest"), "search_path set in a function");
}

#[tokio::test]
async fn a_temp_table_made_in_plpgsql_is_dropped_when_resetting_always() {
    let (f, table) = (unique("leak_temp"), unique("shadow"));
    setup(&format!(
        "CREATE FUNCTION {f}() RETURNS void LANGUAGE plpgsql AS \
         $$BEGIN EXECUTE 'CREATE TEMP TABLE {table} (x int)'; END$$"
    ))
    .await;
    let results = after(
        &["--reset-always", "true"],
        &format!("SELECT {f}()"),
        &format!("SELECT (to_regclass('pg_temp.{table}') IS NULL)::text"),
    )
    .await;
    all_answer(&results, &text("true"), "temp table made in plpgsql");
}

#[tokio::test]
async fn an_advisory_lock_taken_in_a_function_is_released_when_resetting_always() {
    let f = unique("leak_lock");
    let key = 4_242_000 + (std::process::id() as i64 % 1000);
    setup(&format!(
        "CREATE FUNCTION {f}() RETURNS void LANGUAGE sql AS $$SELECT pg_advisory_lock({key})$$"
    ))
    .await;
    let results = after(
        &["--reset-always", "true"],
        &format!("SELECT {f}()"),
        &format!(
            "SELECT count(*)::text FROM pg_locks \
             WHERE locktype = 'advisory' AND objid = {key} AND granted"
        ),
    )
    .await;
    all_answer(&results, &text("0"), "advisory lock taken in a function");
}

#[tokio::test]
async fn a_view_calling_set_config_is_reset_when_resetting_always() {
    let view = unique("leak_view");
    setup(&format!(
        "CREATE VIEW {view} AS SELECT set_config('app.tenant', 'tenant-a', false) AS t"
    ))
    .await;
    let results = after(
        &["--reset-always", "true"],
        &format!("SELECT t FROM {view}"),
        "SELECT coalesce(current_setting('app.tenant', true), '')",
    )
    .await;
    all_answer(&results, &text(""), "a tenant set through a view");
}

#[tokio::test]
async fn read_only_holds_after_a_function_turns_the_default_off() {
    let (f, table) = (unique("leak_rw"), unique("ro_target"));
    setup(&format!(
        "CREATE TABLE {table} (x int); \
         CREATE FUNCTION {f}() RETURNS text LANGUAGE sql AS \
         $$SELECT set_config('default_transaction_read_only', 'off', false)$$"
    ))
    .await;
    let results = after(
        &["--read-only", "true"],
        &format!("SELECT {f}()"),
        &format!("INSERT INTO {table} VALUES (1) RETURNING x::text"),
    )
    .await;
    for r in &results {
        let e = r.as_ref().expect_err("every INSERT is refused");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    let rows = admin()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count");
    assert_eq!(rows.get::<_, i64>(0), 0, "nothing was written");
}

#[tokio::test]
async fn read_only_statements_still_read_and_report_errors() {
    // Each statement runs inside BEGIN READ ONLY ... COMMIT, pipelined: results, errors,
    // and the connection's state after an error are as without it.
    let (sidecar, app) = Sidecar::start_tagged_with("ro_wrap", 1, &["--read-only", "true"]);
    let mut c = sidecar.client().await;
    let r = query(&mut c, "SELECT $1::int + 1", vec![int(41)])
        .await
        .expect("a read");
    assert_eq!(scalar(&r), &int(42));
    let e = query(&mut c, "SELECT 1/0", vec![])
        .await
        .expect_err("division by zero");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let r = query(&mut c, "SHOW transaction_read_only", vec![])
        .await
        .expect("after an error the connection is fine");
    assert_eq!(scalar(&r), &text("on"));
    // Between statements the connection is idle, not inside the wrapping transaction.
    let admin = admin().await;
    let state: String = admin
        .query_one(
            "SELECT state FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("the sidecar's one backend")
        .get(0);
    assert_eq!(state, "idle");
}

#[tokio::test]
async fn a_reported_change_inside_a_transaction_is_reset_when_it_ends() {
    let f = unique("leak_tx_tz");
    setup(&format!(
        "CREATE FUNCTION {f}() RETURNS text LANGUAGE sql AS \
         $$SELECT set_config('TimeZone', 'Asia/Tokyo', false)$$"
    ))
    .await;
    // One connection: the Query after the transaction surely gets the same session.
    let sidecar = Sidecar::start(&["--pool-max", "1", "--pool-min", "1"]);
    let mut c = sidecar.client().await;
    let mut tx = TxStream::open(&mut c, Default::default()).await;
    assert!(matches!(
        tx.next().await,
        Ok(Some(pgsidecar::proto::transaction_response::Event::Begun(
            _
        )))
    ));
    tx.execute("1", &format!("SELECT {f}()"), vec![]).await;
    let ran = tx.result().await.outcome;
    assert!(
        matches!(
            ran,
            Some(pgsidecar::proto::statement_result::Outcome::Response(_))
        ),
        "{ran:?}"
    );
    tx.commit().await;
    tx.half_close();
    while tx
        .next()
        .await
        .expect("the transaction ends cleanly")
        .is_some()
    {}
    let r = query(&mut c, "SHOW TimeZone", vec![])
        .await
        .expect("a read");
    assert_eq!(
        scalar(&r),
        &text("UTC"),
        "the next caller inherits no time zone"
    );
}

#[tokio::test]
async fn a_client_deallocating_everything_does_not_break_the_connection_for_others() {
    // DISCARD ALL and DEALLOCATE ALL drop every prepared statement of the session, the
    // driver's own type lookups included; the next caller of a user-defined type must not
    // find them gone.
    for trigger in ["DEALLOCATE ALL", "DEALLOCATE PREPARE ALL", "DISCARD ALL"] {
        let sidecar = Sidecar::start(&[
            "--pool-max",
            "1",
            "--pool-min",
            "1",
            "--pipeline-connections",
            "0",
        ]);
        let mut c = sidecar.client().await;
        let (before, after) = (unique("mood"), unique("mood"));
        setup(&format!(
            "CREATE TYPE {before} AS ENUM ('a'); CREATE TYPE {after} AS ENUM ('b')"
        ))
        .await;
        let probe = |ty: &str| format!("SELECT 'a'::{before}, 'b'::{ty}");
        // The one connection looks up a user type (and keeps its statements for that).
        query(&mut c, &probe(&before).replace("'b'", "'a'"), vec![])
            .await
            .expect("a user type before");
        query(&mut c, trigger, vec![])
            .await
            .expect("the trigger runs");
        let got = query(&mut c, &probe(&after), vec![]).await;
        let got = got.unwrap_or_else(|e| panic!("after {trigger}: {e:?}"));
        assert_eq!(got.rows[0].values, vec![text("a"), text("b")], "{trigger}");
        let again = query(&mut c, "SELECT 1", vec![]).await;
        assert!(again.is_ok(), "after {trigger}: {again:?}");
        // The same inside a transaction: the connection it leased is not handed on.
        if trigger != "DISCARD ALL" {
            let third = unique("mood");
            setup(&format!("CREATE TYPE {third} AS ENUM ('c')")).await;
            let mut tx = TxStream::open(&mut c, Default::default()).await;
            tx.next().await.expect("begun");
            tx.execute("a", trigger, vec![]).await;
            tx.commit().await;
            assert!(tx.result().await.outcome.is_some());
            let committed = tx.next().await;
            assert!(matches!(committed, Ok(Some(_))), "{committed:?}");
            let got = query(&mut c, &format!("SELECT 'c'::{third}"), vec![]).await;
            let got = got.unwrap_or_else(|e| panic!("after {trigger} in a transaction: {e:?}"));
            assert_eq!(got.rows[0].values, vec![text("c")]);
            setup(&format!("DROP TYPE {third}")).await;
        }
        setup(&format!("DROP TYPE {before}; DROP TYPE {after}")).await;
    }
}
