//! StreamQuery's messages within the message limit: a chunk that came out larger than the
//! limit (its rows grew when their text was filled in, or its last row was a large one) is
//! split row by row, and a row too large to go in any message is `RESPONSE_TOO_LARGE`,
//! measured on the encoded message exactly as tonic would measure it before refusing to
//! send it (with an `OUT_OF_RANGE` and no details).

use prost::Message;

use crate::error::Error;
use crate::proto::{QueryResponse, Row};

/// The bytes `row` adds to a `QueryResponse`: `rows` is field 2, so a one-byte key, then
/// the length and the row.
fn framed_len(row: &Row) -> usize {
    let len = row.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// `chunk` as messages of at most `limit` encoded bytes, in order: the columns stay on the
/// first, the other fields (rows_affected, command_tag, truncated, info) on the last.
pub(super) fn fit(mut chunk: QueryResponse, limit: usize) -> Result<Vec<QueryResponse>, Error> {
    if chunk.encoded_len() <= limit {
        return Ok(vec![chunk]);
    }
    let rows = std::mem::take(&mut chunk.rows);
    let mut current = QueryResponse {
        columns: std::mem::take(&mut chunk.columns),
        ..Default::default()
    };
    // What is left of `chunk` goes on the last message; every message leaves room for it,
    // a few dozen bytes, so that any of them can be the last.
    let trailer = chunk.encoded_len();
    let mut current_len = current.encoded_len() + trailer;
    let mut parts = Vec::new();
    for row in rows {
        let row_len = framed_len(&row);
        if !current.rows.is_empty() && current_len + row_len > limit {
            parts.push(std::mem::take(&mut current));
            current_len = trailer;
        }
        if current_len + row_len > limit {
            return Err(Error::ResponseTooLarge { limit });
        }
        current_len += row_len;
        current.rows.push(row);
    }
    chunk.columns = current.columns;
    chunk.rows = current.rows;
    parts.push(chunk);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Column, Value, value::Kind};

    fn row(bytes: usize) -> Row {
        Row {
            values: vec![Value {
                kind: Some(Kind::TextValue("x".repeat(bytes))),
            }],
        }
    }

    fn chunk(rows: Vec<Row>) -> QueryResponse {
        QueryResponse {
            columns: vec![Column {
                name: "c".into(),
                type_oid: 25,
                type_name: "text".into(),
            }],
            rows,
            rows_affected: 9,
            command_tag: "SELECT 9".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_chunk_that_fits_is_left_alone() {
        let c = chunk(vec![row(10), row(10)]);
        let parts = fit(c.clone(), 4096).expect("fits");
        assert_eq!(parts, vec![c]);
    }

    #[test]
    fn rows_that_fit_one_by_one_are_split_with_columns_first_and_trailer_last() {
        let parts = fit(chunk((0..5).map(|_| row(2040)).collect()), 4096).expect("fits");
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.encoded_len() <= 4096), "{parts:?}");
        assert_eq!(parts.iter().map(|p| p.rows.len()).sum::<usize>(), 5);
        assert_eq!(parts[0].columns.len(), 1);
        assert!(parts[1..].iter().all(|p| p.columns.is_empty()));
        let last = parts.last().expect("a last part");
        assert_eq!(
            (last.rows_affected, last.command_tag.as_str()),
            (9, "SELECT 9")
        );
        assert!(
            parts[..parts.len() - 1]
                .iter()
                .all(|p| p.command_tag.is_empty())
        );
    }

    #[test]
    fn a_row_larger_than_a_message_is_response_too_large() {
        let err = fit(chunk(vec![row(10), row(5000)]), 4096).expect_err("too large");
        assert!(
            matches!(err, Error::ResponseTooLarge { limit: 4096 }),
            "{err}"
        );
    }
}
