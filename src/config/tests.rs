//! Unit tests of loading: defaults, profiles, layering order and every setting reaching its
//! field. Value forms and error reports are in `tests/values.rs`.

mod values;

use super::keys::Key;
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
    assert_eq!(c.failover_transaction_share_percent, 50);
    assert_eq!((c.pipeline_connections, c.pipeline_depth), (2, 16));
    assert_eq!(c.tls, None);
    assert_eq!(c.handshake_timeout, MS(10_000));
    assert_eq!((c.grpc_max_connections, c.http_max_connections), (512, 64));
    assert_eq!(c.stream_idle_timeout, MS(30_000));
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
        Tokens(vec![
            Token::full("new-token"),
            Token::full("old-token"),
            Token::full("extra")
        ])
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
fn a_token_setting_that_yields_no_token_is_an_error_not_auth_off() {
    // Each of these once gave zero tokens, which turned authentication off without a word.
    for value in [",", " ", "#secret", " , # a comment ,", "\t"] {
        let (setting, message) = invalid(load(&[], &[("PGSIDECAR_AUTH_TOKENS", value)]));
        assert_eq!(
            setting, "PGSIDECAR_AUTH_TOKENS (--auth-tokens)",
            "{value:?}"
        );
        assert!(
            message.contains("at least one token"),
            "{value:?}: {message}"
        );
        assert!(!message.contains("secret"), "never echoed: {message}");
        let (setting, _) = invalid(load(&["--auth-tokens", value], &[]));
        assert_eq!(
            setting, "PGSIDECAR_AUTH_TOKENS (--auth-tokens)",
            "{value:?}"
        );
    }
    let toml = TempToml::new("auth_tokens = \" , \"\n");
    let (setting, message) = invalid(load(&["--config", toml.path()], &[]));
    assert_eq!(setting, "PGSIDECAR_AUTH_TOKENS (--auth-tokens)");
    assert!(message.contains("auth_tokens in"), "{message}");
    // A blank file setting names no file rather than none at all.
    let (setting, _) = invalid(load(&[], &[("PGSIDECAR_AUTH_TOKENS_FILE", " ")]));
    assert_eq!(setting, "PGSIDECAR_AUTH_TOKENS_FILE (--auth-tokens-file)");
    // Empty, as for every setting, is unset; the flag's empty value names no list.
    for (args, env) in [
        (&[][..], &[("PGSIDECAR_AUTH_TOKENS", "")][..]),
        (
            &["--auth-tokens="][..],
            &[("PGSIDECAR_AUTH_TOKENS", "t")][..],
        ),
    ] {
        assert_eq!(load(args, env).unwrap().auth_tokens, Tokens::default());
    }
}

#[test]
fn tokens_may_carry_scopes_and_a_bare_token_keeps_every_right() {
    let path = std::env::temp_dir().join(format!("pgsidecar-scopes-{}", std::process::id()));
    let file = "# old files: one token a line, all rights\nlegacy\n\
                reporter read  # reports\npager read critical\nbatch write\nall WRITE critical\n";
    std::fs::write(&path, file).unwrap();
    let f = path.to_str().unwrap();
    let c = load(
        &["--auth-tokens-file", f],
        &[("PGSIDECAR_AUTH_TOKENS", "listed critical, legacy")],
    )
    .unwrap();
    let s = |write, critical| Scopes { write, critical };
    let got: Vec<(&str, Scopes)> = c
        .auth_tokens
        .0
        .iter()
        .map(|t| (t.secret.as_str(), t.scopes))
        .collect();
    assert_eq!(
        got,
        [
            ("legacy", Scopes::ALL),
            ("reporter", s(false, false)),
            ("pager", s(false, true)),
            ("batch", s(true, false)),
            ("all", s(true, true)),
            ("listed", s(false, true)),
        ]
    );
    // A scope that is not one, or a token given other scopes twice, stops the start; the
    // message names where, never what (a stray word may be a second token).
    std::fs::write(&path, "ok\nt0ken s3cond-t0ken\n").unwrap();
    let (setting, message) = invalid(load(&["--auth-tokens-file", f], &[]));
    assert_eq!(setting, "PGSIDECAR_AUTH_TOKENS_FILE (--auth-tokens-file)");
    assert!(
        message.contains("line 2") && message.contains("scope"),
        "{message}"
    );
    assert!(!message.contains("t0ken"), "{message}");
    std::fs::write(&path, "t0ken read\n").unwrap();
    let env = [("PGSIDECAR_AUTH_TOKENS", "t0ken write")];
    let (setting, message) = invalid(load(&["--auth-tokens-file", f], &env));
    assert_eq!(setting, "PGSIDECAR_AUTH_TOKENS (--auth-tokens)");
    assert!(message.contains("other scopes"), "{message}");
    assert!(!message.contains("t0ken"), "{message}");
    std::fs::remove_file(&path).unwrap();
    let (_, message) = invalid(load(&[], &[("PGSIDECAR_AUTH_TOKENS", "a, b reed")]));
    assert!(message.contains("entry 2"), "{message}");
}

#[test]
fn the_transaction_share_of_the_reserve_is_a_whole_percentage() {
    for (value, want) in [("0", 0), ("50", 50), ("100%", 100)] {
        let env = [("DB_FAILOVER_TRANSACTION_SHARE", value)];
        assert_eq!(
            load(&[], &env).unwrap().failover_transaction_share_percent,
            want
        );
    }
    for value in ["101", "-1", "half", "12.5"] {
        let env = [("DB_FAILOVER_TRANSACTION_SHARE", value)];
        let (setting, _) = invalid(load(&[], &env));
        assert_eq!(
            setting,
            "DB_FAILOVER_TRANSACTION_SHARE (--failover-transaction-share)"
        );
    }
}

#[test]
fn the_pipelined_path_is_sized_within_bounds() {
    for (key, value) in [
        ("PGSIDECAR_PIPELINE_CONNECTIONS", "65"),
        ("PGSIDECAR_PIPELINE_CONNECTIONS", "-1"),
        ("PGSIDECAR_PIPELINE_DEPTH", "0"),
        ("PGSIDECAR_PIPELINE_DEPTH", "1025"),
        ("PGSIDECAR_PIPELINE_DEPTH", "deep"),
    ] {
        let (setting, message) = invalid(load(&[], &[(key, value)]));
        assert!(setting.starts_with(key), "{key}={value}: {setting}");
        assert!(message.contains(value), "{key}={value}: {message}");
    }
}

#[test]
fn replica_settings_are_checked_alone_and_together() {
    for (env, setting, says) in [
        (
            vec![("DB_REPLICA_URLS", "postgres://r1/app;host=r2 port=x")],
            "DB_REPLICA_URLS",
            "replica 1",
        ),
        (
            vec![(
                "DB_REPLICA_URLS",
                "postgres://r1/app?target_session_attrs=read-write",
            )],
            "DB_REPLICA_URLS",
            "names a primary",
        ),
        (
            vec![("DB_REPLICA_POOL_MAX", "0")],
            "DB_REPLICA_POOL_MAX",
            "0",
        ),
        (
            vec![("DB_REPLICA_MAX_STALENESS", "0")],
            "DB_REPLICA_MAX_STALENESS",
            "0",
        ),
        (
            vec![("DB_REPLICA_PROBE_INTERVAL", "49")],
            "DB_REPLICA_PROBE_INTERVAL",
            "49",
        ),
        (
            vec![
                ("DB_REPLICA_URLS", "postgres://r1/app"),
                ("DB_REPLICA_POOL_MAX", "2"),
                ("DB_REPLICA_POOL_MIN", "3"),
            ],
            "DB_REPLICA_POOL_MIN",
            "at most",
        ),
        (
            vec![
                ("DB_REPLICA_URLS", "postgres://r1/app"),
                ("DB_REPLICA_MAX_STALENESS", "1499"),
                ("DB_REPLICA_PROBE_INTERVAL", "500"),
            ],
            "DB_REPLICA_MAX_STALENESS",
            "two intervals",
        ),
        (
            vec![
                (
                    "DATABASE_URL",
                    "postgres://a,b/app?target_session_attrs=read-write",
                ),
                ("PGSIDECAR_READ_ONLY", "true"),
            ],
            "DATABASE_URL",
            "read-only",
        ),
    ] {
        let (got, message) = invalid(load(&[], &env));
        assert!(got.starts_with(setting), "{env:?}: {got}");
        assert!(message.contains(says), "{env:?}: {message}");
    }
    // A read-write primary list is fine without read-only mode, and no replica is the default.
    let env = [(
        "DATABASE_URL",
        "postgres://a,b/app?target_session_attrs=read-write",
    )];
    assert!(load(&[], &env).unwrap().replica_urls.is_empty());
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
        ("DB_FAILOVER_TRANSACTION_SHARE", "75%"),
        (
            "DB_REPLICA_URLS",
            "postgres://r1/app; ;host=r2,r3 dbname=app;",
        ),
        ("DB_REPLICA_POOL_MAX", "6"),
        ("DB_REPLICA_POOL_MIN", "1"),
        ("DB_REPLICA_MAX_STALENESS", "2500"),
        ("DB_REPLICA_PROBE_INTERVAL", "50"),
        ("PGSIDECAR_PIPELINE_CONNECTIONS", "0"),
        ("PGSIDECAR_PIPELINE_DEPTH", "1024"),
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
        ("PGSIDECAR_RESET_ALWAYS", "true"),
        ("PGSIDECAR_AUTH_TOKENS", " a-token , # not one,other "),
        ("PGSIDECAR_HANDSHAKE_TIMEOUT", "700"),
        ("PGSIDECAR_GRPC_MAX_CONNECTIONS", "33"),
        ("PGSIDECAR_HTTP_MAX_CONNECTIONS", "3"),
        ("PGSIDECAR_STREAM_IDLE_TIMEOUT", "800"),
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
        failover_transaction_share_percent: 75,
        replica_urls: vec![
            "postgres://r1/app".to_owned(),
            "host=r2,r3 dbname=app".to_owned(),
        ],
        replica_pool: PoolConfig {
            max_size: 6,
            min_idle: 1,
            database_url: String::new(),
        },
        replica_max_staleness: MS(2500),
        replica_probe_interval: MS(50),
        pipeline_connections: 0,
        pipeline_depth: 1024,
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
        reset_always: true,
        auth_tokens: Tokens(vec![Token::full("a-token"), Token::full("other")]),
        tls: None,
        handshake_timeout: MS(700),
        grpc_max_connections: 33,
        http_max_connections: 3,
        stream_idle_timeout: MS(800),
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
        "--replica-urls=postgres://r@h3/db;postgres://r@h4:5433,h5/db",
        "--replica-pool-max=4",
        "--replica-pool-min=3",
        "--replica-max-staleness=900",
        "--replica-probe-interval=300",
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
        "--reset-always=on",
        "--failover-transaction-share=25",
        "--pipeline-connections=4",
        "--pipeline-depth=1",
        "--auth-tokens-file=",
        "--auth-tokens=t1",
        "--tls-cert=",
        "--tls-key=",
        "--tls-client-ca=",
        "--handshake-timeout=9",
        "--grpc-max-connections=10",
        "--http-max-connections=11",
        "--stream-idle-timeout=12",
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
    assert_eq!(
        c.replica_urls,
        ["postgres://r@h3/db", "postgres://r@h4:5433,h5/db"]
    );
    assert_eq!((c.replica_pool.max_size, c.replica_pool.min_idle), (4, 3));
    assert_eq!(c.replica_max_staleness, MS(900));
    assert_eq!(c.replica_probe_interval, MS(300));
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
    assert!(c.reset_always);
    assert_eq!(c.handshake_timeout, MS(9));
    assert_eq!((c.grpc_max_connections, c.http_max_connections), (10, 11));
    assert_eq!(c.stream_idle_timeout, MS(12));
    assert_eq!(c.auth_tokens, Tokens(vec![Token::full("t1")]));
    assert_eq!(c.failover_transaction_share_percent, 25);
    assert_eq!((c.pipeline_connections, c.pipeline_depth), (4, 1));
}
