//! Session hygiene for pooled connections: which statements may leave session state behind
//! (settings, roles, listeners, prepared statements, cursors, temp tables, advisory locks),
//! and the reset that returns such a connection to the state every session starts in.
//!
//! The choice is reset, not refuse: the statement runs as asked, and the connection is
//! reset before anyone else uses it. Statements are classified here by their text, erring
//! toward a reset; state changed inside a function body the text does not show is caught by
//! the pool's watch on reported parameters where PostgreSQL reports it, and otherwise only
//! by resetting always (`PGSIDECAR_RESET_ALWAYS`).

use super::lexer::{Kind, tokens};
use super::{first_word, leading, leading_words};

/// Function names whose call leaves state in the session.
const SESSION_FUNCTIONS: &[&str] = &[
    "pg_advisory_lock",
    "pg_try_advisory_lock",
    "set_config",
    "pg_listening_channels",
    "dblink_connect",
];

/// Whether running `sql` in autocommit may leave state behind in the session. Runs on
/// every Query (it decides whether the statement may share a connection), so it allocates
/// nothing.
pub fn may_change_session(sql: &str) -> bool {
    let [first, second, third] = leading::<3>(sql);
    let is = |word: &str, any: &[&str]| any.iter().any(|w| word.eq_ignore_ascii_case(w));
    const TEMP: &[&str] = &["TEMP", "TEMPORARY"];
    let by_command = if first.eq_ignore_ascii_case("SET") {
        // SET LOCAL and SET TRANSACTION end with the statement's own transaction.
        !is(second, &["LOCAL", "TRANSACTION"])
    } else if first.eq_ignore_ascii_case("CREATE") {
        is(second, TEMP) || (is(second, &["LOCAL", "GLOBAL"]) && is(third, TEMP))
    } else {
        is(
            first,
            &[
                "RESET",
                "LISTEN",
                "PREPARE",
                "DEALLOCATE",
                "DECLARE",
                "LOAD",
                "DO",
                "CALL",
                "DISCARD",
            ],
        )
    };
    by_command || mentions_session_state(sql)
}

/// The transaction-control command `sql` is, if any: these would break the pooling model in
/// Query (a BEGIN left open on a shared connection) and the lease's own bookkeeping in
/// Transaction, so both refuse them. SAVEPOINT, RELEASE and ROLLBACK TO are allowed.
pub fn transaction_control(sql: &str) -> Option<&'static str> {
    // Runs on every request: most statements are decided by their first word, unallocated.
    const CONTROL: [&str; 7] = [
        "BEGIN", "START", "COMMIT", "END", "ABORT", "ROLLBACK", "PREPARE",
    ];
    let first = first_word(sql);
    if !CONTROL.iter().any(|c| c.eq_ignore_ascii_case(first)) {
        return None;
    }
    let words = leading_words(sql, 4);
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match word(0) {
        "BEGIN" => Some("BEGIN"),
        "START" => Some("START TRANSACTION"),
        "COMMIT" | "END" => Some("COMMIT"),
        "ABORT" => Some("ROLLBACK"),
        "ROLLBACK" if !words.iter().any(|w| w == "TO") => Some("ROLLBACK"),
        "PREPARE" if word(1) == "TRANSACTION" => Some("PREPARE TRANSACTION"),
        _ => None,
    }
}

/// Whether `sql` may drop every prepared statement of the session: `DISCARD ALL` or any
/// `DEALLOCATE` (a client may name one of the driver's own statements), also as dynamic SQL
/// inside quoted text. The driver's statements cannot be brought back, so the connection
/// is closed after such a statement rather than reset; erring toward closing costs a
/// reconnect, erring the other way breaks the next caller.
pub fn drops_prepared_statements(sql: &str) -> bool {
    let mut after_discard = false;
    tokens(sql).any(|t| {
        let word = |w: &str| t.kind == Kind::Word && t.text.eq_ignore_ascii_case(w);
        let found = word("DEALLOCATE")
            || (after_discard && word("ALL"))
            || (matches!(t.kind, Kind::String | Kind::QuotedIdent)
                && ["deallocate", "discard"].iter().any(|w| {
                    t.text
                        .as_bytes()
                        .windows(w.len())
                        .any(|b| b.eq_ignore_ascii_case(w.as_bytes()))
                }));
        if t.kind != Kind::Comment {
            after_discard = word("DISCARD");
        }
        found
    })
}

/// Tokens anywhere in the statement that point at session state: the functions above, a
/// temporary table (`SELECT ... INTO TEMP`, `pg_temp.`). Quoted text is looked into as
/// well (dynamic SQL such as `query_to_xml('SELECT set_config(...)', ...)` runs it), erring
/// toward a reset; comments are not.
fn mentions_session_state(sql: &str) -> bool {
    tokens(sql).any(|t| match t.kind {
        Kind::Word if t.text.eq_ignore_ascii_case("temp") => true,
        Kind::Word if t.text.eq_ignore_ascii_case("temporary") => true,
        // Every name looked for has an underscore: most tokens are passed over at once.
        Kind::Word | Kind::QuotedIdent | Kind::String if t.text.contains('_') => {
            let has = |name: &str| {
                t.text
                    .as_bytes()
                    .windows(name.len())
                    .any(|w| w.eq_ignore_ascii_case(name.as_bytes()))
            };
            has("pg_temp") || SESSION_FUNCTIONS.iter().any(|f| has(f))
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_leave_state_behind() {
        let yes = [
            "SET search_path = x",
            "set role app",
            "SET SESSION AUTHORIZATION bob",
            "reset all",
            "LISTEN chan",
            "PREPARE p AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "CREATE TEMP TABLE t (a int)",
            "create local temporary table t (a int)",
            "SELECT 1 INTO TEMP t",
            "SELECT pg_advisory_lock(1)",
            "select pg_try_advisory_lock_shared(1)",
            "SELECT set_config('search_path', 'x', false)",
            "DO $$ BEGIN EXECUTE 'SET work_mem = 1'; END $$",
            "CREATE TABLE pg_temp.t (a int)",
            "SELECT query_to_xml('SELECT set_config(''role'', ''r'', false)', true, true, '')",
            "SELECT \"set_config\"('a.b', 'c', false)",
        ];
        let no = [
            "SELECT 1",
            "SET LOCAL work_mem = '1MB'",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "INSERT INTO t VALUES (1)",
            "SELECT pg_advisory_xact_lock(1)",
            "SELECT temperature FROM readings",
            "CREATE TABLE t (a int)",
            "SELECT 1 /* set_config */",
            "SELECT 'temp' AS word",
        ];
        for sql in yes {
            assert!(may_change_session(sql), "{sql}");
        }
        for sql in no {
            assert!(!may_change_session(sql), "{sql}");
        }
    }

    #[test]
    fn statements_that_drop_every_prepared_statement() {
        for sql in [
            "DEALLOCATE ALL",
            "deallocate prepare all",
            "DEALLOCATE s1",
            "DISCARD ALL",
            "discard /* x */ all",
            "DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$",
        ] {
            assert!(drops_prepared_statements(sql), "{sql}");
        }
        for sql in [
            "DISCARD TEMP",
            "DISCARD PLANS",
            "SELECT 1",
            "SELECT * FROM t WHERE all_done",
            "-- DEALLOCATE ALL\nSELECT 1",
        ] {
            assert!(!drops_prepared_statements(sql), "{sql}");
        }
    }

    #[test]
    fn transaction_control_is_recognised() {
        let cases = [
            ("begin", Some("BEGIN")),
            ("START TRANSACTION READ ONLY", Some("START TRANSACTION")),
            ("commit", Some("COMMIT")),
            ("END", Some("COMMIT")),
            ("rollback", Some("ROLLBACK")),
            ("ABORT", Some("ROLLBACK")),
            ("PREPARE TRANSACTION 'x'", Some("PREPARE TRANSACTION")),
            ("ROLLBACK TO SAVEPOINT s", None),
            ("rollback work to s", None),
            ("SAVEPOINT s", None),
            ("RELEASE SAVEPOINT s", None),
            ("PREPARE p AS SELECT 1", None),
            ("SELECT 1", None),
        ];
        for (sql, want) in cases {
            assert_eq!(transaction_control(sql), want, "{sql}");
        }
    }
}
