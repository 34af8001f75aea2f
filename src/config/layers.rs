//! The outer layers: the clap command (flags), the TOML file and the environment, queried per
//! setting with flags first, and the rules between settings checked once all are resolved.

use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgMatches, ColorChoice, Command};

use super::keys::Key;
use super::parse::{
    add_token, integer, millis, millis_or_none, non_empty, parse_addr, parse_bool,
    parse_database_url, parse_log_format, parse_percent, parse_replica_urls, parse_share,
    read_tokens_file, readable_file, token_list, wants_read_write,
};
use super::{Config, ConfigError, PoolConfig, ServerTls, Tokens};

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
pub(super) fn command() -> Command {
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

pub(super) fn clap_error(err: clap::Error) -> ConfigError {
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
pub(super) struct TomlFile {
    path: PathBuf,
    table: toml::Table,
}

impl TomlFile {
    pub(super) fn read(path: PathBuf) -> Result<TomlFile, ConfigError> {
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
pub(super) struct Layers<'a> {
    pub(super) flags: ArgMatches,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) file: Option<TomlFile>,
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
        let placeholder = |v: &str| match key.blank_is_a_value() {
            true => v.is_empty(),
            false => v.trim().is_empty(),
        };
        if let Some(value) = (self.env)(key.env).filter(|v| !placeholder(v)) {
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
    pub(super) fn get<T>(
        &self,
        key: Key,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((text, file)) = self.raw(key)? else {
            return Ok(None);
        };
        let text = match key.blank_is_a_value() {
            true => text.as_str(),
            false => text.trim(),
        };
        parse(text).map(Some).map_err(|message| {
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
    pub(super) fn resolve(&self, mut c: Config) -> Result<Config, ConfigError> {
        self.set(&mut c.primary.database_url, Key::DATABASE_URL, parse_database_url)?;
        c.failover.database_url.clone_from(&c.primary.database_url);
        self.set(&mut c.failover.database_url, Key::FAILOVER_DATABASE_URL, parse_database_url)?;
        self.pool(&mut c.primary, Key::POOL_MAX, Key::POOL_MIN)?;
        self.pool(&mut c.failover, Key::FAILOVER_POOL_MAX, Key::FAILOVER_POOL_MIN)?;
        self.set(&mut c.replica_urls, Key::REPLICA_URLS, parse_replica_urls)?;
        self.pool(&mut c.replica_pool, Key::REPLICA_POOL_MAX, Key::REPLICA_POOL_MIN)?;
        self.set(&mut c.replica_max_staleness, Key::REPLICA_MAX_STALENESS, millis(1))?;
        self.set(&mut c.replica_probe_interval, Key::REPLICA_PROBE_INTERVAL, millis(50))?;
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
        self.set(&mut c.reset_always, Key::RESET_ALWAYS, parse_bool)?;
        self.set(&mut c.handshake_timeout, Key::HANDSHAKE_TIMEOUT, millis(1))?;
        self.set(&mut c.grpc_max_connections, Key::GRPC_MAX_CONNECTIONS, integer(1, None))?;
        self.set(&mut c.http_max_connections, Key::HTTP_MAX_CONNECTIONS, integer(1, None))?;
        self.set(&mut c.stream_idle_timeout, Key::STREAM_IDLE_TIMEOUT, millis(1))?;
        self.set(&mut c.failover_transaction_share_percent, Key::FAILOVER_TRANSACTION_SHARE, parse_share)?;
        self.set(&mut c.pipeline_connections, Key::PIPELINE_CONNECTIONS, integer(0, Some(64)))?;
        self.set(&mut c.pipeline_depth, Key::PIPELINE_DEPTH, integer(1, Some(1024)))?;
        let mut tokens = Vec::new();
        self.set(&mut tokens, Key::AUTH_TOKENS_FILE, read_tokens_file)?;
        let mut listed = Vec::new();
        self.set(&mut listed, Key::AUTH_TOKENS, token_list)?;
        for token in listed {
            add_token(&mut tokens, token).map_err(|e| Key::AUTH_TOKENS.invalid(format!(
                "{e} (also in {})", Key::AUTH_TOKENS_FILE.label())))?;
        }
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
pub(super) fn check_cross_fields(c: &Config) -> Result<(), ConfigError> {
    for (pool, min_key, max_key) in [
        (&c.primary, Key::POOL_MIN, Key::POOL_MAX),
        (&c.failover, Key::FAILOVER_POOL_MIN, Key::FAILOVER_POOL_MAX),
        (
            &c.replica_pool,
            Key::REPLICA_POOL_MIN,
            Key::REPLICA_POOL_MAX,
        ),
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
    // A caught-up replica measures up to about two probe intervals behind (see
    // `pool/replicas.rs`): a tighter bound would leave every replica unqualified.
    if !c.replica_urls.is_empty() && c.replica_max_staleness < 3 * c.replica_probe_interval {
        return Err(Key::REPLICA_MAX_STALENESS.invalid(format!(
            "expected at least three times {} = {} ms: a caught-up replica measures up to about two intervals behind",
            Key::REPLICA_PROBE_INTERVAL.label(),
            c.replica_probe_interval.as_millis()
        )));
    }
    // libpq's read-write check asks `SHOW transaction_read_only`, which a read-only session
    // answers "on": every connection would be refused.
    if c.read_only
        && (wants_read_write(&c.primary.database_url) || wants_read_write(&c.failover.database_url))
    {
        return Err(Key::DATABASE_URL.invalid(format!(
            "target_session_attrs=read-write cannot be used with {} (every session starts read-only)",
            Key::READ_ONLY.label()
        )));
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
