//! The PostgreSQL command tag of a statement ("INSERT 0 1", "CREATE TABLE"), rebuilt from its
//! leading keywords and row count, since tokio-postgres hands over only the count.

/// Modifiers that sit between CREATE/DROP/ALTER and the object type.
const MODIFIERS: &[&str] = &[
    "OR", "REPLACE", "TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL", "UNIQUE", "RECURSIVE",
    "TRUSTED", "PROCEDURAL", "CONSTRAINT", "DEFAULT",
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

/// The command tag PostgreSQL sends for `sql` having affected `rows`.
pub fn command_tag(sql: &str, rows: Option<u64>) -> String {
    let words = leading_words(sql, 6);
    let first = words.first().map(String::as_str).unwrap_or("");
    let n = rows.unwrap_or(0);
    let verb = if first == "WITH" {
        main_verb_after_ctes(sql).unwrap_or_else(|| "SELECT".to_owned())
    } else {
        first.to_owned()
    };
    match verb.as_str() {
        "SELECT" | "VALUES" | "TABLE" => format!("SELECT {n}"),
        "INSERT" => format!("INSERT 0 {n}"),
        "UPDATE" | "DELETE" | "MERGE" | "FETCH" | "MOVE" | "COPY" => format!("{verb} {n}"),
        // CREATE TABLE ... AS and SELECT INTO report the rows they wrote.
        "CREATE" if rows.is_some() => format!("SELECT {n}"),
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
    }
}

/// Up to `limit` leading words, upper-cased, skipping whitespace, comments and parentheses.
fn leading_words(sql: &str, limit: usize) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = sql;
    while words.len() < limit {
        rest = skip_noise(rest);
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        words.push(rest[..end].to_ascii_uppercase());
        rest = &rest[end..];
    }
    words
}

/// Skips whitespace, `--` and `/* */` comments, and `(`.
fn skip_noise(mut s: &str) -> &str {
    loop {
        let t = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(r) = t.strip_prefix("--") {
            s = r.find('\n').map_or("", |i| &r[i + 1..]);
        } else if let Some(r) = t.strip_prefix("/*") {
            s = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else {
            return t;
        }
    }
}

/// The statement a `WITH` query runs: the first data-modifying or SELECT keyword outside
/// every CTE's parentheses, skipping quoted text.
fn main_verb_after_ctes(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let mut depth = 0i32;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            c if depth == 0 && c.is_ascii_alphabetic() => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = sql[start..i].to_ascii_uppercase();
                if ["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE"]
                    .contains(&word.as_str())
                {
                    return Some(word);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags as psql prints them for each statement (checked against PostgreSQL 15).
    #[test]
    fn tags_match_postgres() {
        let cases: &[(&str, Option<u64>, &str)] = &[
            ("select 1", Some(1), "SELECT 1"),
            ("  -- hi\n (SELECT 1)", Some(1), "SELECT 1"),
            ("/* c */ values (1),(2)", Some(2), "SELECT 2"),
            ("insert into t values (1)", Some(1), "INSERT 0 1"),
            ("update t set a = 1", Some(3), "UPDATE 3"),
            ("delete from t", Some(0), "DELETE 0"),
            ("with x as (select 1) insert into t select * from x", Some(1), "INSERT 0 1"),
            ("WITH a AS (DELETE FROM t RETURNING *) SELECT * FROM a", Some(2), "SELECT 2"),
            ("create table t (a int)", None, "CREATE TABLE"),
            ("create temp table t (a int)", None, "CREATE TABLE"),
            ("create unique index i on t (a)", None, "CREATE INDEX"),
            ("create or replace function f() returns int as 'select 1' language sql", None, "CREATE FUNCTION"),
            ("create materialized view v as select 1", Some(1), "SELECT 1"),
            ("drop table if exists t", None, "DROP TABLE"),
            ("alter table t add column b int", None, "ALTER TABLE"),
            ("create user bob", None, "CREATE ROLE"),
            ("create table t2 as select 1", Some(1), "SELECT 1"),
            ("truncate t", None, "TRUNCATE TABLE"),
            ("set search_path = public", None, "SET"),
            ("reset all", None, "RESET"),
            ("begin", None, "BEGIN"),
            ("start transaction", None, "START TRANSACTION"),
            ("end", None, "COMMIT"),
            ("discard all", None, "DISCARD ALL"),
            ("lock table t", None, "LOCK TABLE"),
            ("do $$ begin end $$", None, "DO"),
            ("listen chan", None, "LISTEN"),
            ("show work_mem", Some(1), "SHOW"),
        ];
        for (sql, rows, want) in cases {
            assert_eq!(command_tag(sql, *rows), *want, "{sql}");
        }
    }
}
