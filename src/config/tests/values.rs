//! Unit tests of value forms (booleans, durations, TOML types) and of what bad values, unknown
//! keys and flags, and `--help` report.

use super::super::layers::command;
use super::*;

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
        ("PGSIDECAR_HANDSHAKE_TIMEOUT", "0", "PGSIDECAR_HANDSHAKE_TIMEOUT (--handshake-timeout)", "from 1"),
        ("PGSIDECAR_GRPC_MAX_CONNECTIONS", "0", "PGSIDECAR_GRPC_MAX_CONNECTIONS (--grpc-max-connections)", "≥ 1"),
        ("PGSIDECAR_HTTP_MAX_CONNECTIONS", "many", "PGSIDECAR_HTTP_MAX_CONNECTIONS (--http-max-connections)", "got \"many\""),
        ("PGSIDECAR_STREAM_IDLE_TIMEOUT", "0", "PGSIDECAR_STREAM_IDLE_TIMEOUT (--stream-idle-timeout)", "from 1"),
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
        let (got_setting, message) = invalid(load(&["--config", file.path()], &[]).map_err(|e| {
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
