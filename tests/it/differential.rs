//! A differential check of everything the sidecar decodes: each statement of
//! `tests/fixtures/differential.sql` runs directly on PostgreSQL through the simple query
//! protocol (so every value is PostgreSQL's own text output) and through the sidecar (the
//! extended protocol with binary results, decoded by the sidecar), and the two are compared
//! value by value, with column names, row counts and, for statements that fail, SQLSTATEs.
//!
//! The sidecar's typed values are turned back into PostgreSQL's text by the rules the
//! contract states (API.md, the .proto): written here from those rules, not taken from the
//! sidecar's own code, so that a mistake in one is not repeated in the other.
//!
//! A statement preceded by `-- differs: <why>` is an explained, documented difference: the
//! test insists that it still differs, so the explanation cannot go stale. Run with
//! `--nocapture` to see the summary line.

use crate::support::*;
use pgsidecar::proto::{QueryResponse, Value, value::Kind};
use tokio_postgres::SimpleQueryMessage;
use tonic_types::StatusExt;

/// What one statement gave: its columns and rows as text (`None` is NULL) and its count,
/// or the SQLSTATE it failed with.
#[derive(Debug, PartialEq)]
enum Outcome {
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<Option<String>>>,
        count: u64,
    },
    Failed(String),
}

/// One statement of the corpus, with its explanation when it is known to differ.
struct Statement {
    line: usize,
    sql: String,
    differs: Option<String>,
}

fn corpus() -> Vec<Statement> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/differential.sql"
    );
    let text = std::fs::read_to_string(path).expect("the differential corpus");
    let mut statements = Vec::new();
    let mut differs = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(why) = line.strip_prefix("-- differs:") {
            differs = Some(why.trim().to_owned());
        } else if !line.is_empty() && !line.starts_with("--") {
            statements.push(Statement {
                line: i + 1,
                sql: line.to_owned(),
                differs: differs.take(),
            });
        }
    }
    statements
}

/// The statement run directly: PostgreSQL's text for every cell.
async fn direct(db: &tokio_postgres::Client, sql: &str) -> Outcome {
    let messages = match db.simple_query(sql).await {
        Ok(m) => m,
        Err(e) => {
            let code = e.code().map(|c| c.code().to_owned());
            return Outcome::Failed(code.unwrap_or_else(|| format!("no SQLSTATE: {e}")));
        }
    };
    let (mut columns, mut rows, mut count) = (Vec::new(), Vec::new(), 0);
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(row) => {
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(n) => count = n,
            _ => {}
        }
    }
    Outcome::Rows {
        columns,
        rows,
        count,
    }
}

/// The statement run through the sidecar, its values printed back as PostgreSQL would,
/// with the columns' type names.
async fn sidecar(
    client: &mut pgsidecar::proto::data_access_client::DataAccessClient<tonic::transport::Channel>,
    sql: &str,
) -> (Outcome, Vec<String>) {
    match query(client, sql, vec![]).await {
        Ok(resp) => (
            printed(&resp),
            resp.columns.iter().map(|c| c.type_name.clone()).collect(),
        ),
        Err(status) => {
            let details = status.get_error_details();
            let sqlstate = details
                .error_info()
                .and_then(|info| info.metadata.get("sqlstate").cloned());
            let failed = Outcome::Failed(sqlstate.unwrap_or_else(|| {
                format!("no SQLSTATE: {:?} {}", status.code(), status.message())
            }));
            (failed, vec![])
        }
    }
}

/// Whether the two outcomes agree. Cells are compared as text, except cells of float
/// columns (and float arrays), which are compared as the doubles the text stands for:
/// `float_value` carries PostgreSQL's exact double, and its shortest text has more than
/// one spelling (PostgreSQL prints 1e23 as 9.999999999999999e+22).
fn agree(want: &Outcome, got: &Outcome, types: &[String]) -> bool {
    let (
        Outcome::Rows {
            columns: wc,
            rows: wr,
            count: wn,
        },
        Outcome::Rows {
            columns: gc,
            rows: gr,
            count: gn,
        },
    ) = (want, got)
    else {
        return want == got;
    };
    let cells_agree = |w: &[Option<String>], g: &[Option<String>]| {
        w.len() == g.len()
            && w.iter().zip(g).zip(types).all(|((w, g), ty)| match (w, g) {
                (Some(w), Some(g)) if w != g => same_floats(w, g, ty),
                _ => w == g,
            })
    };
    wc == gc
        && wn == gn
        && wr.len() == gr.len()
        && wr.iter().zip(gr).all(|(w, g)| cells_agree(w, g))
}

/// `a` and `b` as float texts of type `ty` (or a flat array of them) denote the same values.
fn same_floats(a: &str, b: &str, ty: &str) -> bool {
    let single = match ty.trim_start_matches('_') {
        "float4" => true,
        "float8" => false,
        _ => return false,
    };
    let parse = |s: &str| -> Option<Vec<u64>> {
        s.trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|x| {
                let x = match x {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    x => x.parse().ok()?,
                };
                Some(if single {
                    u64::from((x as f32).to_bits())
                } else {
                    x.to_bits()
                })
            })
            .collect()
    };
    parse(a).is_some_and(|a| Some(a) == parse(b))
}

fn printed(resp: &QueryResponse) -> Outcome {
    let types: Vec<&str> = resp.columns.iter().map(|c| c.type_name.as_str()).collect();
    Outcome::Rows {
        columns: resp.columns.iter().map(|c| c.name.clone()).collect(),
        rows: resp
            .rows
            .iter()
            .map(|row| {
                row.values
                    .iter()
                    .zip(&types)
                    .map(|(v, ty)| text_of(v, ty))
                    .collect()
            })
            .collect(),
        count: resp.rows_affected,
    }
}

/// PostgreSQL's text for a value of the column type named `ty` (pg_type.typname).
fn text_of(v: &Value, ty: &str) -> Option<String> {
    Some(match v.kind.as_ref()? {
        Kind::NullValue(_) => return None,
        Kind::BoolValue(b) => if *b { "t" } else { "f" }.to_owned(),
        Kind::IntValue(n) => n.to_string(),
        Kind::FloatValue(x) => float_text(*x, ty == "float4"),
        Kind::TextValue(s)
        | Kind::NumericValue(s)
        | Kind::DateValue(s)
        | Kind::UuidValue(s)
        | Kind::JsonValue(s) => s.clone(),
        Kind::BytesValue(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("\\x{hex}")
        }
        Kind::TimestampValue(ts) => timestamp_text(ts.seconds, ts.nanos, ty == "timestamptz"),
        // int2vectorout / oidvectorout: the elements separated by spaces.
        Kind::ArrayValue(arr) if ty == "int2vector" || ty == "oidvector" => {
            let elem = if ty == "oidvector" { "oid" } else { "int2" };
            let texts: Vec<String> = arr.values.iter().filter_map(|v| text_of(v, elem)).collect();
            texts.join(" ")
        }
        Kind::ArrayValue(arr) => {
            let elem = ty.strip_prefix('_').unwrap_or(ty);
            let mut out = String::new();
            if !arr.lower_bounds.is_empty() {
                let mut dims = Vec::new();
                let mut level = Some(arr);
                while let Some(a) = level {
                    dims.push(a.values.len() as i64);
                    level = a.values.first().and_then(|v| match &v.kind {
                        Some(Kind::ArrayValue(inner)) => Some(inner),
                        _ => None,
                    });
                }
                for (lower, len) in arr.lower_bounds.iter().zip(dims) {
                    out.push_str(&format!("[{lower}:{}]", i64::from(*lower) + len - 1));
                }
                out.push('=');
            }
            array_text(arr, elem, &mut out);
            out
        }
    })
}

/// array_out: `{a,"b c",NULL}`, nested per dimension; an element is quoted when empty,
/// `NULL` in any case, or holding `{`, `}`, `"`, `,`, `\` or white space.
fn array_text(arr: &pgsidecar::proto::ArrayValue, elem: &str, out: &mut String) {
    out.push('{');
    for (i, v) in arr.values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match &v.kind {
            Some(Kind::ArrayValue(inner)) => array_text(inner, elem, out),
            _ => match text_of(v, elem) {
                None => out.push_str("NULL"),
                Some(s) => {
                    let quote = s.is_empty()
                        || s.eq_ignore_ascii_case("NULL")
                        || s.chars().any(|c| {
                            matches!(c, '{' | '}' | '"' | ',' | '\\')
                                || matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{0B}' | '\u{0C}')
                        });
                    if quote {
                        out.push('"');
                    }
                    for c in s.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    if quote {
                        out.push('"');
                    }
                }
            },
        }
    }
    out.push('}');
}

/// float4out / float8out with extra_float_digits 1 (PostgreSQL 12 on): the shortest digits
/// that read back exactly, in exponent form when the exponent is below -4 or at least the
/// type's precision (6 for float4, 15 for float8).
fn float_text(x: f64, single: bool) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let (sci, plain) = if single {
        (format!("{:e}", x as f32), format!("{}", x as f32))
    } else {
        (format!("{x:e}"), format!("{x}"))
    };
    let (mantissa, exponent) = sci.split_once('e').expect("exponent form");
    let exponent: i32 = exponent.parse().expect("an exponent");
    let precision = if single { 6 } else { 15 };
    if x != 0.0 && (exponent < -4 || exponent >= precision) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        plain
    }
}

/// timestamp_out in DateStyle ISO, TimeZone UTC: `2020-01-02 03:04:05.5`, `+00` for
/// timestamptz; fractional seconds without trailing zeros.
fn timestamp_text(seconds: i64, nanos: i32, with_zone: bool) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let micros = nanos / 1000;
    if micros != 0 {
        let fraction = format!("{micros:06}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    if with_zone {
        out.push_str("+00");
    }
    out
}

#[tokio::test]
async fn the_corpus_reads_the_same_directly_and_through_the_sidecar() {
    let sidecar_process = Sidecar::start(&[]);
    let mut client = sidecar_process.client().await;
    let db = admin().await;
    // The settings every sidecar session starts with (README, "Sessions").
    db.batch_execute("SET TimeZone = 'UTC'; SET DateStyle = ISO; SET IntervalStyle = postgres")
        .await
        .expect("session settings");
    let statements = corpus();
    assert!(statements.len() > 100, "the corpus is there");
    let (mut agreeing, mut same_error, mut explained) = (0, 0, Vec::new());
    let mut mismatches = Vec::new();
    for s in &statements {
        let want = direct(&db, &s.sql).await;
        let (got, types) = sidecar(&mut client, &s.sql).await;
        match (&s.differs, agree(&want, &got, &types)) {
            (None, true) => {
                agreeing += 1;
                same_error += usize::from(matches!(want, Outcome::Failed(_)));
            }
            (Some(why), false) => explained.push(format!("line {}: {why}", s.line)),
            (None, false) => mismatches.push(format!(
                "line {}: {}\n  PostgreSQL: {want:?}\n  sidecar:    {got:?}",
                s.line, s.sql
            )),
            (Some(why), true) => mismatches.push(format!(
                "line {}: {}\n  marked `differs: {why}`, but it now agrees: remove the mark",
                s.line, s.sql
            )),
        }
    }
    let summary = format!(
        "differential: {} statements, {agreeing} agree ({same_error} of them failing with the \
         same SQLSTATE), {} explained differences, {} mismatches",
        statements.len(),
        explained.len(),
        mismatches.len()
    );
    println!("{summary}");
    for e in &explained {
        println!("  explained: {e}");
    }
    assert!(
        mismatches.is_empty(),
        "{summary}\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn the_oracle_prints_as_postgresql_does() {
    // Checked by hand against psql: these are PostgreSQL 15's outputs.
    assert_eq!(float_text(1e15, false), "1e+15");
    assert_eq!(float_text(123456789012345.0, false), "123456789012345");
    assert_eq!(float_text(0.0001, false), "0.0001");
    assert_eq!(float_text(0.00001, false), "1e-05");
    assert_eq!(float_text(-0.0, false), "-0");
    assert_eq!(float_text(f64::from(1.1f32), true), "1.1");
    assert_eq!(float_text(1234567.0, true), "1.234567e+06");
    assert_eq!(timestamp_text(0, 0, true), "1970-01-01 00:00:00+00");
    assert_eq!(
        timestamp_text(-62_135_596_800, 0, false),
        "0001-01-01 00:00:00"
    );
    assert_eq!(
        timestamp_text(253_402_300_799, 999_999_000, false),
        "9999-12-31 23:59:59.999999"
    );
    assert_eq!(
        timestamp_text(951_782_400, 500_000_000, false),
        "2000-02-29 00:00:00.5"
    );
}
