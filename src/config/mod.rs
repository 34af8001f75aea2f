//! Typed configuration: per-profile defaults, layered under a TOML file, the environment and
//! command-line flags (later wins), validated into one [`Config`] whose errors name the setting.
//!
//! Every setting is one row of the `Key` table: a flag, an environment name, a TOML key (the
//! flag without `--`, `-` → `_`) and its `--help` line. All three outer layers hand this module
//! *text*, and one parser per setting turns it into a typed value, so a bad value reads the same
//! wherever it came from.

use std::error::Error as _;
use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgMatches, ColorChoice, Command};
use percent_encoding::percent_decode_str;
use url::Url;

/// Which set of defaults applies before the file, environment and flags are layered on top.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Small pools and human-readable logs.
    Development,
    /// Large pools and JSON logs.
    Production,
}

impl Profile {
    /// The name used in flags, the environment and TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Development => "development",
            Profile::Production => "production",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The name used in flags, the environment and TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Size and target of one connection pool.
#[derive(Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most connections the pool may hold.
    pub max_size: u32,
    /// Idle connections kept open (and prewarmed at start); never more than `max_size`.
    pub min_idle: u32,
    /// A `postgres://` URL or key=value connection string, already checked by
    /// `tokio_postgres::Config::from_str`. May hold a password: log it only through [`redact_url`].
    pub database_url: String,
}

// Written by hand so that `{:?}` of a config (which people do log) never shows a password.
impl fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolConfig")
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("database_url", &redact_url(&self.database_url))
            .finish()
    }
}

/// Bearer tokens a client may present; empty means no token is asked for.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens(pub Vec<String>);

// Written by hand so that `{:?}` of a config never shows a token.
impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

/// Request size limits enforced by the server before any SQL reaches Postgres.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest SQL text accepted, in bytes.
    pub max_sql_bytes: usize,
    /// Most bind parameters in one statement (Postgres's own wire limit is 65535).
    pub max_params: usize,
    /// gRPC receive and send message limit, in bytes.
    pub max_message_bytes: usize,
    /// Row cap applied when a request asks for `max_rows = 0`.
    pub max_rows: u32,
    /// Most concurrent gRPC streams on one client connection (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS); clients queue beyond it.
    pub max_concurrent_streams: u32,
}

/// The whole validated configuration of one sidecar process.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The profile whose defaults were used.
    pub profile: Profile,
    /// The pool for all normal traffic.
    pub primary: PoolConfig,
    /// The reserve for critical work; same database as `primary` unless
    /// `DB_FAILOVER_DATABASE_URL` says otherwise.
    pub failover: PoolConfig,
    /// Whether critical work may use the failover pool at all.
    pub enable_failover: bool,
    /// Primary utilization (1..=100 %) at and above which critical work goes to the failover pool.
    pub failover_threshold_percent: f64,
    /// Idle connections above the minimum are closed after this long.
    pub idle_timeout: Duration,
    /// Connections are retired after this age; `None` = never.
    pub max_lifetime: Option<Duration>,
    /// Longest wait to establish a connection or get one from a pool.
    pub connection_timeout: Duration,
    /// Most requests waiting for a connection in one pool; more are refused at once.
    pub pool_max_waiting: u32,
    /// `statement_timeout` set on every connection; `None` = no server-side timeout.
    pub query_timeout: Option<Duration>,
    /// Prepared statements cached per connection; 0 turns the cache off.
    pub statement_cache_size: usize,
    /// How often the health task pings the pools.
    pub health_check_interval: Duration,
    /// Whether a connection is validated before it is reused.
    pub connection_validation: bool,
    /// A transaction stream idle this long is rolled back and its connection released.
    pub transaction_idle_timeout: Duration,
    /// A transaction open this long is rolled back; `None` = no limit.
    pub transaction_max_duration: Option<Duration>,
    /// Statements slower than this are logged as slow.
    pub slow_query: Duration,
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where the HTTP endpoint (metrics, health) listens.
    pub http_addr: SocketAddr,
    /// Whether gRPC server reflection is served.
    pub reflection: bool,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive string, e.g. `info,pgsidecar=debug`.
    pub log_level: String,
    /// Request size limits.
    pub limits: Limits,
    /// How long in-flight work may take to drain after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Threads that run the server: 1 = a single-threaded runtime, 0 = one per core.
    pub worker_threads: usize,
    /// Every session read-only (`default_transaction_read_only`); writes are refused.
    pub read_only: bool,
    /// Accepted bearer tokens (from the tokens file and the tokens setting together).
    pub auth_tokens: Tokens,
    /// TLS for gRPC clients: certificate chain and key files (PEM); `None` = plaintext.
    pub tls: Option<ServerTls>,
}

/// The files that turn on TLS (and mTLS) for the gRPC listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain presented to clients.
    pub cert: PathBuf,
    /// PEM private key of the certificate.
    pub key: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Why configuration could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--help` or `--version` text: the caller prints it and exits 0.
    #[error("{0}")]
    Help(String),
    /// A bad value, unknown flag, unknown TOML key or unreadable file: the caller prints this
    /// one line and exits 64.
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        /// The setting as `ENV_NAME (--flag)`, or the unknown flag or TOML key as written.
        setting: String,
        /// What was expected and what was found; never contains a database password.
        message: String,
    },
}

impl ConfigError {
    /// The process exit code for this outcome: 0 for help/version, 64 (`EX_USAGE`) otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::Help(_) => 0,
            ConfigError::Invalid { .. } => 64,
        }
    }
}

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

// Postgres keeps `statement_timeout` and friends in an int of milliseconds; capping every
// duration there also keeps `Instant + Duration` arithmetic elsewhere far from overflow.
const MAX_MS: u64 = 2_147_483_647;

impl Config {
    /// Parse from the process's args and environment.
    pub fn load() -> Result<Config, ConfigError> {
        // Lossy rather than `var().ok()`: a non-UTF-8 value should fail loudly in its parser,
        // not be silently treated as unset.
        let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        Config::load_from(std::env::args_os(), &env)
    }

    /// Parse from explicit args (args[0] is the program name) and an env lookup, for tests.
    pub fn load_from(
        args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let flags = command().try_get_matches_from(args).map_err(clap_error)?;
        let mut layers = Layers {
            flags,
            env,
            file: None,
        };
        if let Some(path) = layers.get(Key::CONFIG, non_empty("a file path"))? {
            layers.file = Some(TomlFile::read(PathBuf::from(path))?);
        }
        let profile = layers
            .get(Key::PROFILE, parse_profile)?
            .unwrap_or(Profile::Development);
        let config = layers.resolve(Config::defaults(profile))?;
        check_cross_fields(&config)?;
        Ok(config)
    }

    /// The defaults of `profile`, before any file, environment or flag; handy for tests.
    pub fn defaults(profile: Profile) -> Config {
        let (pool_max, pool_min, log_format) = match profile {
            Profile::Development => (30, 5, LogFormat::Text),
            Profile::Production => (100, 25, LogFormat::Json),
        };
        Config {
            profile,
            primary: PoolConfig {
                max_size: pool_max,
                min_idle: pool_min,
                database_url: DEFAULT_DATABASE_URL.to_owned(),
            },
            failover: PoolConfig {
                max_size: 20,
                min_idle: 5,
                database_url: DEFAULT_DATABASE_URL.to_owned(),
            },
            enable_failover: true,
            failover_threshold_percent: 80.0,
            idle_timeout: Duration::from_millis(30_000),
            max_lifetime: Some(Duration::from_millis(1_800_000)),
            connection_timeout: Duration::from_millis(5_000),
            pool_max_waiting: 5_000,
            query_timeout: Some(Duration::from_millis(30_000)),
            statement_cache_size: 1000,
            health_check_interval: Duration::from_millis(1_000),
            connection_validation: true,
            transaction_idle_timeout: Duration::from_millis(300_000),
            transaction_max_duration: Some(Duration::from_millis(3_600_000)),
            slow_query: Duration::from_millis(1_000),
            grpc_addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50051)),
            http_addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9898)),
            reflection: true,
            log_format,
            log_level: "info".to_owned(),
            limits: Limits {
                max_sql_bytes: 1_048_576,
                max_params: 65535,
                max_message_bytes: 4_194_304,
                max_rows: 10_000,
                max_concurrent_streams: 1024,
            },
            shutdown_grace: Duration::from_millis(25_000),
            worker_threads: 1,
            read_only: false,
            auth_tokens: Tokens::default(),
            tls: None,
        }
    }
}

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

/// One setting, as spelled on each layer and in `--help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    /// The flag without `--`; the TOML key is this with `_` for `-`.
    flag: &'static str,
    /// The environment variable.
    env: &'static str,
    /// The placeholder in `--help`; a `BOOL` flag may also stand alone, meaning true.
    value_name: &'static str,
    /// The default as `--help` shows it; empty for none.
    default: &'static str,
    /// The `--help` line.
    help: &'static str,
}

// The `DB_*` names and `DATABASE_URL` are the original Node service's and must not change.
#[rustfmt::skip]
impl Key {
    const PROFILE: Key = Key::new("profile", "PGSIDECAR_PROFILE", "PROFILE", "development",
        "Profile whose defaults apply: development or production");
    const CONFIG: Key = Key::new("config", "PGSIDECAR_CONFIG", "PATH", "",
        "TOML file with settings");
    const DATABASE_URL: Key = Key::new("database-url", "DATABASE_URL", "URL", DEFAULT_DATABASE_URL,
        "Primary database: postgres:// URL or key=value connection string");
    const POOL_MAX: Key = Key::new("pool-max", "DB_POOL_MAX", "N", "30, production 100",
        "Most connections in the primary pool");
    const POOL_MIN: Key = Key::new("pool-min", "DB_POOL_MIN", "N", "5, production 25",
        "Idle connections kept in the primary pool, at most --pool-max");
    const POOL_IDLE_TIMEOUT: Key = Key::new("pool-idle-timeout", "DB_POOL_IDLE_TIMEOUT", "MS", "30000",
        "Close idle connections above the minimum after this many ms");
    const POOL_MAX_LIFETIME: Key = Key::new("pool-max-lifetime", "DB_POOL_MAX_LIFETIME", "MS", "1800000",
        "Retire connections older than this many ms, 0 = never");
    const CONNECTION_TIMEOUT: Key = Key::new("connection-timeout", "DB_CONNECTION_TIMEOUT", "MS", "5000",
        "Longest wait for a connection, in ms");
    const POOL_MAX_WAITING: Key = Key::new("pool-max-waiting", "DB_POOL_MAX_WAITING", "N", "5000",
        "Most requests waiting for a connection per pool; more get RESOURCE_EXHAUSTED at once");
    const QUERY_TIMEOUT: Key = Key::new("query-timeout", "DB_QUERY_TIMEOUT", "MS", "30000",
        "statement_timeout in ms, 0 = none");
    const ENABLE_FAILOVER: Key = Key::new("enable-failover", "DB_ENABLE_FAILOVER", "BOOL", "true",
        "Let critical work use the failover pool");
    const FAILOVER_THRESHOLD: Key = Key::new("failover-threshold", "DB_FAILOVER_THRESHOLD", "PERCENT", "80",
        "Primary utilization % (1-100) from which critical work uses the failover pool");
    const FAILOVER_POOL_MAX: Key = Key::new("failover-pool-max", "DB_FAILOVER_POOL_MAX", "N", "20",
        "Most connections in the failover pool");
    const FAILOVER_POOL_MIN: Key = Key::new("failover-pool-min", "DB_FAILOVER_POOL_MIN", "N", "5",
        "Idle connections kept in the failover pool");
    const FAILOVER_DATABASE_URL: Key = Key::new("failover-database-url", "DB_FAILOVER_DATABASE_URL", "URL", "",
        "Failover pool database, if not --database-url");
    const STATEMENT_CACHE_SIZE: Key = Key::new("statement-cache-size", "DB_STATEMENT_CACHE_SIZE", "N", "1000",
        "Prepared statements cached per connection, 0 = off");
    const HEALTH_CHECK_INTERVAL: Key = Key::new("health-check-interval", "DB_HEALTH_CHECK_INTERVAL", "MS", "1000",
        "Pool health check period in ms, at least 100");
    const CONNECTION_VALIDATION: Key = Key::new("connection-validation", "DB_CONNECTION_VALIDATION_ENABLED", "BOOL", "true",
        "Validate connections before reuse");
    const TRANSACTION_IDLE_TIMEOUT: Key = Key::new("transaction-idle-timeout", "DB_TRANSACTION_IDLE_TIMEOUT", "MS", "300000",
        "Roll back a transaction stream idle this many ms");
    const TRANSACTION_MAX_DURATION: Key = Key::new("transaction-max-duration", "DB_TRANSACTION_MAX_DURATION", "MS", "3600000",
        "Roll back a transaction stream open this many ms, 0 = no limit");
    const SLOW_QUERY_MS: Key = Key::new("slow-query-ms", "DB_SLOW_QUERY_MS", "MS", "1000",
        "Log statements slower than this many ms");
    const GRPC_ADDR: Key = Key::new("grpc-addr", "PGSIDECAR_GRPC_ADDR", "ADDR", "127.0.0.1:50051",
        "gRPC listen address");
    const HTTP_ADDR: Key = Key::new("http-addr", "PGSIDECAR_HTTP_ADDR", "ADDR", "127.0.0.1:9898",
        "HTTP (metrics, health) listen address");
    const REFLECTION: Key = Key::new("reflection", "PGSIDECAR_REFLECTION", "BOOL", "true",
        "Serve gRPC reflection");
    const LOG_FORMAT: Key = Key::new("log-format", "PGSIDECAR_LOG_FORMAT", "FORMAT", "text, production json",
        "Log format: text or json");
    const LOG_LEVEL: Key = Key::new("log-level", "PGSIDECAR_LOG_LEVEL", "FILTER", "info",
        "Log filter directives, e.g. info,pgsidecar=debug");
    const MAX_SQL_BYTES: Key = Key::new("max-sql-bytes", "PGSIDECAR_MAX_SQL_BYTES", "BYTES", "1048576",
        "Longest SQL text accepted, in bytes");
    const MAX_PARAMS: Key = Key::new("max-params", "PGSIDECAR_MAX_PARAMS", "N", "65535",
        "Most bind parameters per statement, 1-65535");
    const MAX_MESSAGE_BYTES: Key = Key::new("max-message-bytes", "PGSIDECAR_MAX_MESSAGE_BYTES", "BYTES", "4194304",
        "gRPC message size limit in bytes, at least 1024");
    const MAX_ROWS: Key = Key::new("max-rows", "PGSIDECAR_MAX_ROWS", "N", "10000",
        "Row cap for requests with max_rows = 0");
    const SHUTDOWN_GRACE: Key = Key::new("shutdown-grace", "PGSIDECAR_SHUTDOWN_GRACE", "MS", "25000",
        "Time allowed to drain on shutdown, in ms");
    const WORKER_THREADS: Key = Key::new("worker-threads", "PGSIDECAR_WORKER_THREADS", "N", "1",
        "Runtime threads: 1 = one thread (least CPU per query), 0 = one per core");
    const MAX_CONCURRENT_STREAMS: Key = Key::new("max-concurrent-streams", "PGSIDECAR_MAX_CONCURRENT_STREAMS", "N", "1024",
        "Most concurrent gRPC streams per client connection");
    const READ_ONLY: Key = Key::new("read-only", "PGSIDECAR_READ_ONLY", "BOOL", "false",
        "Make every session read-only; writes fail with PERMISSION_DENIED");
    const AUTH_TOKENS_FILE: Key = Key::new("auth-tokens-file", "PGSIDECAR_AUTH_TOKENS_FILE", "PATH", "",
        "File of accepted bearer tokens, one per line; none = no token needed");
    const AUTH_TOKENS: Key = Key::new("auth-tokens", "PGSIDECAR_AUTH_TOKENS", "TOKENS", "",
        "Accepted bearer tokens, comma-separated (prefer the file: flags show in ps)");
    const TLS_CERT: Key = Key::new("tls-cert", "PGSIDECAR_TLS_CERT", "PATH", "",
        "PEM certificate chain: serve gRPC over TLS (with --tls-key)");
    const TLS_KEY: Key = Key::new("tls-key", "PGSIDECAR_TLS_KEY", "PATH", "",
        "PEM private key of --tls-cert");
    const TLS_CLIENT_CA: Key = Key::new("tls-client-ca", "PGSIDECAR_TLS_CLIENT_CA", "PATH", "",
        "PEM CA bundle: require client certificates it signed (mTLS)");

    /// Every setting, in `--help` order.
    const ALL: [Key; 39] = [
        Key::PROFILE, Key::CONFIG, Key::DATABASE_URL, Key::POOL_MAX, Key::POOL_MIN,
        Key::POOL_IDLE_TIMEOUT, Key::POOL_MAX_LIFETIME, Key::CONNECTION_TIMEOUT, Key::POOL_MAX_WAITING,
        Key::QUERY_TIMEOUT,
        Key::ENABLE_FAILOVER, Key::FAILOVER_THRESHOLD, Key::FAILOVER_POOL_MAX, Key::FAILOVER_POOL_MIN,
        Key::FAILOVER_DATABASE_URL, Key::STATEMENT_CACHE_SIZE, Key::HEALTH_CHECK_INTERVAL,
        Key::CONNECTION_VALIDATION, Key::TRANSACTION_IDLE_TIMEOUT,
        Key::TRANSACTION_MAX_DURATION, Key::SLOW_QUERY_MS, Key::GRPC_ADDR,
        Key::HTTP_ADDR, Key::REFLECTION, Key::LOG_FORMAT, Key::LOG_LEVEL, Key::MAX_SQL_BYTES,
        Key::MAX_PARAMS, Key::MAX_MESSAGE_BYTES, Key::MAX_ROWS, Key::SHUTDOWN_GRACE,
        Key::WORKER_THREADS, Key::MAX_CONCURRENT_STREAMS, Key::READ_ONLY, Key::AUTH_TOKENS_FILE,
        Key::AUTH_TOKENS, Key::TLS_CERT, Key::TLS_KEY, Key::TLS_CLIENT_CA,
    ];
}

impl Key {
    const fn new(
        flag: &'static str,
        env: &'static str,
        value_name: &'static str,
        default: &'static str,
        help: &'static str,
    ) -> Key {
        Key {
            flag,
            env,
            value_name,
            default,
            help,
        }
    }

    fn toml_key(self) -> String {
        self.flag.replace('-', "_")
    }

    /// How errors name the setting: `DB_POOL_MAX (--pool-max)`.
    fn label(self) -> String {
        format!("{} (--{})", self.env, self.flag)
    }

    fn invalid(self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            setting: self.label(),
            message: message.into(),
        }
    }
}

const AFTER_HELP: &str = "\
Settings are layered, later wins: profile defaults < TOML file (--config) < environment < flags.
TOML keys are the flag names with `_` for `-` (pool_max = 50); unknown keys are an error.
Durations are integers in milliseconds. Booleans: true/false, yes/no, on/off, 1/0.";

/// The command line: one flag per setting, each taking the raw text so that flags go through
/// the same parser, and fail with the same message, as the environment and the TOML file.
///
/// The env names are only shown in the help: the env layer is read through an injected lookup,
/// not by clap, so tests never touch the process environment. Subcommands (e.g. `pgsidecar
/// analyze`) would go in with `args_conflicts_with_subcommands(true)`, so that running with no
/// subcommand stays "serve" and these flat flags keep working unchanged.
fn command() -> Command {
    let args = Key::ALL.map(|key| {
        let mut help = format!("{} [env: {}]", key.help, key.env);
        if !key.default.is_empty() {
            help.push_str(&format!(" [default: {}]", key.default));
        }
        let arg = Arg::new(key.flag)
            .long(key.flag)
            .value_name(key.value_name)
            .help(help);
        if key.value_name == "BOOL" {
            // A bare boolean flag means true, and does not take the next flag as its value.
            arg.num_args(0..=1).default_missing_value("true")
        } else {
            arg
        }
    });
    Command::new("pgsidecar")
        .version(env!("CARGO_PKG_VERSION"))
        .about("gRPC data-access sidecar for PostgreSQL")
        .after_help(AFTER_HELP)
        // Later flags override earlier ones, in the spirit of the layering (scripts append flags).
        .args_override_self(true)
        .color(ColorChoice::Never)
        .args(args)
}

fn clap_error(err: clap::Error) -> ConfigError {
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return ConfigError::Help(err.render().to_string());
        }
        _ => {}
    }
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.clone(),
        _ => String::new(),
    };
    // clap names a known flag as `--pool-max <N>`; map it back to the usual label.
    let known = Key::ALL.into_iter().find(|key| {
        arg.strip_prefix("--")
            .and_then(|a| a.strip_prefix(key.flag))
            .is_some_and(|tail| tail.is_empty() || tail.starts_with([' ', '=']))
    });
    let setting = match known {
        Some(key) => key.label(),
        None if arg.is_empty() => "command line".to_owned(),
        None => arg,
    };
    // Only clap's first line: the rest is usage and a `--help` hint, and the contract is one line.
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    if let Some(ContextValue::String(suggested)) = err.get(ContextKind::SuggestedArg) {
        message.push_str(&format!("; did you mean '{suggested}'?"));
    }
    ConfigError::Invalid { setting, message }
}

/// A parsed TOML file, its keys already checked against the settings.
struct TomlFile {
    path: PathBuf,
    table: toml::Table,
}

impl TomlFile {
    fn read(path: PathBuf) -> Result<TomlFile, ConfigError> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Key::CONFIG.invalid(format!("cannot read {}: {e}", path.display())))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // toml's own Display quotes the offending source line, which may hold a password;
            // position and reason are enough to find it.
            let at = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map(|before| {
                    let line = before.matches('\n').count() + 1;
                    let column = before
                        .rsplit('\n')
                        .next()
                        .unwrap_or_default()
                        .chars()
                        .count();
                    format!(" at line {line}, column {}", column + 1)
                })
                .unwrap_or_default();
            let reason = e.message().trim().replace('\n', "; ");
            let path = path.display();
            Key::CONFIG.invalid(format!("{path} is not valid TOML{at}: {reason}"))
        })?;
        // Checked by hand rather than with serde's `deny_unknown_fields` so the error can name
        // the key as the setting and suggest the intended one.
        let config_key = Key::CONFIG.toml_key();
        let is_setting = |name: &String| Key::ALL.iter().any(|key| key.toml_key() == *name);
        if let Some(name) = table
            .keys()
            .find(|name| **name == config_key || !is_setting(name))
        {
            let path = path.display();
            let message = if *name == config_key {
                format!(
                    "a config file cannot name another config file (in {path}); use --config or PGSIDECAR_CONFIG"
                )
            } else {
                let hint = suggest_key(name)
                    .map(|known| format!("; did you mean `{known}`?"))
                    .unwrap_or_default();
                format!("unknown key in config file {path}{hint}")
            };
            return Err(ConfigError::Invalid {
                setting: name.clone(),
                message,
            });
        }
        Ok(TomlFile { path, table })
    }
}

/// The known TOML key closest to a mistyped one, if any is within two edits.
fn suggest_key(name: &str) -> Option<String> {
    let normalized = name.to_ascii_lowercase().replace('-', "_");
    Key::ALL
        .iter()
        .filter(|key| **key != Key::CONFIG)
        .map(|key| key.toml_key())
        .map(|known| (strsim::levenshtein(&normalized, &known), known))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// The three outer layers, queried per setting, flags first.
struct Layers<'a> {
    flags: ArgMatches,
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<TomlFile>,
}

impl Layers<'_> {
    /// The winning raw text of `key`, if any layer sets it, and the file's path if it came from
    /// there.
    fn raw(&self, key: Key) -> Result<Option<(String, Option<&Path>)>, ConfigError> {
        if let Some(flag) = self.flags.get_one::<String>(key.flag) {
            return Ok(Some((flag.clone(), None)));
        }
        // An empty variable counts as unset: the Node service read these with `||` fallbacks,
        // and manifests often carry `DB_POOL_MAX=` placeholders.
        if let Some(value) = (self.env)(key.env).filter(|v| !v.trim().is_empty()) {
            return Ok(Some((value, None)));
        }
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let Some(value) = file.table.get(&key.toml_key()) else {
            return Ok(None);
        };
        // TOML values become text for the shared parsers; native integers, floats and booleans
        // are the natural spelling, and quoted ones are accepted the same way env values are.
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(key.invalid(format!(
                    "expected a single value, got a {} (from key {} in {})",
                    other.type_str(),
                    key.toml_key(),
                    file.path.display()
                )));
            }
        };
        Ok(Some((text, Some(&file.path))))
    }

    /// The parsed value of `key` from the highest layer that sets it.
    fn get<T>(
        &self,
        key: Key,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((text, file)) = self.raw(key)? else {
            return Ok(None);
        };
        parse(text.trim()).map(Some).map_err(|message| {
            // Env and flag are both in the label; a file key is spelled differently, so say it.
            let from = file
                .map(|path| format!(" (from key {} in {})", key.toml_key(), path.display()))
                .unwrap_or_default();
            key.invalid(format!("{message}{from}"))
        })
    }

    /// Overwrites `field` with the parsed value of `key`, if any layer sets it.
    fn set<T>(
        &self,
        field: &mut T,
        key: Key,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<(), ConfigError> {
        if let Some(value) = self.get(key, parse)? {
            *field = value;
        }
        Ok(())
    }

    fn pool(&self, pool: &mut PoolConfig, max: Key, min: Key) -> Result<(), ConfigError> {
        self.set(&mut pool.max_size, max, integer(1, None))?;
        // A minimum nobody set follows a lowered maximum down (production with
        // `DB_POOL_MAX=20` must not fail over the default minimum of 25); an explicit minimum
        // above the maximum is a mistake and is reported in `check_cross_fields`.
        pool.min_idle = pool.min_idle.min(pool.max_size);
        self.set(&mut pool.min_idle, min, integer(0, None))
    }

    /// `c` (the profile's defaults) with every setting some layer sets, one per line.
    #[rustfmt::skip]
    fn resolve(&self, mut c: Config) -> Result<Config, ConfigError> {
        self.set(&mut c.primary.database_url, Key::DATABASE_URL, parse_database_url)?;
        c.failover.database_url.clone_from(&c.primary.database_url);
        self.set(&mut c.failover.database_url, Key::FAILOVER_DATABASE_URL, parse_database_url)?;
        self.pool(&mut c.primary, Key::POOL_MAX, Key::POOL_MIN)?;
        self.pool(&mut c.failover, Key::FAILOVER_POOL_MAX, Key::FAILOVER_POOL_MIN)?;
        self.set(&mut c.limits.max_sql_bytes, Key::MAX_SQL_BYTES, integer(1, None))?;
        self.set(&mut c.limits.max_params, Key::MAX_PARAMS, integer(1, Some(65535)))?;
        self.set(&mut c.limits.max_message_bytes, Key::MAX_MESSAGE_BYTES, integer(1024, None))?;
        self.set(&mut c.limits.max_rows, Key::MAX_ROWS, integer(1, None))?;
        self.set(&mut c.enable_failover, Key::ENABLE_FAILOVER, parse_bool)?;
        self.set(&mut c.failover_threshold_percent, Key::FAILOVER_THRESHOLD, parse_percent)?;
        self.set(&mut c.idle_timeout, Key::POOL_IDLE_TIMEOUT, millis(1))?;
        self.set(&mut c.max_lifetime, Key::POOL_MAX_LIFETIME, millis_or_none)?;
        self.set(&mut c.connection_timeout, Key::CONNECTION_TIMEOUT, millis(1))?;
        self.set(&mut c.pool_max_waiting, Key::POOL_MAX_WAITING, integer(1, None))?;
        self.set(&mut c.query_timeout, Key::QUERY_TIMEOUT, millis_or_none)?;
        // Read as a u32 like the other counts, so an absurd size is an error, not an allocation.
        let cache_size = |s: &str| integer(0u32, None)(s).map(|n| n as usize);
        self.set(&mut c.statement_cache_size, Key::STATEMENT_CACHE_SIZE, cache_size)?;
        self.set(&mut c.health_check_interval, Key::HEALTH_CHECK_INTERVAL, millis(100))?;
        self.set(&mut c.connection_validation, Key::CONNECTION_VALIDATION, parse_bool)?;
        self.set(&mut c.transaction_idle_timeout, Key::TRANSACTION_IDLE_TIMEOUT, millis(1))?;
        self.set(&mut c.transaction_max_duration, Key::TRANSACTION_MAX_DURATION, millis_or_none)?;
        self.set(&mut c.slow_query, Key::SLOW_QUERY_MS, millis(0))?;
        self.set(&mut c.grpc_addr, Key::GRPC_ADDR, parse_addr)?;
        self.set(&mut c.http_addr, Key::HTTP_ADDR, parse_addr)?;
        self.set(&mut c.reflection, Key::REFLECTION, parse_bool)?;
        self.set(&mut c.log_format, Key::LOG_FORMAT, parse_log_format)?;
        // Full EnvFilter syntax is checked where the subscriber is built; here only emptiness,
        // which EnvFilter would silently read as "everything off".
        let log_filter = non_empty("a log filter such as info or info,pgsidecar=debug");
        self.set(&mut c.log_level, Key::LOG_LEVEL, log_filter)?;
        self.set(&mut c.shutdown_grace, Key::SHUTDOWN_GRACE, millis(0))?;
        let threads = |s: &str| integer(0u32, Some(1024))(s).map(|n| n as usize);
        self.set(&mut c.worker_threads, Key::WORKER_THREADS, threads)?;
        self.set(&mut c.limits.max_concurrent_streams, Key::MAX_CONCURRENT_STREAMS, integer(1, None))?;
        self.set(&mut c.read_only, Key::READ_ONLY, parse_bool)?;
        let mut tokens = Vec::new();
        self.set(&mut tokens, Key::AUTH_TOKENS_FILE, read_tokens_file)?;
        let mut listed = Vec::new();
        self.set(&mut listed, Key::AUTH_TOKENS, |s| Ok(token_list(s.split(','))))?;
        tokens.extend(listed);
        c.auth_tokens = Tokens(tokens);
        let (mut cert, mut key, mut client_ca) = (None, None, None);
        self.set(&mut cert, Key::TLS_CERT, readable_file)?;
        self.set(&mut key, Key::TLS_KEY, readable_file)?;
        self.set(&mut client_ca, Key::TLS_CLIENT_CA, readable_file)?;
        c.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(ServerTls { cert, key, client_ca }),
            (None, None) if client_ca.is_none() => None,
            (None, None) => return Err(Key::TLS_CLIENT_CA.invalid(format!(
                "expected {} and {} with it, got neither", Key::TLS_CERT.label(), Key::TLS_KEY.label()))),
            (Some(_), None) => return Err(Key::TLS_KEY.invalid(format!(
                "expected a key file with {}, got none", Key::TLS_CERT.label()))),
            (None, Some(_)) => return Err(Key::TLS_CERT.invalid(format!(
                "expected a certificate file with {}, got none", Key::TLS_KEY.label()))),
        };
        Ok(c)
    }
}

/// Rules between settings, each reported against the setting a user would most likely change.
fn check_cross_fields(c: &Config) -> Result<(), ConfigError> {
    for (pool, min_key, max_key) in [
        (&c.primary, Key::POOL_MIN, Key::POOL_MAX),
        (&c.failover, Key::FAILOVER_POOL_MIN, Key::FAILOVER_POOL_MAX),
    ] {
        if pool.min_idle > pool.max_size {
            return Err(min_key.invalid(format!(
                "expected at most {} = {}, got {}",
                max_key.label(),
                pool.max_size,
                pool.min_idle
            )));
        }
    }
    // Both on port 0 is fine (tests ask the OS for two free ports); the same fixed port is not.
    if c.grpc_addr == c.http_addr && c.grpc_addr.port() != 0 {
        return Err(Key::HTTP_ADDR.invalid(format!(
            "expected an address other than {} = {}, got the same",
            Key::GRPC_ADDR.label(),
            c.grpc_addr
        )));
    }
    Ok(())
}

fn integer<T>(min: T, max: Option<T>) -> impl Fn(&str) -> Result<T, String>
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

fn millis(min: u64) -> impl Fn(&str) -> Result<Duration, String> {
    move |s| match s.parse::<u64>() {
        Ok(ms) if (min..=MAX_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "expected milliseconds from {min} to {MAX_MS}, got {s:?}"
        )),
    }
}

fn millis_or_none(s: &str) -> Result<Option<Duration>, String> {
    match s.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(ms) if ms <= MAX_MS => Ok(Some(Duration::from_millis(ms))),
        _ => Err(format!(
            "expected milliseconds from 0 (none) to {MAX_MS}, got {s:?}"
        )),
    }
}

/// A file path that must name a readable file; empty means none.
fn readable_file(s: &str) -> Result<Option<PathBuf>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    std::fs::File::open(s).map_err(|e| format!("cannot read {s:?}: {e}"))?;
    Ok(Some(PathBuf::from(s)))
}

/// Tokens from a list of candidates: trimmed, blanks and `#` comments dropped.
fn token_list<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let kept = items
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.starts_with('#'));
    kept.map(str::to_owned).collect()
}

/// The tokens in a file, one per line; an empty path means no file. An unreadable file or
/// one with no token is an error: a typo must not quietly turn authentication off.
fn read_tokens_file(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let tokens = token_list(text.lines());
    if tokens.is_empty() {
        return Err(format!("expected at least one token in {path:?}, got none"));
    }
    Ok(tokens)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "expected true/false, yes/no, on/off or 1/0, got {s:?}"
        )),
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    // `80%` is how people write a percentage; accept it rather than argue.
    let number = s.strip_suffix('%').unwrap_or(s).trim_end();
    match number.parse::<f64>() {
        // `contains` is false for NaN, so "nan" is rejected here too.
        Ok(v) if (1.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a percentage from 1 to 100, got {s:?}")),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("expected an IP:port address such as 127.0.0.1:50051 or [::]:50051, got {s:?}")
    })
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    match s.to_ascii_lowercase().as_str() {
        "development" | "dev" => Ok(Profile::Development),
        "production" | "prod" => Ok(Profile::Production),
        _ => Err(format!("expected development or production, got {s:?}")),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("expected text or json, got {s:?}")),
    }
}

/// Any text but the empty string; `expected` says what was wanted instead.
fn non_empty(expected: &'static str) -> impl Fn(&str) -> Result<String, String> {
    move |s| match s {
        "" => Err(format!("expected {expected}, got \"\"")),
        _ => Ok(s.to_owned()),
    }
}

fn parse_database_url(s: &str) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("pgsidecar").chain(args.iter().copied());
        Config::load_from(argv, &env_of(env))
    }

    fn invalid(result: Result<Config, ConfigError>) -> (String, String) {
        match result {
            Err(ConfigError::Invalid { setting, message }) => (setting, message),
            other => panic!("expected ConfigError::Invalid, got {other:?}"),
        }
    }

    /// A TOML file in the temp dir, removed on drop.
    struct TempToml(PathBuf);

    impl TempToml {
        fn new(contents: &str) -> TempToml {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "pgsidecar-config-test-{}-{}.toml",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).expect("write temp TOML");
            TempToml(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("temp dir path is UTF-8")
        }
    }

    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    // Shapes of the test tables: (flags, environment, ...).
    type Args<'a> = &'a [&'a str];
    type Env<'a> = &'a [(&'a str, &'a str)];
    type Field = fn(&Config) -> Option<Duration>;

    #[test]
    fn no_input_gives_development_defaults() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c, Config::defaults(Profile::Development));
        assert_eq!(c.profile, Profile::Development);
        assert_eq!((c.primary.max_size, c.primary.min_idle), (30, 5));
        assert_eq!(c.primary.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.failover.database_url, DEFAULT_DATABASE_URL);
        assert_eq!((c.failover.max_size, c.failover.min_idle), (20, 5));
        assert!(c.enable_failover);
        assert_eq!(c.failover_threshold_percent, 80.0);
        assert_eq!(c.idle_timeout, MS(30_000));
        assert_eq!(c.max_lifetime, Some(MS(1_800_000)));
        assert_eq!(c.connection_timeout, MS(5_000));
        assert_eq!(c.query_timeout, Some(MS(30_000)));
        assert_eq!(c.statement_cache_size, 1000);
        assert_eq!(c.health_check_interval, MS(1_000));
        assert!(c.connection_validation);
        assert_eq!(c.transaction_idle_timeout, MS(300_000));
        assert_eq!(c.slow_query, MS(1_000));
        assert_eq!(c.grpc_addr, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(c.http_addr, "127.0.0.1:9898".parse().unwrap());
        assert!(c.reflection);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_level, "info");
        assert_eq!(
            c.limits,
            Limits {
                max_sql_bytes: 1_048_576,
                max_params: 65535,
                max_message_bytes: 4_194_304,
                max_rows: 10_000,
                max_concurrent_streams: 1024,
            }
        );
        assert_eq!(c.shutdown_grace, MS(25_000));
        assert_eq!(c.worker_threads, 1);
        assert!(!c.read_only);
        assert!(c.auth_tokens.0.is_empty());
        assert_eq!(c.tls, None);
    }

    #[test]
    fn tls_needs_a_certificate_and_its_key_together() {
        let dir = std::env::temp_dir();
        let file = dir.join(format!("pgsidecar-tls-{}", std::process::id()));
        std::fs::write(&file, "pem").unwrap();
        let f = file.to_str().unwrap();
        let c = load(
            &["--tls-cert", f, "--tls-key", f, "--tls-client-ca", f],
            &[],
        )
        .unwrap();
        let tls = c.tls.expect("tls on");
        assert_eq!(
            (tls.cert.as_path(), tls.client_ca.as_deref()),
            (file.as_path(), Some(file.as_path()))
        );
        let (setting, _) = invalid(load(&["--tls-cert", f], &[]));
        assert_eq!(setting, "PGSIDECAR_TLS_KEY (--tls-key)");
        let (setting, _) = invalid(load(&["--tls-client-ca", f], &[]));
        assert_eq!(setting, "PGSIDECAR_TLS_CLIENT_CA (--tls-client-ca)");
        std::fs::remove_file(&file).unwrap();
        let (setting, message) = invalid(load(&["--tls-cert", f, "--tls-key", f], &[]));
        assert_eq!(setting, "PGSIDECAR_TLS_CERT (--tls-cert)");
        assert!(message.contains("cannot read"), "{message}");
    }

    #[test]
    fn tokens_come_from_the_file_and_the_list_and_never_show_in_debug() {
        let path = std::env::temp_dir().join(format!("pgsidecar-tokens-{}", std::process::id()));
        std::fs::write(&path, "# rotation: new first\nnew-token\n\n  old-token  \n").unwrap();
        let file = path.to_str().unwrap();
        let c = load(
            &["--auth-tokens-file", file],
            &[("PGSIDECAR_AUTH_TOKENS", "extra")],
        )
        .unwrap();
        assert_eq!(
            c.auth_tokens,
            Tokens(vec!["new-token".into(), "old-token".into(), "extra".into()])
        );
        assert!(!format!("{c:?}").contains("token\""), "{c:?}");
        std::fs::write(&path, "# only a comment\n").unwrap();
        let (setting, message) = invalid(load(&["--auth-tokens-file", file], &[]));
        assert_eq!(setting, "PGSIDECAR_AUTH_TOKENS_FILE (--auth-tokens-file)");
        assert!(message.contains("at least one token"), "{message}");
        std::fs::remove_file(&path).unwrap();
        let (_, message) = invalid(load(&["--auth-tokens-file", file], &[]));
        assert!(message.contains("cannot read"), "{message}");
    }

    #[test]
    fn production_defaults_differ_only_in_pool_and_log_format() {
        let prod = Config::defaults(Profile::Production);
        assert_eq!((prod.primary.max_size, prod.primary.min_idle), (100, 25));
        assert_eq!(prod.log_format, LogFormat::Json);
        let mut dev = Config::defaults(Profile::Development);
        dev.profile = Profile::Production;
        dev.primary.max_size = 100;
        dev.primary.min_idle = 25;
        dev.log_format = LogFormat::Json;
        assert_eq!(dev, prod);
    }

    #[test]
    fn profile_is_chosen_by_flag_then_env_then_toml() {
        let file = TempToml::new("profile = \"production\"\n");
        let with_file = [("PGSIDECAR_CONFIG", file.path())];
        let cases: &[(Args, Env, Profile)] = &[
            (&[], &[], Profile::Development),
            (
                &[],
                &[("PGSIDECAR_PROFILE", "production")],
                Profile::Production,
            ),
            (&[], &[("PGSIDECAR_PROFILE", "PROD")], Profile::Production),
            (&["--profile", "production"], &[], Profile::Production),
            (
                &["--profile", "development"],
                &[("PGSIDECAR_PROFILE", "production")],
                Profile::Development,
            ),
            (&[], &with_file, Profile::Production),
            (
                &[],
                &[
                    ("PGSIDECAR_CONFIG", file.path()),
                    ("PGSIDECAR_PROFILE", "dev"),
                ],
                Profile::Development,
            ),
        ];
        for (args, env, want) in cases {
            let c = load(args, env).unwrap();
            assert_eq!(c.profile, *want, "args {args:?} env {env:?}");
            // The chosen profile drives the defaults.
            let want_max = if *want == Profile::Production {
                100
            } else {
                30
            };
            assert_eq!(c.primary.max_size, want_max, "args {args:?} env {env:?}");
        }
    }

    #[test]
    fn later_layers_win_toml_then_env_then_flag() {
        let file = TempToml::new("pool_max = 40\nquery_timeout = 1000\nreflection = false\n");
        let path = file.path();
        let cases: &[(Args, Env, u32)] = &[
            (&["--config", path], &[], 40),
            (&["--config", path], &[("DB_POOL_MAX", "50")], 50),
            (
                &["--config", path, "--pool-max", "60"],
                &[("DB_POOL_MAX", "50")],
                60,
            ),
            (
                &[],
                &[("PGSIDECAR_CONFIG", path), ("DB_POOL_MAX", "50")],
                50,
            ),
            // Empty env counts as unset, so the file still wins over the default.
            (&[], &[("PGSIDECAR_CONFIG", path), ("DB_POOL_MAX", "")], 40),
        ];
        for (args, env, want) in cases {
            let c = load(args, env).unwrap();
            assert_eq!(c.primary.max_size, *want, "args {args:?} env {env:?}");
            // Settings no outer layer touches still come from the file.
            assert_eq!(c.query_timeout, Some(MS(1000)));
            assert!(!c.reflection);
        }
    }

    #[test]
    fn toml_overrides_profile_defaults_and_env_profile_applies_under_it() {
        let file = TempToml::new("log_format = \"text\"\n");
        let c = load(
            &["--config", file.path()],
            &[("PGSIDECAR_PROFILE", "production")],
        )
        .unwrap();
        assert_eq!(c.profile, Profile::Production);
        assert_eq!(c.primary.max_size, 100);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn every_env_name_reaches_its_field() {
        let env = [
            ("DATABASE_URL", "postgres://app:pw@db:6432/app"),
            ("DB_POOL_MAX", "11"),
            ("DB_POOL_MIN", "3"),
            ("DB_POOL_IDLE_TIMEOUT", "1234"),
            ("DB_POOL_MAX_LIFETIME", "5678"),
            ("DB_CONNECTION_TIMEOUT", "250"),
            ("DB_POOL_MAX_WAITING", "77"),
            ("DB_QUERY_TIMEOUT", "9000"),
            ("DB_ENABLE_FAILOVER", "false"),
            ("DB_FAILOVER_THRESHOLD", "92.5"),
            ("DB_FAILOVER_POOL_MAX", "7"),
            ("DB_FAILOVER_POOL_MIN", "2"),
            ("DB_FAILOVER_DATABASE_URL", "host=standby user=app"),
            ("DB_STATEMENT_CACHE_SIZE", "0"),
            ("DB_HEALTH_CHECK_INTERVAL", "100"),
            ("DB_CONNECTION_VALIDATION_ENABLED", "no"),
            ("DB_TRANSACTION_IDLE_TIMEOUT", "60000"),
            ("DB_TRANSACTION_MAX_DURATION", "0"),
            ("DB_SLOW_QUERY_MS", "0"),
            ("PGSIDECAR_GRPC_ADDR", "0.0.0.0:6000"),
            ("PGSIDECAR_HTTP_ADDR", "[::1]:6001"),
            ("PGSIDECAR_REFLECTION", "0"),
            ("PGSIDECAR_LOG_FORMAT", "JSON"),
            ("PGSIDECAR_LOG_LEVEL", "info,pgsidecar=debug"),
            ("PGSIDECAR_MAX_SQL_BYTES", "4096"),
            ("PGSIDECAR_MAX_PARAMS", "100"),
            ("PGSIDECAR_MAX_MESSAGE_BYTES", "1024"),
            ("PGSIDECAR_MAX_ROWS", "5"),
            ("PGSIDECAR_SHUTDOWN_GRACE", "0"),
            ("PGSIDECAR_WORKER_THREADS", "0"),
            ("PGSIDECAR_MAX_CONCURRENT_STREAMS", "64"),
            ("PGSIDECAR_READ_ONLY", "true"),
            ("PGSIDECAR_AUTH_TOKENS", " a-token , # not one,other "),
        ];
        let c = load(&[], &env).unwrap();
        let want = Config {
            profile: Profile::Development,
            primary: PoolConfig {
                max_size: 11,
                min_idle: 3,
                database_url: "postgres://app:pw@db:6432/app".to_owned(),
            },
            failover: PoolConfig {
                max_size: 7,
                min_idle: 2,
                database_url: "host=standby user=app".to_owned(),
            },
            enable_failover: false,
            failover_threshold_percent: 92.5,
            idle_timeout: MS(1234),
            max_lifetime: Some(MS(5678)),
            connection_timeout: MS(250),
            pool_max_waiting: 77,
            query_timeout: Some(MS(9000)),
            statement_cache_size: 0,
            health_check_interval: MS(100),
            connection_validation: false,
            transaction_idle_timeout: MS(60_000),
            transaction_max_duration: None,
            slow_query: Duration::ZERO,
            grpc_addr: "0.0.0.0:6000".parse().unwrap(),
            http_addr: "[::1]:6001".parse().unwrap(),
            reflection: false,
            log_format: LogFormat::Json,
            log_level: "info,pgsidecar=debug".to_owned(),
            limits: Limits {
                max_sql_bytes: 4096,
                max_params: 100,
                max_message_bytes: 1024,
                max_rows: 5,
                max_concurrent_streams: 64,
            },
            shutdown_grace: Duration::ZERO,
            worker_threads: 0,
            read_only: true,
            auth_tokens: Tokens(vec!["a-token".into(), "other".into()]),
            tls: None,
        };
        assert_eq!(c, want);
    }

    #[test]
    fn every_flag_reaches_its_field_and_beats_env() {
        // Each env value is valid but different, so a flag that failed to win would show.
        let env: Vec<(&str, &str)> = Key::ALL
            .iter()
            .filter(|k| ![Key::CONFIG, Key::PROFILE].contains(k))
            .map(|k| (k.env, "garbage that would fail to parse"))
            .collect();
        let args = [
            "--profile=production",
            "--database-url=postgres://a@h/db",
            "--pool-max=8",
            "--pool-min=8",
            "--pool-idle-timeout=1",
            "--pool-max-lifetime=0",
            "--connection-timeout=2",
            "--pool-max-waiting=9",
            "--query-timeout=0",
            "--enable-failover=off",
            "--failover-threshold=50%",
            "--failover-pool-max=3",
            "--failover-pool-min=0",
            "--failover-database-url=postgresql://b@h2/db",
            "--statement-cache-size=17",
            "--health-check-interval=250",
            "--connection-validation=FALSE",
            "--transaction-idle-timeout=3",
            "--transaction-max-duration=8",
            "--slow-query-ms=4",
            "--grpc-addr=127.0.0.1:0",
            "--http-addr=127.0.0.1:0",
            "--reflection=no",
            "--log-format=text",
            "--log-level=warn",
            "--max-sql-bytes=1",
            "--max-params=65535",
            "--max-message-bytes=2048",
            "--max-rows=1",
            "--shutdown-grace=5",
            "--worker-threads=3",
            "--max-concurrent-streams=7",
            "--read-only=yes",
            "--auth-tokens-file=",
            "--auth-tokens=t1",
            "--tls-cert=",
            "--tls-key=",
            "--tls-client-ca=",
        ];
        let c = load(&args, &env).unwrap();
        assert_eq!(c.profile, Profile::Production);
        assert_eq!(c.primary.database_url, "postgres://a@h/db");
        assert_eq!((c.primary.max_size, c.primary.min_idle), (8, 8));
        assert_eq!(c.idle_timeout, MS(1));
        assert_eq!(c.max_lifetime, None);
        assert_eq!(c.connection_timeout, MS(2));
        assert_eq!(c.pool_max_waiting, 9);
        assert_eq!(c.query_timeout, None);
        assert!(!c.enable_failover);
        assert_eq!(c.failover_threshold_percent, 50.0);
        assert_eq!((c.failover.max_size, c.failover.min_idle), (3, 0));
        assert_eq!(c.failover.database_url, "postgresql://b@h2/db");
        assert_eq!(c.statement_cache_size, 17);
        assert_eq!(c.health_check_interval, MS(250));
        assert!(!c.connection_validation);
        assert_eq!(c.transaction_idle_timeout, MS(3));
        assert_eq!(c.transaction_max_duration, Some(MS(8)));
        assert_eq!(c.slow_query, MS(4));
        assert_eq!(c.grpc_addr, "127.0.0.1:0".parse().unwrap());
        assert!(!c.reflection);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_level, "warn");
        assert_eq!(c.limits.max_sql_bytes, 1);
        assert_eq!(c.limits.max_params, 65535);
        assert_eq!(c.limits.max_message_bytes, 2048);
        assert_eq!(c.limits.max_rows, 1);
        assert_eq!(c.shutdown_grace, MS(5));
        assert_eq!(c.worker_threads, 3);
        assert_eq!(c.limits.max_concurrent_streams, 7);
        assert!(c.read_only);
        assert_eq!(c.auth_tokens, Tokens(vec!["t1".into()]));
    }

    #[test]
    fn boolean_forms() {
        let forms = [
            (true, ["true", "TRUE", "1", "yes", "Yes", "on", " true "]),
            (false, ["false", "False", "0", "no", "NO", "off", "Off"]),
        ];
        for (want, text) in forms
            .iter()
            .flat_map(|(want, texts)| texts.map(|t| (*want, t)))
        {
            let c = load(&[], &[("DB_ENABLE_FAILOVER", text)]).unwrap();
            assert_eq!(c.enable_failover, want, "env {text:?}");
            let c = load(&["--reflection", text], &[]).unwrap();
            assert_eq!(c.reflection, want, "flag {text:?}");
        }
        // A bare boolean flag means true, and the next flag is not taken as its value.
        let c = load(
            &["--connection-validation", "--pool-max", "9"],
            &[("DB_CONNECTION_VALIDATION_ENABLED", "false")],
        )
        .unwrap();
        assert!(c.connection_validation);
        assert_eq!(c.primary.max_size, 9);
    }

    #[test]
    fn durations_in_milliseconds_with_zero_as_none_where_stated() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, Field, Option<Duration>)] = &[
            ("DB_QUERY_TIMEOUT", "0", |c| c.query_timeout, None),
            ("DB_QUERY_TIMEOUT", "1500", |c| c.query_timeout, Some(MS(1500))),
            ("DB_POOL_MAX_LIFETIME", "0", |c| c.max_lifetime, None),
            ("DB_POOL_MAX_LIFETIME", "60000", |c| c.max_lifetime, Some(MS(60_000))),
            ("DB_POOL_IDLE_TIMEOUT", "10", |c| Some(c.idle_timeout), Some(MS(10))),
            ("DB_CONNECTION_TIMEOUT", "1", |c| Some(c.connection_timeout), Some(MS(1))),
            ("DB_HEALTH_CHECK_INTERVAL", "100", |c| Some(c.health_check_interval), Some(MS(100))),
            ("DB_SLOW_QUERY_MS", "0", |c| Some(c.slow_query), Some(Duration::ZERO)),
            ("PGSIDECAR_SHUTDOWN_GRACE", "2147483647", |c| Some(c.shutdown_grace), Some(MS(2_147_483_647))),
        ];
        for (name, text, field, want) in cases {
            let c = load(&[], &[(name, text)]).unwrap();
            assert_eq!(field(&c), *want, "{name}={text}");
        }
    }

    #[test]
    fn failover_url_defaults_to_database_url() {
        let c = load(&["--database-url", "host=primary user=u"], &[]).unwrap();
        assert_eq!(c.failover.database_url, "host=primary user=u");
        let c = load(
            &["--database-url", "host=primary user=u"],
            &[("DB_FAILOVER_DATABASE_URL", "host=standby user=u")],
        )
        .unwrap();
        assert_eq!(c.primary.database_url, "host=primary user=u");
        assert_eq!(c.failover.database_url, "host=standby user=u");
    }

    #[test]
    fn bad_env_values_name_the_setting() {
        // (env name, value, setting in the error, fragment of the message)
        #[rustfmt::skip]
        let cases = [
            ("DB_POOL_MAX", "abc", "DB_POOL_MAX (--pool-max)", "expected an integer ≥ 1, got \"abc\""),
            ("DB_POOL_MAX", "0", "DB_POOL_MAX (--pool-max)", "got \"0\""),
            ("DB_POOL_MAX", "-3", "DB_POOL_MAX (--pool-max)", "got \"-3\""),
            ("DB_POOL_MAX", "4294967296", "DB_POOL_MAX (--pool-max)", "got \"4294967296\""),
            ("DB_POOL_MIN", "31", "DB_POOL_MIN (--pool-min)", "expected at most DB_POOL_MAX (--pool-max) = 30, got 31"),
            ("DB_FAILOVER_POOL_MIN", "21", "DB_FAILOVER_POOL_MIN (--failover-pool-min)", "DB_FAILOVER_POOL_MAX (--failover-pool-max) = 20, got 21"),
            ("DB_POOL_IDLE_TIMEOUT", "0", "DB_POOL_IDLE_TIMEOUT (--pool-idle-timeout)", "expected milliseconds from 1"),
            ("DB_CONNECTION_TIMEOUT", "0", "DB_CONNECTION_TIMEOUT (--connection-timeout)", "got \"0\""),
            ("DB_QUERY_TIMEOUT", "5s", "DB_QUERY_TIMEOUT (--query-timeout)", "got \"5s\""),
            ("DB_QUERY_TIMEOUT", "2147483648", "DB_QUERY_TIMEOUT (--query-timeout)", "to 2147483647"),
            ("DB_HEALTH_CHECK_INTERVAL", "99", "DB_HEALTH_CHECK_INTERVAL (--health-check-interval)", "from 100"),
            ("DB_TRANSACTION_IDLE_TIMEOUT", "0", "DB_TRANSACTION_IDLE_TIMEOUT (--transaction-idle-timeout)", "got \"0\""),
            ("DB_ENABLE_FAILOVER", "maybe", "DB_ENABLE_FAILOVER (--enable-failover)", "got \"maybe\""),
            ("DB_FAILOVER_THRESHOLD", "0", "DB_FAILOVER_THRESHOLD (--failover-threshold)", "from 1 to 100"),
            ("DB_FAILOVER_THRESHOLD", "100.5", "DB_FAILOVER_THRESHOLD (--failover-threshold)", "got \"100.5\""),
            ("DB_FAILOVER_THRESHOLD", "NaN", "DB_FAILOVER_THRESHOLD (--failover-threshold)", "got \"NaN\""),
            ("DB_STATEMENT_CACHE_SIZE", "-1", "DB_STATEMENT_CACHE_SIZE (--statement-cache-size)", "≥ 0"),
            ("PGSIDECAR_GRPC_ADDR", "localhost:50051", "PGSIDECAR_GRPC_ADDR (--grpc-addr)", "got \"localhost:50051\""),
            ("PGSIDECAR_HTTP_ADDR", "127.0.0.1", "PGSIDECAR_HTTP_ADDR (--http-addr)", "IP:port"),
            ("PGSIDECAR_HTTP_ADDR", "127.0.0.1:50051", "PGSIDECAR_HTTP_ADDR (--http-addr)", "other than PGSIDECAR_GRPC_ADDR"),
            ("PGSIDECAR_LOG_FORMAT", "xml", "PGSIDECAR_LOG_FORMAT (--log-format)", "expected text or json"),
            ("PGSIDECAR_PROFILE", "staging", "PGSIDECAR_PROFILE (--profile)", "got \"staging\""),
            ("PGSIDECAR_MAX_PARAMS", "65536", "PGSIDECAR_MAX_PARAMS (--max-params)", "from 1 to 65535"),
            ("PGSIDECAR_MAX_MESSAGE_BYTES", "1023", "PGSIDECAR_MAX_MESSAGE_BYTES (--max-message-bytes)", "≥ 1024"),
            ("PGSIDECAR_MAX_SQL_BYTES", "0", "PGSIDECAR_MAX_SQL_BYTES (--max-sql-bytes)", "≥ 1"),
            ("PGSIDECAR_MAX_ROWS", "0", "PGSIDECAR_MAX_ROWS (--max-rows)", "≥ 1"),
            ("DATABASE_URL", "mysql://u@h/db", "DATABASE_URL (--database-url)", "invalid connection string"),
            ("DB_FAILOVER_DATABASE_URL", "host=h port=x", "DB_FAILOVER_DATABASE_URL (--failover-database-url)", "invalid value for option `port`"),
            ("PGSIDECAR_CONFIG", "/nonexistent/pgsidecar.toml", "PGSIDECAR_CONFIG (--config)", "cannot read /nonexistent/pgsidecar.toml"),
        ];
        for (name, value, setting, fragment) in cases {
            let (got_setting, message) = invalid(load(&[], &[(name, value)]));
            assert_eq!(got_setting, setting, "{name}={value:?}: {message}");
            assert!(
                message.contains(fragment),
                "{name}={value:?}: {message:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn bad_flag_values_name_the_setting() {
        // (flags, setting in the error, fragment of the message)
        #[rustfmt::skip]
        let cases: &[(Args, &str, &str)] = &[
            (&["--pool-min", "1.5"], "DB_POOL_MIN (--pool-min)", "got \"1.5\""),
            (&["--pool-max", "10", "--pool-min", "11"], "DB_POOL_MIN (--pool-min)", "= 10, got 11"),
            (&["--reflection=2"], "PGSIDECAR_REFLECTION (--reflection)", "got \"2\""),
            (&["--log-level", " "], "PGSIDECAR_LOG_LEVEL (--log-level)", "got \"\""),
            (&["--database-url", ""], "DATABASE_URL (--database-url)", "got \"\""),
            (&["--grpc-addr", "1.2.3.4:99999"], "PGSIDECAR_GRPC_ADDR (--grpc-addr)", "got \"1.2.3.4:99999\""),
            (&["--config", ""], "PGSIDECAR_CONFIG (--config)", "expected a file path"),
            (&["--profile", "qa"], "PGSIDECAR_PROFILE (--profile)", "expected development or production"),
        ];
        for (args, setting, fragment) in cases {
            let (got_setting, message) = invalid(load(args, &[]));
            assert_eq!(got_setting, *setting, "{args:?}: {message}");
            assert!(
                message.contains(fragment),
                "{args:?}: {message:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn a_lowered_max_pulls_an_unset_min_down() {
        let c = load(
            &[],
            &[("PGSIDECAR_PROFILE", "production"), ("DB_POOL_MAX", "20")],
        )
        .unwrap();
        assert_eq!((c.primary.max_size, c.primary.min_idle), (20, 20));
        let c = load(&["--failover-pool-max", "4"], &[]).unwrap();
        assert_eq!((c.failover.max_size, c.failover.min_idle), (4, 4));
        // An explicit minimum is never adjusted, only reported.
        let (setting, _) = invalid(load(
            &["--failover-pool-max=4", "--failover-pool-min=5"],
            &[],
        ));
        assert_eq!(setting, "DB_FAILOVER_POOL_MIN (--failover-pool-min)");
    }

    #[test]
    fn invalid_display_is_one_line_with_env_name_and_flag() {
        let err = load(&[], &[("DB_POOL_MAX", "abc")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid setting DB_POOL_MAX (--pool-max): expected an integer ≥ 1, got \"abc\""
        );
        assert_eq!(err.exit_code(), 64);
    }

    #[test]
    fn bad_database_url_never_shows_the_password() {
        let cases = [
            ("DATABASE_URL", "postgres://u:hunter2@h:notaport/db"),
            ("DATABASE_URL", "host=h password=hunter2 bogus=1"),
            ("DATABASE_URL", "host=h pasword=hunter2"),
            ("DATABASE_URL", "host=h password hunter2"),
            (
                "DATABASE_URL",
                "postgres://u:hunter2@h/db?sslmode=sometimes",
            ),
            ("DB_FAILOVER_DATABASE_URL", "postgresql://u:hunter2@[::1/db"),
        ];
        for (name, url) in cases {
            let err = load(&[], &[(name, url)]).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("invalid setting {name} (")),
                "{text}"
            );
            assert!(!text.contains("hunter2"), "{name}={url:?} leaked: {text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn debug_redacts_database_urls() {
        let c = load(
            &[
                "--database-url=postgres://u:hunter2@h/db",
                "--failover-database-url=host=h password=swordfish",
            ],
            &[],
        )
        .unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("swordfish"),
            "{debug}"
        );
        assert!(debug.contains("postgres://u:***@h/db"), "{debug}");
        // The value itself is intact for the pool to use.
        assert_eq!(c.primary.database_url, "postgres://u:hunter2@h/db");
    }

    #[test]
    fn toml_file_sets_values_with_native_types() {
        let file = TempToml::new(
            r#"
            database_url = "postgres://app@db/app"
            pool_max = 12
            pool_min = "4"
            enable_failover = false
            failover_threshold = 75.5
            query_timeout = 0
            grpc_addr = "0.0.0.0:7000"
            log_level = "debug"
            "#,
        );
        let c = load(&["--config", file.path()], &[]).unwrap();
        assert_eq!(c.primary.database_url, "postgres://app@db/app");
        assert_eq!(c.failover.database_url, "postgres://app@db/app");
        assert_eq!((c.primary.max_size, c.primary.min_idle), (12, 4));
        assert!(!c.enable_failover);
        assert_eq!(c.failover_threshold_percent, 75.5);
        assert_eq!(c.query_timeout, None);
        assert_eq!(c.grpc_addr, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn toml_errors_name_the_key() {
        // (file contents, setting in the error, fragment of the message)
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("pool_maxx = 3\n", "pool_maxx", "did you mean `pool_max`?"),
            ("pool-max = 3\n", "pool-max", "did you mean `pool_max`?"),
            ("colour = 3\n", "colour", "unknown key in config file"),
            ("config = \"/etc/x.toml\"\n", "config", "cannot name another config file"),
            ("pool_max = \"abc\"\n", "DB_POOL_MAX (--pool-max)", "got \"abc\" (from key pool_max in "),
            ("pool_max = -1\n", "DB_POOL_MAX (--pool-max)", "got \"-1\""),
            ("pool_max = [1]\n", "DB_POOL_MAX (--pool-max)", "expected a single value, got a array"),
            ("[pool]\nmax = 1\n", "pool", "unknown key"),
            ("database_url = \"postgres://u:hunter2@h\n", "PGSIDECAR_CONFIG (--config)", "is not valid TOML at line 1"),
            ("a = 1\npool_max = \n", "PGSIDECAR_CONFIG (--config)", "at line 2"),
        ];
        for (contents, setting, fragment) in cases {
            let file = TempToml::new(contents);
            let (got_setting, message) =
                invalid(load(&["--config", file.path()], &[]).map_err(|e| {
                    // Whatever went wrong, the file's password must not be quoted back.
                    assert!(!e.to_string().contains("hunter2"), "{e}");
                    assert!(!e.to_string().contains('\n'), "{e}");
                    e
                }));
            assert_eq!(got_setting, *setting, "{contents:?}: {message}");
            assert!(
                message.contains(fragment),
                "{contents:?}: {message:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn unknown_flags_and_flag_syntax_errors_are_invalid() {
        let (setting, message) = invalid(load(&["--pool-maxx", "3"], &[]));
        assert_eq!(setting, "--pool-maxx");
        assert!(message.contains("did you mean '--pool-max'"), "{message}");

        let (setting, message) = invalid(load(&["serve"], &[]));
        assert_eq!(setting, "serve");
        assert!(message.contains("unexpected argument"), "{message}");

        let (setting, message) = invalid(load(&["--pool-max"], &[]));
        assert_eq!(setting, "DB_POOL_MAX (--pool-max)");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn repeated_flag_last_wins() {
        let c = load(&["--pool-max", "7", "--pool-max", "9"], &[]).unwrap();
        assert_eq!(c.primary.max_size, 9);
    }

    #[test]
    fn help_and_version_are_help() {
        for flag in ["--help", "-h"] {
            match load(&[flag], &[]) {
                Err(e @ ConfigError::Help(_)) => {
                    assert_eq!(e.exit_code(), 0);
                    let text = e.to_string();
                    for key in Key::ALL {
                        assert!(text.contains(&format!("--{}", key.flag)), "{text}");
                        assert!(text.contains(&format!("[env: {}]", key.env)), "{text}");
                    }
                }
                other => panic!("{flag}: {other:?}"),
            }
        }
        match load(&["--version"], &[]) {
            Err(ConfigError::Help(text)) => assert!(text.contains(env!("CARGO_PKG_VERSION"))),
            other => panic!("--version: {other:?}"),
        }
    }

    #[test]
    fn every_setting_has_a_distinct_flag_and_env_name() {
        for names in [Key::ALL.map(|k| k.flag), Key::ALL.map(|k| k.env)] {
            let mut sorted = names.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "{names:?}");
        }
        // clap checks its own definition (duplicate flags, bad ids) in debug builds.
        command().debug_assert();
    }

    #[test]
    fn example_fixture_spells_every_key_with_its_default() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/config/production.toml"
        );
        let text = std::fs::read_to_string(path).expect("fixture");
        for key in Key::ALL.into_iter().filter(|k| *k != Key::CONFIG) {
            assert!(
                text.contains(&format!("\n{} = ", key.toml_key())),
                "fixture lacks {}",
                key.toml_key()
            );
        }
        let c = load(&["--config", path], &[]).unwrap();
        assert_eq!(c, Config::defaults(Profile::Production));
    }

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
