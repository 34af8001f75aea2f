//! Returning a session to the state every pooled session starts in, after a statement that
//! may have changed it.

use super::Conn;

/// What `DISCARD ALL` does, less its `DEALLOCATE ALL`: tokio-postgres keeps server-side
/// statements of its own (the type lookups it prepares once per connection) and would go on
/// using them after they were dropped, breaking the next query of a user-defined type.
/// Prepared statements a client made with SQL `PREPARE` are deallocated by name instead.
/// Everything is schema-qualified: `RESET ALL` restores the search path only as the
/// statement runs, and a user's own `format` or view must not run here. `$plans` is where
/// `DISCARD PLANS` goes, or nothing.
macro_rules! reset_sql {
    ($plans:literal) => {
        concat!(
            "CLOSE ALL; \
            SET SESSION AUTHORIZATION DEFAULT; \
            RESET ALL; \
            UNLISTEN *; \
            SELECT pg_catalog.pg_advisory_unlock_all(); ",
            $plans,
            "DISCARD TEMP; \
            DISCARD SEQUENCES; \
            DO $pgsidecar_reset$ DECLARE n text; BEGIN \
              FOR n IN SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql LOOP \
                EXECUTE pg_catalog.format('DEALLOCATE %I', n); \
              END LOOP; \
            END $pgsidecar_reset$"
        )
    };
}

/// The reset after a statement that changed the session: its plans go too, as they were
/// made in the changed session.
const RESET_SQL: &str = reset_sql!("DISCARD PLANS; ");

/// The reset sent after every autocommit statement when resetting always. Plans stay: each
/// was made while the session was as it started, since every statement before was followed
/// by this reset, and dropping them would re-plan every statement.
pub const RESET_AFTER_EACH_SQL: &str = reset_sql!("");

/// As [`RESET_AFTER_EACH_SQL`], after ending the READ ONLY transaction a statement ran in.
pub const COMMIT_THEN_RESET_SQL: &str = concat!("COMMIT; ", reset_sql!(""));

/// Resets the session: settings, role, listeners, cursors, temp tables, advisory locks,
/// cached plans and SQL-level prepared statements. Our own cached statements are dropped
/// too (closed on the server), since they were planned in the changed session.
pub async fn reset(conn: &Conn) -> Result<(), tokio_postgres::Error> {
    conn.statements().clear();
    conn.batch_execute(RESET_SQL).await
}
