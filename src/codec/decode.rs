//! Owns decoding result cells into `Value`s: each column type to its own case, and
//! PostgreSQL's text form (from `text`) for types without one.
//!
//! tokio-postgres always asks for results in binary, so the text form of a type without a
//! case (interval, inet, a composite, a range, ...) is rebuilt from its binary form.
//! Types whose binary form is not known here are flagged by [`needs_server_text`]; the caller
//! asks PostgreSQL for their text instead of guessing. An anonymous record (`ROW(..)`,
//! `json_each(..)`) describes itself: each field carries its type OID, so it is printed here
//! field by field, and only the fields of types not known here are asked of PostgreSQL
//! ([`server_pieces`]), since PostgreSQL cannot take an anonymous record back as a parameter.

use std::error::Error as StdError;

use postgres_protocol::types as wire;
use tokio_postgres::types::{FromSql, Kind, Type};

use super::text::{self, text_form};
use super::{PG_EPOCH_UNIX_MICROS, base_type};
use crate::proto::{ArrayValue, Column, Value, value::Kind as V};

/// A result cell that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// PostgreSQL sent bytes that do not fit the column's type: a driver or server bug.
    #[error("malformed {type_name} value from PostgreSQL: {reason}")]
    Malformed {
        /// pg_type name of the column.
        type_name: String,
        /// What did not fit.
        reason: String,
    },
}

/// One result cell in its raw binary form, whatever the column type; `None` is SQL NULL.
#[derive(Debug)]
pub struct RawCell<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawCell<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(RawCell(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(RawCell(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Result of decoding a cell.
#[derive(Debug)]
pub enum Decoded {
    /// The value.
    Value(Value),
    /// The type's binary form is unknown here: ask PostgreSQL for its text output.
    NeedsServer,
}

/// How a type's binary form is read; one place, so [`needs_server_text`], [`printed_by_server`] and the decoders
/// cannot disagree.
pub(super) enum Class<'t> {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    /// Binary form is the UTF-8 text itself.
    Text,
    /// jsonb and jsonpath: a version byte, then the text.
    VersionedText,
    Json,
    Bytea,
    Uuid,
    Char,
    Date,
    Time,
    Timetz,
    Timestamp,
    Timestamptz,
    Interval,
    Inet,
    Macaddr,
    Bits,
    PgLsn,
    Array(&'t Type),
    /// int2vector and oidvector: an array starting at 0 in binary, space-separated in text.
    Vector(&'t Type),
    Range(&'t Type),
    Composite(Vec<&'t Type>),
    /// An anonymous record: its fields' types travel with the value.
    Record,
    Unknown,
}

/// The element type of `record[]`, which tokio-postgres files as a pseudo-type rather than
/// an array.
static RECORD: Type = Type::RECORD;

pub(super) fn class(ty: &Type) -> Class<'_> {
    let ty = base_type(ty);
    if let Kind::Array(elem) = ty.kind()
        && (*ty == Type::INT2_VECTOR || *ty == Type::OID_VECTOR)
    {
        return Class::Vector(elem);
    }
    match ty.kind() {
        Kind::Enum(_) => return Class::Text,
        Kind::Array(elem) => return Class::Array(elem),
        Kind::Range(elem) => return Class::Range(elem),
        Kind::Composite(fields) => {
            return Class::Composite(fields.iter().map(|f| f.type_()).collect());
        }
        Kind::Simple if ty.name() == "citext" => return Class::Text,
        _ => {}
    }
    match *ty {
        Type::BOOL => Class::Bool,
        Type::INT2 => Class::Int2,
        Type::INT4 => Class::Int4,
        Type::INT8 => Class::Int8,
        Type::OID | Type::XID | Type::CID => Class::Oid,
        Type::FLOAT4 => Class::Float4,
        Type::FLOAT8 => Class::Float8,
        Type::NUMERIC => Class::Numeric,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
            Class::Text
        }
        Type::JSONB | Type::JSONPATH => Class::VersionedText,
        Type::JSON => Class::Json,
        Type::BYTEA => Class::Bytea,
        Type::UUID => Class::Uuid,
        Type::CHAR => Class::Char,
        Type::DATE => Class::Date,
        Type::TIME => Class::Time,
        Type::TIMETZ => Class::Timetz,
        Type::TIMESTAMP => Class::Timestamp,
        Type::TIMESTAMPTZ => Class::Timestamptz,
        Type::INTERVAL => Class::Interval,
        Type::INET | Type::CIDR => Class::Inet,
        Type::MACADDR | Type::MACADDR8 => Class::Macaddr,
        Type::BIT | Type::VARBIT => Class::Bits,
        Type::PG_LSN => Class::PgLsn,
        Type::RECORD => Class::Record,
        Type::RECORD_ARRAY => Class::Array(&RECORD),
        _ => Class::Unknown,
    }
}

/// True when cells of this type may need PostgreSQL's text output, so that the connection
/// must be free to ask for it before they are complete: types (or types nested in them)
/// whose binary form is not decoded here, and anonymous records, any field of which may be
/// of such a type.
pub fn needs_server_text(ty: &Type) -> bool {
    match class(ty) {
        Class::Unknown | Class::Record => true,
        Class::Array(elem) | Class::Vector(elem) | Class::Range(elem) => needs_server_text(elem),
        Class::Composite(fields) => fields.into_iter().any(needs_server_text),
        _ => false,
    }
}

/// True when a whole cell of this type goes to PostgreSQL to be printed. A record never
/// does (PostgreSQL cannot read an anonymous record back): it is printed here, and only its
/// fields of types not decoded here are sent.
pub(super) fn printed_by_server(ty: &Type) -> bool {
    match class(ty) {
        Class::Unknown => true,
        Class::Array(elem) | Class::Vector(elem) | Class::Range(elem) => printed_by_server(elem),
        Class::Composite(fields) => fields.into_iter().any(printed_by_server),
        _ => false,
    }
}

/// The `Column` message for a result column.
pub fn column_of(col: &tokio_postgres::Column) -> Column {
    Column {
        name: col.name().to_owned(),
        type_oid: col.type_().oid(),
        type_name: col.type_().name().to_owned(),
    }
}

/// Decodes one cell of a column of type `ty`.
pub fn decode_cell(ty: &Type, raw: Option<&[u8]>) -> Result<Decoded, DecodeError> {
    let Some(raw) = raw else {
        return Ok(Decoded::Value(null()));
    };
    if printed_by_server(ty) {
        return Ok(Decoded::NeedsServer);
    }
    let mut nested = Nested::Collect(Vec::new());
    let decoded = value(ty, raw, &mut nested)?;
    Ok(match nested {
        Nested::Collect(pieces) if pieces.is_empty() => Decoded::Value(decoded),
        _ => Decoded::NeedsServer,
    })
}

/// The values PostgreSQL must print for a cell [`decode_cell`] answered `NeedsServer` for,
/// each with its type: the whole cell, or, inside a record, each field of a type not
/// decoded here.
pub fn server_pieces<'r>(ty: &Type, raw: &'r [u8]) -> Result<Vec<(Type, &'r [u8])>, DecodeError> {
    if printed_by_server(ty) {
        return Ok(vec![(ty.clone(), raw)]);
    }
    let mut nested = Nested::Collect(Vec::new());
    value(ty, raw, &mut nested)?;
    match nested {
        Nested::Collect(pieces) => Ok(pieces),
        Nested::Fill(_) => unreachable!("collecting never turns into filling"),
    }
}

/// The cell's value, given PostgreSQL's text for each of its [`server_pieces`], in order.
pub fn decode_with_server_text(
    ty: &Type,
    raw: &[u8],
    texts: Vec<String>,
) -> Result<Value, DecodeError> {
    if printed_by_server(ty) {
        let text = texts.into_iter().next();
        return Ok(of(V::TextValue(text.ok_or_else(|| missing_text(ty))?)));
    }
    value(ty, raw, &mut Nested::Fill(texts.into_iter()))
}

fn missing_text(ty: &Type) -> DecodeError {
    malformed(ty, "PostgreSQL's text for a nested value is missing")
}

/// Values nested in a record whose binary form is not decoded here, met while printing it.
/// The record is printed twice: once to collect them, and once PostgreSQL has printed them.
pub(super) enum Nested<'r> {
    /// First pass: each is noted, and printed as nothing for now.
    Collect(Vec<(Type, &'r [u8])>),
    /// Second pass: PostgreSQL's texts for them, in the order they were collected.
    Fill(std::vec::IntoIter<String>),
}

impl<'r> Nested<'r> {
    /// The text of a record field of type `ty` that is not decoded here.
    pub(super) fn text(&mut self, ty: &Type, raw: &'r [u8]) -> Result<String, DecodeError> {
        match self {
            Nested::Collect(pieces) => {
                pieces.push((ty.clone(), raw));
                Ok(String::new())
            }
            Nested::Fill(texts) => texts.next().ok_or_else(|| missing_text(ty)),
        }
    }
}

fn null() -> Value {
    Value {
        kind: Some(V::NullValue(0)),
    }
}

fn of(kind: V) -> Value {
    Value { kind: Some(kind) }
}

/// Decodes a non-NULL value of a type known to be decodable here.
fn value<'r>(ty: &Type, raw: &'r [u8], nested: &mut Nested<'r>) -> Result<Value, DecodeError> {
    let bad = |e: Box<dyn StdError + Sync + Send>| malformed(ty, e);
    Ok(of(match class(ty) {
        Class::Bool => V::BoolValue(wire::bool_from_sql(raw).map_err(bad)?),
        Class::Int2 => V::IntValue(wire::int2_from_sql(raw).map_err(bad)?.into()),
        Class::Int4 => V::IntValue(wire::int4_from_sql(raw).map_err(bad)?.into()),
        Class::Int8 => V::IntValue(wire::int8_from_sql(raw).map_err(bad)?),
        Class::Oid => V::IntValue(wire::oid_from_sql(raw).map_err(bad)?.into()),
        Class::Float4 => V::FloatValue(wire::float4_from_sql(raw).map_err(bad)?.into()),
        Class::Float8 => V::FloatValue(wire::float8_from_sql(raw).map_err(bad)?),
        Class::Numeric => {
            V::NumericValue(text::numeric_to_string(raw).map_err(|e| malformed(ty, e))?)
        }
        Class::Json | Class::VersionedText if *base_type(ty) != Type::JSONPATH => {
            V::JsonValue(text_form(ty, raw, nested)?)
        }
        Class::Bytea => V::BytesValue(raw.to_vec()),
        Class::Uuid => V::UuidValue(text_form(ty, raw, nested)?),
        Class::Date => {
            let days = wire::date_from_sql(raw).map_err(bad)?;
            let text = text::date_to_string(days);
            // BC dates and ±infinity do not fit "YYYY-MM-DD": they travel as text.
            if text.len() == 10 {
                V::DateValue(text)
            } else {
                V::TextValue(text)
            }
        }
        Class::Timestamp | Class::Timestamptz => {
            let micros = wire::timestamp_from_sql(raw).map_err(bad)?;
            match protobuf_timestamp(micros) {
                Some(ts) => V::TimestampValue(ts),
                None => V::TextValue(text_form(ty, raw, nested)?),
            }
        }
        Class::Array(elem) | Class::Vector(elem) => V::ArrayValue(array(ty, elem, raw, nested)?),
        _ => V::TextValue(text_form(ty, raw, nested)?),
    }))
}

pub(super) fn malformed(ty: &Type, e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed {
        type_name: ty.name().to_owned(),
        reason: e.to_string(),
    }
}

/// Seconds bounds of google.protobuf.Timestamp: 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z.
const TIMESTAMP_MIN_SECS: i64 = -62_135_596_800;
const TIMESTAMP_MAX_SECS: i64 = 253_402_300_799;

/// Postgres microseconds since 2000-01-01 → Timestamp, or `None` when out of its range
/// (which includes ±infinity, stored as i64::MIN/MAX).
fn protobuf_timestamp(pg_micros: i64) -> Option<prost_types::Timestamp> {
    let unix = pg_micros.checked_add(PG_EPOCH_UNIX_MICROS)?;
    let seconds = unix.div_euclid(1_000_000);
    let nanos = (unix.rem_euclid(1_000_000) * 1000) as i32;
    (TIMESTAMP_MIN_SECS..=TIMESTAMP_MAX_SECS)
        .contains(&seconds)
        .then_some(prost_types::Timestamp { seconds, nanos })
}

/// A binary array → nested `ArrayValue`s, one level per dimension.
fn array<'r>(
    ty: &Type,
    elem: &Type,
    raw: &'r [u8],
    nested: &mut Nested<'r>,
) -> Result<ArrayValue, DecodeError> {
    use fallible_iterator::FallibleIterator;
    let arr = wire::array_from_sql(raw).map_err(|e| malformed(ty, e))?;
    let (dims, lower_bounds): (Vec<usize>, Vec<i32>) = arr
        .dimensions()
        .map(|d| Ok((usize::try_from(d.len).unwrap_or(0), d.lower_bound)))
        .collect::<Vec<_>>()
        .map_err(|e| malformed(ty, e))?
        .into_iter()
        .unzip();
    // Every element takes at least its 4-byte length on the wire. Checked before collecting,
    // because the element iterator sizes its buffer from the claimed dimensions: a corrupt
    // header must be an error, not a multi-gigabyte allocation (found by fuzz/codec).
    let claimed = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    // An empty array has no dimensions, except an empty int2vector or oidvector, which has
    // one of length 0: either way it is empty, whatever the other dimensions claim (which
    // must not size anything).
    if claimed == Some(0) {
        return Ok(ArrayValue::default());
    }
    if !dims.is_empty() && claimed.is_none_or(|n| n > raw.len() / 4) {
        return Err(malformed(
            ty,
            "dimensions claim more elements than the value holds",
        ));
    }
    let cells: Vec<Value> = arr
        .values()
        .map_err(|e| malformed(ty, e))
        .map(|cell| match cell {
            None => Ok(null()),
            Some(raw) => value(elem, raw, nested),
        })
        .collect()?;
    if dims.is_empty() {
        return Ok(ArrayValue::default());
    }
    if dims.iter().product::<usize>() != cells.len() {
        return Err(malformed(ty, "dimensions do not match the element count"));
    }
    let mut outer = nest(&dims, &mut cells.into_iter());
    // Bounds are carried only when they say something: the usual all-ones stays empty.
    if lower_bounds.iter().any(|&lower| lower != 1) {
        outer.lower_bounds = lower_bounds;
    }
    Ok(outer)
}

fn nest(dims: &[usize], cells: &mut impl Iterator<Item = Value>) -> ArrayValue {
    let values = match dims {
        [] | [_] => cells.take(dims.first().copied().unwrap_or(0)).collect(),
        [len, rest @ ..] => (0..*len)
            .map(|_| of(V::ArrayValue(nest(rest, cells))))
            .collect(),
    };
    ArrayValue {
        values,
        lower_bounds: vec![],
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_array_header_claiming_more_elements_than_it_holds_is_malformed() {
        // ndim 1, no nulls, element int4, one dimension of 2^30 elements, lower bound 1, and
        // no elements at all: must be an error, not an attempt to allocate gigabytes.
        let mut raw = Vec::new();
        for word in [1i32, 0, 23, 1 << 30, 1] {
            raw.extend_from_slice(&word.to_be_bytes());
        }
        assert!(decode_cell(&Type::INT4_ARRAY, Some(&raw)).is_err());
        // Two dimensions, 2^30 by 0: no elements claimed, and the outer level, which alone
        // would be a gigabyte-sized list, is not built: an empty array.
        let mut zero = Vec::new();
        for word in [2i32, 0, 23, 1 << 30, 1, 0, 1] {
            zero.extend_from_slice(&word.to_be_bytes());
        }
        match decode_cell(&Type::INT4_ARRAY, Some(&zero)) {
            Ok(Decoded::Value(Value {
                kind: Some(V::ArrayValue(a)),
            })) => assert_eq!(a, ArrayValue::default()),
            other => panic!("{other:?}"),
        }
        raw[12..16].copy_from_slice(&1i32.to_be_bytes());
        raw.extend_from_slice(&4i32.to_be_bytes());
        raw.extend_from_slice(&7i32.to_be_bytes());
        assert!(
            decode_cell(&Type::INT4_ARRAY, Some(&raw)).is_ok(),
            "a well-formed one still decodes"
        );
    }

    use super::*;

    #[test]
    fn timestamps_outside_protobuf_range_are_none() {
        assert!(protobuf_timestamp(i64::MAX).is_none());
        assert!(protobuf_timestamp(i64::MIN).is_none());
        let ts = protobuf_timestamp(0).expect("2000-01-01 fits");
        assert_eq!((ts.seconds, ts.nanos), (946_684_800, 0));
        let ts = protobuf_timestamp(-1).expect("just before 2000 fits");
        assert_eq!((ts.seconds, ts.nanos), (946_684_799, 999_999_000));
    }
}
