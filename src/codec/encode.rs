//! `Value` parameters → what PostgreSQL receives for `$n`, by the binding rules of API.md:
//! each case binds to the types it names, checked here, so a mismatch is a clear
//! `INVALID_ARGUMENT` naming the parameter instead of a protocol error.

use std::error::Error as StdError;

use bytes::BytesMut;
use postgres_protocol::{IsNull as WireNull, types as wire};
use tokio_postgres::types::{Format, IsNull, Kind, ToSql, Type};

use super::{PG_EPOCH_UNIX_MICROS, base_type, is_text_like, text};
use crate::proto::{Value, value::Kind as V};

/// A parameter that cannot be bound to the type PostgreSQL inferred for it.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Wrong number of parameters for the statement.
    #[error("the statement has {expected} parameter(s), {got} given")]
    Count {
        /// Placeholders in the statement.
        expected: usize,
        /// Values in the request.
        got: usize,
    },
    /// The value cannot bind to the parameter's type.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault, e.g. `params[1]` or `params[0].array_value.values[2]`.
        field: String,
        /// Why, naming the expected type.
        message: String,
    },
    /// The value is of the right kind but outside the type's range.
    #[error("{field}: {message}")]
    OutOfRange {
        /// The field at fault.
        field: String,
        /// Which range.
        message: String,
    },
}

impl BindError {
    /// The request field at fault, for `google.rpc.BadRequest`.
    pub fn field(&self) -> &str {
        match self {
            BindError::Count { .. } => "params",
            BindError::Invalid { field, .. } | BindError::OutOfRange { field, .. } => field,
        }
    }
}

/// A bound parameter, ready for the wire.
#[derive(Debug, Clone)]
pub enum Param {
    /// SQL NULL.
    Null,
    /// The type's binary form.
    Binary(Vec<u8>),
    /// Text run through the type's own input function.
    Text(String),
}

impl ToSql for Param {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Param::Null => return Ok(IsNull::Yes),
            Param::Binary(b) => out.extend_from_slice(b),
            Param::Text(s) => out.extend_from_slice(s.as_bytes()),
        }
        Ok(IsNull::No)
    }

    /// Types were checked when the parameter was bound.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.to_sql(ty, out)
    }

    fn encode_format(&self, _: &Type) -> Format {
        match self {
            Param::Text(_) => Format::Text,
            _ => Format::Binary,
        }
    }
}

/// Binds each value to the type PostgreSQL inferred for its placeholder.
pub fn bind_params(types: &[Type], values: &[Value]) -> Result<Vec<Param>, BindError> {
    if types.len() != values.len() {
        return Err(BindError::Count {
            expected: types.len(),
            got: values.len(),
        });
    }
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (ty, v))| bind(ty, v, &format!("params[{i}]")))
        .collect()
}

fn invalid(field: &str, message: impl Into<String>) -> BindError {
    BindError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn out_of_range(field: &str, message: impl Into<String>) -> BindError {
    BindError::OutOfRange {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn case_name(v: &V) -> &'static str {
    match v {
        V::NullValue(_) => "null_value",
        V::BoolValue(_) => "bool_value",
        V::IntValue(_) => "int_value",
        V::FloatValue(_) => "float_value",
        V::TextValue(_) => "text_value",
        V::BytesValue(_) => "bytes_value",
        V::NumericValue(_) => "numeric_value",
        V::TimestampValue(_) => "timestamp_value",
        V::DateValue(_) => "date_value",
        V::UuidValue(_) => "uuid_value",
        V::JsonValue(_) => "json_value",
        V::ArrayValue(_) => "array_value",
    }
}

fn binary(f: impl FnOnce(&mut BytesMut)) -> Param {
    let mut buf = BytesMut::new();
    f(&mut buf);
    Param::Binary(buf.to_vec())
}

fn bind(declared: &Type, value: &Value, field: &str) -> Result<Param, BindError> {
    let Some(kind) = &value.kind else {
        return Err(invalid(
            field,
            "Value has no case set (use null_value for NULL)",
        ));
    };
    let ty = base_type(declared);
    let mismatch = || {
        invalid(
            field,
            format!(
                "{} cannot bind to a parameter of type {}",
                case_name(kind),
                ty.name()
            ),
        )
    };
    Ok(match kind {
        V::NullValue(_) => Param::Null,
        V::TextValue(s) => {
            if s.contains('\0') {
                return Err(invalid(field, "text cannot contain the NUL character"));
            }
            // Text of any type goes through that type's input function; for text-like types
            // that is the text itself.
            Param::Text(s.clone())
        }
        V::BoolValue(b) if *ty == Type::BOOL => binary(|buf| wire::bool_to_sql(*b, buf)),
        V::IntValue(n) => bind_int(ty, i128::from(*n), field).ok_or_else(mismatch)??,
        V::FloatValue(x) => match *ty {
            Type::FLOAT8 => binary(|buf| wire::float8_to_sql(*x, buf)),
            Type::FLOAT4 => {
                let narrow = *x as f32;
                if x.is_finite() && !narrow.is_finite() {
                    return Err(out_of_range(
                        field,
                        format!("{x} is out of range for float4"),
                    ));
                }
                binary(|buf| wire::float4_to_sql(narrow, buf))
            }
            Type::NUMERIC => numeric(&float_decimal(*x), field)?,
            _ => return Err(mismatch()),
        },
        V::NumericValue(s) => bind_decimal(ty, s, field)?.ok_or_else(mismatch)?,
        V::BytesValue(b) if *ty == Type::BYTEA => Param::Binary(b.clone()),
        V::TimestampValue(ts) if matches!(*ty, Type::TIMESTAMPTZ | Type::TIMESTAMP) => {
            if !(0..1_000_000_000).contains(&ts.nanos) {
                return Err(invalid(field, "timestamp nanos must be within 0..1e9"));
            }
            let micros = i128::from(ts.seconds) * 1_000_000 + i128::from(ts.nanos / 1000)
                - i128::from(PG_EPOCH_UNIX_MICROS);
            let micros = i64::try_from(micros)
                .map_err(|_| out_of_range(field, "timestamp is out of range"))?;
            binary(|buf| wire::timestamp_to_sql(micros, buf))
        }
        V::DateValue(s) if *ty == Type::DATE => {
            let days = text::date_from_str(s).map_err(|e| invalid(field, e.to_string()))?;
            binary(|buf| wire::date_to_sql(days, buf))
        }
        V::UuidValue(s) if *ty == Type::UUID => {
            let bytes =
                parse_uuid(s).ok_or_else(|| invalid(field, format!("{s:?} is not a UUID")))?;
            binary(|buf| wire::uuid_to_sql(bytes, buf))
        }
        // PostgreSQL refuses a NUL byte in any text it receives (22021); refused here, the
        // error names the parameter like every other binding error. (An escaped `\u0000`
        // is JSON, and left to PostgreSQL: json keeps it, jsonb refuses it.)
        V::JsonValue(s) if s.contains('\0') && matches!(*ty, Type::JSON | Type::JSONB) => {
            return Err(invalid(
                field,
                "JSON text cannot contain a raw NUL character (json takes the escape \\u0000, \
                 jsonb takes neither)",
            ));
        }
        V::JsonValue(s) if *ty == Type::JSON => Param::Binary(s.as_bytes().to_vec()),
        V::JsonValue(s) if *ty == Type::JSONB => {
            // jsonb's binary form: format version 1, then the JSON text.
            let mut b = Vec::with_capacity(s.len() + 1);
            b.push(1);
            b.extend_from_slice(s.as_bytes());
            Param::Binary(b)
        }
        V::ArrayValue(_) => match ty.kind() {
            Kind::Array(elem) => array(elem, value, field)?,
            _ => return Err(mismatch()),
        },
        _ => return Err(mismatch()),
    })
}

/// A decimal string to a numeric, float or integer type; `None` when the type takes none.
fn bind_decimal(ty: &Type, s: &str, field: &str) -> Result<Option<Param>, BindError> {
    Ok(Some(match *ty {
        Type::NUMERIC => numeric(s, field)?,
        Type::FLOAT4 | Type::FLOAT8 => {
            let x: f64 = s
                .trim()
                .parse()
                .map_err(|_| invalid(field, format!("{s:?} is not a decimal number")))?;
            let float = Value {
                kind: Some(V::FloatValue(x)),
            };
            bind(ty, &float, field)?
        }
        _ => {
            let n = exact_integer(s).ok_or_else(|| {
                invalid(
                    field,
                    format!("{s:?} is not an integer, as {} requires", ty.name()),
                )
            })?;
            let Some(n) = n else {
                return Err(out_of_range(
                    field,
                    format!("{s} is out of range for {}", ty.name()),
                ));
            };
            match bind_int(ty, n, field) {
                Some(bound) => bound?,
                None => return Ok(None),
            }
        }
    }))
}

/// An integer to an integer, float or numeric type; `None` when the type takes no integer.
fn bind_int(ty: &Type, n: i128, field: &str) -> Option<Result<Param, BindError>> {
    let range = |lo: i128, hi: i128| {
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(out_of_range(
                field,
                format!("{n} is out of range for {}", ty.name()),
            ))
        }
    };
    Some(match *ty {
        Type::INT2 => range(i16::MIN.into(), i16::MAX.into())
            .map(|n| binary(|buf| wire::int2_to_sql(n as i16, buf))),
        Type::INT4 => range(i32::MIN.into(), i32::MAX.into())
            .map(|n| binary(|buf| wire::int4_to_sql(n as i32, buf))),
        Type::INT8 => range(i64::MIN.into(), i64::MAX.into())
            .map(|n| binary(|buf| wire::int8_to_sql(n as i64, buf))),
        Type::OID => {
            range(0, u32::MAX.into()).map(|n| binary(|buf| wire::oid_to_sql(n as u32, buf)))
        }
        Type::FLOAT4 => Ok(binary(|buf| wire::float4_to_sql(n as f32, buf))),
        Type::FLOAT8 => Ok(binary(|buf| wire::float8_to_sql(n as f64, buf))),
        Type::NUMERIC => numeric(&n.to_string(), field),
        _ => return None,
    })
}

fn numeric(s: &str, field: &str) -> Result<Param, BindError> {
    text::numeric_from_str(s)
        .map(Param::Binary)
        .map_err(|e| invalid(field, format!("{s:?} is not a valid numeric: {e}")))
}

/// A float as exact decimal text for numeric: Rust's shortest round-trip digits.
fn float_decimal(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{x:e}")
    }
}

/// `Some(Some(n))` for an integral decimal like "42", "-7", "12.000"; `Some(None)` when
/// integral but too large for i128; `None` when not an integer.
fn exact_integer(s: &str) -> Option<Option<i128>> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = int.strip_prefix(['-', '+']).unwrap_or(int);
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b == b'0');
    well_formed.then(|| int.parse::<i128>().ok())
}

/// Canonical (`8-4-4-4-12`) or plain 32-digit hex UUID text → its 16 bytes.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = if s.len() == 36 {
        let dashes = [8, 13, 18, 23];
        if !dashes.iter().all(|&i| s.as_bytes()[i] == b'-') {
            return None;
        }
        s.chars().filter(|&c| c != '-').collect()
    } else {
        s.to_owned()
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A (possibly nested) `ArrayValue` → the binary array form. Elements bind by the same rules
/// as parameters; an element that needs the type's text input (e.g. text_value for inet[])
/// makes the whole array go as PostgreSQL's array text form instead.
fn array(elem: &Type, value: &Value, field: &str) -> Result<Param, BindError> {
    let mut dims = Vec::new();
    let mut cells = Vec::new();
    flatten(value, 0, &mut dims, &mut cells, field)?;
    let lower_bounds = lower_bounds(value, &dims, field)?;
    let elem_base = base_type(elem);
    let bound: Vec<(Param, String)> = cells
        .into_iter()
        .map(|(v, f)| Ok((bind(elem, v, &f)?, f)))
        .collect::<Result<_, BindError>>()?;
    if bound.iter().any(|(p, _)| matches!(p, Param::Text(_))) && !is_text_like(elem_base) {
        return text_array(&dims, &lower_bounds, &bound);
    }
    let mut buf = BytesMut::new();
    let dimensions =
        dims.iter()
            .zip(&lower_bounds)
            .map(|(&len, &lower_bound)| wire::ArrayDimension {
                len: len as i32,
                lower_bound,
            });
    wire::array_to_sql(
        dimensions,
        elem.oid(),
        bound.iter(),
        |(p, _), buf| {
            Ok(match p {
                Param::Null => WireNull::Yes,
                Param::Binary(b) => {
                    buf.extend_from_slice(b);
                    WireNull::No
                }
                Param::Text(s) => {
                    buf.extend_from_slice(s.as_bytes());
                    WireNull::No
                }
            })
        },
        &mut buf,
    )
    .map_err(|e| invalid(field, e.to_string()))?;
    Ok(Param::Binary(buf.to_vec()))
}

/// The lower bound of each of `dims`, from the outermost ArrayValue's `lower_bounds` (all 1
/// when it is empty), checked against the array's shape.
fn lower_bounds(value: &Value, dims: &[usize], field: &str) -> Result<Vec<i32>, BindError> {
    let Some(V::ArrayValue(arr)) = &value.kind else {
        unreachable!("lower_bounds is called on array values only")
    };
    let at = format!("{field}.array_value.lower_bounds");
    if arr.lower_bounds.is_empty() {
        return Ok(vec![1; dims.len()]);
    }
    if arr.values.is_empty() {
        return Err(invalid(
            &at,
            "an empty array has no dimensions, so no lower bounds: leave lower_bounds empty",
        ));
    }
    if arr.lower_bounds.len() != dims.len() {
        return Err(invalid(
            &at,
            format!(
                "{} lower bounds for an array of {} dimensions: give one per dimension, or \
                 none for all 1",
                arr.lower_bounds.len(),
                dims.len()
            ),
        ));
    }
    for (d, (&lower, &len)) in arr.lower_bounds.iter().zip(dims).enumerate() {
        // PostgreSQL's own limit (ArrayCheckBounds): lower bound plus length fits int4.
        if i64::from(lower) + len as i64 > i64::from(i32::MAX) {
            return Err(out_of_range(
                &format!("{at}[{d}]"),
                format!(
                    "lower bound {lower} with {len} elements: a bound plus its dimension's \
                     length must not pass 2147483647"
                ),
            ));
        }
    }
    Ok(arr.lower_bounds.clone())
}

/// Walks nested arrays: records each dimension's length, checks the shape is rectangular,
/// and collects the leaf values with their field paths.
fn flatten<'v>(
    value: &'v Value,
    depth: usize,
    dims: &mut Vec<usize>,
    cells: &mut Vec<(&'v Value, String)>,
    field: &str,
) -> Result<(), BindError> {
    let Some(V::ArrayValue(arr)) = &value.kind else {
        unreachable!("flatten is called on array values only")
    };
    if depth > 0 && !arr.lower_bounds.is_empty() {
        return Err(invalid(
            &format!("{field}.array_value.lower_bounds"),
            "lower bounds belong on the outermost array, one per dimension",
        ));
    }
    match dims.get(depth) {
        None => dims.push(arr.values.len()),
        Some(&len) if len != arr.values.len() => {
            return Err(invalid(
                field,
                "multidimensional arrays must be rectangular",
            ));
        }
        Some(_) => {}
    }
    let nested = arr
        .values
        .iter()
        .filter(|v| matches!(v.kind, Some(V::ArrayValue(_))))
        .count();
    if nested != 0 && nested != arr.values.len() {
        return Err(invalid(
            field,
            "array mixes nested arrays and scalar elements",
        ));
    }
    if depth > 6 {
        return Err(invalid(field, "arrays have at most 6 dimensions"));
    }
    for (i, v) in arr.values.iter().enumerate() {
        let path = format!("{field}.array_value.values[{i}]");
        if nested != 0 {
            flatten(v, depth + 1, dims, cells, &path)?;
        } else {
            if depth + 1 != dims.len() {
                return Err(invalid(
                    field,
                    "multidimensional arrays must be rectangular",
                ));
            }
            cells.push((v, path));
        }
    }
    if nested == 0 && depth + 1 != dims.len() && !arr.values.is_empty() {
        return Err(invalid(
            field,
            "multidimensional arrays must be rectangular",
        ));
    }
    Ok(())
}

/// The array as PostgreSQL's array literal, sent in text form, with `[lower:upper]=`
/// decoration when a bound is not 1. Only reached when some element is text for a non-text
/// element type, so every element is re-expressed as text.
fn text_array(
    dims: &[usize],
    lower_bounds: &[i32],
    cells: &[(Param, String)],
) -> Result<Param, BindError> {
    let texts: Vec<Option<String>> = cells
        .iter()
        .map(|(p, f)| match p {
            Param::Null => Ok(None),
            Param::Text(s) => Ok(Some(s.clone())),
            Param::Binary(_) => Err(invalid(
                f,
                "when any element of this array is text_value, all its elements must be \
                 text_value or null_value",
            )),
        })
        .collect::<Result<_, _>>()?;
    let mut out = String::new();
    text::write_array_bounds(dims, lower_bounds, &mut out);
    let mut it = texts.into_iter();
    text::write_array_literal(dims, &mut it, &mut out);
    Ok(Param::Text(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_integers() {
        assert_eq!(exact_integer("42"), Some(Some(42)));
        assert_eq!(exact_integer("-7.000"), Some(Some(-7)));
        assert_eq!(exact_integer("1.5"), None);
        assert_eq!(exact_integer("1e3"), None);
        assert_eq!(exact_integer("9".repeat(60).as_str()), Some(None));
    }

    #[test]
    fn uuids_parse_in_both_forms() {
        let want = Some([
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ]);
        assert_eq!(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), want);
        assert_eq!(parse_uuid("A0EEBC999C0B4EF8BB6D6BB9BD380A11"), want);
        assert_eq!(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"), None);
        assert_eq!(parse_uuid("a0eebc99x9c0b-4ef8-bb6d-6bb9bd380a11"), None);
    }

    #[test]
    fn ragged_arrays_are_refused() {
        let int = |n| Value {
            kind: Some(V::IntValue(n)),
        };
        let arr = |values: Vec<Value>| Value {
            kind: Some(V::ArrayValue(crate::proto::ArrayValue {
                values,
                ..Default::default()
            })),
        };
        let ragged = arr(vec![arr(vec![int(1), int(2)]), arr(vec![int(3)])]);
        let err = bind_params(&[Type::INT4_ARRAY], &[ragged]).unwrap_err();
        assert!(err.field().starts_with("params[0]"), "{}", err.field());
        let mixed = arr(vec![arr(vec![int(1)]), int(2)]);
        assert!(bind_params(&[Type::INT4_ARRAY], &[mixed]).is_err());
    }

    #[test]
    fn text_elements_of_a_non_text_array_bind_as_one_literal() {
        let text = |s: &str| Value {
            kind: Some(V::TextValue(s.to_owned())),
        };
        let null = Value {
            kind: Some(V::NullValue(0)),
        };
        let arr = |values: Vec<Value>| Value {
            kind: Some(V::ArrayValue(crate::proto::ArrayValue {
                values,
                ..Default::default()
            })),
        };
        let nested = arr(vec![
            arr(vec![text("10.0.0.1"), null.clone()]),
            arr(vec![text("::1"), text("a b")]),
        ]);
        let bound = bind_params(&[Type::INET_ARRAY], &[nested]).unwrap();
        let [Param::Text(literal)] = bound.as_slice() else {
            panic!("expected one text parameter, got {bound:?}");
        };
        assert_eq!(literal, r#"{{10.0.0.1,NULL},{::1,"a b"}}"#);
    }
}
