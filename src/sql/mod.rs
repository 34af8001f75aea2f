//! SQL text: the few decisions the sidecar makes from a statement's text (its command tag,
//! whether it may change session state or is transaction control, its fingerprint), all
//! made over the tokens of one lexer.

pub mod command_tag;
pub mod fingerprint;
pub mod lexer;
pub mod session;

pub use command_tag::TagShape;

use lexer::{Kind, Token, tokens};

/// The tokens that open a statement: comments and opening parentheses set aside.
fn opening(sql: &str) -> impl Iterator<Item = Token<'_>> {
    tokens(sql).filter(|t| !(t.kind == Kind::Comment || t.text == "("))
}

/// Up to `limit` leading words, upper-cased, skipping comments and parentheses; the first
/// token that is not a word ends them.
pub(crate) fn leading_words(sql: &str, limit: usize) -> Vec<String> {
    opening(sql)
        .take_while(|t| t.kind == Kind::Word)
        .take(limit)
        .map(|t| t.text.to_ascii_uppercase())
        .collect()
}

/// The first `N` leading words as written (no allocation), skipping comments and
/// parentheses; the first token that is not a word ends them, and missing ones are empty.
/// Compare them with `eq_ignore_ascii_case`.
pub(crate) fn leading<const N: usize>(sql: &str) -> [&str; N] {
    let mut words = [""; N];
    let found = opening(sql).take_while(|t| t.kind == Kind::Word).take(N);
    for (slot, t) in words.iter_mut().zip(found) {
        *slot = t.text;
    }
    words
}

/// The first word, as written (no allocation), skipping comments and parentheses; empty
/// when the statement does not start with a word.
pub(crate) fn first_word(sql: &str) -> &str {
    opening(sql)
        .next()
        .filter(|t| t.kind == Kind::Word)
        .map_or("", |t| t.text)
}

/// Whether `sql` is a query PostgreSQL accepts as a cursor's (`DECLARE ... CURSOR FOR`): a
/// SELECT, VALUES or TABLE, or a WITH whose parts modify nothing.
pub fn is_cursor_query(sql: &str) -> bool {
    let first = first_word(sql).to_ascii_uppercase();
    let modifies = || {
        tokens(sql).any(|t| {
            t.kind == Kind::Word
                && ["INSERT", "UPDATE", "DELETE", "MERGE", "INTO"]
                    .iter()
                    .any(|w| t.text.eq_ignore_ascii_case(w))
        })
    };
    match first.as_str() {
        "SELECT" | "VALUES" | "TABLE" | "WITH" => !modifies(),
        _ => false,
    }
}

/// Words outside every parenthesis, upper-cased, skipping quoted text and comments: what
/// is left of a statement once CTE bodies and column lists are set aside.
pub(crate) fn top_level_words(sql: &str) -> Vec<String> {
    let mut depth = 0i32;
    let mut words = Vec::new();
    for t in tokens(sql) {
        match (t.kind, t.text) {
            (Kind::Punct, "(") => depth += 1,
            (Kind::Punct, ")") => depth -= 1,
            (Kind::Word, w) if depth == 0 => words.push(w.to_ascii_uppercase()),
            _ => {}
        }
    }
    words
}

/// `COPY ... FROM STDIN` or `COPY ... TO STDOUT`, named so, when `sql` is one: PostgreSQL
/// then switches the connection to its copy sub-protocol, which the sidecar does not carry
/// (a COPY to or from a file on the server, or a program, is an ordinary statement). Only
/// top-level words count, so `COPY (SELECT 'STDOUT') TO '/f'` is not one.
pub fn copy_with_client(sql: &str) -> Option<&'static str> {
    if !first_word(sql).eq_ignore_ascii_case("COPY") {
        return None;
    }
    let words = top_level_words(sql);
    if words.iter().any(|w| w == "STDIN") {
        Some("COPY FROM STDIN")
    } else if words.iter().any(|w| w == "STDOUT") {
        Some("COPY TO STDOUT")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_with_the_client_is_told_from_other_copies() {
        let cases = [
            ("COPY t FROM STDIN", Some("COPY FROM STDIN")),
            (
                "copy t (a, b) from stdin with (format csv)",
                Some("COPY FROM STDIN"),
            ),
            ("/* x */ COPY t FROM STDIN", Some("COPY FROM STDIN")),
            ("-- x\nCOPY t TO STDOUT", Some("COPY TO STDOUT")),
            (
                "COPY (SELECT 1) TO STDOUT (FORMAT binary)",
                Some("COPY TO STDOUT"),
            ),
            ("COPY (SELECT 'STDOUT') TO '/tmp/f'", None),
            ("COPY t FROM '/tmp/stdin'", None),
            ("COPY t TO PROGRAM 'gzip > /tmp/f'", None),
            ("SELECT 'COPY t FROM STDIN'", None),
            ("SELECT stdin FROM copy", None),
            ("/* COPY t TO STDOUT */ SELECT 1", None),
        ];
        for (sql, want) in cases {
            assert_eq!(super::copy_with_client(sql), want, "{sql}");
        }
    }

    #[test]
    fn cursor_queries_are_plain_reads() {
        for sql in [
            "SELECT point(1, 2)",
            "(SELECT 1)",
            "VALUES (1)",
            "TABLE t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "select deleted_at from t",
        ] {
            assert!(super::is_cursor_query(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1) RETURNING p",
            "WITH x AS (DELETE FROM t RETURNING p) SELECT * FROM x",
            "SELECT * INTO t2 FROM t",
            "SELECT * FROM t FOR UPDATE",
            "SHOW work_mem",
        ] {
            assert!(!super::is_cursor_query(sql), "{sql}");
        }
    }
}
