//! The pgsidecar binary: read the configuration, start logging, serve until SIGTERM or
//! SIGINT, then drain. Exits 64 on a bad setting.

use std::process::ExitCode;

use pgsidecar::config::{Config, ConfigError};

/// Many small allocations per request (HTTP/2 frames, protobuf messages, futures): mimalloc
/// serves them in a fraction of glibc malloc's time (measured in docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `pgsidecar analyze ...`: report on a running sidecar, then exit (69 if unreachable).
fn analyze(args: Vec<String>) -> ExitCode {
    use clap::Parser;
    let args = match pgsidecar::analyze::Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(pgsidecar::analyze::run(&args)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgsidecar analyze: {e}");
            ExitCode::from(69)
        }
    }
}

/// The runtime the server runs on. One thread is the default: a sidecar serves one pod, and
/// the benchmark (docs/BENCHMARKS.md) shows a single-threaded runtime spending about a third
/// less CPU per query than a work-stealing one on two cores, because no request hops threads.
fn build_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    use tokio::runtime::Builder;
    let mut builder = match threads {
        1 => Builder::new_current_thread(),
        0 => Builder::new_multi_thread(),
        n => {
            let mut b = Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    builder.enable_all().build()
}

/// Raises the open-files limit to the hard limit: the default soft limit (often 1024) is
/// below what the connection caps and the pools may hold together. Says so when even the
/// hard limit is: then accepts fail for want of descriptors (and are retried after a pause)
/// before the caps are reached.
fn raise_fd_limit(config: &Config) {
    // Listeners, the runtime, log and cancel sockets: a margin beyond connections.
    const OTHER_FILES: u64 = 64;
    match pgsidecar::listen::raise_fd_limit() {
        Ok(limit) => {
            let needed = u64::from(config.grpc_max_connections)
                + u64::from(config.http_max_connections)
                + u64::from(config.primary.max_size)
                + u64::from(config.failover.max_size)
                + OTHER_FILES;
            if needed > limit {
                tracing::warn!(
                    limit,
                    needed,
                    "the open-files limit is below the connection caps and pools; lower \
                     PGSIDECAR_GRPC_MAX_CONNECTIONS or raise the hard limit (ulimit -Hn)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "analyze") {
        let argv = std::env::args_os()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned());
        return analyze(argv.collect());
    }
    let config = match Config::load() {
        Ok(c) => c,
        Err(ConfigError::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pgsidecar: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    pgsidecar::telemetry::init_logging(&config);
    raise_fd_limit(&config);
    let runtime = match build_runtime(config.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgsidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let running = match pgsidecar::app::start(config).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        // One machine-readable line on stdout, so supervisors and tests learn the ports.
        println!(
            "pgsidecar listening grpc={} http={}",
            running.grpc_addr, running.http_addr
        );
        shutdown_signal().await;
        tracing::info!("shutdown signal received; draining");
        running.shutdown();
        match running.wait().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}
