//! Password redaction for connection strings: URL and key=value forms, so that a database URL
//! can be logged or shown in `{:?}` without its password.

use percent_encoding::percent_decode_str;
use url::Url;

/// `url` with any password replaced by `***`, in URL form (userinfo and `password=` query
/// parameter) and in key=value form. Never panics; on text it cannot make sense of it errs
/// towards hiding too much.
pub fn redact_url(url: &str) -> String {
    // After a real scheme, not just any text before `://`: `password=a://b` is key=value form.
    let scheme_end = url.find("://").filter(|&i| {
        let scheme = url[..i].trim_start();
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if scheme_end.is_none() && url.contains('=') {
        return redact_conninfo(url);
    }
    let userinfo_start = scheme_end.map_or(0, |i| i + "://".len());
    redact_with_url_crate(url).unwrap_or_else(|| redact_loosely(url, userinfo_start))
}

/// `url` redacted by the `url` crate, or `None` where that crate and libpq may disagree on
/// where the password is.
fn redact_with_url_crate(url: &str) -> Option<String> {
    let mut parsed = Url::parse(url).ok()?;
    // `url` ends the userinfo at the first `/`, `?` or `#`; libpq at an `@`, which may also
    // occur inside the password. Only when the sole `@` is the one `url` took as the end of the
    // userinfo can they not disagree (`u:12/ss@h` is user u, password 12/ss to libpq, but
    // host u, port 12 to `url`). Nor has libpq fragments: `?password=a#b` is all password.
    let has_userinfo = !parsed.username().is_empty() || parsed.password().is_some();
    if url.matches('@').count() != usize::from(has_userinfo) || parsed.fragment().is_some() {
        return None;
    }
    let mut hidden = false;
    if parsed.password().is_some() {
        parsed.set_password(Some("***")).ok()?;
        hidden = true;
    }
    if let Some(query) = parsed.query() {
        // By hand rather than with `query_pairs_mut`, which would re-encode the other pairs.
        // tokio-postgres percent-decodes keys, so `pass%77ord` is a password too.
        let is_password = |key: &str| {
            let key = percent_decode_str(key).decode_utf8_lossy();
            key.trim().eq_ignore_ascii_case("password")
        };
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_password(key) => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        let redacted = redacted.join("&");
        if redacted != query {
            parsed.set_query(Some(&redacted));
            hidden = true;
        }
    }
    // Nothing hidden: return the text as written, not as `url` would normalize it.
    Some(if hidden {
        parsed.into()
    } else {
        url.to_owned()
    })
}

/// For what `url` cannot parse as libpq would (several `host:port`s, `/`, `?` or `@` in a
/// password, a missing scheme): hides from the first `:` after the scheme to the last `@`, and
/// the whole query if it mentions a password. Rough, so it hides too much, never too little.
fn redact_loosely(url: &str, userinfo_start: usize) -> String {
    let rest = &url[userinfo_start..];
    let userinfo = match (rest.find(':'), rest.rfind('@')) {
        (Some(colon), Some(at)) if colon < at => userinfo_start + colon + 1..userinfo_start + at,
        _ => 0..0,
    };
    let query = match url.find('?') {
        Some(q) if url[q..].to_ascii_lowercase().contains("password") => q + 1..url.len(),
        _ => 0..0,
    };
    // The two ranges may overlap (a `?` in the password), so hide per character.
    let mut out = String::with_capacity(url.len());
    let mut hiding = false;
    for (i, c) in url.char_indices() {
        let hide = userinfo.contains(&i) || query.contains(&i);
        if !hide {
            out.push(c);
        } else if !hiding {
            out.push_str("***");
        }
        hiding = hide;
    }
    out
}

/// Key=value form: hides the value after each `password` keyword, quoted or not, with or
/// without `=` (even malformed, the next word is most likely the password). A scan rather than
/// a tokenizer: a `password` inside another value hides the word after it too, which errs the
/// safe way.
fn redact_conninfo(s: &str) -> String {
    // ASCII lowercasing keeps every byte offset, so positions in `lower` are positions in `s`.
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    for (at, keyword) in lower.match_indices("password") {
        // Inside a value already hidden, or the tail of a longer word: not a keyword.
        if at < copied || s[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let after = s[at + keyword.len()..].trim_start();
        let value = after.strip_prefix('=').unwrap_or(after).trim_start();
        let start = s.len() - value.len();
        let len = value_len(value);
        if len > 0 {
            out.push_str(&s[copied..start]);
            out.push_str("***");
            copied = start + len;
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// Byte length of the key=value value that `s` starts with: a `'...'` string or text up to
/// whitespace, `\` escaping the next character in both (as tokio-postgres reads them).
fn value_len(s: &str) -> usize {
    let quoted = s.starts_with('\'');
    let mut chars = s.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return i + 1,
            c if c.is_whitespace() && !quoted => return i,
            _ => {}
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_passwords() {
        #[rustfmt::skip]
        let cases = [
            ("postgres://u:secret@h/db", "postgres://u:***@h/db"),
            ("postgresql://u:se%40cret@h:5/db?sslmode=require", "postgresql://u:***@h:5/db?sslmode=require"),
            ("host=h password=secret user=u", "host=h password=*** user=u"),
            ("host=h password = 'se cret\\' x' user=u", "host=h password = *** user=u"),
            ("host=h PASSWORD=secret", "host=h PASSWORD=***"),
            ("postgres://u@h:5432/db", "postgres://u@h:5432/db"),
            ("postgres://h/db?user=u", "postgres://h/db?user=u"),
            ("host=h user=u", "host=h user=u"),
            ("postgres://u@h/db?password=secret&sslmode=require", "postgres://u@h/db?password=***&sslmode=require"),
            // What the `url` crate reads differently from libpq: several hosts, `/` or `@` in
            // the password, a missing scheme.
            ("postgres://u:p@ss@h1:5432,h2/db", "postgres://u:***@h1:5432,h2/db"),
            ("postgres://u:pa/ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:12/ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h1:1,h2:2/db?password=secret", "postgres://u@h1:1,h2:2/db?***"),
            ("postgres://u@h/db?password=se@cret", "postgres://u@h/db?***"),
            ("postgres://u@h/db?password=se#cret", "postgres://u@h/db?***"),
            ("u:secret@h/db", "u:***@h/db"),
            // Percent-encoded keys are decoded by tokio-postgres, and by the redaction.
            ("postgres://h/db?pass%77ord=secret", "postgres://h/db?pass%77ord=***"),
            // `://` inside a key=value value does not make it a URL.
            ("host=h password=a://b@c", "host=h password=***"),
            ("a='x'password=secret", "a='x'password=***"),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url:?}");
        }
    }

    #[test]
    fn redact_url_never_panics_on_garbage() {
        let garbage = [
            "://",
            "postgres://",
            "@",
            ":@",
            "=",
            "==",
            "password",
            "password=",
            "password='unterminated \\",
            "password=\\",
            "pässwörd=ü ñ=ß",
            "\u{0}\u{7f}::@@==''\\\\",
            "host=h password",
            "ü://x:y@z",
            "p://ü:é@ö?password=ä&password",
            "   ",
        ];
        for text in garbage {
            let _ = redact_url(text);
        }
        assert_eq!(redact_url("password='unterminated secret"), "password=***");
        assert_eq!(redact_url("host=h password secret"), "host=h password ***");
    }
}
