//! The value parsers: one per kind of setting, each turning a layer's text into a typed value
//! or a message saying what was expected and what was found.

use std::error::Error as _;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::{LogFormat, Profile, Scopes, Token};

// Postgres keeps `statement_timeout` and friends in an int of milliseconds; capping every
// duration there also keeps `Instant + Duration` arithmetic elsewhere far from overflow.
const MAX_MS: u64 = 2_147_483_647;

pub(super) fn integer<T>(min: T, max: Option<T>) -> impl Fn(&str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Copy + fmt::Display,
{
    move |s| match s.parse::<T>() {
        Ok(v) if v >= min && max.is_none_or(|max| v <= max) => Ok(v),
        _ => Err(match max {
            None => format!("expected an integer ≥ {min}, got {s:?}"),
            Some(max) => format!("expected an integer from {min} to {max}, got {s:?}"),
        }),
    }
}

pub(super) fn millis(min: u64) -> impl Fn(&str) -> Result<Duration, String> {
    move |s| match s.parse::<u64>() {
        Ok(ms) if (min..=MAX_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "expected milliseconds from {min} to {MAX_MS}, got {s:?}"
        )),
    }
}

pub(super) fn millis_or_none(s: &str) -> Result<Option<Duration>, String> {
    match s.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(ms) if ms <= MAX_MS => Ok(Some(Duration::from_millis(ms))),
        _ => Err(format!(
            "expected milliseconds from 0 (none) to {MAX_MS}, got {s:?}"
        )),
    }
}

/// A file path that must name a readable file; empty means none.
pub(super) fn readable_file(s: &str) -> Result<Option<PathBuf>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    std::fs::File::open(s).map_err(|e| format!("cannot read {s:?}: {e}"))?;
    Ok(Some(PathBuf::from(s)))
}

/// Token entries from a list of candidates (`what` names one in errors: `line`, `entry`):
/// trimmed, blanks and `#` comments (whole entries, or after the token) dropped. An entry is `TOKEN` alone, which grants every
/// scope (as before scopes existed), or `TOKEN SCOPE...`, which grants reading and exactly
/// the scopes listed: `read` (nothing more), `write`, `critical`. A token never holds
/// blanks (RFC 6750), so the first blank ends it. Errors never quote the entry: it is a
/// secret, and a stray word might be one too.
pub(super) fn token_entries<'a>(
    items: impl Iterator<Item = &'a str>,
    what: &str,
) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    for (i, item) in items.enumerate() {
        let item = item.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        let mut words = item.split_whitespace();
        let secret = words.next().unwrap_or_default().to_owned();
        let mut scopes = Scopes::ALL;
        // A `#` after the token starts a comment, as a `#` at the start of a line does.
        let mut listed = words.take_while(|w| !w.starts_with('#')).peekable();
        if listed.peek().is_some() {
            scopes = Scopes {
                write: false,
                critical: false,
            };
        }
        for word in listed {
            match word.to_ascii_lowercase().as_str() {
                "read" => {}
                "write" => scopes.write = true,
                "critical" => scopes.critical = true,
                _ => {
                    return Err(format!(
                        "{what} {}: expected TOKEN, or TOKEN followed by scopes among read, write and critical, got an unknown scope (not shown)",
                        i + 1
                    ));
                }
            }
        }
        let token = Token { secret, scopes };
        add_token(&mut tokens, token).map_err(|e| format!("{what} {}: {e}", i + 1))?;
    }
    Ok(tokens)
}

/// Adds `token` unless it is there already; the same token with other scopes is an error,
/// since either reading of it would surprise someone.
pub(super) fn add_token(tokens: &mut Vec<Token>, token: Token) -> Result<(), String> {
    match tokens.iter().find(|t| t.secret == token.secret) {
        None => tokens.push(token),
        Some(t) if t.scopes == token.scopes => {}
        Some(_) => return Err("a token listed again with other scopes".to_owned()),
    }
    Ok(())
}

/// The comma-separated tokens setting. Empty means no list (like an empty value of any
/// setting); anything else must yield a token, since `,`, a blank or a `#comment` yielding
/// none would quietly turn authentication off.
pub(super) fn token_list(s: &str) -> Result<Vec<Token>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let tokens = token_entries(s.split(','), "entry")?;
    if tokens.is_empty() {
        return Err(
            "expected at least one token (a `#` starts a comment), got none; leave the setting unset for no tokens"
                .to_owned(),
        );
    }
    Ok(tokens)
}

/// The tokens in a file, one per line; an empty path means no file. An unreadable file or
/// one with no token is an error: a typo must not quietly turn authentication off.
pub(super) fn read_tokens_file(path: &str) -> Result<Vec<Token>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let tokens = token_entries(text.lines(), &format!("{path:?} line"))?;
    if tokens.is_empty() {
        return Err(format!("expected at least one token in {path:?}, got none"));
    }
    Ok(tokens)
}

/// A whole percentage from 0 to 100, `%` allowed.
pub(super) fn parse_share(s: &str) -> Result<u32, String> {
    let number = s.strip_suffix('%').unwrap_or(s).trim_end();
    match number.parse::<u32>() {
        Ok(v) if v <= 100 => Ok(v),
        _ => Err(format!(
            "expected a whole percentage from 0 to 100, got {s:?}"
        )),
    }
}

pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "expected true/false, yes/no, on/off or 1/0, got {s:?}"
        )),
    }
}

pub(super) fn parse_percent(s: &str) -> Result<f64, String> {
    // `80%` is how people write a percentage; accept it rather than argue.
    let number = s.strip_suffix('%').unwrap_or(s).trim_end();
    match number.parse::<f64>() {
        // `contains` is false for NaN, so "nan" is rejected here too.
        Ok(v) if (1.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a percentage from 1 to 100, got {s:?}")),
    }
}

pub(super) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("expected an IP:port address such as 127.0.0.1:50051 or [::]:50051, got {s:?}")
    })
}

pub(super) fn parse_profile(s: &str) -> Result<Profile, String> {
    match s.to_ascii_lowercase().as_str() {
        "development" | "dev" => Ok(Profile::Development),
        "production" | "prod" => Ok(Profile::Production),
        _ => Err(format!("expected development or production, got {s:?}")),
    }
}

pub(super) fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("expected text or json, got {s:?}")),
    }
}

/// Any text but the empty string; `expected` says what was wanted instead.
pub(super) fn non_empty(expected: &'static str) -> impl Fn(&str) -> Result<String, String> {
    move |s| match s {
        "" => Err(format!("expected {expected}, got \"\"")),
        _ => Ok(s.to_owned()),
    }
}

/// Replica connection strings separated by `;` (a multi-host URL has commas of its own);
/// blanks between separators are skipped, so an empty value means no replicas. A replica
/// asked to be read-write could never be connected to: it is refused here.
pub(super) fn parse_replica_urls(s: &str) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for (i, part) in s.split(';').map(str::trim).enumerate() {
        if part.is_empty() {
            continue;
        }
        let url = parse_database_url(part).map_err(|e| format!("replica {i}: {e}"))?;
        if wants_read_write(&url) {
            return Err(format!(
                "replica {i}: target_session_attrs=read-write names a primary, not a replica"
            ));
        }
        urls.push(url);
    }
    Ok(urls)
}

/// Whether a connection string (already checked) asks for `target_session_attrs=read-write`.
pub(super) fn wants_read_write(url: &str) -> bool {
    crate::conninfo::tls::split(url)
        .ok()
        .and_then(|(rest, _)| tokio_postgres::Config::from_str(&rest).ok())
        .is_some_and(|pg| {
            pg.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::ReadWrite
        })
}

pub(super) fn parse_database_url(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("expected a postgres URL or key=value connection string, got \"\"".to_owned());
    }
    // libpq's TLS options (verify-full, sslrootcert) are ours to handle, not the driver's.
    let (rest, tls) = crate::conninfo::tls::split(s)?;
    if tls
        .root_cert
        .as_ref()
        .is_some_and(|p| !std::path::Path::new(p).is_file())
    {
        return Err("sslrootcert names no readable file".to_owned());
    }
    let Err(e) = tokio_postgres::Config::from_str(&rest) else {
        return Ok(s.to_owned());
    };
    // The value is never echoed: a mistyped key (`pasword=...`) defeats any redaction.
    // tokio-postgres's reasons name option keys, not values, except one tokenizer message that
    // quotes a single character, which is cut off.
    let mut reason = e.to_string();
    if let Some(cause) = e.source() {
        let cause = cause.to_string();
        let cause = cause.split(" but got ").next().unwrap_or_default();
        reason = format!("{reason}: {cause}");
    }
    Err(format!(
        "expected a postgres:// URL or key=value connection string (value not shown, it may hold a password): {}",
        reason.replace('\n', " ")
    ))
}
