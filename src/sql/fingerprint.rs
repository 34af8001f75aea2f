//! Statement fingerprints: the text with literals replaced by `?` and whitespace collapsed,
//! and a stable hash of it, so statements that differ only in constants group together in
//! the statement report and logs, and no value ever reaches either.

/// The statement's text with literals replaced by `?` and whitespace collapsed.
pub fn normalize(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len().min(512));
    let mut chars = sql.chars().peekable();
    let mut last_space = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                // A string literal, with '' as an escaped quote.
                while let Some(d) = chars.next() {
                    if d == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                out.push('?');
                last_space = false;
            }
            c if c.is_ascii_digit()
                && !out.ends_with(|p: char| p.is_alphanumeric() || p == '_' || p == '$') =>
            {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
                {
                    chars.next();
                }
                out.push('?');
                last_space = false;
            }
            c if c.is_whitespace() => {
                if !last_space && !out.is_empty() {
                    out.push(' ');
                }
                last_space = true;
            }
            c => {
                out.push(c);
                last_space = false;
            }
        }
    }
    out.truncate(out.trim_end().len());
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
                "  UPDATE t SET a = 'secret' WHERE b = 7  ",
                "UPDATE t SET a = ? WHERE b = ?",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(normalize(sql), want, "{sql}");
        }
        assert_eq!(fingerprint("SELECT 1"), fingerprint("SELECT   2"));
        assert_ne!(fingerprint("SELECT 1"), fingerprint("SELECT 1 FROM t"));
    }
}
