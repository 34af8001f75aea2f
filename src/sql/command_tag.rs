//! The PostgreSQL command tag of a statement ("INSERT 0 1", "CREATE OPERATOR CLASS"),
//! rebuilt from the statement's tokens and the row count, since tokio-postgres hands over
//! only the count. The names are those of PostgreSQL's own list (cmdtaglist.h); the
//! integration test `command_tags` checks every one against what the server sends.

use super::lexer::{Kind, Token, tokens};
use super::{leading_words, top_level_words};

/// Words that may stand between CREATE and the object type without being part of the tag:
/// `CREATE OR REPLACE`, `CREATE GLOBAL TEMP`, `CREATE UNIQUE INDEX`, `CREATE CONSTRAINT
/// TRIGGER`, `CREATE DEFAULT CONVERSION`, `CREATE TRUSTED PROCEDURAL LANGUAGE`, ...
const CREATE_MODIFIERS: &[&str] = &[
    "OR",
    "REPLACE",
    "TEMP",
    "TEMPORARY",
    "UNLOGGED",
    "GLOBAL",
    "LOCAL",
    "UNIQUE",
    "RECURSIVE",
    "TRUSTED",
    "PROCEDURAL",
    "CONSTRAINT",
    "DEFAULT",
];

/// The object types of CREATE, ALTER and DROP tags, as the tags name them; where one is the
/// start of another (OPERATOR, OPERATOR CLASS), the longer comes first. USER and GROUP are
/// ROLE in the tag, handled apart.
const OBJECTS: &[&str] = &[
    "ACCESS METHOD",
    "AGGREGATE",
    "CAST",
    "COLLATION",
    "CONVERSION",
    "DATABASE",
    "DEFAULT PRIVILEGES",
    "DOMAIN",
    "EVENT TRIGGER",
    "EXTENSION",
    "FOREIGN DATA WRAPPER",
    "FOREIGN TABLE",
    "FUNCTION",
    "INDEX",
    "LANGUAGE",
    "LARGE OBJECT",
    "MATERIALIZED VIEW",
    "OPERATOR CLASS",
    "OPERATOR FAMILY",
    "OPERATOR",
    "OWNED",
    "POLICY",
    "PROCEDURE",
    "PUBLICATION",
    "ROLE",
    "ROUTINE",
    "RULE",
    "SCHEMA",
    "SEQUENCE",
    "SERVER",
    "STATISTICS",
    "SUBSCRIPTION",
    "SYSTEM",
    "TABLESPACE",
    "TABLE",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH PARSER",
    "TEXT SEARCH TEMPLATE",
    "TRANSFORM",
    "TRIGGER",
    "TYPE",
    "USER MAPPING",
    "VIEW",
];

/// Statements that answer with rows and a count, as the words before the count.
const COUNTED: &[(&str, &str)] = &[
    ("SELECT", "SELECT"),
    ("VALUES", "SELECT"),
    ("TABLE", "SELECT"),
    ("INSERT", "INSERT 0"),
    ("UPDATE", "UPDATE"),
    ("DELETE", "DELETE"),
    ("MERGE", "MERGE"),
    ("FETCH", "FETCH"),
    ("MOVE", "MOVE"),
    ("COPY", "COPY"),
];

/// Statements whose tag is fixed by their first word alone, where it is not the word
/// itself.
const FIXED: &[(&str, &str)] = &[
    ("START", "START TRANSACTION"),
    ("END", "COMMIT"),
    ("ABORT", "ROLLBACK"),
    ("ANALYSE", "ANALYZE"),
    ("LOCK", "LOCK TABLE"),
    ("TRUNCATE", "TRUNCATE TABLE"),
    ("DECLARE", "DECLARE CURSOR"),
    ("REFRESH", "REFRESH MATERIALIZED VIEW"),
    ("SECURITY", "SECURITY LABEL"),
    ("IMPORT", "IMPORT FOREIGN SCHEMA"),
    ("REASSIGN", "REASSIGN OWNED"),
];

/// How a statement's command tag is written: worked out once per statement, rendered with
/// the row count of each execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagShape {
    /// The words before the row count: "SELECT", "INSERT 0", "UPDATE", ...
    Counted(&'static str),
    /// A tag without a count: "CREATE TABLE", "SET", ...
    Fixed(String),
    /// `EXECUTE name`: the tag is that of the statement prepared as `name`, which only the
    /// session knows (see [`prepared_body`]).
    Execute(String),
}

impl TagShape {
    /// The tag for an execution that affected `n` rows.
    pub fn render(&self, n: u64) -> String {
        match self {
            TagShape::Counted(words) => format!("{words} {n}"),
            TagShape::Fixed(tag) => tag.clone(),
            // Unresolved (the session did not say): PostgreSQL's tag for EXECUTE itself.
            TagShape::Execute(_) => "EXECUTE".into(),
        }
    }
}

/// The command tag PostgreSQL sends for `sql` having affected `n` rows.
#[cfg(test)]
fn command_tag(sql: &str, n: u64) -> String {
    shape(sql).render(n)
}

/// The tag shape of `sql`.
pub fn shape(sql: &str) -> TagShape {
    let words = leading_words(sql, 8);
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let verb = match word(0) {
        "WITH" => main_verb_after_with(sql),
        "EXPLAIN" => return TagShape::Fixed("EXPLAIN".into()),
        other => other.to_owned(),
    };
    if let Some((_, counted)) = COUNTED.iter().find(|(v, _)| *v == verb) {
        return TagShape::Counted(counted);
    }
    if let Some((_, fixed)) = FIXED.iter().find(|(v, _)| *v == verb) {
        return TagShape::Fixed((*fixed).into());
    }
    let fixed = match verb.as_str() {
        "CREATE" => match object(&words[1..], true) {
            // CREATE TABLE ... AS and CREATE MATERIALIZED VIEW ... AS report the rows
            // written, unless WITH NO DATA wrote none.
            Some(object @ ("TABLE" | "MATERIALIZED VIEW")) => match created_from_query(sql) {
                Some(true) => return TagShape::Counted("SELECT"),
                Some(false) if object == "TABLE" => "CREATE TABLE AS".into(),
                _ => format!("CREATE {object}"),
            },
            Some(object) => format!("CREATE {object}"),
            None => "CREATE".into(),
        },
        "ALTER" | "DROP" => match object(&words[1..], false) {
            Some(object) => format!("{verb} {object}"),
            None => verb,
        },
        "GRANT" | "REVOKE" => {
            // Privileges are granted ON something; roles are granted to roles.
            if top_level_words(sql).iter().any(|w| w == "ON") {
                verb
            } else {
                format!("{verb} ROLE")
            }
        }
        "CLOSE" if word(1) == "ALL" => "CLOSE CURSOR ALL".into(),
        "CLOSE" => "CLOSE CURSOR".into(),
        "DEALLOCATE" if word(1) == "ALL" || (word(1) == "PREPARE" && word(2) == "ALL") => {
            "DEALLOCATE ALL".into()
        }
        "DISCARD" => match word(1) {
            "TEMPORARY" => "DISCARD TEMP".into(),
            w @ ("ALL" | "PLANS" | "SEQUENCES" | "TEMP") => format!("DISCARD {w}"),
            _ => "DISCARD".into(),
        },
        "SET" if word(1) == "CONSTRAINTS" => "SET CONSTRAINTS".into(),
        "PREPARE" if word(1) == "TRANSACTION" => "PREPARE TRANSACTION".into(),
        "COMMIT" | "ROLLBACK" if word(1) == "PREPARED" => format!("{verb} PREPARED"),
        "EXECUTE" => return TagShape::Execute(first_identifier_after(sql, "EXECUTE")),
        _ => verb,
    };
    TagShape::Fixed(fixed)
}

/// The object type named after CREATE (`create`), ALTER or DROP, modifiers set aside.
fn object(words: &[String], create: bool) -> Option<&'static str> {
    let mut words: Vec<&str> = words.iter().map(String::as_str).collect();
    // DEFAULT is a modifier of CREATE DEFAULT CONVERSION, but part of the object in ALTER
    // DEFAULT PRIVILEGES; ALTER and DROP take only PROCEDURAL (LANGUAGE).
    let modifiers: &[&str] = if create {
        CREATE_MODIFIERS
    } else {
        &["PROCEDURAL"]
    };
    let skipped = words.iter().take_while(|w| modifiers.contains(w)).count();
    words.drain(..skipped);
    if let ["USER" | "GROUP", rest @ ..] = words.as_slice() {
        // USER MAPPING [IF [NOT] EXISTS] FOR ...; any other USER or GROUP is a role (even
        // one named "mapping").
        let mapping =
            rest.first() == Some(&"MAPPING") && matches!(rest.get(1), Some(&"FOR") | Some(&"IF"));
        return Some(if mapping { "USER MAPPING" } else { "ROLE" });
    }
    OBJECTS.iter().copied().find(|object| {
        let parts = object.split(' ');
        parts.clone().count() <= words.len() && parts.zip(&words).all(|(p, w)| p == *w)
    })
}

/// The statement a WITH clause leads to: the first top-level SELECT, INSERT, UPDATE,
/// DELETE, MERGE, VALUES or TABLE after the common table expressions.
fn main_verb_after_with(sql: &str) -> String {
    top_level_words(sql)
        .into_iter()
        .find(|w| {
            [
                "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE",
            ]
            .contains(&w.as_str())
        })
        .unwrap_or_else(|| "SELECT".to_owned())
}

/// For `CREATE TABLE` or `CREATE MATERIALIZED VIEW`: `None` when it is not made from a
/// query, else whether the query's rows are written (false for `WITH NO DATA`). The query
/// follows the first `AS` outside parentheses.
fn created_from_query(sql: &str) -> Option<bool> {
    let mut depth = 0i32;
    let mut after_as = false;
    let mut from_query = false;
    let top: Vec<Token<'_>> = tokens(sql)
        .filter(|t| t.kind != Kind::Comment)
        .filter(|t| {
            let at_top = depth == 0;
            match t.text {
                "(" => depth += 1,
                ")" => depth -= 1,
                _ => {}
            }
            at_top
        })
        .collect();
    for t in &top {
        if after_as {
            // AS followed by a query (or a parenthesised one), not AS in a column alias or
            // an option: only a query may follow a top-level AS here.
            from_query = t.text == "("
                || (t.kind == Kind::Word
                    && ["SELECT", "VALUES", "TABLE", "WITH", "EXECUTE"]
                        .iter()
                        .any(|w| t.text.eq_ignore_ascii_case(w)));
            break;
        }
        after_as = t.kind == Kind::Word && t.text.eq_ignore_ascii_case("AS");
    }
    if !from_query {
        return None;
    }
    let words: Vec<String> = top
        .iter()
        .filter(|t| t.kind == Kind::Word)
        .map(|t| t.text.to_ascii_uppercase())
        .collect();
    let no_data = words
        .windows(3)
        .any(|w| w[0] == "WITH" && w[1] == "NO" && w[2] == "DATA");
    Some(!no_data)
}

/// The identifier after the first top-level `keyword` (`EXECUTE name`, `PREPARE name`):
/// unquoted names fold to lower case, quoted ones are taken as written; empty if none.
pub(crate) fn first_identifier_after(sql: &str, keyword: &str) -> String {
    let mut seen = false;
    for t in tokens(sql).filter(|t| t.kind != Kind::Comment) {
        if seen {
            return match t.kind {
                Kind::Word => t.text.to_lowercase(),
                Kind::QuotedIdent => unquote_identifier(t.text),
                _ => String::new(),
            };
        }
        seen = t.kind == Kind::Word && t.text.eq_ignore_ascii_case(keyword);
    }
    String::new()
}

/// `"a""b"` → `a"b`; `U&"..."` is left as written (its escapes are not decoded here).
fn unquote_identifier(text: &str) -> String {
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => text.to_owned(),
    }
}

/// The statement a prepared statement runs, from the text `pg_prepared_statements` keeps:
/// for SQL-level `PREPARE name [(types)] AS statement`, what follows the first top-level
/// AS; for a protocol-level statement, its text itself.
pub fn prepared_body(text: &str) -> &str {
    let mut depth = 0i32;
    let mut iter = tokens(text).filter(|t| t.kind != Kind::Comment);
    match iter.next() {
        Some(t) if t.kind == Kind::Word && t.text.eq_ignore_ascii_case("PREPARE") => {}
        _ => return text,
    }
    for t in iter {
        match t.text {
            "(" => depth += 1,
            ")" => depth -= 1,
            _ if depth == 0 && t.kind == Kind::Word && t.text.eq_ignore_ascii_case("AS") => {
                // The token's text is a slice of `text`: what follows it is the body.
                let end = t.text.as_ptr() as usize - text.as_ptr() as usize + t.text.len();
                return &text[end..];
            }
            _ => {}
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags as psql prints them for each statement (checked against PostgreSQL 15).
    #[test]
    fn tags_match_postgres() {
        let cases: &[(&str, u64, &str)] = &[
            ("select 1", 1, "SELECT 1"),
            ("  -- hi\n (SELECT 1)", 1, "SELECT 1"),
            ("/* c */ values (1),(2)", 2, "SELECT 2"),
            ("insert into t values (1)", 1, "INSERT 0 1"),
            ("update t set a = 1", 3, "UPDATE 3"),
            ("delete from t", 0, "DELETE 0"),
            (
                "with x as (select 1) insert into t select * from x",
                1,
                "INSERT 0 1",
            ),
            (
                "WITH a AS (DELETE FROM t RETURNING *) SELECT * FROM a",
                2,
                "SELECT 2",
            ),
            ("create table t (a int)", 0, "CREATE TABLE"),
            ("create temp table t (a int)", 0, "CREATE TABLE"),
            ("create unique index i on t (a)", 0, "CREATE INDEX"),
            (
                "create or replace function f() returns int as 'select 1' language sql",
                0,
                "CREATE FUNCTION",
            ),
            ("create materialized view v as select 1", 1, "SELECT 1"),
            ("drop table if exists t", 0, "DROP TABLE"),
            ("alter table t add column b int", 0, "ALTER TABLE"),
            ("create user bob", 0, "CREATE ROLE"),
            ("create table t2 as select 1", 1, "SELECT 1"),
            ("truncate t", 0, "TRUNCATE TABLE"),
            ("set search_path = public", 0, "SET"),
            ("reset all", 0, "RESET"),
            ("begin", 0, "BEGIN"),
            ("start transaction", 0, "START TRANSACTION"),
            ("end", 0, "COMMIT"),
            ("discard all", 0, "DISCARD ALL"),
            ("lock table t", 0, "LOCK TABLE"),
            ("do $$ begin end $$", 0, "DO"),
            ("listen chan", 0, "LISTEN"),
            ("show work_mem", 1, "SHOW"),
            (
                "CREATE OPERATOR CLASS c FOR TYPE int4 USING btree AS OPERATOR 1 <",
                0,
                "CREATE OPERATOR CLASS",
            ),
            (
                "CREATE FUNCTION g(int) RETURNS TABLE(a int) LANGUAGE sql AS $$SELECT $1$$",
                0,
                "CREATE FUNCTION",
            ),
            ("create table t as (select 1)", 1, "SELECT 1"),
            (
                "create table t as select 1 with no data",
                0,
                "CREATE TABLE AS",
            ),
            (
                "create materialized view v as select 1 with no data",
                0,
                "CREATE MATERIALIZED VIEW",
            ),
            (
                "create table t (a int, b text default 'AS SELECT')",
                0,
                "CREATE TABLE",
            ),
            (
                "alter default privileges grant select on tables to r",
                0,
                "ALTER DEFAULT PRIVILEGES",
            ),
            ("alter large object 1 owner to r", 0, "ALTER LARGE OBJECT"),
            (
                "create foreign data wrapper w",
                0,
                "CREATE FOREIGN DATA WRAPPER",
            ),
            (
                "create user mapping for r server s",
                0,
                "CREATE USER MAPPING",
            ),
            ("create user mapping", 0, "CREATE ROLE"),
            ("drop group g", 0, "DROP ROLE"),
            (
                "create default conversion c for 'LATIN1' to 'UTF8' from f",
                0,
                "CREATE CONVERSION",
            ),
            (
                "create constraint trigger t after insert on x for each row execute function f()",
                0,
                "CREATE TRIGGER",
            ),
            ("grant select on t to r", 0, "GRANT"),
            ("grant r to s", 0, "GRANT ROLE"),
            ("revoke admin option for r from s", 0, "REVOKE ROLE"),
            ("discard temporary", 0, "DISCARD TEMP"),
            ("deallocate prepare all", 0, "DEALLOCATE ALL"),
            ("explain analyze insert into t values (1)", 0, "EXPLAIN"),
            ("rollback prepared 'x'", 0, "ROLLBACK PREPARED"),
            ("EXECUTE p (1)", 1, "EXECUTE"),
        ];
        for (sql, rows, want) in cases {
            assert_eq!(command_tag(sql, *rows), *want, "{sql}");
        }
    }

    #[test]
    fn prepared_statements_are_named_and_their_bodies_found() {
        assert_eq!(
            shape("EXECUTE Plan_A (1)"),
            TagShape::Execute("plan_a".into())
        );
        assert_eq!(
            shape("execute \"Plan \"\"A\"\"\""),
            TagShape::Execute("Plan \"A\"".into())
        );
        assert_eq!(
            prepared_body("PREPARE p (int, text) AS INSERT INTO t VALUES ($1, $2)"),
            " INSERT INTO t VALUES ($1, $2)"
        );
        assert_eq!(prepared_body("prepare p as select 'AS'"), " select 'AS'");
        assert_eq!(prepared_body("SELECT 1"), "SELECT 1");
        assert_eq!(
            shape(prepared_body("PREPARE q AS UPDATE t SET a = 1")),
            TagShape::Counted("UPDATE")
        );
    }
}
