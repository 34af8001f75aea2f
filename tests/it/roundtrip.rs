//! Property tests: every representable `Value` round-trips through the real server and a real
//! PostgreSQL. Each generated value is bound as `$1`, cast to its type, and must come back
//! equal (`SELECT $1::<type>`), NULL included. Strategies cover each Value kind's whole range
//! as PostgreSQL can hold it: all i16/i32/i64, f32 and f64 (NaN, infinities, -0.0), numeric
//! strings of any scale, text without NUL (PostgreSQL cannot store it), any bytes, every date
//! and timestamp PostgreSQL and protobuf both represent, UUIDs, JSON, and arrays with NULLs.

use crate::support::*;
use pgsidecar::proto::Value;
use pgsidecar::proto::data_access_client::DataAccessClient;
use pgsidecar::proto::value::Kind;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

struct Harness {
    runtime: Runtime,
    client: DataAccessClient<Channel>,
}

impl Harness {
    /// What `SELECT $1::<cast>` returns for `value`.
    fn echo(&self, cast: &str, value: Value) -> Result<Value, TestCaseError> {
        let sql = format!("SELECT $1::{cast}");
        let mut client = self.client.clone();
        let r = self.runtime.block_on(query(&mut client, &sql, vec![value]));
        let r = r.map_err(|e| TestCaseError::fail(format!("{sql}: {e:?}")))?;
        Ok(scalar(&r).clone())
    }

    /// Runs `cases` generated values of `strategy` through `cast`; each must come back as
    /// `expect(value)` says.
    fn check<S: Strategy>(
        &self,
        cast: &str,
        strategy: S,
        to_value: impl Fn(&S::Value) -> Value,
        same: impl Fn(&Value, &Value) -> bool,
    ) where
        S::Value: std::fmt::Debug,
    {
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&strategy, |v| {
            let sent = to_value(&v);
            let got = self.echo(cast, sent.clone())?;
            prop_assert!(same(&sent, &got), "{cast}: sent {sent:?}, got {got:?}");
            Ok(())
        });
        if let Err(e) = result {
            panic!("{cast}: {e}");
        }
        // NULL of every type comes back as NULL.
        let got = self.echo(cast, null()).expect("null");
        assert_eq!(got, null(), "{cast}: NULL");
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    a == b
}

/// Floats compare by value, except that any NaN equals any NaN and -0.0 keeps its sign.
fn same_float(a: &Value, b: &Value) -> bool {
    match (&a.kind, &b.kind) {
        (Some(Kind::FloatValue(x)), Some(Kind::FloatValue(y))) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        _ => false,
    }
}

/// A date in years 1..=9999 comes back as the same date_value; any other as text_value.
fn same_date(a: &Value, b: &Value) -> bool {
    match (&a.kind, &b.kind) {
        (Some(Kind::DateValue(x)), Some(Kind::DateValue(y))) => x.len() == 10 && x == y,
        (Some(Kind::DateValue(x)), Some(Kind::TextValue(y))) => x.len() != 10 && x == y,
        _ => false,
    }
}

/// jsonb normalizes whitespace and key order: compare the documents.
fn same_json(a: &Value, b: &Value) -> bool {
    match (&a.kind, &b.kind) {
        (Some(Kind::JsonValue(x)), Some(Kind::JsonValue(y))) => {
            let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
            parse(x).is_some() && parse(x) == parse(y)
        }
        _ => false,
    }
}

fn numeric_text() -> impl Strategy<Value = String> {
    let finite = (
        any::<bool>(),
        "[0-9]{1,30}",
        proptest::option::of("[0-9]{1,20}"),
    );
    let finite = finite.prop_map(|(neg, int, frac)| {
        let int = int.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let sign = if neg
            && (int != "0"
                || frac
                    .as_deref()
                    .is_some_and(|f| !f.trim_matches('0').is_empty()))
        {
            "-"
        } else {
            ""
        };
        match frac {
            Some(f) => format!("{sign}{int}.{f}"),
            None => format!("{sign}{int}"),
        }
    });
    prop_oneof![9 => finite, 1 => Just("NaN".to_owned())]
}

fn json_document() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        "[^\u{0}]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn every_representable_value_round_trips_through_postgres() {
    let runtime = Runtime::new().expect("runtime");
    let sidecar = Sidecar::start(&[]);
    let client = runtime.block_on(sidecar.client());
    let h = Harness { runtime, client };

    h.check("bool", any::<bool>(), |&b| boolean(b), equal);
    h.check("int2", any::<i16>(), |&n| int(n.into()), equal);
    h.check("int4", any::<i32>(), |&n| int(n.into()), equal);
    h.check("int8", any::<i64>(), |&n| int(n), equal);
    h.check("float4", any::<f32>(), |&x| float(x.into()), same_float);
    h.check("float8", any::<f64>(), |&x| float(x), same_float);
    h.check("numeric", numeric_text(), |s| numeric(s), equal);
    h.check("text", "[^\u{0}]{0,64}", |s| text(s), equal);
    h.check(
        "bytea",
        proptest::collection::vec(any::<u8>(), 0..64),
        |b| bytes(b),
        equal,
    );
    // Every day PostgreSQL's date holds, 4713 BC to 5874897 AD, sent in its ISO form:
    // years 1 to 9999 come back as date_value, the rest (BC, 5 digits) as text_value.
    let days = -2_451_545i32..=2_147_483_494 - 2_451_545;
    let to_date = |&d: &i32| date(&pgsidecar::codec::pgtext::date_to_string(d));
    h.check("date", days, to_date, same_date);
    h.check("date", -730_119i32..=2_921_939, to_date, equal);
    // Timestamps: the range protobuf's Timestamp and PostgreSQL both hold, to the microsecond.
    let ts = (-62_135_596_800i64..=253_402_300_799, 0i32..1_000_000);
    h.check(
        "timestamptz",
        ts.clone(),
        |&(s, us)| timestamp(s, us * 1000),
        equal,
    );
    h.check("timestamp", ts, |&(s, us)| timestamp(s, us * 1000), equal);
    let uuid_text = any::<[u8; 16]>().prop_map(|b| {
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    });
    h.check("uuid", uuid_text, |s| uuid(s), equal);
    // json keeps the text as sent; jsonb keeps the document.
    let doc = || json_document().prop_map(|d| d.to_string());
    h.check("json", doc(), |s| json(s), equal);
    h.check("jsonb", doc(), |s| json(s), same_json);
    let ints = proptest::collection::vec(proptest::option::of(any::<i64>()), 0..8);
    let to_array = |v: &Vec<Option<i64>>| array(v.iter().map(|x| x.map_or(null(), int)).collect());
    h.check("int8[]", ints, to_array, equal);
    let texts = proptest::collection::vec(proptest::option::of("[^\u{0}]{0,8}"), 0..8);
    let to_array = |v: &Vec<Option<String>>| {
        array(
            v.iter()
                .map(|x| x.as_deref().map_or(null(), text))
                .collect(),
        )
    };
    h.check("text[]", texts, to_array, equal);
}
