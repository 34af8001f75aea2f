//! The error contract: gRPC codes from API.md's table, one ErrorInfo (domain pgsidecar) with
//! the SQLSTATE and Postgres's fields, BadRequest naming the field, RetryInfo where a retry
//! helps, and clear INVALID_ARGUMENT for malformed requests.

use std::time::{Duration, Instant};

use crate::support::*;
use pgsidecar::proto::{QueryRequest, Value};
use tonic::Code;
use tonic_types::StatusExt;

async fn table(db: &tokio_postgres::Client) -> String {
    let t = unique("err");
    db.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, n int NOT NULL CHECK (n >= 0),
                           parent int REFERENCES {t}(id))"
    ))
    .await
    .expect("create table");
    t
}

#[tokio::test]
async fn postgres_errors_map_to_codes_with_sqlstate_and_fields() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = table(&db).await;
    query(
        &mut c,
        &format!("INSERT INTO {t} VALUES (1, 1, NULL)"),
        vec![],
    )
    .await
    .expect("first insert");

    // (sql, code, reason, sqlstate)
    let cases = [
        (
            format!("INSERT INTO {t} VALUES (1, 1, NULL)"),
            Code::AlreadyExists,
            "UNIQUE_VIOLATION",
            "23505",
        ),
        (
            format!("INSERT INTO {t} VALUES (2, NULL, NULL)"),
            Code::FailedPrecondition,
            "NOT_NULL_VIOLATION",
            "23502",
        ),
        (
            format!("INSERT INTO {t} VALUES (3, -1, NULL)"),
            Code::FailedPrecondition,
            "CHECK_VIOLATION",
            "23514",
        ),
        (
            format!("INSERT INTO {t} VALUES (4, 1, 99)"),
            Code::FailedPrecondition,
            "FOREIGN_KEY_VIOLATION",
            "23503",
        ),
        (
            "SELECT * FROM no_such_table_xyz".to_owned(),
            Code::NotFound,
            "UNDEFINED_TABLE",
            "42P01",
        ),
        (
            format!("SELECT no_such_column FROM {t}"),
            Code::NotFound,
            "UNDEFINED_COLUMN",
            "42703",
        ),
        (
            "SELECT no_such_function_xyz()".to_owned(),
            Code::NotFound,
            "UNDEFINED_FUNCTION",
            "42883",
        ),
        (
            "SELEC 1".to_owned(),
            Code::InvalidArgument,
            "SYNTAX_ERROR",
            "42601",
        ),
        (
            "SELECT 1/0".to_owned(),
            Code::InvalidArgument,
            "DIVISION_BY_ZERO",
            "22012",
        ),
        (
            "SELECT 'abc'::int".to_owned(),
            Code::InvalidArgument,
            "INVALID_TEXT_REPRESENTATION",
            "22P02",
        ),
        (
            "SELECT 2147483647::int4 + 1".to_owned(),
            Code::OutOfRange,
            "NUMERIC_VALUE_OUT_OF_RANGE",
            "22003",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '40001'; END $$".to_owned(),
            Code::Aborted,
            "SERIALIZATION_FAILURE",
            "40001",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '40P01'; END $$".to_owned(),
            Code::Aborted,
            "DEADLOCK_DETECTED",
            "40P01",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '53300'; END $$".to_owned(),
            Code::ResourceExhausted,
            "TOO_MANY_CONNECTIONS",
            "53300",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '0A000'; END $$".to_owned(),
            Code::Unimplemented,
            "FEATURE_NOT_SUPPORTED",
            "0A000",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '42501'; END $$".to_owned(),
            Code::PermissionDenied,
            "INSUFFICIENT_PRIVILEGE",
            "42501",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '55P03'; END $$".to_owned(),
            Code::FailedPrecondition,
            "LOCK_NOT_AVAILABLE",
            "55P03",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'XX000'; END $$".to_owned(),
            Code::Internal,
            "INTERNAL_ERROR",
            "XX000",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'ZX123'; END $$".to_owned(),
            Code::Unknown,
            "SQLSTATE_ZX123",
            "ZX123",
        ),
    ];
    for (sql, code, reason, sqlstate) in cases {
        let err = query(&mut c, &sql, vec![]).await.expect_err(&sql);
        assert_eq!(err.code(), code, "{sql}: {err:?}");
        let (got_reason, meta) = error_info(&err);
        assert_eq!(got_reason, reason, "{sql}");
        assert_eq!(
            meta.get("sqlstate").map(String::as_str),
            Some(sqlstate),
            "{sql}"
        );
        assert!(meta.contains_key("message"), "{sql}");
        let retry = err.get_error_details().retry_info().is_some();
        assert_eq!(
            retry,
            matches!(code, Code::Aborted | Code::ResourceExhausted),
            "{sql}: RetryInfo presence"
        );
    }

    // The fields Postgres sent travel in the metadata.
    let err = query(
        &mut c,
        &format!("INSERT INTO {t} VALUES (1, 1, NULL)"),
        vec![],
    )
    .await
    .expect_err("duplicate");
    let (_, meta) = error_info(&err);
    assert_eq!(meta["constraint"], format!("{t}_pkey"));
    assert_eq!(meta["table"], t);
    assert_eq!(meta["schema"], "public");
    assert!(meta["detail"].contains("(id)=(1)"), "{meta:?}");
    let err = query(&mut c, "SELECT 1 FROM nowhere_xyz", vec![])
        .await
        .expect_err("undefined");
    assert_eq!(error_info(&err).1["position"], "15");
    let err = query(
        &mut c,
        &format!("INSERT INTO {t} VALUES (5, NULL, NULL)"),
        vec![],
    )
    .await
    .expect_err("not null");
    assert_eq!(error_info(&err).1["column"], "n");
    db.batch_execute(&format!("DROP TABLE {t}"))
        .await
        .expect("drop");
}

#[tokio::test]
async fn malformed_requests_are_invalid_argument_naming_the_field() {
    let sidecar = Sidecar::start(&["--max-sql-bytes", "200", "--max-message-bytes", "4096"]);
    let mut c = sidecar.client().await;
    let cases: Vec<(&str, QueryRequest, Code, &str, Option<&str>)> = vec![
        (
            "empty sql",
            request("", vec![]),
            Code::InvalidArgument,
            "INVALID_REQUEST",
            Some("sql"),
        ),
        (
            "blank sql",
            request("  \n ", vec![]),
            Code::InvalidArgument,
            "INVALID_REQUEST",
            Some("sql"),
        ),
        (
            "sql over the limit",
            request(&format!("SELECT '{}'", "x".repeat(300)), vec![]),
            Code::InvalidArgument,
            "INVALID_REQUEST",
            Some("sql"),
        ),
        (
            "too few params",
            request("SELECT $1::int", vec![]),
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            Some("params"),
        ),
        (
            "too many params",
            request("SELECT 1", vec![int(1)]),
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            Some("params"),
        ),
        (
            "wrong type",
            request("SELECT $1::int4, $2::int4", vec![int(1), boolean(true)]),
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            Some("params[1]"),
        ),
        (
            "unset value",
            request("SELECT $1::int4", vec![Value { kind: None }]),
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            Some("params[0]"),
        ),
        (
            "int2 overflow",
            request("SELECT $1::int2", vec![int(40_000)]),
            Code::OutOfRange,
            "INVALID_PARAMETER",
            Some("params[0]"),
        ),
        (
            "oid negative",
            request("SELECT $1::oid", vec![int(-1)]),
            Code::OutOfRange,
            "INVALID_PARAMETER",
            Some("params[0]"),
        ),
        (
            "fractional int",
            request("SELECT $1::int4", vec![numeric("1.5")]),
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            Some("params[0]"),
        ),
        (
            "bad numeric",
            request("SELECT $1::numeric", vec![numeric("12abc")]),
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            Some("params[0]"),
        ),
        (
            "bad uuid",
            request("SELECT $1::uuid", vec![uuid("nope")]),
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            Some("params[0]"),
        ),
        (
            "bad date",
            request("SELECT $1::date", vec![date("2023-02-30")]),
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            Some("params[0]"),
        ),
        (
            "bytes to text",
            request("SELECT $1::text", vec![bytes(b"x")]),
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            Some("params[0]"),
        ),
        (
            "array to scalar",
            request("SELECT $1::int4", vec![array(vec![int(1)])]),
            Code::InvalidArgument,
            "INVALID_PARAMETER",
            Some("params[0]"),
        ),
        (
            "bad text input",
            request("SELECT $1::int4", vec![text("abc")]),
            Code::InvalidArgument,
            "INVALID_TEXT_REPRESENTATION",
            None,
        ),
        (
            "two statements",
            request("SELECT 1; SELECT 2", vec![]),
            Code::InvalidArgument,
            "SYNTAX_ERROR",
            None,
        ),
        (
            "message over the limit",
            request("SELECT $1::text", vec![text(&"y".repeat(8000))]),
            Code::InvalidArgument,
            "INVALID_REQUEST",
            Some("request"),
        ),
    ];
    for (name, req, code, reason, field) in cases {
        let err = c.query(req).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert_eq!(error_info(&err).0, reason, "{name}");
        if let Some(field) = field {
            assert_eq!(bad_field(&err).as_deref(), Some(field), "{name}: {err:?}");
        }
    }
    // The server is still fine after all that.
    let ok = query(&mut c, "SELECT 1", vec![])
        .await
        .expect("still serving");
    assert_eq!(scalar(&ok), &int(1));
}

#[tokio::test]
async fn deadline_cancels_the_statement_in_postgres() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let marker = unique("sleepy");
    let sql = format!("SELECT pg_sleep(30) /* {marker} */");
    let mut req = tonic::Request::new(request(&sql, vec![]));
    req.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let err = c.query(req).await.expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(
        error_info(&err).1.get("sqlstate").map(String::as_str),
        Some("57014")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered promptly"
    );
    // No backend is still running the statement.
    assert_eq!(active_statements(&db, &marker).await, 0);

    // The request's own timeout does the same.
    let mut own = request(&format!("SELECT pg_sleep(30) /* {marker}b */"), vec![]);
    own.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 200_000_000,
    });
    let err = c.query(own).await.expect_err("timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(
        error_info(&err).1.get("sqlstate").map(String::as_str),
        Some("57014")
    );
    // And the pool serves the next request.
    assert_eq!(
        scalar(&query(&mut c, "SELECT 2", vec![]).await.expect("after")),
        &int(2)
    );
}

#[tokio::test]
async fn statement_timeout_setting_is_deadline_exceeded() {
    let sidecar = Sidecar::start(&["--query-timeout", "200"]);
    let mut c = sidecar.client().await;
    let err = query(&mut c, "SELECT pg_sleep(5)", vec![])
        .await
        .expect_err("timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(error_info(&err).1["sqlstate"], "57014");
}

#[tokio::test]
async fn database_down_is_unavailable_fast() {
    // Nothing listens on port 1.
    let sidecar = Sidecar::start(&[
        "--database-url",
        "postgres://postgres@127.0.0.1:1/postgres",
        "--connection-timeout",
        "1000",
    ]);
    let mut c = sidecar.client().await;
    let started = Instant::now();
    let err = query(&mut c, "SELECT 1", vec![]).await.expect_err("down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(error_info(&err).0, "DATABASE_UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_absurd_timeout_is_no_limit_not_a_crash() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let mut req = request("SELECT 1", vec![]);
    req.timeout = Some(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    });
    let r = c.query(req).await.expect("served").into_inner();
    assert_eq!(scalar(&r), &int(1));
    assert!(!sidecar.stderr().contains("panicked"));
}
