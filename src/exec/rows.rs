//! Reading a statement's rows within the limits: decoded as they arrive, rows past
//! `max_rows` read but not decoded (so the count and tag stay exact), the response size
//! counted as it grows, and PostgreSQL's text output asked for once at the end.

use futures_util::{TryStreamExt, pin_mut};
use prost::Message;

use super::prepare::Failed;
use super::{Executed, PendingText, Spec, Started, fill_server_text, start};
use crate::codec::{Decoded, RawCell, decode_cell};
use crate::config::Limits;
use crate::error::Error;
use crate::pool::Conn;
use crate::proto::{QueryResponse, Row, Value};

/// Bytes reserved in a response for the command tag, counters and `info`.
const RESPONSE_TRAILER: usize = 512;

/// Decodes one row; cells that need PostgreSQL's text output get a placeholder and an entry
/// in `pending` (as row `index`).
pub fn decode_row(
    row: &tokio_postgres::Row,
    index: usize,
    pending: &mut Vec<PendingText>,
) -> Result<Row, Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let RawCell(raw) = row.try_get(i)?;
        match decode_cell(col.type_(), raw)? {
            Decoded::Value(v) => values.push(v),
            Decoded::NeedsServer => {
                let raw = raw.unwrap_or_default().to_vec();
                pending.push((index, i, col.type_().clone(), raw));
                values.push(Value::default());
            }
        }
    }
    Ok(Row { values })
}

/// The row cap for a request's `max_rows` (0 = the server's limit, larger asks capped).
pub fn row_cap(max_rows: u32, limits: &Limits) -> u64 {
    match max_rows {
        0 => limits.max_rows,
        n => n.min(limits.max_rows),
    }
    .into()
}

/// Whether the statement may have left session state behind for the guard to reset: not
/// when the reset sent right after it already did.
pub fn session_left_changed(prepared: &crate::pool::Prepared, spec: &Spec<'_>) -> bool {
    prepared.changes_session && !spec.around.reset
}

/// Runs `spec` on `client` and collects its result within `limits`.
pub async fn run(conn: &Conn, spec: &Spec<'_>, limits: &Limits) -> Result<Executed, Failed> {
    let result = match start(conn, spec).await {
        Ok(started) => read(conn, started, spec, limits).await,
        Err(failed) => Err(failed),
    };
    result.map_err(|f| Failed {
        error: super::explain(conn, f.error, limits),
        ..f
    })
}

/// Collects the result of a statement already under way within `limits`. Its errors are
/// not yet [`super::explain`]ed.
pub async fn read(
    conn: &Conn,
    started: Started<'_>,
    spec: &Spec<'_>,
    limits: &Limits,
) -> Result<Executed, Failed> {
    let Started {
        rows: stream,
        trailer,
        prepared,
        cached,
        at: started,
    } = started;
    let columns = prepared.columns.clone();
    let max_rows = row_cap(spec.max_rows, limits);
    pin_mut!(stream);
    let mut rows: Vec<Row> = Vec::new();
    let mut pending = Vec::new();
    // The response is counted as it grows, so an oversized result fails cleanly here rather
    // than in tonic's encoder after all of it was built.
    let mut bytes = RESPONSE_TRAILER + columns.iter().map(|c| c.encoded_len() + 2).sum::<usize>();
    let mut seen = 0u64;
    while let Some(row) = stream.try_next().await? {
        seen += 1;
        // Rows past the limit are read, not decoded, so the count and the command tag stay
        // exact and the connection is left ready for the next statement.
        if seen > max_rows {
            continue;
        }
        let row = decode_row(&row, rows.len(), &mut pending)?;
        bytes += row.encoded_len() + 4;
        if bytes > limits.max_message_bytes {
            return Err(Error::ResponseTooLarge {
                limit: limits.max_message_bytes,
            }
            .into());
        }
        rows.push(row);
    }
    let rows_affected = stream.rows_affected().unwrap_or(0);
    // What followed the statement failing leaves the session in doubt: the guard resets it
    // (and closes the connection if that fails too).
    let trailer_failed = trailer.finish().await.is_err();
    fill_server_text(conn, &mut rows, pending).await?;
    let execution_time = started.elapsed();

    Ok(Executed {
        response: QueryResponse {
            columns,
            rows,
            rows_affected,
            command_tag: prepared.tag.render(rows_affected),
            truncated: seen > max_rows,
            info: None,
        },
        cached,
        execution_time,
        changes_session: session_left_changed(&prepared, spec) || trailer_failed,
        report_key: prepared.report_key,
    })
}
