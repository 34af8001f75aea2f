//! Typed configuration: per-profile defaults, layered under a TOML file, the environment and
//! command-line flags (later wins), validated into one [`Config`] whose errors name the setting.
//!
//! Every setting is one row of the `Key` table: a flag, an environment name, a TOML key (the
//! flag without `--`, `-` → `_`) and its `--help` line. All three outer layers hand this module
//! *text*, and one parser per setting turns it into a typed value, so a bad value reads the same
//! wherever it came from.
//!
//! Here: the types and the entry points. `keys` holds the table, `layers` the flags, TOML file,
//! environment and cross-field checks, `parse` the value parsers.

mod keys;
mod layers;
mod parse;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use crate::conninfo::redact_url;

use keys::Key;
use layers::{Layers, TomlFile, check_cross_fields, clap_error, command};
use parse::{non_empty, parse_profile};

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

/// What a token lets its caller do beyond reading. A token written alone gets every scope,
/// so token files written before scopes existed keep their meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scopes {
    /// `write`: the call may change data; without it every call runs read-only.
    pub write: bool,
    /// `critical`: the call may ask for `PRIORITY_CRITICAL`, and so reach the failover
    /// reserve; without it such a call is refused.
    pub critical: bool,
}

impl Scopes {
    /// Everything: a bare token, and every call when no token is configured.
    pub const ALL: Scopes = Scopes {
        write: true,
        critical: true,
    };
}

/// One accepted bearer token and what it grants.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The token itself, as the client sends it after `Bearer `.
    pub secret: String,
    /// What a call carrying it may do.
    pub scopes: Scopes,
}

impl Token {
    /// A token with every scope, as a line holding only the token gives.
    pub fn full(secret: impl Into<String>) -> Token {
        Token {
            secret: secret.into(),
            scopes: Scopes::ALL,
        }
    }
}

// Written by hand so that `{:?}` never shows a token.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(redacted, {:?})", self.scopes)
    }
}

/// Bearer tokens a client may present; empty means no token is asked for.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens(pub Vec<Token>);

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
    /// Most of the failover pool (0..=100 %, rounded down to whole connections) that
    /// transactions may hold at once, so long-held leases never take the whole reserve from
    /// critical Query calls.
    pub failover_transaction_share_percent: u32,
    /// Read replicas' connection strings, in order; replica `i` has the pool `replica-i`.
    pub replica_urls: Vec<String>,
    /// Size of each replica's pool (its `database_url` unused: see `replica_urls`).
    pub replica_pool: PoolConfig,
    /// Staleness bound of a replica read that names none.
    pub replica_max_staleness: Duration,
    /// How often each replica is probed for its recovery state and lag.
    pub replica_probe_interval: Duration,
    /// Primary connections the pipelined path holds and shares among Query statements
    /// (capped at half the primary pool when the pools are built); 0 turns it off.
    pub pipeline_connections: u32,
    /// Most statements in flight at once on one pipelined connection.
    pub pipeline_depth: u32,
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
    /// Reset every session after each autocommit statement and each transaction, not only
    /// after one whose text or reported parameters show a change.
    pub reset_always: bool,
    /// Accepted bearer tokens (from the tokens file and the tokens setting together).
    pub auth_tokens: Tokens,
    /// TLS for gRPC clients: certificate chain and key files (PEM); `None` = plaintext.
    pub tls: Option<ServerTls>,
    /// How long a new gRPC connection has for its TLS handshake and HTTP/2 preface, and an
    /// HTTP connection for each request's headers (so also how long it may idle between
    /// requests), before it is closed.
    pub handshake_timeout: Duration,
    /// Most gRPC client connections open at once; more are closed as soon as accepted.
    pub grpc_max_connections: u32,
    /// Most HTTP connections open at once; more are closed as soon as accepted.
    pub http_max_connections: u32,
    /// A StreamQuery or Transaction stream whose client takes no message for this long is
    /// ended: its statement cancelled, its transaction rolled back, its connection freed.
    pub stream_idle_timeout: Duration,
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
            failover_transaction_share_percent: 50,
            replica_urls: Vec::new(),
            replica_pool: PoolConfig {
                max_size: 10,
                min_idle: 2,
                database_url: String::new(),
            },
            replica_max_staleness: Duration::from_millis(5_000),
            replica_probe_interval: Duration::from_millis(500),
            pipeline_connections: 2,
            pipeline_depth: 16,
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
            reset_always: false,
            auth_tokens: Tokens::default(),
            tls: None,
            // Ten seconds: a client beside the sidecar finishes TLS and the preface in
            // milliseconds, and one across a loaded network in well under a second, so
            // this leaves a wide margin (gRPC-core gives a whole connect-and-handshake 20 s
            // at the least, sized for the internet) while a flood of silent connections
            // holds its slots for seconds, not forever. Go's servers are commonly given
            // the same for ReadHeaderTimeout.
            handshake_timeout: Duration::from_millis(10_000),
            // A sidecar serves one pod: its processes' channels, a few each, and the
            // kubelet's probes. 512 is far above that and, with the HTTP port's 64 and the
            // pools, far below the open-files limit once raised to the hard limit.
            grpc_max_connections: 512,
            // Scrapers and probes only.
            http_max_connections: 64,
            // Thirty seconds, the default statement timeout: a client that reads nothing
            // for as long as a statement may run is stuck or hostile, and its stream holds
            // a pool connection (PostgreSQL blocked writing to it, where no
            // statement_timeout reaches it). Envoy's stream_idle_timeout is 5 min, but
            // it guards only a proxy's memory, not a database connection.
            stream_idle_timeout: Duration::from_millis(30_000),
        }
    }
}
