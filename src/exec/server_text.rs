//! PostgreSQL's own text output for values whose binary form is not decoded here (extension
//! types, tsvector, geometric types, ...): the cells of a result batch are sent back as
//! parameters of their own types in one statement, `SELECT $1::text, $2::text, ...`, so a
//! batch costs one round trip on the connection that produced it, whatever its size.

use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::codec::DecodeError;
use crate::error::Error;
use crate::proto::{Row, Value, value::Kind as V};

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

/// Fills the placeholders of `cells` in `rows` with PostgreSQL's text output of each value,
/// asked on `client` (unnamed statements: nothing is left prepared on the connection).
pub async fn fill_server_text(
    client: &tokio_postgres::Client,
    rows: &mut [Row],
    cells: Vec<PendingText>,
) -> Result<(), Error> {
    for batch in cells.chunks(CELLS_PER_STATEMENT) {
        let raws: Vec<RawParam<'_>> = batch.iter().map(|(_, _, _, raw)| RawParam(raw)).collect();
        let params: Vec<(&(dyn ToSql + Sync), Type)> = raws
            .iter()
            .zip(batch)
            .map(|(raw, (_, _, ty, _))| (raw as &(dyn ToSql + Sync), ty.clone()))
            .collect();
        let answer = client
            .query_typed(&statement_for(batch.len()), &params)
            .await?;
        // A SELECT without FROM answers exactly one row.
        let row = answer.first().ok_or_else(|| DecodeError::Malformed {
            type_name: "text".into(),
            reason: "the text output of a result batch came back without a row".into(),
        })?;
        for (i, (r, c, _, _)) in batch.iter().enumerate() {
            rows[*r].values[*c] = Value {
                kind: Some(V::TextValue(row.try_get::<_, String>(i)?)),
            };
        }
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
