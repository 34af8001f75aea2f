//! `pgsidecar analyze`: asks a running sidecar for its figures and prints what the original
//! design's `db:analyze` promised — top statements, average query time, slow statements and
//! pool utilization.

use std::fmt::Write as _;

use clap::Parser;

use crate::proto::data_access_client::DataAccessClient;
use crate::proto::{PoolStatusRequest, PoolStatusResponse, StatementReportRequest, StatementStats};

/// Arguments of `pgsidecar analyze`.
#[derive(Debug, Parser)]
#[command(
    name = "pgsidecar analyze",
    about = "Print a running sidecar's statement and pool report"
)]
pub struct Args {
    /// gRPC address of the sidecar.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// How many statements to list.
    #[arg(long, default_value_t = 10)]
    pub top: u32,
    /// Statements whose longest run took at least this many ms are listed as slow.
    #[arg(long, default_value_t = 1000.0)]
    pub slow_ms: f64,
}

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The sidecar could not be reached.
    #[error("cannot reach the sidecar at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The sidecar answered with an error.
    #[error("the sidecar refused: {0}")]
    Call(#[from] tonic::Status),
}

/// Fetches the figures and renders the report.
pub async fn run(args: &Args) -> Result<String, AnalyzeError> {
    let uri = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let connect = |source| AnalyzeError::Connect {
        addr: args.addr.clone(),
        source,
    };
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .map_err(connect)?
        .connect()
        .await
        .map_err(connect)?;
    let mut client = DataAccessClient::new(channel);
    let status = client.pool_status(PoolStatusRequest {}).await?.into_inner();
    let report = client
        .statement_report(StatementReportRequest { limit: args.top })
        .await?
        .into_inner();
    Ok(render(args, &status, &report.statements))
}

fn render(args: &Args, s: &PoolStatusResponse, statements: &[StatementStats]) -> String {
    let mut out = String::new();
    let uptime = s.uptime.map_or(0, |d| d.seconds);
    let _ = writeln!(
        out,
        "pgsidecar at {} — up {}h{:02}m, database {}",
        args.addr,
        uptime / 3600,
        uptime % 3600 / 60,
        if s.database_reachable {
            "reachable"
        } else {
            "UNREACHABLE"
        }
    );
    let _ = writeln!(out, "\nPool utilization");
    for p in &s.pools {
        let _ = writeln!(
            out,
            "  {:<9} {:>3}/{:<3} active  {:>3} idle  {:>4} waiting  {:>5.1}% used  reuse {:>5.1}%",
            p.name,
            p.active_connections,
            p.max_connections,
            p.idle_connections,
            p.waiting_requests,
            p.utilization_percent,
            p.reuse_rate * 100.0
        );
    }
    if let Some(q) = &s.queries {
        let _ = writeln!(out, "\nQueries");
        let _ = writeln!(
            out,
            "  {} total, {} failed, {} retried, {} slow",
            q.total, q.failed, q.retried, q.slow
        );
        let _ = writeln!(
            out,
            "  average query time {:.2} ms (last 60 s); p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
            q.latency_avg_ms, q.latency_p50_ms, q.latency_p95_ms, q.latency_p99_ms
        );
    }
    if let Some(c) = &s.statement_cache {
        let lookups = (c.hits + c.misses).max(1);
        let _ = writeln!(
            out,
            "  statement cache: {} prepared, hit rate {:.1}%, {} evictions, {} invalidations",
            c.cached_statements,
            c.hits as f64 * 100.0 / lookups as f64,
            c.evictions,
            c.invalidations
        );
    }
    let _ = writeln!(out, "\nTop statements by total time");
    if statements.is_empty() {
        let _ = writeln!(out, "  (none yet)");
    }
    let _ = writeln!(
        out,
        "  {:>8} {:>6} {:>11} {:>9} {:>9} {:>6}  {:<16}  query",
        "calls", "errors", "total ms", "mean ms", "max ms", "cache", "fingerprint"
    );
    for st in statements {
        let _ = writeln!(
            out,
            "  {:>8} {:>6} {:>11.1} {:>9.2} {:>9.2} {:>5.0}%  {:<16}  {}",
            st.calls,
            st.errors,
            st.total_ms,
            st.mean_ms,
            st.max_ms,
            st.cache_hit_rate * 100.0,
            st.fingerprint,
            st.query
        );
    }
    let slow: Vec<&StatementStats> = statements
        .iter()
        .filter(|s| s.max_ms >= args.slow_ms)
        .collect();
    let _ = writeln!(
        out,
        "\nSlow statements (a run of {} ms or more)",
        args.slow_ms
    );
    if slow.is_empty() {
        let _ = writeln!(out, "  (none among the top statements)");
    }
    for st in slow {
        let _ = writeln!(
            out,
            "  {}  max {:.1} ms, mean {:.1} ms over {} calls  {}",
            st.fingerprint, st.max_ms, st.mean_ms, st.calls, st.query
        );
    }
    out
}
