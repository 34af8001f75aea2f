//! Postgres ↔ `Value`: decoding result cells, binding parameters, and the text forms both
//! sides share.

mod decode;
mod encode;
pub mod text;

/// The former path of [`text`], still used by tests/ and fuzz/.
pub use self::text as pgtext;

pub use decode::{
    DecodeError, Decoded, RawCell, column_of, decode_cell, decode_with_server_text,
    needs_server_text, server_pieces,
};
pub use encode::{BindError, Param, bind_params};

use tokio_postgres::types::{Kind, Type};

/// Strips domains: a domain's values travel in its base type's format.
pub(crate) fn base_type(ty: &Type) -> &Type {
    match ty.kind() {
        Kind::Domain(inner) => base_type(inner),
        _ => ty,
    }
}

/// Types whose binary format is their UTF-8 text, so `text_value` binds to them directly.
pub(crate) fn is_text_like(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    ) || (matches!(ty.kind(), Kind::Simple) && ty.name() == "citext")
        || matches!(ty.kind(), Kind::Enum(_))
}

/// Microseconds between the Unix epoch and Postgres's epoch, 2000-01-01.
pub(crate) const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
