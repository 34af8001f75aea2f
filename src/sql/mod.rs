//! Lexical looks at SQL text (leading keywords, words outside parentheses) for the few
//! decisions the sidecar makes from a statement's text: its command tag and whether it
//! changes session state. No parsing beyond skipping comments, quotes and parentheses.

pub mod command_tag;
pub mod fingerprint;
pub mod session;

pub use command_tag::TagShape;

/// Up to `limit` leading words, upper-cased, skipping whitespace, comments and parentheses.
pub(crate) fn leading_words(sql: &str, limit: usize) -> Vec<String> {
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

/// The first word, as written (no allocation), skipping whitespace, comments and parentheses.
pub(crate) fn first_word(sql: &str) -> &str {
    let rest = skip_noise(sql);
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
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

/// Words outside every parenthesis, upper-cased, skipping quoted text and comments: what
/// is left of a statement once CTE bodies and column lists are set aside.
pub(crate) fn top_level_words(sql: &str) -> Vec<String> {
    let bytes = sql.as_bytes();
    let mut words = Vec::new();
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
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if depth == 0 {
                    words.push(sql[start..i].to_ascii_uppercase());
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    words
}
