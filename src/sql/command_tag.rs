//! The PostgreSQL command tag of a statement ("INSERT 0 1", "CREATE TABLE"), rebuilt from its
//! leading keywords and row count, since tokio-postgres hands over only the count.

use super::{leading_words, top_level_words};

/// Modifiers that sit between CREATE/DROP/ALTER and the object type.
const MODIFIERS: &[&str] = &[
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

/// Object types named by two words.
const TWO_WORD_OBJECTS: &[&str] = &[
    "MATERIALIZED",
    "FOREIGN",
    "EVENT",
    "TEXT",
    "ACCESS",
    "USER",
    "DEFAULT",
];

/// How a statement's command tag is written: worked out once per statement, rendered with
/// the row count of each execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagShape {
    /// The words before the row count: "SELECT", "INSERT 0", "UPDATE", ...
    Counted(&'static str),
    /// A tag without a count: "CREATE TABLE", "SET", ...
    Fixed(String),
}

impl TagShape {
    /// The tag for an execution that affected `n` rows.
    pub fn render(&self, n: u64) -> String {
        match self {
            TagShape::Counted(words) => format!("{words} {n}"),
            TagShape::Fixed(tag) => tag.clone(),
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
    let words = leading_words(sql, 6);
    let first = words.first().map(String::as_str).unwrap_or("");
    let verb = if first == "WITH" {
        let top = top_level_words(sql);
        top.into_iter()
            .find(|w| {
                [
                    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE",
                ]
                .contains(&w.as_str())
            })
            .unwrap_or_else(|| "SELECT".to_owned())
    } else {
        first.to_owned()
    };
    let fixed = match verb.as_str() {
        "SELECT" | "VALUES" | "TABLE" => return TagShape::Counted("SELECT"),
        "INSERT" => return TagShape::Counted("INSERT 0"),
        "UPDATE" => return TagShape::Counted("UPDATE"),
        "DELETE" => return TagShape::Counted("DELETE"),
        "MERGE" => return TagShape::Counted("MERGE"),
        "FETCH" => return TagShape::Counted("FETCH"),
        "MOVE" => return TagShape::Counted("MOVE"),
        "COPY" => return TagShape::Counted("COPY"),
        // CREATE TABLE ... AS and CREATE MATERIALIZED VIEW ... AS report the rows written.
        "CREATE" if creates_from_query(sql) => return TagShape::Counted("SELECT"),
        "CREATE" | "DROP" | "ALTER" => {
            let objects: Vec<&str> = words[1..]
                .iter()
                .map(String::as_str)
                .skip_while(|w| MODIFIERS.contains(w))
                .collect();
            let object = match objects.as_slice() {
                ["USER" | "GROUP", next, ..] if *next != "MAPPING" => "ROLE".to_owned(),
                [two, second, ..] if TWO_WORD_OBJECTS.contains(two) => {
                    if *two == "TEXT" {
                        // TEXT SEARCH CONFIGURATION|DICTIONARY|PARSER|TEMPLATE
                        objects[..3.min(objects.len())].join(" ")
                    } else {
                        format!("{two} {second}")
                    }
                }
                [one, ..] => (*one).to_owned(),
                [] => String::new(),
            };
            format!("{verb} {object}").trim_end().to_owned()
        }
        "START" => "START TRANSACTION".into(),
        "END" => "COMMIT".into(),
        "ABORT" => "ROLLBACK".into(),
        "ANALYSE" => "ANALYZE".into(),
        "LOCK" => "LOCK TABLE".into(),
        "TRUNCATE" => "TRUNCATE TABLE".into(),
        "DECLARE" => "DECLARE CURSOR".into(),
        "CLOSE" if words.get(1).is_some_and(|w| w == "ALL") => "CLOSE CURSOR ALL".into(),
        "CLOSE" => "CLOSE CURSOR".into(),
        "REFRESH" => "REFRESH MATERIALIZED VIEW".into(),
        "SECURITY" => "SECURITY LABEL".into(),
        "IMPORT" => "IMPORT FOREIGN SCHEMA".into(),
        "REASSIGN" => "REASSIGN OWNED".into(),
        "DISCARD" | "DEALLOCATE" if words.get(1).is_some_and(|w| w == "ALL") => {
            format!("{verb} ALL")
        }
        "DISCARD" => format!("DISCARD {}", words.get(1).map(String::as_str).unwrap_or("")),
        "SET" if words.get(1).is_some_and(|w| w == "CONSTRAINTS") => "SET CONSTRAINTS".into(),
        "PREPARE" if words.get(1).is_some_and(|w| w == "TRANSACTION") => {
            "PREPARE TRANSACTION".into()
        }
        "COMMIT" | "ROLLBACK" if words.get(1).is_some_and(|w| w == "PREPARED") => {
            format!("{verb} PREPARED")
        }
        _ => verb,
    };
    TagShape::Fixed(fixed)
}

/// `CREATE TABLE ... AS <query>` or `CREATE MATERIALIZED VIEW ... AS <query>`.
fn creates_from_query(sql: &str) -> bool {
    let words = top_level_words(sql);
    let is_table_or_matview = words
        .iter()
        .take(6)
        .any(|w| w == "TABLE" || w == "MATERIALIZED");
    is_table_or_matview
        && words.windows(2).any(|w| {
            w[0] == "AS"
                && ["SELECT", "VALUES", "TABLE", "WITH", "EXECUTE"].contains(&w[1].as_str())
        })
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
        ];
        for (sql, rows, want) in cases {
            assert_eq!(command_tag(sql, *rows), *want, "{sql}");
        }
    }
}
