//! Statement fingerprints: the text with literals replaced by `?`, comments dropped and
//! whitespace collapsed, and a stable hash of it, so statements that differ only in constants
//! or comments group together in the statement report and logs (as pg_stat_statements
//! groups them), and no value or comment ever reaches either.

use super::lexer::{Kind, tokens};

/// The statement's text with constants (strings of every form, dollar-quoted included, and
/// numbers) replaced by `?`, comments dropped, and whitespace collapsed to one space.
/// Comments go because people put secrets in them (`-- password=...`) and because they
/// carry no meaning for grouping; a dropped comment counts as whitespace, as in PostgreSQL.
pub fn normalize(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len().min(512));
    let mut spaced = false;
    for t in tokens(sql) {
        spaced |= t.spaced;
        if t.kind == Kind::Comment {
            spaced = true;
            continue;
        }
        if spaced && !out.is_empty() {
            out.push(' ');
        }
        spaced = false;
        match t.kind {
            Kind::String | Kind::Number => out.push('?'),
            _ => out.push_str(t.text),
        }
    }
    out
}

/// The report key of `sql`: the fingerprint of its normalized text.
pub fn key_of(sql: &str) -> u64 {
    fingerprint_of(&normalize(sql))
}

/// A stable 64-bit fingerprint of the normalized text (SipHash with fixed keys).
pub fn fingerprint_of(normalized: &str) -> u64 {
    crate::hash::stable(normalized)
}

/// The fingerprint of `sql`, in hex, as logs and the report show it.
pub fn fingerprint(sql: &str) -> String {
    format!("{:016x}", fingerprint_of(&normalize(sql)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_replaced_and_whitespace_collapsed() {
        let cases = [
            (
                "SELECT * FROM t WHERE id = 42",
                "SELECT * FROM t WHERE id = ?",
            ),
            (
                "select 'it''s', 3.14,  x1\n from t2",
                "select ?, ?, x1 from t2",
            ),
            ("SELECT $1::int, $22", "SELECT $1::int, $22"),
            (
                "SELECT E'a\\'b', $x$ secret $x$, x'1f', 1e-5 FROM t9",
                "SELECT ?, ?, ?, ? FROM t9",
            ),
            (
                "  UPDATE t SET a = 'secret' WHERE b = 7  ",
                "UPDATE t SET a = ? WHERE b = ?",
            ),
            (
                "CREATE ROLE r LOGIN PASSWORD $$pw$$",
                "CREATE ROLE r LOGIN PASSWORD ?",
            ),
            ("SELECT $tag$ a 'b' $tag$ AS x", "SELECT ? AS x"),
            ("SELECT $€$secret$€$", "SELECT ?"),
            ("SELECT 1 -- password=hunter2", "SELECT ?"),
            ("SELECT /* token=abc */ 2", "SELECT ?"),
            ("SELECT/* a /* nested */ b */x FROM t", "SELECT x FROM t"),
            ("-- lead\nSELECT x--tail", "SELECT x"),
            ("SELECT 'open -- not a comment", "SELECT ?"),
        ];
        for (sql, want) in cases {
            assert_eq!(normalize(sql), want, "{sql}");
        }
        assert_eq!(fingerprint("SELECT 1"), fingerprint("SELECT   2"));
        assert_ne!(fingerprint("SELECT 1"), fingerprint("SELECT 1 FROM t"));
        assert_eq!(
            fingerprint("SELECT 1 /* a */"),
            fingerprint("SELECT 1 -- b"),
            "comments do not split a statement's figures"
        );
    }
}
