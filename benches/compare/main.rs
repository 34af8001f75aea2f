//! Side-by-side benchmark of pgsidecar against tokio-postgres direct and through PgBouncer.
//!
//! One run starts a private PostgreSQL 15 cluster (pgbench tables at scale 10), PgBouncer in
//! transaction mode and pgsidecar with the same backend pool, drives all three from one tokio
//! load generator with the same queries and concurrency, adds pgbench's own figures and two
//! extras (statement cache on/off, DDL under load), prints one table and writes
//! `target/bench/compare.json` and `docs/BENCHMARKS.md`. Every figure comes from that run.
//! `cargo bench --bench compare`; `BENCH_SECONDS` sets the measured seconds per run (5).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The private PostgreSQL cluster, the same harness the integration tests use; the bench
/// uses only part of it.
#[allow(dead_code)]
#[path = "../../tests/it/support/cluster.rs"]
mod cluster;
mod hop;
mod load;
mod procs;
mod report;

use load::*;
use procs::*;
use report::*;

use hdrhistogram::Histogram;
use pgsidecar::proto::data_access_client::DataAccessClient;
use pgsidecar::proto::{PoolStatusRequest, QueryRequest, Value, value::Kind};
use serde::Serialize;
use tokio::sync::{Barrier, oneshot};
use tokio::time::{sleep, sleep_until, timeout};
use tokio_postgres::types::{ToSql, Type};
use tonic::transport::{Channel, Endpoint};

pub(crate) const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
/// Client concurrencies of the table.
pub(crate) const CONCURRENCY: [usize; 3] = [1, 32, 256];
/// Backends of PgBouncer's pool and of pgsidecar's pool in every run: the concurrency-32
/// direct run's connection count, so at 32 all three targets use as many backends, and at 256
/// both poolers multiplex 256 clients onto 32 backends (already 16 per core here).
pub(crate) const POOL: usize = 32;
/// At most this many tonic Channels (HTTP/2 connections) shared by the sidecar workers.
pub(crate) const MAX_CHANNELS: usize = 4;
/// pgbench_accounts rows at scale 10.
pub(crate) const ACCOUNTS: u64 = 1_000_000;
pub(crate) const SELECT_SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
pub(crate) const UPDATE_SQL: &str =
    "UPDATE pgbench_accounts SET abalance = abalance + $2 WHERE aid = $1";
/// `SELECT *`, so that adding or dropping a column changes the result type.
pub(crate) const SELECT_STAR_SQL: &str = "SELECT * FROM pgbench_accounts WHERE aid = $1";
pub(crate) const WARMUP: Duration = Duration::from_secs(1);
/// An operation taking longer is an error; with CONNECT_TIMEOUT it bounds every loop.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Clock ticks per second of /proc/<pid>/stat, from `getconf CLK_TCK`.
pub(crate) static CLK_TCK: OnceLock<u64> = OnceLock::new();

/// Which client path a load run drives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Direct,
    Bouncer,
    Sidecar,
    /// A `DataAccess` server that does no work: the floor of the gRPC hop.
    Hop,
}

impl Target {
    const ALL: [Target; 4] = [
        Target::Direct,
        Target::Bouncer,
        Target::Sidecar,
        Target::Hop,
    ];
    fn name(self) -> &'static str {
        ["direct", "pgbouncer", "pgsidecar", "grpc hop"][self as usize]
    }
    /// Reached with the generated gRPC client.
    pub(crate) fn grpc(self) -> bool {
        matches!(self, Target::Sidecar | Target::Hop)
    }
}

/// What the workers send: point selects, the 4:1 select/update mix, or `SELECT *` selects.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    Select,
    Mix,
    SelectStar,
}

impl Workload {
    fn name(self) -> &'static str {
        ["select", "write-mix", "select-star"][self as usize]
    }
}

/// One load run: which target, where, with what and how hard.
#[derive(Clone)]
pub(crate) struct Spec {
    pub(crate) target: Target,
    /// A postgres URL (direct, PgBouncer) or the sidecar's gRPC address.
    pub(crate) endpoint: String,
    /// The proxy process (PgBouncer, pgsidecar) whose CPU time is charged to the queries.
    pub(crate) cpu_pid: Option<u32>,
    pub(crate) workload: Workload,
    pub(crate) concurrency: usize,
    pub(crate) secs: u64,
}

/// The figures of one load run.
#[derive(Clone, Serialize)]
pub(crate) struct Measured {
    pub(crate) target: &'static str,
    pub(crate) workload: &'static str,
    pub(crate) concurrency: usize,
    /// Successful operations started in the measured part.
    pub(crate) queries: u64,
    pub(crate) qps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Failed operations, warm-up included; a connection that could not be opened counts.
    pub(crate) errors: u64,
    pub(crate) cpu_us_per_query: Option<f64>,
    /// Up to three distinct error messages.
    pub(crate) error_samples: Vec<String>,
    /// pgsidecar's statement-cache counters over the run: hits, misses, invalidations.
    pub(crate) sidecar_cache: Option<[u64; 3]>,
}

fn main() {
    // The bench binary started again as the do-nothing server of the Hop target.
    if std::env::args().any(|a| a == "--hop-server") {
        hop::serve();
        return;
    }
    // `cargo bench` passes --bench; any other launch (`cargo test --benches`) must not start
    // clusters and minutes of load.
    if !std::env::args().any(|a| a == "--bench") {
        println!("compare: run with `cargo bench --bench compare`; skipping");
        return;
    }
    let secs = std::env::var("BENCH_SECONDS").map_or(5, |s| s.parse().expect("BENCH_SECONDS"));
    let clk = output("getconf", &["CLK_TCK"])
        .parse()
        .expect("getconf CLK_TCK");
    CLK_TCK.set(clk).expect("set once");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    runtime.expect("runtime").block_on(run(secs.max(1)));
}

pub(crate) async fn run(secs: u64) {
    if !Path::new(PGBOUNCER).exists() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-pgbouncer.sh");
        run_checked(
            Command::new("bash").arg(script),
            "scripts/install-pgbouncer.sh",
        );
    }
    let as_postgres = output("id", &["-u"]) == "0";
    // Other work on the machine skews every figure: the load average says how busy it was.
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(root.join("target/bench")).expect("mkdir target/bench");
    // Started in this order, so dropped (stopped) in reverse, also when a panic unwinds.
    let dir = std::env::temp_dir().join(format!("pgsidecar-bench-{}", std::process::id()));
    let dir = TempDir(dir);
    std::fs::create_dir_all(&dir.0).expect("mkdir temp dir");
    if as_postgres {
        let mut chown = Command::new("chown");
        run_checked(chown.arg("postgres:postgres").arg(&dir.0), "chown temp dir");
    }
    // Durability off (the cluster is thrown away); 400 connections: direct at 256 plus both
    // sidecars' and PgBouncer's pools; a large WAL budget keeps checkpoints out of the runs.
    let cluster =
        cluster::TempCluster::start_tuned(400, "shared_buffers = 256MB\nmax_wal_size = 4GB\n");
    let url = cluster.url();
    eprintln!("compare: pgbench -i -s 10 on port {}", cluster.port);
    pg_tool(
        "pgbench",
        &format!("-i -s 10 -q -h 127.0.0.1 -p {}", cluster.port),
        600,
    )
    .await;
    // The load writes ~400 MB; flush it now rather than during the first runs.
    let admin = pg_connect(&url).await.expect("admin connection");
    admin.batch_execute("CHECKPOINT").await.expect("checkpoint");
    run_checked(&mut Command::new("sync"), "sync");
    let bouncer = PgBouncer::start(&dir.0, cluster.port, as_postgres);
    let bouncer_url = format!("postgres://postgres@127.0.0.1:{}/postgres", bouncer.2);
    let sidecar = Sidecar::start(&url, &[]).await;
    let hop = HopServer::start();
    let spec = |target, sidecar: &Sidecar, workload, concurrency| {
        let (endpoint, cpu_pid) = match target {
            Target::Hop => (hop.1.to_string(), Some(hop.0.id())),
            Target::Direct => (url.clone(), None),
            Target::Bouncer => (bouncer_url.clone(), Some(bouncer.1)),
            Target::Sidecar => (sidecar.1.to_string(), Some(sidecar.0.id())),
        };
        Spec {
            target,
            endpoint,
            cpu_pid,
            workload,
            concurrency,
            secs,
        }
    };

    let (mut runs, mut pgbench_runs) = (Vec::new(), Vec::new());
    // BENCH_QUICK: the select workload only, a table on stdout and no report files; for
    // trying a change to the hot path without the full three minutes.
    if std::env::var_os("BENCH_QUICK").is_some() {
        for c in CONCURRENCY {
            for target in Target::ALL {
                runs.push(measure(spec(target, &sidecar, Workload::Select, c), None).await);
            }
        }
        println!("\n{}", markdown(&HEADER, &table(&runs, &[]), 3));
        let modes = session_modes(&url, |t, s| spec(t, s, Workload::Select, 32), &sidecar).await;
        println!("\n{}", markdown(&HEADER, &table(&modes, &[]), 3));
        return;
    }
    for workload in [Workload::Select, Workload::Mix] {
        for c in CONCURRENCY {
            // The targets back to back, so that they see the same table and cache state.
            for target in Target::ALL {
                runs.push(measure(spec(target, &sidecar, workload, c), None).await);
            }
            if workload == Workload::Select {
                pgbench_runs.push(pgbench("direct", cluster.port, "prepared", c, secs).await);
                pgbench_runs.push(pgbench("pgbouncer", bouncer.2, "extended", c, secs).await);
            }
        }
    }
    // Statement cache on vs off, back to back at concurrency 32.
    let on = spec(Target::Sidecar, &sidecar, Workload::Select, 32);
    let on = measure(on, None).await;
    let nocache = Sidecar::start(&url, &["--statement-cache-size", "0"]).await;
    let off = spec(Target::Sidecar, &nocache, Workload::Select, 32);
    let off = measure(off, None).await;
    drop(nocache);
    // The default single-threaded runtime against one worker per core, back to back.
    let per_core = Sidecar::start(&url, &["--worker-threads", "0"]).await;
    let threads = spec(Target::Sidecar, &per_core, Workload::Select, 32);
    let threads = measure(threads, None).await;
    drop(per_core);
    let modes = session_modes(&url, |t, s| spec(t, s, Workload::Select, 32), &sidecar).await;
    let ddl = spec(Target::Sidecar, &sidecar, Workload::SelectStar, 32);
    let ddl = ddl_during_load(&url, ddl).await;
    let pg_version = output(
        &cluster::bin_dir().join("postgres").display().to_string(),
        &["--version"],
    );
    let bouncer_version = output(PGBOUNCER, &["--version"]);
    let bouncer_version = bouncer_version
        .lines()
        .next()
        .unwrap_or("unknown")
        .to_owned();
    let loadavg = loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let versions = [pg_version, bouncer_version, loadavg];
    let more = Extras {
        cache: [on, off],
        threads,
        modes,
        ddl,
    };
    report(secs, runs, pgbench_runs, more, versions);
}

/// What session hygiene costs, select c=32 back to back: direct and PgBouncer, then
/// pgsidecar by default (reset when the text or a reported parameter shows a change), with
/// `--read-only` (each statement in a pipelined READ ONLY transaction) and with
/// `--reset-always` (a pipelined reset after each statement).
async fn session_modes(
    url: &str,
    spec: impl Fn(Target, &Sidecar) -> Spec,
    sidecar: &Sidecar,
) -> Vec<Measured> {
    let mut runs = Vec::new();
    for target in Target::ALL {
        runs.push(measure(spec(target, sidecar), None).await);
    }
    let modes = [
        ("--read-only", "pgsidecar --read-only"),
        ("--reset-always", "pgsidecar --reset-always"),
    ];
    for (flag, name) in modes {
        let other = Sidecar::start(url, &[flag, "true"]).await;
        let mut m = measure(spec(Target::Sidecar, &other), None).await;
        m.target = name;
        runs.push(m);
    }
    runs
}
