//! Owns PostgreSQL's text forms: the shared error type and helpers, and `text_form`, which
//! picks each type's text output; one submodule per type family holds the forms themselves.
//!
//! Output matches Postgres 15 with default settings (DateStyle ISO, IntervalStyle postgres).
//! Every function is pure and total: malformed binary input yields `PgTextError::Malformed`,
//! never a panic, because the bytes may come from anywhere.

use std::error::Error as StdError;

use postgres_protocol::types as wire;
use tokio_postgres::types::Type;

use super::decode::{Class, DecodeError, Nested, class, malformed};

mod bits;
mod composite;
mod datetime;
mod network;
mod numeric;

pub use bits::{bits_to_string, pg_lsn_to_string};
pub use composite::{quote_array_element, quote_composite_field};
pub(crate) use composite::{write_array_bounds, write_array_literal};
pub use datetime::{
    date_from_str, date_to_string, interval_to_string, time_to_string, timetz_to_string,
};
pub use network::{inet_to_string, macaddr_to_string};
pub use numeric::{numeric_from_str, numeric_to_string};

/// Errors from decoding binary values or parsing text.
#[derive(Debug, thiserror::Error)]
pub enum PgTextError {
    /// The binary value is too short, too long or internally inconsistent.
    #[error("malformed binary value: {0}")]
    Malformed(&'static str),
    /// Text that Postgres's `numeric_in` would reject (message mirrors the server's).
    #[error("{0}")]
    InvalidNumeric(String),
    /// Text that is not an accepted date (message mirrors the server's).
    #[error("{0}")]
    InvalidDate(String),
}

use PgTextError::Malformed;

fn bytes<const N: usize>(raw: &[u8], at: usize) -> Result<[u8; N], PgTextError> {
    raw.get(at..at.saturating_add(N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(Malformed("value too short"))
}

/// C `isspace` in the C locale; unlike `char::is_ascii_whitespace` it includes `\v`,
/// which Postgres treats as whitespace in numeric_in, record_out and array_out.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r')
}

/// PostgreSQL's text output for a non-NULL value of a type decodable here. Sessions run with
/// DateStyle ISO, IntervalStyle postgres and TimeZone UTC, which these forms assume.
/// Values inside an anonymous record that are not decoded here go through `nested`.
pub(super) fn text_form<'r>(
    ty: &Type,
    raw: &'r [u8],
    nested: &mut Nested<'r>,
) -> Result<String, DecodeError> {
    let bad = |e: Box<dyn StdError + Sync + Send>| malformed(ty, e);
    let bad_text = |e: PgTextError| malformed(ty, e);
    Ok(match class(ty) {
        Class::Bool => if wire::bool_from_sql(raw).map_err(bad)? {
            "t"
        } else {
            "f"
        }
        .to_owned(),
        Class::Int2 => wire::int2_from_sql(raw).map_err(bad)?.to_string(),
        Class::Int4 => wire::int4_from_sql(raw).map_err(bad)?.to_string(),
        Class::Int8 => wire::int8_from_sql(raw).map_err(bad)?.to_string(),
        Class::Oid => wire::oid_from_sql(raw).map_err(bad)?.to_string(),
        Class::Float4 => float_text(wire::float4_from_sql(raw).map_err(bad)?.into(), 6),
        Class::Float8 => float_text(wire::float8_from_sql(raw).map_err(bad)?, 15),
        Class::Numeric => numeric_to_string(raw).map_err(bad_text)?,
        Class::Text | Class::Json => wire::text_from_sql(raw).map_err(bad)?.to_owned(),
        Class::VersionedText => match raw.split_first() {
            Some((1, text)) => wire::text_from_sql(text).map_err(bad)?.to_owned(),
            _ => return Err(malformed(ty, "unknown format version")),
        },
        Class::Bytea => {
            let mut s = String::with_capacity(2 + raw.len() * 2);
            s.push_str("\\x");
            for b in raw {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
        Class::Uuid => {
            let b = wire::uuid_from_sql(raw).map_err(bad)?;
            let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                h[0..4].concat(),
                h[4..6].concat(),
                h[6..8].concat(),
                h[8..10].concat(),
                h[10..16].concat()
            )
        }
        Class::Char => {
            // charout: NUL is the empty string, a byte with the high bit set is `\ooo`.
            match wire::char_from_sql(raw).map_err(bad)? as u8 {
                0 => String::new(),
                b if b >= 0x80 => format!("\\{b:03o}"),
                b => char::from(b).to_string(),
            }
        }
        Class::Date => date_to_string(wire::date_from_sql(raw).map_err(bad)?),
        Class::Time => time_to_string(wire::time_from_sql(raw).map_err(bad)?),
        Class::Timetz => timetz_to_string(raw).map_err(bad_text)?,
        Class::Timestamp => {
            datetime::timestamp_text(wire::timestamp_from_sql(raw).map_err(bad)?, "")
        }
        Class::Timestamptz => {
            datetime::timestamp_text(wire::timestamp_from_sql(raw).map_err(bad)?, "+00")
        }
        Class::Interval => interval_to_string(raw).map_err(bad_text)?,
        Class::Inet => inet_to_string(raw).map_err(bad_text)?,
        Class::Macaddr => macaddr_to_string(raw).map_err(bad_text)?,
        Class::Bits => bits_to_string(raw).map_err(bad_text)?,
        Class::PgLsn => pg_lsn_to_string(raw).map_err(bad_text)?,
        Class::Array(elem) => composite::array_text(ty, elem, raw, nested)?,
        Class::Vector(elem) => composite::vector_text(ty, elem, raw, nested)?,
        Class::Range(elem) => composite::range_text(ty, elem, raw, nested)?,
        Class::Composite(fields) => composite::record_text(ty, Some(&fields), raw, nested)?,
        Class::Record => composite::record_text(ty, None, raw, nested)?,
        Class::Unknown => return Err(malformed(ty, "no decoder for this type")),
    })
}

/// float4/float8 as PostgreSQL prints them: the shortest exact digits, in exponent form when
/// the decimal exponent is below -4 or at least `digits` (FLT_DIG / DBL_DIG).
fn float_text(v: f64, digits: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // float4 values are printed with float4's shortest digits, not f64's.
    let sci = if digits == 6 {
        format!("{:e}", v as f32)
    } else {
        format!("{v:e}")
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if v != 0.0 && (exp < -4 || exp >= digits) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else if digits == 6 {
        (v as f32).to_string()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod test_support {
    //! Table helpers for the submodules' tests.

    pub(super) fn unhex(h: &str) -> Vec<u8> {
        let d = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).unwrap();
        (0..h.len()).step_by(2).map(d).collect()
    }

    pub(super) fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Rows of a `|`-separated table, one per non-blank line (indentation ignored).
    pub(super) fn rows(table: &str) -> impl Iterator<Item = Vec<&str>> {
        let lines = table.lines().map(str::trim_start).filter(|l| !l.is_empty());
        lines.map(|l| l.split('|').collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_postgres() {
        let cases: &[(f64, i32, &str)] = &[
            (1.0, 15, "1"),
            (-0.5, 15, "-0.5"),
            (0.0001, 15, "0.0001"),
            (0.00001, 15, "1e-05"),
            (1e15, 15, "1e+15"),
            (123456789012345.0, 15, "123456789012345"),
            (1.7976931348623157e308, 15, "1.7976931348623157e+308"),
            (f64::NAN, 15, "NaN"),
            (f64::NEG_INFINITY, 15, "-Infinity"),
            (1.5, 6, "1.5"),
            (1234567.0, 6, "1.234567e+06"),
            (0.1f32 as f64, 6, "0.1"),
        ];
        for &(v, digits, want) in cases {
            assert_eq!(float_text(v, digits), want, "{v}");
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // Deterministic xorshift fuzz; every third buffer starts with 0 so length checks sometimes pass.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for n in 0..20_000usize {
            let mut buf: Vec<u8> = (0..n % 40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[3]
                })
                .collect();
            if n % 3 == 0 && !buf.is_empty() {
                buf[0] = 0;
            }
            let decoders = [
                numeric_to_string,
                timetz_to_string,
                interval_to_string,
                inet_to_string,
                macaddr_to_string,
                bits_to_string,
                pg_lsn_to_string,
            ];
            for decode in decoders {
                let _ = decode(&buf);
            }
            let text = String::from_utf8_lossy(&buf);
            let _ = (numeric_from_str(&text), date_from_str(&text));
            let v = i64::from_le_bytes(x.to_le_bytes());
            let _ = (
                date_to_string(
                    v.to_le_bytes()[0..4]
                        .iter()
                        .fold(0, |a, &b| a << 8 | i32::from(b)),
                ),
                time_to_string(v),
            );
        }
        for v in [i64::MIN, i64::MAX, -1] {
            assert!(!time_to_string(v).is_empty());
        }
        for v in [i32::MIN + 1, i32::MAX - 1] {
            assert!(!date_to_string(v).is_empty());
        }
    }
}
