//! Getting a statement under way on one connection: found in (or prepared into) the
//! connection's statement cache with what every execution needs worked out once, its
//! parameters bound, its execution sent; and whether a failure may have run it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{BoxFuture, MaybeDone, maybe_done};
use tokio_postgres::error::SqlState;

use super::Spec;
use crate::codec::{bind_params, column_of, needs_server_text};
use crate::error::Error;
use crate::pool::{Conn, Prepared};
use crate::sql::{TagShape, command_tag, session};

/// Finds `sql` in the connection's statement cache, or prepares it there, working out once
/// what every later execution needs. Returns the statement and whether it was cached.
pub async fn prepare(
    conn: &Conn,
    sql: &str,
) -> Result<(Arc<Prepared>, bool), tokio_postgres::Error> {
    if let Some(p) = conn.statements().get(sql) {
        return Ok((p, true));
    }
    let statement = conn.prepare(sql).await?;
    let shape = command_tag::shape(sql);
    // An EXECUTE's tag is that of whatever the session has prepared under the name at the
    // time, so it is looked up afresh each time rather than cached.
    let cache = !matches!(shape, TagShape::Execute(_));
    let tag = match shape {
        TagShape::Execute(name) => executed_tag(conn, &name).await?,
        shape => shape,
    };
    let prepared = Arc::new(Prepared {
        columns: statement.columns().iter().map(column_of).collect(),
        needs_server_text: statement
            .columns()
            .iter()
            .any(|c| needs_server_text(c.type_())),
        changes_session: session::may_change_session(sql),
        drops_statements: session::drops_prepared_statements(sql),
        report_key: crate::sql::fingerprint::key_of(sql),
        tag,
        sql: sql.into(),
        statement,
    });
    if cache {
        conn.statements().insert(prepared.clone());
    }
    Ok((prepared, false))
}

/// The tag shape of the statement the session has prepared as `name` (SQL `EXECUTE name`
/// answers with that statement's tag, `INSERT 0 1` say), asked of PostgreSQL in one round
/// trip; `EXECUTE` itself if there is none (the EXECUTE will fail anyway).
async fn executed_tag(conn: &Conn, name: &str) -> Result<TagShape, tokio_postgres::Error> {
    let rows = conn
        .query_typed(
            "SELECT statement FROM pg_prepared_statements WHERE name = $1",
            &[(&name, tokio_postgres::types::Type::TEXT)],
        )
        .await?;
    Ok(match rows.first() {
        Some(row) => command_tag::shape(command_tag::prepared_body(row.get(0))),
        None => TagShape::Execute(name.to_owned()),
    })
}

/// PostgreSQL's word that a cached statement no longer fits the schema ("cached plan must
/// not change result type") or no longer exists: it did not run, so it can be prepared
/// afresh and sent again.
fn stale_statement(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code();
        *code == SqlState::INVALID_SQL_STATEMENT_NAME
            || (*code == SqlState::FEATURE_NOT_SUPPORTED && db.message().contains("cached plan"))
    })
}

/// A statement that failed, and whether it may have run in PostgreSQL: what decides if it
/// can be sent again.
#[derive(Debug)]
pub struct Failed {
    /// The error.
    pub error: Error,
    /// False when it failed before its execution was sent (prepare, bind, a connection
    /// already closed): running it again cannot run it twice.
    pub may_have_run: bool,
}

impl<E: Into<Error>> From<E> for Failed {
    /// Errors by default count as "may have run": the safe assumption.
    fn from(e: E) -> Self {
        Failed {
            error: e.into(),
            may_have_run: true,
        }
    }
}

impl Failed {
    /// A failure before the execution was sent: running it again cannot run it twice.
    pub fn not_run(e: impl Into<Error>) -> Failed {
        Failed {
            error: e.into(),
            may_have_run: false,
        }
    }
}

/// A statement whose execution has been sent: its rows are read from `rows`.
pub struct Started<'a> {
    /// The result rows as PostgreSQL sends them.
    pub rows: tokio_postgres::RowStream,
    /// What was sent after it (see [`super::Around`]), to be waited for once the rows are
    /// read.
    pub trailer: Trailer<'a>,
    /// The statement and what is known about it.
    pub prepared: Arc<Prepared>,
    /// The statement was already prepared on this connection.
    pub cached: bool,
    /// When execution was sent.
    pub at: Instant,
}

/// Prepares (or finds), binds and sends `spec` for execution. A cached statement the
/// schema changed under is dropped, prepared afresh and sent once more.
pub async fn start<'a>(conn: &'a Conn, spec: &Spec<'_>) -> Result<Started<'a>, Failed> {
    let (prepared, cached) = prepare(conn, spec.sql).await.map_err(Failed::not_run)?;
    start_prepared(conn, prepared, cached, spec).await
}

/// As [`start`], for a statement already found or prepared with [`prepare`].
pub async fn start_prepared<'a>(
    conn: &'a Conn,
    prepared: Arc<Prepared>,
    cached: bool,
    spec: &Spec<'_>,
) -> Result<Started<'a>, Failed> {
    match send(conn, &prepared, spec).await {
        Err(Failed {
            error: Error::Postgres(e),
            ..
        }) if cached && stale_statement(&e) => {
            conn.statements().invalidate(spec.sql);
            let (prepared, _) = prepare(conn, spec.sql).await.map_err(Failed::not_run)?;
            let (rows, trailer, at) = send(conn, &prepared, spec).await?;
            Ok(Started {
                rows,
                trailer,
                prepared,
                cached: false,
                at,
            })
        }
        sent => {
            let (rows, trailer, at) = sent?;
            Ok(Started {
                rows,
                trailer,
                prepared,
                cached,
                at,
            })
        }
    }
}

/// A request already on the wire, whose answer is still to come.
type Sent<'a> = BoxFuture<'a, Result<(), tokio_postgres::Error>>;

/// What follows a statement on its connection, sent before its first answer is awaited.
pub struct Trailer<'a>(Option<Pin<Box<MaybeDone<Sent<'a>>>>>);

impl Trailer<'_> {
    /// Waits for what followed the statement. Its rows must have been read first: the
    /// answer comes after them.
    pub async fn finish(self) -> Result<(), tokio_postgres::Error> {
        let Some(mut sent) = self.0 else {
            return Ok(());
        };
        sent.as_mut().await;
        sent.as_mut().take_output().unwrap_or(Ok(()))
    }
}

/// The simple-query text that follows an autocommit statement, if any.
fn trailer_sql(around: super::Around) -> Option<&'static str> {
    match (around.read_only, around.reset) {
        (false, false) => None,
        (true, false) => Some("COMMIT"),
        (false, true) => Some(crate::pool::RESET_AFTER_EACH_SQL),
        (true, true) => Some(crate::pool::COMMIT_THEN_RESET_SQL),
    }
}

/// Binds the parameters and sends the execution, with what goes around it: `BEGIN READ
/// ONLY` before it and the trailer after it go out in the same write, so the statement
/// still costs one round trip.
async fn send<'a>(
    conn: &'a Conn,
    prepared: &Prepared,
    spec: &Spec<'_>,
) -> Result<(tokio_postgres::RowStream, Trailer<'a>, Instant), Failed> {
    let params = bind_params(prepared.statement.params(), spec.params).map_err(Failed::not_run)?;
    if prepared.drops_statements {
        conn.lose_statements();
    }
    let at = Instant::now();
    // A connection already closed sends nothing: tokio-postgres fails the request locally.
    let closed_before = conn.is_closed();
    let failed = |e: tokio_postgres::Error| Failed {
        may_have_run: !closed_before,
        error: e.into(),
    };
    let Some(trailer_sql) = trailer_sql(spec.around) else {
        let rows = conn
            .query_raw(&prepared.statement, params.iter())
            .await
            .map_err(failed)?;
        return Ok((rows, Trailer(None), at));
    };
    // tokio-postgres puts a request on the wire when its future is first polled, and
    // answers requests in order: so each is polled once, in order, before any is awaited.
    let mut begin = std::pin::pin!(maybe_done(async {
        match spec.around.read_only {
            true => conn.batch_execute("BEGIN READ ONLY").await,
            false => Ok(()),
        }
    }));
    let _ = futures_util::poll!(begin.as_mut());
    let mut execute = std::pin::pin!(maybe_done(
        conn.query_raw(&prepared.statement, params.iter())
    ));
    let _ = futures_util::poll!(execute.as_mut());
    let sent: Sent<'a> = Box::pin(conn.batch_execute(trailer_sql));
    let mut trailer = Box::pin(maybe_done(sent));
    let _ = futures_util::poll!(trailer.as_mut());
    let trailer = Trailer(Some(trailer));
    begin.as_mut().await;
    if let Some(Err(e)) = begin.as_mut().take_output() {
        return Err(failed(e));
    }
    execute.as_mut().await;
    let rows = execute
        .as_mut()
        .take_output()
        .expect("awaited to its output")
        .map_err(failed)?;
    Ok((rows, trailer, at))
}
