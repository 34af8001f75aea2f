//! Fuzz target: parameter binding and result decoding. The first byte picks a PostgreSQL
//! type; the rest is read two ways: as a binary result cell of that type (what PostgreSQL
//! could send), and as a protobuf `Value` bound to that type (what a client could send).
//! Neither may panic; errors are the expected answer to garbage.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsidecar::codec::{bind_params, decode_cell, pgtext};
use postgres_types::{ToSql, Type};
use prost::Message;

/// The types the codec handles itself, scalars and arrays, plus one it leaves to the server.
const TYPES: &[Type] = &[
    Type::BOOL, Type::INT2, Type::INT4, Type::INT8, Type::FLOAT4, Type::FLOAT8,
    Type::NUMERIC, Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::BYTEA,
    Type::DATE, Type::TIME, Type::TIMETZ, Type::TIMESTAMP, Type::TIMESTAMPTZ, Type::INTERVAL,
    Type::UUID, Type::JSON, Type::JSONB, Type::INET, Type::CIDR, Type::MACADDR,
    Type::MACADDR8, Type::BIT, Type::VARBIT, Type::PG_LSN, Type::OID, Type::MONEY,
    Type::INT4_ARRAY, Type::INT8_ARRAY, Type::TEXT_ARRAY, Type::NUMERIC_ARRAY,
    Type::BOOL_ARRAY, Type::FLOAT8_ARRAY, Type::DATE_ARRAY, Type::TIMESTAMPTZ_ARRAY,
    Type::UUID_ARRAY, Type::JSONB_ARRAY, Type::BYTEA_ARRAY, Type::INTERVAL_ARRAY,
    Type::TS_VECTOR, Type::POINT,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let ty = &TYPES[pick as usize % TYPES.len()];
    let _ = decode_cell(ty, Some(rest));
    let _ = decode_cell(ty, None);
    if let Ok(value) = pgsidecar::proto::Value::decode(rest) {
        if let Ok(params) = bind_params(std::slice::from_ref(ty), &[value]) {
            for p in &params {
                let _ = p.to_sql_checked(ty, &mut BytesMut::new());
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = pgtext::numeric_from_str(text);
        let _ = pgtext::date_from_str(text);
    }
    for f in [
        pgtext::numeric_to_string,
        pgtext::timetz_to_string,
        pgtext::interval_to_string,
        pgtext::inet_to_string,
        pgtext::macaddr_to_string,
        pgtext::bits_to_string,
        pgtext::pg_lsn_to_string,
    ] {
        let _ = f(rest);
    }
});
