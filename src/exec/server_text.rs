//! PostgreSQL's own text output for values whose binary form is not decoded here (extension
//! types, tsvector, geometric types, ...): the cells of a result batch (or, inside an
//! anonymous record, the fields of such types) are sent back as parameters of their own
//! types in one statement, `SELECT $1::text, $2::text, ...`, so a batch costs one round trip
//! on the connection that produced it, whatever its size.

use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::codec::{self, DecodeError};
use crate::error::Error;
use crate::proto::Row;

/// A cell to be turned into text by PostgreSQL: (row index, column index, type, raw bytes).
pub type PendingText = (usize, usize, Type, Vec<u8>);

/// Most cells in one statement: far under PostgreSQL's 65,535 parameters, and a statement
/// text of a few kilobytes.
const CELLS_PER_STATEMENT: usize = 1000;

/// A value in its binary form, sent back to PostgreSQL as a parameter of its own type.
#[derive(Debug)]
struct RawParam<'a>(&'a [u8]);

impl ToSql for RawParam<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// `SELECT $1::text, ..., $n::text`.
fn statement_for(n: usize) -> String {
    let mut sql = String::with_capacity(8 + n * 12);
    sql.push_str("SELECT ");
    for i in 1..=n {
        if i > 1 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("${i}::text"));
    }
    sql
}

/// Fills the placeholders of `cells` in `rows` with values built from PostgreSQL's text
/// output, asked on `client` (unnamed statements: nothing is left prepared on the
/// connection). A cell is one value to print, or, for a record, the fields of it that are
/// not decoded here.
pub async fn fill_server_text(
    client: &tokio_postgres::Client,
    rows: &mut [Row],
    cells: Vec<PendingText>,
) -> Result<(), Error> {
    if cells.is_empty() {
        return Ok(());
    }
    let mut pieces = Vec::new();
    let mut counts = Vec::with_capacity(cells.len());
    for (_, _, ty, raw) in &cells {
        let of_cell = codec::server_pieces(ty, raw)?;
        counts.push(of_cell.len());
        pieces.extend(of_cell);
    }
    let mut texts = Vec::with_capacity(pieces.len());
    for batch in pieces.chunks(CELLS_PER_STATEMENT) {
        let raws: Vec<RawParam<'_>> = batch.iter().map(|(_, raw)| RawParam(raw)).collect();
        let params: Vec<(&(dyn ToSql + Sync), Type)> = raws
            .iter()
            .zip(batch)
            .map(|(raw, (ty, _))| (raw as &(dyn ToSql + Sync), ty.clone()))
            .collect();
        let answer = client
            .query_typed(&statement_for(batch.len()), &params)
            .await?;
        // A SELECT without FROM answers exactly one row.
        let row = answer.first().ok_or_else(|| DecodeError::Malformed {
            type_name: "text".into(),
            reason: "the text output of a result batch came back without a row".into(),
        })?;
        for i in 0..batch.len() {
            texts.push(row.try_get::<_, String>(i)?);
        }
    }
    let mut texts = texts.into_iter();
    for ((r, c, ty, raw), count) in cells.iter().zip(counts) {
        let of_cell: Vec<String> = texts.by_ref().take(count).collect();
        rows[*r].values[*c] = codec::decode_with_server_text(ty, raw, of_cell)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_statement_asks_for_every_cell() {
        assert_eq!(super::statement_for(1), "SELECT $1::text");
        assert_eq!(
            super::statement_for(3),
            "SELECT $1::text, $2::text, $3::text"
        );
    }
}
