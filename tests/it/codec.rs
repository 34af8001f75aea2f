//! Codec round trips through the real server and PostgreSQL, in the manner of rust-postgres's
//! type tests: every value as a literal and as a `$1` parameter, with NULL and edge values.
//! For values that come back as text, PostgreSQL's own output (`format('%s', v)`) is the
//! reference.

use crate::support::*;
use pgsidecar::proto::{Value, value::Kind};
use tonic::Code;

/// Equality that treats NaN as equal to NaN, recursively.
fn same(a: &Value, b: &Value) -> bool {
    match (&a.kind, &b.kind) {
        (Some(Kind::FloatValue(x)), Some(Kind::FloatValue(y))) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Some(Kind::ArrayValue(x)), Some(Kind::ArrayValue(y))) => {
            x.lower_bounds == y.lower_bounds
                && x.values.len() == y.values.len()
                && x.values.iter().zip(&y.values).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

/// Types made for this test run, so parallel runs do not collide.
struct Types {
    mood: String,
    posint: String,
    pair: String,
}

async fn make_types() -> Types {
    let db = admin().await;
    let t = Types {
        mood: unique("mood"),
        posint: unique("posint"),
        pair: unique("pair"),
    };
    db.batch_execute(&format!(
        "CREATE TYPE {} AS ENUM ('sad', 'happy');
         CREATE DOMAIN {} AS int4 CHECK (VALUE > 0);
         CREATE TYPE {} AS (n int4, label text);",
        t.mood, t.posint, t.pair
    ))
    .await
    .expect("create types");
    t
}

async fn drop_types(t: &Types) {
    let db = admin().await;
    db.batch_execute(&format!(
        "DROP TYPE {}; DROP DOMAIN {}; DROP TYPE {};",
        t.mood, t.posint, t.pair
    ))
    .await
    .expect("drop types");
}

/// (SQL type, literal, expected value)
fn cases(t: &Types) -> Vec<(String, String, Value)> {
    let thousand_digits = format!("{}.{}", "9".repeat(500), "1".repeat(500));
    let c = |ty: &str, lit: &str, v: Value| (ty.to_owned(), lit.to_owned(), v);
    vec![
        c("bool", "true", boolean(true)),
        c("bool", "false", boolean(false)),
        c("bool", "NULL", null()),
        c("int2", "-32768", int(-32768)),
        c("int2", "32767", int(32767)),
        c("int4", "-2147483648", int(i32::MIN.into())),
        c("int4", "2147483647", int(i32::MAX.into())),
        c("int8", "-9223372036854775808", int(i64::MIN)),
        c("int8", "9223372036854775807", int(i64::MAX)),
        c("oid", "4294967295", int(u32::MAX.into())),
        c("float4", "1.5", float(1.5)),
        c("float4", "'3.4028235e38'", float(f32::MAX.into())),
        c("float4", "'NaN'", float(f64::NAN)),
        c("float4", "'Infinity'", float(f64::INFINITY)),
        c("float4", "'-Infinity'", float(f64::NEG_INFINITY)),
        c("float8", "'1.7976931348623157e308'", float(f64::MAX)),
        c("float8", "'5e-324'", float(5e-324)),
        c("float8", "'-0'", float(-0.0)),
        c("float8", "'NaN'", float(f64::NAN)),
        c("float8", "'Infinity'", float(f64::INFINITY)),
        c("float8", "'-Infinity'", float(f64::NEG_INFINITY)),
        c(
            "numeric",
            &format!("'{thousand_digits}'"),
            numeric(&thousand_digits),
        ),
        c("numeric", "'-12.500'", numeric("-12.500")),
        c("numeric", "'0.000001'", numeric("0.000001")),
        c("numeric", "'NaN'", numeric("NaN")),
        c("numeric", "'Infinity'", numeric("Infinity")),
        c("numeric", "'-Infinity'", numeric("-Infinity")),
        c("text", "'héllo wörld ✓ 日本'", text("héllo wörld ✓ 日本")),
        c("text", "''", text("")),
        c("text", "NULL", null()),
        c("varchar(10)", "'abc'", text("abc")),
        c("bpchar(4)", "'ab'", text("ab  ")),
        c("name", "'pg_class'", text("pg_class")),
        c("bytea", "'\\x00ff0000'", bytes(&[0, 255, 0, 0])),
        c("bytea", "''", bytes(&[])),
        c(
            "uuid",
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ),
        c(
            "json",
            "'{\"a\": [1, 2],  \"b\": null}'",
            json("{\"a\": [1, 2],  \"b\": null}"),
        ),
        c(
            "jsonb",
            "'{\"b\": 1, \"a\": [true]}'",
            json("{\"a\": [true], \"b\": 1}"),
        ),
        c("date", "'2024-02-29'", date("2024-02-29")),
        c("date", "'0001-01-01'", date("0001-01-01")),
        c("date", "'0044-03-15 BC'", text("0044-03-15 BC")),
        c("date", "'infinity'", text("infinity")),
        c("date", "'-infinity'", text("-infinity")),
        c(
            "timestamp",
            "'2024-01-02 03:04:05.123456'",
            timestamp(1_704_164_645, 123_456_000),
        ),
        c("timestamp", "'1970-01-01 00:00:00'", timestamp(0, 0)),
        c("timestamp", "'infinity'", text("infinity")),
        c("timestamp", "'-infinity'", text("-infinity")),
        // Outside google.protobuf.Timestamp (years 1..9999): PostgreSQL's text, both ways.
        c(
            "timestamp",
            "'0044-03-15 12:30:00 BC'",
            text("0044-03-15 12:30:00 BC"),
        ),
        c(
            "timestamp",
            "'10000-01-01 00:00:00'",
            text("10000-01-01 00:00:00"),
        ),
        c(
            "timestamptz",
            "'0044-03-15 12:30:00+00 BC'",
            text("0044-03-15 12:30:00+00 BC"),
        ),
        c(
            "timestamptz",
            "'294276-12-31 23:59:59.999999+00'",
            text("294276-12-31 23:59:59.999999+00"),
        ),
        c("date", "'10000-01-01'", text("10000-01-01")),
        c(
            "timestamptz",
            "'2024-01-02 03:04:05.5+02'",
            timestamp(1_704_157_445, 500_000_000),
        ),
        c(
            "timestamptz",
            "'1960-06-01 00:00:00+00'",
            timestamp(-302_486_400, 0),
        ),
        c("timestamptz", "'infinity'", text("infinity")),
        c("timestamptz", "'-infinity'", text("-infinity")),
        c("time", "'13:45:00.5'", text("13:45:00.5")),
        c("time", "'24:00:00'", text("24:00:00")),
        c("timetz", "'13:45:00+05:30'", text("13:45:00+05:30")),
        c(
            "interval",
            "'1 year 2 mons 3 days 04:05:06.5'",
            text("1 year 2 mons 3 days 04:05:06.5"),
        ),
        c("interval", "'-1 days +02:00:00'", text("-1 days +02:00:00")),
        c("inet", "'10.0.0.1'", text("10.0.0.1")),
        c("inet", "'2001:db8::1/64'", text("2001:db8::1/64")),
        c("cidr", "'10.0.0.0/8'", text("10.0.0.0/8")),
        c("macaddr", "'08:00:2b:01:02:03'", text("08:00:2b:01:02:03")),
        c("bit(4)", "B'1010'", text("1010")),
        c("money", "'12.34'", text("$12.34")),
        c("tsvector", "'a fat cat'", text("'a' 'cat' 'fat'")),
        c("point", "'(1,2)'", text("(1,2)")),
        c(&t.mood, "'happy'", text("happy")),
        c(&t.posint, "5", int(5)),
        c(&t.pair, "'(1,\"a b\")'", text("(1,\"a b\")")),
        c(&t.pair, "'(,)'", text("(,)")),
        c("int4range", "'[1,10)'", text("[1,10)")),
        c("int4range", "'empty'", text("empty")),
        c(
            "tstzrange",
            "'[2024-01-01 00:00:00+00,)'",
            text("[\"2024-01-01 00:00:00+00\",)"),
        ),
        c("numrange", "'(1.5,2.5]'", text("(1.5,2.5]")),
        c(
            "int4[]",
            "'{1,NULL,3}'",
            array(vec![int(1), null(), int(3)]),
        ),
        c("int4[]", "'{}'", array(vec![])),
        c(
            "text[]",
            "'{\"a b\",NULL,\"\",\"NULL\"}'",
            array(vec![text("a b"), null(), text(""), text("NULL")]),
        ),
        c(
            "uuid[]",
            "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}'",
            array(vec![uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), null()]),
        ),
        c(
            "int4[]",
            "'{{1,2},{3,NULL}}'",
            array(vec![
                array(vec![int(1), int(2)]),
                array(vec![int(3), null()]),
            ]),
        ),
        c(
            "interval[]",
            "'{\"1 day\",NULL}'",
            array(vec![text("1 day"), null()]),
        ),
    ]
}

#[tokio::test]
async fn every_type_round_trips_as_literal_and_as_parameter() {
    let sidecar = Sidecar::start(&[]);
    let mut client = sidecar.client().await;
    let types = make_types().await;
    let mut failures = Vec::new();
    for (ty, lit, want) in cases(&types) {
        // As a literal.
        let got = query(&mut client, &format!("SELECT CAST({lit} AS {ty})"), vec![])
            .await
            .unwrap_or_else(|e| panic!("literal {lit}::{ty}: {e:?}"));
        if !same(scalar(&got), &want) {
            failures.push(format!(
                "literal {lit}::{ty}: got {:?}, want {want:?}",
                scalar(&got)
            ));
        }
        // As a parameter: the expected value bound to $1 of that type comes back unchanged.
        let got = query(&mut client, &format!("SELECT $1::{ty}"), vec![want.clone()])
            .await
            .unwrap_or_else(|e| panic!("param {want:?} as {ty}: {e:?}"));
        if !same(scalar(&got), &want) {
            failures.push(format!("param {ty}: got {:?}, want {want:?}", scalar(&got)));
        }
        // Text forms are PostgreSQL's own output for the value.
        if let Some(Kind::TextValue(s)) = &want.kind {
            let reference = query(
                &mut client,
                &format!("SELECT format('%s', CAST({lit} AS {ty}))"),
                vec![],
            )
            .await
            .expect("format");
            if scalar(&reference) != &text(s) {
                failures.push(format!(
                    "{lit}::{ty}: PostgreSQL prints {:?}, we said {s:?}",
                    scalar(&reference)
                ));
            }
        }
    }
    drop_types(&types).await;
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn range_bounds_are_quoted_as_postgresql_prints_them() {
    let sidecar = Sidecar::start(&[]);
    let mut client = sidecar.client().await;
    let db = admin().await;
    let textrange = unique("textrange");
    db.batch_execute(&format!(
        "CREATE TYPE {textrange} AS RANGE (subtype = text, collation = \"C\")"
    ))
    .await
    .expect("range type");
    // Every character range_out quotes for, alone and inside a value, as either bound.
    let values = [
        "[",
        "]",
        "(",
        ")",
        ",",
        "\"",
        "\\",
        " ",
        "a b",
        "x[y",
        "tab\there",
        "z",
        "plain",
    ];
    let mut cases = Vec::new();
    for v in values {
        // '~' sorts after all of these in the C collation; '' before everything.
        cases.push(format!("{textrange}({}, '~')", literal(v)));
        cases.push(format!("{textrange}('', {})", literal(v)));
    }
    cases.push(format!("{textrange}('', '~', '[]')"));
    cases.push("tsrange('2020-01-01 10:00', '2020-01-02', '[]')".to_owned());
    cases.push("int4range(NULL, 5)".to_owned());
    let mut failures = Vec::new();
    for case in &cases {
        let got = query(&mut client, &format!("SELECT {case}"), vec![])
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        let want: String = db
            .query_one(&format!("SELECT ({case})::text"), &[])
            .await
            .expect("PostgreSQL's text")
            .get(0);
        if scalar(&got) != &text(&want) {
            failures.push(format!(
                "{case}: PostgreSQL {want:?}, sidecar {:?}",
                scalar(&got)
            ));
        }
    }
    db.batch_execute(&format!("DROP TYPE {textrange}"))
        .await
        .expect("drop");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// PostgreSQL's own text output for every cell `sql` answers, row by row, through the
/// simple query protocol (where every value travels as text); `None` is NULL.
async fn postgres_text(db: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = db
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = messages.iter().filter_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    rows.map(|row| {
        (0..row.len())
            .map(|i| row.get(i).map(str::to_owned))
            .collect()
    })
    .collect()
}

#[tokio::test]
async fn anonymous_records_print_as_postgresql_prints_them() {
    let sidecar = Sidecar::start(&[]);
    let mut client = sidecar.client().await;
    let types = make_types().await;
    let db = admin().await;
    let (mood, pair, posint) = (&types.mood, &types.pair, &types.posint);
    // Fields decoded here, fields PostgreSQL must print (a user enum, domain and composite,
    // a point, a tsvector), NULLs, quoting, nesting and arrays inside records.
    let cases = [
        "ROW(1, 'a b')".to_owned(),
        "(1, 'x')".to_owned(),
        "ROW()".to_owned(),
        "ROW(NULL, '', 'x\"y', E'a\\\\b', ' ', NULL)".to_owned(),
        "ROW(1, ROW(2, 'x y'), ROW(ROW('(,)')))".to_owned(),
        "ROW('[0:1]={1,2}'::int[], ARRAY[ROW(1, 'a b')], '{}'::text[])".to_owned(),
        "ROW(1.5::numeric, 2.5::float8, '2020-01-01 10:00'::timestamptz, '1 day'::interval, \
         '{\"a\": 1}'::jsonb, '\\x00ff'::bytea, true, int4range(1, 5))"
            .to_owned(),
        format!("ROW('happy'::{mood}, 7::{posint}, ROW(3, 'p q')::{pair}, 'x')"),
        "ROW(point(1, 2), 'a b'::tsvector, 'x')".to_owned(),
        "ROW(ROW(point(1, 2)), ARRAY[ROW(point(3, 4))])".to_owned(),
        "json_each('{\"a\": 1, \"b\": [2]}')".to_owned(),
        "json_each_text('{\"a\": \"b c\"}')".to_owned(),
        "json_populate_record(row(1, 2), '{\"f1\": 3}')".to_owned(),
        "NULL::record".to_owned(),
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let sql = format!("SELECT {case}");
        let got = query(&mut client, &sql, vec![])
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        let want: Vec<Vec<Value>> = postgres_text(&db, &sql)
            .await
            .into_iter()
            .map(|row| {
                row.iter()
                    .map(|t| t.as_deref().map_or(null(), text))
                    .collect()
            })
            .collect();
        let got: Vec<Vec<Value>> = got.rows.into_iter().map(|r| r.values).collect();
        if got != want {
            failures.push(format!("{case}: PostgreSQL {want:?}, sidecar {got:?}"));
        }
    }
    // An array of records is an array of their texts; parameters inside a record.
    let got = query(
        &mut client,
        "SELECT array_agg(r ORDER BY n) FROM (VALUES (1, ROW(1, 'a b')), (2, ROW(2, NULL)), \
         (3, ROW(point(0, 0)))) v(n, r)",
        vec![],
    )
    .await
    .expect("record[]");
    let want = array(vec![text("(1,\"a b\")"), text("(2,)"), text("(\"(0,0)\")")]);
    assert_eq!(scalar(&got), &want);
    let got = query(
        &mut client,
        "SELECT ROW($1::int4, $2::text)",
        vec![int(5), text("a,b")],
    )
    .await
    .expect("parameters");
    assert_eq!(scalar(&got), &text("(5,\"a,b\")"));
    // More fields for PostgreSQL to print than one statement asks for, in one result, on
    // both the unary and the streaming path.
    let sql = "SELECT ROW(point(i, i), i) FROM generate_series(1, 2500) i";
    let got = query(&mut client, sql, vec![]).await.expect("many");
    assert_eq!(got.rows.len(), 2500);
    for (i, row) in got.rows.iter().enumerate() {
        let n = i + 1;
        assert_eq!(row.values[0], text(&format!("(\"({n},{n})\",{n})")));
    }
    let mut s = client
        .stream_query(request(sql, vec![]))
        .await
        .expect("stream")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(m) = s.message().await.expect("chunk") {
        streamed.extend(m.rows);
    }
    assert_eq!(streamed, got.rows);
    drop_types(&types).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An array with explicit lower bounds, one per dimension.
fn bounded(values: Vec<Value>, lower_bounds: Vec<i32>) -> Value {
    Value {
        kind: Some(Kind::ArrayValue(pgsidecar::proto::ArrayValue {
            values,
            lower_bounds,
        })),
    }
}

#[tokio::test]
async fn array_lower_bounds_travel_both_ways() {
    let sidecar = Sidecar::start(&[]);
    let mut client = sidecar.client().await;
    let db = admin().await;
    // (literal, the value it decodes to); each is also bound back as a parameter, and
    // PostgreSQL's own text of what was bound must be the literal's.
    let cases = [
        (
            "'[0:2]={1,2,3}'::int4[]",
            bounded(vec![int(1), int(2), int(3)], vec![0]),
        ),
        ("'{1,2}'::int4[]", array(vec![int(1), int(2)])),
        ("'[1:2]={1,2}'::int4[]", array(vec![int(1), int(2)])),
        (
            "'[-3:-2]={x,NULL}'::text[]",
            bounded(vec![text("x"), null()], vec![-3]),
        ),
        (
            "'[0:1][5:5]={{a},{b}}'::text[]",
            bounded(
                vec![array(vec![text("a")]), array(vec![text("b")])],
                vec![0, 5],
            ),
        ),
        (
            "'[1:1][0:1]={{1,2}}'::int8[]",
            bounded(vec![array(vec![int(1), int(2)])], vec![1, 0]),
        ),
        // Elements bound through PostgreSQL's text input: the array goes as a literal.
        (
            "'[7:8]={10.0.0.1,::1}'::inet[]",
            bounded(vec![text("10.0.0.1"), text("::1")], vec![7]),
        ),
        ("'{}'::int4[]", array(vec![])),
    ];
    for (literal, want) in cases {
        let got = query(&mut client, &format!("SELECT {literal}"), vec![])
            .await
            .unwrap_or_else(|e| panic!("{literal}: {e:?}"));
        assert!(
            same(scalar(&got), &want),
            "{literal}: got {:?}",
            scalar(&got)
        );
        let ty = literal.rsplit("::").next().expect("a cast");
        let back = query(
            &mut client,
            &format!("SELECT $1::{ty}, ($1::{ty})::text"),
            vec![want.clone()],
        )
        .await
        .unwrap_or_else(|e| panic!("{literal} as a parameter: {e:?}"));
        assert!(
            same(&back.rows[0].values[0], &want),
            "{literal} back: {back:?}"
        );
        let printed: String = db
            .query_one(&format!("SELECT ({literal})::text"), &[])
            .await
            .expect("PostgreSQL's text")
            .get(0);
        assert_eq!(back.rows[0].values[1], text(&printed), "{literal}");
    }
    // Bounds that do not fit the array are refused, naming the field.
    let refused = [
        (
            bounded(vec![], vec![0]),
            Code::InvalidArgument,
            "params[0].array_value.lower_bounds",
        ),
        (
            bounded(vec![int(1)], vec![0, 0]),
            Code::InvalidArgument,
            "params[0].array_value.lower_bounds",
        ),
        (
            bounded(vec![bounded(vec![int(1)], vec![0])], vec![]),
            Code::InvalidArgument,
            "params[0].array_value.values[0].array_value.lower_bounds",
        ),
        (
            bounded(vec![int(1)], vec![i32::MAX]),
            Code::OutOfRange,
            "params[0].array_value.lower_bounds[0]",
        ),
    ];
    for (param, code, field) in refused {
        let e = query(&mut client, "SELECT $1::int4[]", vec![param.clone()])
            .await
            .expect_err("refused");
        assert_eq!(e.code(), code, "{param:?}: {e:?}");
        assert_eq!(bad_field(&e).as_deref(), Some(field), "{param:?}: {e:?}");
    }
    // The largest bound PostgreSQL takes is accepted, and the smallest.
    for edge in [i32::MAX - 1, i32::MIN] {
        let top = bounded(vec![int(1)], vec![edge]);
        let got = query(&mut client, "SELECT $1::int4[]", vec![top.clone()])
            .await
            .unwrap_or_else(|e| panic!("lower bound {edge} fits: {e:?}"));
        assert!(same(scalar(&got), &top));
    }
}

/// `v` as an SQL string literal.
fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

#[tokio::test]
async fn columns_report_names_oids_and_pg_type_names() {
    let sidecar = Sidecar::start(&[]);
    let mut client = sidecar.client().await;
    let resp = query(
        &mut client,
        "SELECT 1::int4 AS a, 'x'::text AS b, '{1}'::int4[] AS c, now() AS d",
        vec![],
    )
    .await
    .expect("query");
    let cols: Vec<(&str, u32, &str)> = resp
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_oid, c.type_name.as_str()))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("a", 23, "int4"),
            ("b", 25, "text"),
            ("c", 1007, "_int4"),
            ("d", 1184, "timestamptz")
        ]
    );
}

/// The binding rules of API.md: each case binds to the types it names.
#[tokio::test]
async fn parameters_bind_by_the_contract_rules() {
    let sidecar = Sidecar::start(&[]);
    let mut client = sidecar.client().await;
    let cases: Vec<(&str, Value, Value)> = vec![
        ("SELECT $1::int8", numeric("12.000"), int(12)),
        ("SELECT $1::int2", numeric("-7"), int(-7)),
        ("SELECT $1::float8", int(3), float(3.0)),
        ("SELECT $1::float4", numeric("0.5"), float(0.5)),
        (
            "SELECT $1::numeric",
            int(i64::MIN),
            numeric("-9223372036854775808"),
        ),
        ("SELECT $1::numeric", float(0.1), numeric("0.1")),
        ("SELECT $1::numeric", float(f64::NAN), numeric("NaN")),
        ("SELECT $1::interval", text("1 day"), text("1 day")),
        (
            "SELECT $1::int4[]",
            text("{1,2}"),
            array(vec![int(1), int(2)]),
        ),
        ("SELECT $1::inet", text("10.0.0.1"), text("10.0.0.1")),
        ("SELECT $1::bool", text("yes"), boolean(true)),
        ("SELECT $1::int4", text("42"), int(42)),
        ("SELECT $1::timestamp", timestamp(0, 0), timestamp(0, 0)),
        ("SELECT $1::text", null(), null()),
        (
            "SELECT $1::uuid",
            uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
            uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ),
        (
            "SELECT $1::jsonb",
            json("[1, {\"a\": 2}]"),
            json("[1, {\"a\": 2}]"),
        ),
        (
            "SELECT $1::inet[]",
            array(vec![text("10.0.0.1"), null(), text("::1")]),
            array(vec![text("10.0.0.1"), null(), text("::1")]),
        ),
        (
            "SELECT $1::text[]",
            array(vec![text("a,b"), text("{"), null()]),
            array(vec![text("a,b"), text("{"), null()]),
        ),
        (
            "SELECT $1::int8[]",
            array(vec![
                array(vec![int(1), int(2)]),
                array(vec![int(3), int(4)]),
            ]),
            array(vec![
                array(vec![int(1), int(2)]),
                array(vec![int(3), int(4)]),
            ]),
        ),
        (
            "SELECT $1::numeric[]",
            array(vec![numeric("1.50"), int(2)]),
            array(vec![numeric("1.50"), numeric("2")]),
        ),
        ("SELECT array_length($1::int4[], 1)", array(vec![]), null()),
    ];
    for (sql, param, want) in cases {
        let got = query(&mut client, sql, vec![param.clone()])
            .await
            .unwrap_or_else(|e| panic!("{sql} with {param:?}: {e:?}"));
        assert!(
            same(scalar(&got), &want),
            "{sql} with {param:?}: got {:?}",
            scalar(&got)
        );
    }
}
