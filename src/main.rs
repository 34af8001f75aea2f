//! The pgsidecar binary: read the configuration, start logging, serve until SIGTERM or
//! SIGINT, then drain. Exits 64 on a bad setting.

use std::process::ExitCode;

use pgsidecar::config::{Config, ConfigError};

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn main() -> ExitCode {
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgsidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let running = match pgsidecar::server::start(config).await {
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
