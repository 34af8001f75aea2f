//! The one table of settings: each `Key` spells a setting as a flag, an environment name, a
//! TOML key and a `--help` line, and names it in errors.

use super::{ConfigError, DEFAULT_DATABASE_URL};

/// One setting, as spelled on each layer and in `--help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Key {
    /// The flag without `--`; the TOML key is this with `_` for `-`.
    pub(super) flag: &'static str,
    /// The environment variable.
    pub(super) env: &'static str,
    /// The placeholder in `--help`; a `BOOL` flag may also stand alone, meaning true.
    pub(super) value_name: &'static str,
    /// The default as `--help` shows it; empty for none.
    pub(super) default: &'static str,
    /// The `--help` line.
    pub(super) help: &'static str,
}

// The `DB_*` names and `DATABASE_URL` are the original Node service's and must not change.
#[rustfmt::skip]
impl Key {
    pub(super) const PROFILE: Key = Key::new("profile", "PGSIDECAR_PROFILE", "PROFILE", "development",
        "Profile whose defaults apply: development or production");
    pub(super) const CONFIG: Key = Key::new("config", "PGSIDECAR_CONFIG", "PATH", "",
        "TOML file with settings");
    pub(super) const DATABASE_URL: Key = Key::new("database-url", "DATABASE_URL", "URL", DEFAULT_DATABASE_URL,
        "Primary database: postgres:// URL or key=value connection string");
    pub(super) const POOL_MAX: Key = Key::new("pool-max", "DB_POOL_MAX", "N", "30, production 100",
        "Most connections in the primary pool");
    pub(super) const POOL_MIN: Key = Key::new("pool-min", "DB_POOL_MIN", "N", "5, production 25",
        "Idle connections kept in the primary pool, at most --pool-max");
    pub(super) const POOL_IDLE_TIMEOUT: Key = Key::new("pool-idle-timeout", "DB_POOL_IDLE_TIMEOUT", "MS", "30000",
        "Close idle connections above the minimum after this many ms");
    pub(super) const POOL_MAX_LIFETIME: Key = Key::new("pool-max-lifetime", "DB_POOL_MAX_LIFETIME", "MS", "1800000",
        "Retire connections older than this many ms, 0 = never");
    pub(super) const CONNECTION_TIMEOUT: Key = Key::new("connection-timeout", "DB_CONNECTION_TIMEOUT", "MS", "5000",
        "Longest wait for a connection, in ms");
    pub(super) const POOL_MAX_WAITING: Key = Key::new("pool-max-waiting", "DB_POOL_MAX_WAITING", "N", "5000",
        "Most requests waiting for a connection per pool; more get RESOURCE_EXHAUSTED at once");
    pub(super) const QUERY_TIMEOUT: Key = Key::new("query-timeout", "DB_QUERY_TIMEOUT", "MS", "30000",
        "statement_timeout in ms, 0 = none");
    pub(super) const ENABLE_FAILOVER: Key = Key::new("enable-failover", "DB_ENABLE_FAILOVER", "BOOL", "true",
        "Let critical work use the failover pool");
    pub(super) const FAILOVER_THRESHOLD: Key = Key::new("failover-threshold", "DB_FAILOVER_THRESHOLD", "PERCENT", "80",
        "Primary utilization % (1-100) from which critical work uses the failover pool");
    pub(super) const FAILOVER_POOL_MAX: Key = Key::new("failover-pool-max", "DB_FAILOVER_POOL_MAX", "N", "20",
        "Most connections in the failover pool");
    pub(super) const FAILOVER_POOL_MIN: Key = Key::new("failover-pool-min", "DB_FAILOVER_POOL_MIN", "N", "5",
        "Idle connections kept in the failover pool");
    pub(super) const FAILOVER_DATABASE_URL: Key = Key::new("failover-database-url", "DB_FAILOVER_DATABASE_URL", "URL", "",
        "Failover pool database, if not --database-url");
    pub(super) const FAILOVER_TRANSACTION_SHARE: Key = Key::new("failover-transaction-share", "DB_FAILOVER_TRANSACTION_SHARE", "PERCENT", "50",
        "Most of the failover pool (0-100 %) transactions may hold; the rest stays for critical queries");
    pub(super) const REPLICA_URLS: Key = Key::new("replica-urls", "DB_REPLICA_URLS", "URLS", "",
        "Read replicas (standbys), connection strings separated by ';'; each gets a pool replica-N");
    pub(super) const REPLICA_POOL_MAX: Key = Key::new("replica-pool-max", "DB_REPLICA_POOL_MAX", "N", "10",
        "Most connections in each replica's pool");
    pub(super) const REPLICA_POOL_MIN: Key = Key::new("replica-pool-min", "DB_REPLICA_POOL_MIN", "N", "2",
        "Idle connections kept in each replica's pool");
    pub(super) const REPLICA_MAX_STALENESS: Key = Key::new("replica-max-staleness", "DB_REPLICA_MAX_STALENESS", "MS", "5000",
        "Staleness bound of reads that name none (at least 3 probe intervals): a replica further behind is skipped");
    pub(super) const REPLICA_PROBE_INTERVAL: Key = Key::new("replica-probe-interval", "DB_REPLICA_PROBE_INTERVAL", "MS", "500",
        "How often each replica's recovery state and lag are measured, in ms (at least 50)");
    pub(super) const PIPELINE_CONNECTIONS: Key = Key::new("pipeline-connections", "PGSIDECAR_PIPELINE_CONNECTIONS", "N", "2",
        "Primary connections Query statements share, pipelined (at most half of --pool-max); 0 = off, each statement leases its own");
    pub(super) const PIPELINE_DEPTH: Key = Key::new("pipeline-depth", "PGSIDECAR_PIPELINE_DEPTH", "N", "16",
        "Most statements in flight at once on one pipelined connection (1-1024)");
    pub(super) const STATEMENT_CACHE_SIZE: Key = Key::new("statement-cache-size", "DB_STATEMENT_CACHE_SIZE", "N", "1000",
        "Prepared statements cached per connection, 0 = off");
    pub(super) const HEALTH_CHECK_INTERVAL: Key = Key::new("health-check-interval", "DB_HEALTH_CHECK_INTERVAL", "MS", "1000",
        "Pool health check period in ms, at least 100");
    pub(super) const CONNECTION_VALIDATION: Key = Key::new("connection-validation", "DB_CONNECTION_VALIDATION_ENABLED", "BOOL", "true",
        "Validate connections before reuse");
    pub(super) const TRANSACTION_IDLE_TIMEOUT: Key = Key::new("transaction-idle-timeout", "DB_TRANSACTION_IDLE_TIMEOUT", "MS", "300000",
        "Roll back a transaction stream idle this many ms");
    pub(super) const TRANSACTION_MAX_DURATION: Key = Key::new("transaction-max-duration", "DB_TRANSACTION_MAX_DURATION", "MS", "3600000",
        "Roll back a transaction stream open this many ms, 0 = no limit");
    pub(super) const SLOW_QUERY_MS: Key = Key::new("slow-query-ms", "DB_SLOW_QUERY_MS", "MS", "1000",
        "Log statements slower than this many ms");
    pub(super) const GRPC_ADDR: Key = Key::new("grpc-addr", "PGSIDECAR_GRPC_ADDR", "ADDR", "127.0.0.1:50051",
        "gRPC listen address");
    pub(super) const HTTP_ADDR: Key = Key::new("http-addr", "PGSIDECAR_HTTP_ADDR", "ADDR", "127.0.0.1:9898",
        "HTTP (metrics, health) listen address");
    pub(super) const REFLECTION: Key = Key::new("reflection", "PGSIDECAR_REFLECTION", "BOOL", "true",
        "Serve gRPC reflection");
    pub(super) const LOG_FORMAT: Key = Key::new("log-format", "PGSIDECAR_LOG_FORMAT", "FORMAT", "text, production json",
        "Log format: text or json");
    pub(super) const LOG_LEVEL: Key = Key::new("log-level", "PGSIDECAR_LOG_LEVEL", "FILTER", "info",
        "Log filter directives, e.g. info,pgsidecar=debug");
    pub(super) const MAX_SQL_BYTES: Key = Key::new("max-sql-bytes", "PGSIDECAR_MAX_SQL_BYTES", "BYTES", "1048576",
        "Longest SQL text accepted, in bytes");
    pub(super) const MAX_PARAMS: Key = Key::new("max-params", "PGSIDECAR_MAX_PARAMS", "N", "65535",
        "Most bind parameters per statement, 1-65535");
    pub(super) const MAX_MESSAGE_BYTES: Key = Key::new("max-message-bytes", "PGSIDECAR_MAX_MESSAGE_BYTES", "BYTES", "4194304",
        "gRPC message size limit in bytes, at least 1024");
    pub(super) const MAX_ROWS: Key = Key::new("max-rows", "PGSIDECAR_MAX_ROWS", "N", "10000",
        "Row cap for requests with max_rows = 0");
    pub(super) const SHUTDOWN_GRACE: Key = Key::new("shutdown-grace", "PGSIDECAR_SHUTDOWN_GRACE", "MS", "25000",
        "Time allowed to drain on shutdown, in ms");
    pub(super) const WORKER_THREADS: Key = Key::new("worker-threads", "PGSIDECAR_WORKER_THREADS", "N", "1",
        "Runtime threads: 1 = one thread (least CPU per query), 0 = one per core");
    pub(super) const MAX_CONCURRENT_STREAMS: Key = Key::new("max-concurrent-streams", "PGSIDECAR_MAX_CONCURRENT_STREAMS", "N", "1024",
        "Most concurrent gRPC streams per client connection");
    pub(super) const READ_ONLY: Key = Key::new("read-only", "PGSIDECAR_READ_ONLY", "BOOL", "false",
        "Make every session read-only; writes fail with PERMISSION_DENIED");
    pub(super) const RESET_ALWAYS: Key = Key::new("reset-always", "PGSIDECAR_RESET_ALWAYS", "BOOL", "false",
        "Reset the session after every statement and transaction, not only when it changed");
    pub(super) const AUTH_TOKENS_FILE: Key = Key::new("auth-tokens-file", "PGSIDECAR_AUTH_TOKENS_FILE", "PATH", "",
        "File of accepted bearer tokens, one per line: TOKEN [read|write|critical ...]; none = no token needed");
    pub(super) const AUTH_TOKENS: Key = Key::new("auth-tokens", "PGSIDECAR_AUTH_TOKENS", "TOKENS", "",
        "Accepted bearer tokens, comma-separated, each TOKEN [read|write|critical ...] (prefer the file)");
    pub(super) const TLS_CERT: Key = Key::new("tls-cert", "PGSIDECAR_TLS_CERT", "PATH", "",
        "PEM certificate chain: serve gRPC over TLS (with --tls-key)");
    pub(super) const TLS_KEY: Key = Key::new("tls-key", "PGSIDECAR_TLS_KEY", "PATH", "",
        "PEM private key of --tls-cert");
    pub(super) const TLS_CLIENT_CA: Key = Key::new("tls-client-ca", "PGSIDECAR_TLS_CLIENT_CA", "PATH", "",
        "PEM CA bundle: require client certificates it signed (mTLS)");
    pub(super) const HANDSHAKE_TIMEOUT: Key = Key::new("handshake-timeout", "PGSIDECAR_HANDSHAKE_TIMEOUT", "MS", "10000",
        "Close a connection without its TLS handshake and HTTP/2 preface (HTTP port: request headers) after this many ms");
    pub(super) const GRPC_MAX_CONNECTIONS: Key = Key::new("grpc-max-connections", "PGSIDECAR_GRPC_MAX_CONNECTIONS", "N", "512",
        "Most open gRPC client connections; more are closed at once");
    pub(super) const HTTP_MAX_CONNECTIONS: Key = Key::new("http-max-connections", "PGSIDECAR_HTTP_MAX_CONNECTIONS", "N", "64",
        "Most open HTTP (metrics, health) connections; more are closed at once");
    pub(super) const STREAM_IDLE_TIMEOUT: Key = Key::new("stream-idle-timeout", "PGSIDECAR_STREAM_IDLE_TIMEOUT", "MS", "30000",
        "End a stream whose client has read nothing for this many ms, cancelling its statement");

    /// Every setting, in `--help` order.
    pub(super) const ALL: [Key; 52] = [
        Key::PROFILE, Key::CONFIG, Key::DATABASE_URL, Key::POOL_MAX, Key::POOL_MIN,
        Key::POOL_IDLE_TIMEOUT, Key::POOL_MAX_LIFETIME, Key::CONNECTION_TIMEOUT, Key::POOL_MAX_WAITING,
        Key::QUERY_TIMEOUT,
        Key::ENABLE_FAILOVER, Key::FAILOVER_THRESHOLD, Key::FAILOVER_POOL_MAX, Key::FAILOVER_POOL_MIN,
        Key::FAILOVER_DATABASE_URL, Key::FAILOVER_TRANSACTION_SHARE,
        Key::REPLICA_URLS, Key::REPLICA_POOL_MAX, Key::REPLICA_POOL_MIN, Key::REPLICA_MAX_STALENESS,
        Key::REPLICA_PROBE_INTERVAL, Key::PIPELINE_CONNECTIONS, Key::PIPELINE_DEPTH,
        Key::STATEMENT_CACHE_SIZE, Key::HEALTH_CHECK_INTERVAL,
        Key::CONNECTION_VALIDATION, Key::TRANSACTION_IDLE_TIMEOUT,
        Key::TRANSACTION_MAX_DURATION, Key::SLOW_QUERY_MS, Key::GRPC_ADDR,
        Key::HTTP_ADDR, Key::REFLECTION, Key::LOG_FORMAT, Key::LOG_LEVEL, Key::MAX_SQL_BYTES,
        Key::MAX_PARAMS, Key::MAX_MESSAGE_BYTES, Key::MAX_ROWS, Key::SHUTDOWN_GRACE,
        Key::WORKER_THREADS, Key::MAX_CONCURRENT_STREAMS, Key::READ_ONLY, Key::RESET_ALWAYS, Key::AUTH_TOKENS_FILE,
        Key::AUTH_TOKENS, Key::TLS_CERT, Key::TLS_KEY, Key::TLS_CLIENT_CA,
        Key::HANDSHAKE_TIMEOUT, Key::GRPC_MAX_CONNECTIONS, Key::HTTP_MAX_CONNECTIONS,
        Key::STREAM_IDLE_TIMEOUT,
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

    pub(super) fn toml_key(self) -> String {
        self.flag.replace('-', "_")
    }

    /// How errors name the setting: `DB_POOL_MAX (--pool-max)`.
    pub(super) fn label(self) -> String {
        format!("{} (--{})", self.env, self.flag)
    }

    /// Whether a value of only blanks is a mistake to report rather than, as for every
    /// other setting, a placeholder meaning unset: read as unset, a blank token setting would
    /// quietly turn authentication off.
    pub(super) fn blank_is_a_value(self) -> bool {
        self == Key::AUTH_TOKENS || self == Key::AUTH_TOKENS_FILE
    }

    pub(super) fn invalid(self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            setting: self.label(),
            message: message.into(),
        }
    }
}
