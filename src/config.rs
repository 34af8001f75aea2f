//! Typed configuration: per-profile defaults, layered under a TOML file, the environment and
//! command-line flags (later wins), validated into one [`Config`] whose errors name the setting.
//!
//! Every setting has a flag, an environment name, a TOML key (the flag without `--`, `-` → `_`)
//! and a default. All three outer layers hand this module *text*, and one parser per setting
//! turns it into a typed value, so a bad value reads the same wherever it came from.

use std::error::Error as _;
use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ColorChoice, CommandFactory, FromArgMatches, Parser};

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
        let cli = parse_cli(args)?;
        let mut layers = Layers {
            cli: &cli,
            env,
            file: None,
        };
        if let Some(path) = layers.get(Key::Config, parse_path)? {
            layers.file = Some(TomlFile::read(path)?);
        }
        let profile = layers
            .get(Key::Profile, parse_profile)?
            .unwrap_or(Profile::Development);
        layers.resolve(Config::defaults(profile))
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
            query_timeout: Some(Duration::from_millis(30_000)),
            statement_cache_size: 1000,
            health_check_interval: Duration::from_millis(1_000),
            connection_validation: true,
            transaction_idle_timeout: Duration::from_millis(300_000),
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
            },
            shutdown_grace: Duration::from_millis(25_000),
        }
    }
}

/// `url` with any password replaced by `***`, in URL form (userinfo and `password=` query
/// parameter) and in key=value form. Never panics; on text it cannot make sense of it errs
/// towards hiding too much.
pub fn redact_url(url: &str) -> String {
    if let Some(authority) = scheme_end(url) {
        redact_url_form(url, authority)
    } else if url.contains('=') {
        redact_conninfo(url)
    } else {
        // Neither form, e.g. `user:pw@host` with the scheme forgotten: still hide the password.
        redact_userinfo(url)
    }
}

/// Byte offset just past `scheme://`, if `url` starts with one (after leading spaces).
fn scheme_end(url: &str) -> Option<usize> {
    let lead = url.len() - url.trim_start().len();
    let rest = &url[lead..];
    let sep = rest.find("://")?;
    let scheme = &rest[..sep];
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    // Requiring a real scheme keeps `password=a://b` in key=value form out of this path.
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some(lead + sep + 3)
}

fn redact_url_form(url: &str, authority: usize) -> String {
    let (prefix, rest) = url.split_at(authority);
    // Query first: a `password=` parameter may itself contain `@`, which would otherwise be
    // mistaken for the end of the userinfo below.
    let rest = match rest.split_once('?') {
        Some((before, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.trim().eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            format!("{before}?{}", params.join("&"))
        }
        None => rest.to_owned(),
    };
    format!("{prefix}{}", redact_userinfo(&rest))
}

/// Hides what lies between the first `:` and the last `@`. The last `@`, not the first, because
/// libpq tolerates an unescaped `@` in passwords; if that over-reaches into a path or query the
/// result hides too much, never too little.
fn redact_userinfo(s: &str) -> String {
    // No let-chains: the crate's rust-version (1.85) predates them.
    let Some(at) = s.rfind('@') else {
        return s.to_owned();
    };
    match s[..at].find(':') {
        Some(colon) => format!("{}***{}", &s[..=colon], &s[at..]),
        None => s.to_owned(),
    }
}

/// A byte cursor over a key=value connection string, mirroring tokio-postgres's own tokenizer
/// closely enough to find where a `password` value starts and ends.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_while(&mut self, f: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&f) {
            self.bump();
        }
    }

    fn skip_value(&mut self) {
        if self.peek() == Some('\'') {
            self.bump();
            while let Some(c) = self.bump() {
                match c {
                    '\\' => {
                        self.bump();
                    }
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while let Some(c) = self.peek() {
                if c.is_whitespace() {
                    break;
                }
                self.bump();
                if c == '\\' {
                    self.bump();
                }
            }
        }
    }
}

fn redact_conninfo(s: &str) -> String {
    let mut cur = Cursor { s, pos: 0 };
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    loop {
        cur.skip_while(char::is_whitespace);
        let key_start = cur.pos;
        cur.skip_while(|c| !c.is_whitespace() && c != '=');
        let key = &s[key_start..cur.pos];
        if key.is_empty() {
            // Either the end, or a stray `=`: step over it so the loop always advances.
            if cur.bump().is_none() {
                break;
            }
            continue;
        }
        cur.skip_while(char::is_whitespace);
        let has_eq = cur.peek() == Some('=');
        if has_eq {
            cur.bump();
            cur.skip_while(char::is_whitespace);
        }
        if key.eq_ignore_ascii_case("password") {
            // Even without `=` (malformed), the next token is most likely the password.
            let value_start = cur.pos;
            cur.skip_value();
            if cur.pos > value_start {
                out.push_str(&s[copied..value_start]);
                out.push_str("***");
                copied = cur.pos;
            }
        } else if has_eq {
            cur.skip_value();
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// One setting. The enum (rather than strings) lets the compiler check that each has a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Profile,
    Config,
    DatabaseUrl,
    PoolMax,
    PoolMin,
    PoolIdleTimeout,
    PoolMaxLifetime,
    ConnectionTimeout,
    QueryTimeout,
    EnableFailover,
    FailoverThreshold,
    FailoverPoolMax,
    FailoverPoolMin,
    FailoverDatabaseUrl,
    StatementCacheSize,
    HealthCheckInterval,
    ConnectionValidation,
    TransactionIdleTimeout,
    SlowQueryMs,
    GrpcAddr,
    HttpAddr,
    Reflection,
    LogFormat,
    LogLevel,
    MaxSqlBytes,
    MaxParams,
    MaxMessageBytes,
    MaxRows,
    ShutdownGrace,
}

impl Key {
    const ALL: [Key; 29] = [
        Key::Profile,
        Key::Config,
        Key::DatabaseUrl,
        Key::PoolMax,
        Key::PoolMin,
        Key::PoolIdleTimeout,
        Key::PoolMaxLifetime,
        Key::ConnectionTimeout,
        Key::QueryTimeout,
        Key::EnableFailover,
        Key::FailoverThreshold,
        Key::FailoverPoolMax,
        Key::FailoverPoolMin,
        Key::FailoverDatabaseUrl,
        Key::StatementCacheSize,
        Key::HealthCheckInterval,
        Key::ConnectionValidation,
        Key::TransactionIdleTimeout,
        Key::SlowQueryMs,
        Key::GrpcAddr,
        Key::HttpAddr,
        Key::Reflection,
        Key::LogFormat,
        Key::LogLevel,
        Key::MaxSqlBytes,
        Key::MaxParams,
        Key::MaxMessageBytes,
        Key::MaxRows,
        Key::ShutdownGrace,
    ];

    /// (flag without `--`, environment name). The `DB_*` names and `DATABASE_URL` are the
    /// original Node service's and must not change.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Key::Profile => ("profile", "PGSIDECAR_PROFILE"),
            Key::Config => ("config", "PGSIDECAR_CONFIG"),
            Key::DatabaseUrl => ("database-url", "DATABASE_URL"),
            Key::PoolMax => ("pool-max", "DB_POOL_MAX"),
            Key::PoolMin => ("pool-min", "DB_POOL_MIN"),
            Key::PoolIdleTimeout => ("pool-idle-timeout", "DB_POOL_IDLE_TIMEOUT"),
            Key::PoolMaxLifetime => ("pool-max-lifetime", "DB_POOL_MAX_LIFETIME"),
            Key::ConnectionTimeout => ("connection-timeout", "DB_CONNECTION_TIMEOUT"),
            Key::QueryTimeout => ("query-timeout", "DB_QUERY_TIMEOUT"),
            Key::EnableFailover => ("enable-failover", "DB_ENABLE_FAILOVER"),
            Key::FailoverThreshold => ("failover-threshold", "DB_FAILOVER_THRESHOLD"),
            Key::FailoverPoolMax => ("failover-pool-max", "DB_FAILOVER_POOL_MAX"),
            Key::FailoverPoolMin => ("failover-pool-min", "DB_FAILOVER_POOL_MIN"),
            Key::FailoverDatabaseUrl => ("failover-database-url", "DB_FAILOVER_DATABASE_URL"),
            Key::StatementCacheSize => ("statement-cache-size", "DB_STATEMENT_CACHE_SIZE"),
            Key::HealthCheckInterval => ("health-check-interval", "DB_HEALTH_CHECK_INTERVAL"),
            Key::ConnectionValidation => {
                ("connection-validation", "DB_CONNECTION_VALIDATION_ENABLED")
            }
            Key::TransactionIdleTimeout => {
                ("transaction-idle-timeout", "DB_TRANSACTION_IDLE_TIMEOUT")
            }
            Key::SlowQueryMs => ("slow-query-ms", "DB_SLOW_QUERY_MS"),
            Key::GrpcAddr => ("grpc-addr", "PGSIDECAR_GRPC_ADDR"),
            Key::HttpAddr => ("http-addr", "PGSIDECAR_HTTP_ADDR"),
            Key::Reflection => ("reflection", "PGSIDECAR_REFLECTION"),
            Key::LogFormat => ("log-format", "PGSIDECAR_LOG_FORMAT"),
            Key::LogLevel => ("log-level", "PGSIDECAR_LOG_LEVEL"),
            Key::MaxSqlBytes => ("max-sql-bytes", "PGSIDECAR_MAX_SQL_BYTES"),
            Key::MaxParams => ("max-params", "PGSIDECAR_MAX_PARAMS"),
            Key::MaxMessageBytes => ("max-message-bytes", "PGSIDECAR_MAX_MESSAGE_BYTES"),
            Key::MaxRows => ("max-rows", "PGSIDECAR_MAX_ROWS"),
            Key::ShutdownGrace => ("shutdown-grace", "PGSIDECAR_SHUTDOWN_GRACE"),
        }
    }

    fn flag(self) -> &'static str {
        self.names().0
    }

    fn env(self) -> &'static str {
        self.names().1
    }

    fn toml_key(self) -> String {
        self.flag().replace('-', "_")
    }

    /// How errors name the setting: `DB_POOL_MAX (--pool-max)`.
    fn label(self) -> String {
        format!("{} (--{})", self.env(), self.flag())
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

// Command-line flags. Each field is the raw text of one setting so flags go through the same
// parser, and fail with the same message, as the environment and the TOML file. The env names
// are only shown in the help: the env layer is read through an injected lookup, not by clap,
// so tests never touch the process environment. (Plain comments, not `///`: clap would turn
// doc comments here into user-facing help.)
//
// Subcommands (e.g. `pgsidecar analyze --addr ...`) go in a field
//     #[command(subcommand)] command: Option<Command>,
// together with `args_conflicts_with_subcommands = true` on the command below, so that running
// with no subcommand stays "serve" and these flat flags keep working unchanged.
#[derive(Debug, Parser)]
#[command(
    name = "pgsidecar",
    version,
    about = "gRPC data-access sidecar for PostgreSQL",
    after_help = AFTER_HELP,
    // Later flags override earlier ones, in the spirit of the layering (scripts append flags).
    args_override_self = true,
    color = ColorChoice::Never
)]
struct Cli {
    /// Profile whose defaults apply: development or production [env: PGSIDECAR_PROFILE] [default: development]
    #[arg(long, value_name = "PROFILE")]
    profile: Option<String>,
    /// TOML file with settings [env: PGSIDECAR_CONFIG]
    #[arg(long, value_name = "PATH")]
    config: Option<String>,
    /// Primary database: postgres:// URL or key=value connection string [env: DATABASE_URL] [default: postgres://postgres@127.0.0.1:5432/postgres]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Most connections in the primary pool [env: DB_POOL_MAX] [default: 30, production 100]
    #[arg(long, value_name = "N")]
    pool_max: Option<String>,
    /// Idle connections kept in the primary pool, at most --pool-max [env: DB_POOL_MIN] [default: 5, production 25]
    #[arg(long, value_name = "N")]
    pool_min: Option<String>,
    /// Close idle connections above the minimum after this many ms [env: DB_POOL_IDLE_TIMEOUT] [default: 30000]
    #[arg(long, value_name = "MS")]
    pool_idle_timeout: Option<String>,
    /// Retire connections older than this many ms, 0 = never [env: DB_POOL_MAX_LIFETIME] [default: 1800000]
    #[arg(long, value_name = "MS")]
    pool_max_lifetime: Option<String>,
    /// Longest wait for a connection, in ms [env: DB_CONNECTION_TIMEOUT] [default: 5000]
    #[arg(long, value_name = "MS")]
    connection_timeout: Option<String>,
    /// statement_timeout in ms, 0 = none [env: DB_QUERY_TIMEOUT] [default: 30000]
    #[arg(long, value_name = "MS")]
    query_timeout: Option<String>,
    /// Let critical work use the failover pool [env: DB_ENABLE_FAILOVER] [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    enable_failover: Option<String>,
    /// Primary utilization % (1-100) from which critical work uses the failover pool [env: DB_FAILOVER_THRESHOLD] [default: 80]
    #[arg(long, value_name = "PERCENT")]
    failover_threshold: Option<String>,
    /// Most connections in the failover pool [env: DB_FAILOVER_POOL_MAX] [default: 20]
    #[arg(long, value_name = "N")]
    failover_pool_max: Option<String>,
    /// Idle connections kept in the failover pool [env: DB_FAILOVER_POOL_MIN] [default: 5]
    #[arg(long, value_name = "N")]
    failover_pool_min: Option<String>,
    /// Failover pool database, if not --database-url [env: DB_FAILOVER_DATABASE_URL]
    #[arg(long, value_name = "URL")]
    failover_database_url: Option<String>,
    /// Prepared statements cached per connection, 0 = off [env: DB_STATEMENT_CACHE_SIZE] [default: 1000]
    #[arg(long, value_name = "N")]
    statement_cache_size: Option<String>,
    /// Pool health check period in ms, at least 100 [env: DB_HEALTH_CHECK_INTERVAL] [default: 1000]
    #[arg(long, value_name = "MS")]
    health_check_interval: Option<String>,
    /// Validate connections before reuse [env: DB_CONNECTION_VALIDATION_ENABLED] [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    connection_validation: Option<String>,
    /// Roll back a transaction stream idle this many ms [env: DB_TRANSACTION_IDLE_TIMEOUT] [default: 300000]
    #[arg(long, value_name = "MS")]
    transaction_idle_timeout: Option<String>,
    /// Log statements slower than this many ms [env: DB_SLOW_QUERY_MS] [default: 1000]
    #[arg(long, value_name = "MS")]
    slow_query_ms: Option<String>,
    /// gRPC listen address [env: PGSIDECAR_GRPC_ADDR] [default: 127.0.0.1:50051]
    #[arg(long, value_name = "ADDR")]
    grpc_addr: Option<String>,
    /// HTTP (metrics, health) listen address [env: PGSIDECAR_HTTP_ADDR] [default: 127.0.0.1:9898]
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<String>,
    /// Serve gRPC reflection [env: PGSIDECAR_REFLECTION] [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    reflection: Option<String>,
    /// Log format: text or json [env: PGSIDECAR_LOG_FORMAT] [default: text, production json]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter directives, e.g. info,pgsidecar=debug [env: PGSIDECAR_LOG_LEVEL] [default: info]
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Longest SQL text accepted, in bytes [env: PGSIDECAR_MAX_SQL_BYTES] [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    max_sql_bytes: Option<String>,
    /// Most bind parameters per statement, 1-65535 [env: PGSIDECAR_MAX_PARAMS] [default: 65535]
    #[arg(long, value_name = "N")]
    max_params: Option<String>,
    /// gRPC message size limit in bytes, at least 1024 [env: PGSIDECAR_MAX_MESSAGE_BYTES] [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<String>,
    /// Row cap for requests with max_rows = 0 [env: PGSIDECAR_MAX_ROWS] [default: 10000]
    #[arg(long, value_name = "N")]
    max_rows: Option<String>,
    /// Time allowed to drain on shutdown, in ms [env: PGSIDECAR_SHUTDOWN_GRACE] [default: 25000]
    #[arg(long, value_name = "MS")]
    shutdown_grace: Option<String>,
}

impl Cli {
    fn get(&self, key: Key) -> Option<&str> {
        let value = match key {
            Key::Profile => &self.profile,
            Key::Config => &self.config,
            Key::DatabaseUrl => &self.database_url,
            Key::PoolMax => &self.pool_max,
            Key::PoolMin => &self.pool_min,
            Key::PoolIdleTimeout => &self.pool_idle_timeout,
            Key::PoolMaxLifetime => &self.pool_max_lifetime,
            Key::ConnectionTimeout => &self.connection_timeout,
            Key::QueryTimeout => &self.query_timeout,
            Key::EnableFailover => &self.enable_failover,
            Key::FailoverThreshold => &self.failover_threshold,
            Key::FailoverPoolMax => &self.failover_pool_max,
            Key::FailoverPoolMin => &self.failover_pool_min,
            Key::FailoverDatabaseUrl => &self.failover_database_url,
            Key::StatementCacheSize => &self.statement_cache_size,
            Key::HealthCheckInterval => &self.health_check_interval,
            Key::ConnectionValidation => &self.connection_validation,
            Key::TransactionIdleTimeout => &self.transaction_idle_timeout,
            Key::SlowQueryMs => &self.slow_query_ms,
            Key::GrpcAddr => &self.grpc_addr,
            Key::HttpAddr => &self.http_addr,
            Key::Reflection => &self.reflection,
            Key::LogFormat => &self.log_format,
            Key::LogLevel => &self.log_level,
            Key::MaxSqlBytes => &self.max_sql_bytes,
            Key::MaxParams => &self.max_params,
            Key::MaxMessageBytes => &self.max_message_bytes,
            Key::MaxRows => &self.max_rows,
            Key::ShutdownGrace => &self.shutdown_grace,
        };
        value.as_deref()
    }
}

fn parse_cli(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Cli, ConfigError> {
    let matches = Cli::command()
        .try_get_matches_from(args)
        .map_err(clap_error)?;
    Cli::from_arg_matches(&matches).map_err(clap_error)
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
            .and_then(|a| a.strip_prefix(key.flag()))
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
            .map_err(|e| Key::Config.invalid(format!("cannot read {}: {e}", path.display())))?;
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
                        .count()
                        + 1;
                    format!(" at line {line}, column {column}")
                })
                .unwrap_or_default();
            let reason = e.message().trim().replace('\n', "; ");
            Key::Config.invalid(format!(
                "{} is not valid TOML{at}: {reason}",
                path.display()
            ))
        })?;
        // Checked by hand rather than with serde's `deny_unknown_fields` so the error can name
        // the key as the setting and suggest the intended one.
        for name in table.keys() {
            if name == Key::Config.toml_key().as_str() {
                return Err(ConfigError::Invalid {
                    setting: name.clone(),
                    message: format!(
                        "a config file cannot name another config file (in {}); use --config or PGSIDECAR_CONFIG",
                        path.display()
                    ),
                });
            }
            if !Key::ALL.iter().any(|key| key.toml_key() == *name) {
                let hint = suggest_key(name)
                    .map(|known| format!("; did you mean `{known}`?"))
                    .unwrap_or_default();
                return Err(ConfigError::Invalid {
                    setting: name.clone(),
                    message: format!("unknown key in config file {}{hint}", path.display()),
                });
            }
        }
        Ok(TomlFile { path, table })
    }
}

/// The known TOML key closest to a mistyped one, if any is close.
fn suggest_key(name: &str) -> Option<String> {
    let normalized = name.to_ascii_lowercase().replace('-', "_");
    Key::ALL
        .iter()
        .filter(|key| **key != Key::Config)
        .map(|key| key.toml_key())
        .map(|known| (edit_distance(&normalized, &known), known))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Where a setting's winning value came from, to point at it in errors.
enum Origin<'a> {
    File(&'a Path),
    Env,
    Flag,
}

/// The three outer layers, queried per setting, flags first.
struct Layers<'a> {
    cli: &'a Cli,
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<TomlFile>,
}

impl Layers<'_> {
    /// The winning raw text of `key`, if any layer sets it.
    fn raw(&self, key: Key) -> Result<Option<(String, Origin<'_>)>, ConfigError> {
        if let Some(flag) = self.cli.get(key) {
            return Ok(Some((flag.to_owned(), Origin::Flag)));
        }
        // An empty variable counts as unset: the Node service read these with `||` fallbacks,
        // and manifests often carry `DB_POOL_MAX=` placeholders.
        if let Some(value) = (self.env)(key.env()).filter(|v| !v.trim().is_empty()) {
            return Ok(Some((value, Origin::Env)));
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
        Ok(Some((text, Origin::File(&file.path))))
    }

    /// The parsed value of `key` from the highest layer that sets it.
    fn get<T>(
        &self,
        key: Key,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((text, origin)) = self.raw(key)? else {
            return Ok(None);
        };
        parse(text.trim()).map(Some).map_err(|message| {
            // Env and flag are both in the label; a file key is spelled differently, so say it.
            let from = match origin {
                Origin::File(path) => {
                    format!(" (from key {} in {})", key.toml_key(), path.display())
                }
                Origin::Env | Origin::Flag => String::new(),
            };
            key.invalid(format!("{message}{from}"))
        })
    }

    fn pool(
        &self,
        (max_key, min_key): (Key, Key),
        default: &PoolConfig,
        database_url: String,
    ) -> Result<PoolConfig, ConfigError> {
        let max_size = self
            .get(max_key, integer(1u32, None))?
            .unwrap_or(default.max_size);
        // A minimum nobody set follows a lowered maximum down (production with
        // `DB_POOL_MAX=20` must not fail over the default minimum of 25); an explicit minimum
        // above the maximum is a mistake and is reported in `check_cross_fields`.
        let min_idle = self
            .get(min_key, integer(0u32, None))?
            .unwrap_or(default.min_idle.min(max_size));
        Ok(PoolConfig {
            max_size,
            min_idle,
            database_url,
        })
    }

    fn resolve(&self, d: Config) -> Result<Config, ConfigError> {
        let database_url = self
            .get(Key::DatabaseUrl, parse_database_url)?
            .unwrap_or_else(|| d.primary.database_url.clone());
        let failover_database_url = self
            .get(Key::FailoverDatabaseUrl, parse_database_url)?
            .unwrap_or_else(|| database_url.clone());
        let primary = self.pool((Key::PoolMax, Key::PoolMin), &d.primary, database_url)?;
        let failover = self.pool(
            (Key::FailoverPoolMax, Key::FailoverPoolMin),
            &d.failover,
            failover_database_url,
        )?;
        let limits = Limits {
            max_sql_bytes: self
                .get(Key::MaxSqlBytes, integer(1usize, None))?
                .unwrap_or(d.limits.max_sql_bytes),
            max_params: self
                .get(Key::MaxParams, integer(1usize, Some(65535)))?
                .unwrap_or(d.limits.max_params),
            max_message_bytes: self
                .get(Key::MaxMessageBytes, integer(1024usize, None))?
                .unwrap_or(d.limits.max_message_bytes),
            max_rows: self
                .get(Key::MaxRows, integer(1u32, None))?
                .unwrap_or(d.limits.max_rows),
        };
        let config = Config {
            profile: d.profile,
            primary,
            failover,
            enable_failover: self
                .get(Key::EnableFailover, parse_bool)?
                .unwrap_or(d.enable_failover),
            failover_threshold_percent: self
                .get(Key::FailoverThreshold, parse_percent)?
                .unwrap_or(d.failover_threshold_percent),
            idle_timeout: self
                .get(Key::PoolIdleTimeout, millis(1))?
                .unwrap_or(d.idle_timeout),
            max_lifetime: self
                .get(Key::PoolMaxLifetime, millis_or_none)?
                .unwrap_or(d.max_lifetime),
            connection_timeout: self
                .get(Key::ConnectionTimeout, millis(1))?
                .unwrap_or(d.connection_timeout),
            query_timeout: self
                .get(Key::QueryTimeout, millis_or_none)?
                .unwrap_or(d.query_timeout),
            statement_cache_size: self
                .get(Key::StatementCacheSize, integer(0u32, None))?
                .map_or(d.statement_cache_size, |n| n as usize),
            health_check_interval: self
                .get(Key::HealthCheckInterval, millis(100))?
                .unwrap_or(d.health_check_interval),
            connection_validation: self
                .get(Key::ConnectionValidation, parse_bool)?
                .unwrap_or(d.connection_validation),
            transaction_idle_timeout: self
                .get(Key::TransactionIdleTimeout, millis(1))?
                .unwrap_or(d.transaction_idle_timeout),
            slow_query: self
                .get(Key::SlowQueryMs, millis(0))?
                .unwrap_or(d.slow_query),
            grpc_addr: self.get(Key::GrpcAddr, parse_addr)?.unwrap_or(d.grpc_addr),
            http_addr: self.get(Key::HttpAddr, parse_addr)?.unwrap_or(d.http_addr),
            reflection: self
                .get(Key::Reflection, parse_bool)?
                .unwrap_or(d.reflection),
            log_format: self
                .get(Key::LogFormat, parse_log_format)?
                .unwrap_or(d.log_format),
            log_level: self
                .get(Key::LogLevel, parse_log_level)?
                .unwrap_or(d.log_level),
            limits,
            shutdown_grace: self
                .get(Key::ShutdownGrace, millis(0))?
                .unwrap_or(d.shutdown_grace),
        };
        check_cross_fields(&config)?;
        Ok(config)
    }
}

/// Rules between settings, each reported against the setting a user would most likely change.
fn check_cross_fields(c: &Config) -> Result<(), ConfigError> {
    for (pool, min_key, max_key) in [
        (&c.primary, Key::PoolMin, Key::PoolMax),
        (&c.failover, Key::FailoverPoolMin, Key::FailoverPoolMax),
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
        return Err(Key::HttpAddr.invalid(format!(
            "expected an address other than {} = {}, got the same",
            Key::GrpcAddr.label(),
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

fn parse_log_level(s: &str) -> Result<String, String> {
    // Full EnvFilter syntax is checked where the subscriber is built; here only emptiness,
    // which EnvFilter would silently read as "everything off".
    if s.is_empty() {
        Err("expected a log filter such as info or info,pgsidecar=debug, got \"\"".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("expected a file path, got \"\"".to_owned())
    } else {
        Ok(PathBuf::from(s))
    }
}

fn parse_database_url(s: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected a postgres:// URL or key=value connection string (value not shown, it may hold a password)";
    if s.is_empty() {
        return Err("expected a postgres URL or key=value connection string, got \"\"".to_owned());
    }
    match tokio_postgres::Config::from_str(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(e) => {
            // The value is never echoed: a mistyped key (`pasword=...`) defeats any redaction.
            // tokio-postgres's reasons name option keys, not values, except one tokenizer
            // message that quotes a single character, which is cut off.
            let mut reason = e.to_string();
            if let Some(cause) = e.source() {
                let cause = cause.to_string();
                let cause = match cause.find(" but got ") {
                    Some(cut) => &cause[..cut],
                    None => &cause,
                };
                reason = format!("{reason}: {cause}");
            }
            Err(format!("{EXPECTED}: {}", reason.replace('\n', " ")))
        }
    }
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
            }
        );
        assert_eq!(c.shutdown_grace, MS(25_000));
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
            query_timeout: Some(MS(9000)),
            statement_cache_size: 0,
            health_check_interval: MS(100),
            connection_validation: false,
            transaction_idle_timeout: MS(60_000),
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
            },
            shutdown_grace: Duration::ZERO,
        };
        assert_eq!(c, want);
    }

    #[test]
    fn every_flag_reaches_its_field_and_beats_env() {
        // Each env value is valid but different, so a flag that failed to win would show.
        let env: Vec<(&str, &str)> = Key::ALL
            .iter()
            .filter(|k| !matches!(k, Key::Config | Key::Profile))
            .map(|k| (k.env(), "garbage that would fail to parse"))
            .collect();
        let args = [
            "--profile=production",
            "--database-url=postgres://a@h/db",
            "--pool-max=8",
            "--pool-min=8",
            "--pool-idle-timeout=1",
            "--pool-max-lifetime=0",
            "--connection-timeout=2",
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
        ];
        let c = load(&args, &env).unwrap();
        assert_eq!(c.profile, Profile::Production);
        assert_eq!(c.primary.database_url, "postgres://a@h/db");
        assert_eq!((c.primary.max_size, c.primary.min_idle), (8, 8));
        assert_eq!(c.idle_timeout, MS(1));
        assert_eq!(c.max_lifetime, None);
        assert_eq!(c.connection_timeout, MS(2));
        assert_eq!(c.query_timeout, None);
        assert!(!c.enable_failover);
        assert_eq!(c.failover_threshold_percent, 50.0);
        assert_eq!((c.failover.max_size, c.failover.min_idle), (3, 0));
        assert_eq!(c.failover.database_url, "postgresql://b@h2/db");
        assert_eq!(c.statement_cache_size, 17);
        assert_eq!(c.health_check_interval, MS(250));
        assert!(!c.connection_validation);
        assert_eq!(c.transaction_idle_timeout, MS(3));
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
    }

    #[test]
    fn boolean_forms() {
        let cases = [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("Yes", true),
            ("on", true),
            (" true ", true),
            ("false", false),
            ("False", false),
            ("0", false),
            ("no", false),
            ("NO", false),
            ("off", false),
        ];
        for (text, want) in cases {
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
        let cases: &[(&str, &str, Field, Option<Duration>)] = &[
            ("DB_QUERY_TIMEOUT", "0", |c| c.query_timeout, None),
            (
                "DB_QUERY_TIMEOUT",
                "1500",
                |c| c.query_timeout,
                Some(MS(1500)),
            ),
            ("DB_POOL_MAX_LIFETIME", "0", |c| c.max_lifetime, None),
            (
                "DB_POOL_MAX_LIFETIME",
                "60000",
                |c| c.max_lifetime,
                Some(MS(60_000)),
            ),
            (
                "DB_POOL_IDLE_TIMEOUT",
                "10",
                |c| Some(c.idle_timeout),
                Some(MS(10)),
            ),
            (
                "DB_CONNECTION_TIMEOUT",
                "1",
                |c| Some(c.connection_timeout),
                Some(MS(1)),
            ),
            (
                "DB_HEALTH_CHECK_INTERVAL",
                "100",
                |c| Some(c.health_check_interval),
                Some(MS(100)),
            ),
            (
                "DB_SLOW_QUERY_MS",
                "0",
                |c| Some(c.slow_query),
                Some(Duration::ZERO),
            ),
            (
                "PGSIDECAR_SHUTDOWN_GRACE",
                "2147483647",
                |c| Some(c.shutdown_grace),
                Some(MS(2_147_483_647)),
            ),
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
        let cases: &[(&str, &str, &str)] = &[
            ("pool_maxx = 3\n", "pool_maxx", "did you mean `pool_max`?"),
            ("pool-max = 3\n", "pool-max", "did you mean `pool_max`?"),
            ("colour = 3\n", "colour", "unknown key in config file"),
            (
                "config = \"/etc/x.toml\"\n",
                "config",
                "cannot name another config file",
            ),
            (
                "pool_max = \"abc\"\n",
                "DB_POOL_MAX (--pool-max)",
                "got \"abc\" (from key pool_max in ",
            ),
            ("pool_max = -1\n", "DB_POOL_MAX (--pool-max)", "got \"-1\""),
            (
                "pool_max = [1]\n",
                "DB_POOL_MAX (--pool-max)",
                "expected a single value, got a array",
            ),
            ("[pool]\nmax = 1\n", "pool", "unknown key"),
            (
                "database_url = \"postgres://u:hunter2@h\n",
                "PGSIDECAR_CONFIG (--config)",
                "is not valid TOML at line 1",
            ),
            (
                "a = 1\npool_max = \n",
                "PGSIDECAR_CONFIG (--config)",
                "at line 2",
            ),
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
                        assert!(text.contains(&format!("--{}", key.flag())), "{text}");
                        assert!(text.contains(&format!("[env: {}]", key.env())), "{text}");
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
    fn every_setting_has_one_flag_and_a_distinct_env_name() {
        let cmd = Cli::command();
        let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        for key in Key::ALL {
            assert!(
                longs.contains(&key.flag()),
                "{key:?} has no --{}",
                key.flag()
            );
        }
        // Every serve flag is a setting (help/version are clap's own).
        for long in &longs {
            assert!(
                Key::ALL.iter().any(|k| k.flag() == *long) || ["help", "version"].contains(long),
                "--{long} is not a setting"
            );
        }
        let mut envs: Vec<&str> = Key::ALL.iter().map(|k| k.env()).collect();
        envs.sort_unstable();
        envs.dedup();
        assert_eq!(envs.len(), Key::ALL.len());
    }

    #[test]
    fn example_fixture_spells_every_key_with_its_default() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/config/production.toml"
        );
        let text = std::fs::read_to_string(path).expect("fixture");
        for key in Key::ALL.into_iter().filter(|k| *k != Key::Config) {
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
        let cases = [
            ("postgres://u:secret@h/db", "postgres://u:***@h/db"),
            (
                "postgresql://u:se%40cret@h:5/db?sslmode=require",
                "postgresql://u:***@h:5/db?sslmode=require",
            ),
            (
                "host=h password=secret user=u",
                "host=h password=*** user=u",
            ),
            (
                "host=h password = 'se cret\\' x' user=u",
                "host=h password = *** user=u",
            ),
            ("host=h PASSWORD=secret", "host=h PASSWORD=***"),
            ("postgres://u@h:5432/db", "postgres://u@h:5432/db"),
            ("postgres://h/db?user=u", "postgres://h/db?user=u"),
            ("host=h user=u", "host=h user=u"),
            (
                "postgres://u@h/db?password=secret&sslmode=require",
                "postgres://u@h/db?password=***&sslmode=require",
            ),
            (
                "postgres://u:p@ss@h1:5432,h2/db",
                "postgres://u:***@h1:5432,h2/db",
            ),
            ("postgres://u:pa/ss@h/db", "postgres://u:***@h/db"),
            ("u:secret@h/db", "u:***@h/db"),
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
