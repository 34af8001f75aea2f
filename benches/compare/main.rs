//! Side-by-side benchmark of pgsidecar against tokio-postgres direct and through PgBouncer.
//!
//! One run starts a private PostgreSQL 15 cluster (pgbench tables at scale 10), PgBouncer in
//! transaction mode and two pgsidecars with the same backend pool (the default, pipelined
//! path, and one with `PGSIDECAR_PIPELINE_CONNECTIONS=0`, the leased path), drives them from
//! one tokio load generator with the same queries and concurrency, adds pgbench's own
//! figures, a 10,000-client run, a sweep of the pipeline settings and extras (statement
//! cache on/off, DDL under load), prints the tables and writes `target/bench/compare.json`
//! and `docs/BENCHMARKS.md`. Every figure comes from that run.
//! `cargo bench --bench compare`; `BENCH_SECONDS` sets the measured seconds per run (5);
//! `BENCH_QUICK=1` runs the select workload, the 10,000-client run and a reduced sweep and
//! prints the tables only; `BENCH_PROFILE=1` runs pgsidecar at select c=32 only, for a
//! profiler to attach to the pid it prints.

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
use tokio::sync::{Barrier, Semaphore, oneshot};
use tokio::time::{sleep, sleep_until, timeout};
use tokio_postgres::types::{ToSql, Type};
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

pub(crate) const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
/// Client concurrencies of the table.
pub(crate) const CONCURRENCY: [usize; 4] = [1, 32, 256, 1000];
/// Direct opens one PostgreSQL connection per client, so it runs up to this concurrency.
pub(crate) const DIRECT_MAX: usize = 256;
/// Clients of the big run against pgsidecar pipelined.
pub(crate) const BIG: usize = 10_000;
/// PgBouncer's max_client_conn: the table's largest concurrency, with room to spare.
pub(crate) const BOUNCER_MAX_CLIENTS: usize = 1100;
/// Connection setups (PostgreSQL, PgBouncer) in progress at once during a run's start.
pub(crate) const CONNECTING: usize = 64;
/// The pipelined path's settings (issue 14), passed as environment variables: a binary that
/// does not know them yet ignores them, where an unknown flag would make it exit.
pub(crate) const PIPELINE_CONNECTIONS: &str = "PGSIDECAR_PIPELINE_CONNECTIONS";
pub(crate) const PIPELINE_DEPTH: &str = "PGSIDECAR_PIPELINE_DEPTH";
/// Backends of PgBouncer's pool and of pgsidecar's pool in every run: the concurrency-32
/// direct run's connection count, so at 32 all three targets use as many backends, and at 256
/// both poolers multiplex 256 clients onto 32 backends (already 16 per core here).
pub(crate) const POOL: usize = 32;
/// tonic Channels (HTTP/2 connections) shared by the gRPC workers: min(concurrency, this)...
pub(crate) const MAX_CHANNELS: usize = 4;
/// ...or more, so that no channel carries more calls than this: half of pgsidecar's
/// per-connection SETTINGS_MAX_CONCURRENT_STREAMS (PGSIDECAR_MAX_CONCURRENT_STREAMS, 1024 by
/// default), beyond which the client would queue calls. 1,000 clients use 4 channels,
/// 10,000 use 20 (pgsidecar accepts 512 gRPC connections by default).
pub(crate) const STREAMS_PER_CHANNEL: usize = 512;

/// How many channels `c` gRPC workers share.
pub(crate) fn channels_for(c: usize) -> usize {
    c.min(MAX_CHANNELS).max(c.div_ceil(STREAMS_PER_CHANNEL))
}
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
    /// pgsidecar with its defaults: Query statements on the pipelined path.
    Sidecar,
    /// pgsidecar with `PGSIDECAR_PIPELINE_CONNECTIONS=0`: one leased connection per query.
    Leased,
    /// A `DataAccess` server that does no work: the floor of the gRPC hop.
    Hop,
}

impl Target {
    const ALL: [Target; 5] = [
        Target::Direct,
        Target::Bouncer,
        Target::Sidecar,
        Target::Leased,
        Target::Hop,
    ];
    pub(crate) fn name(self) -> &'static str {
        [
            "direct",
            "pgbouncer",
            "pgsidecar pipelined",
            "pgsidecar leased",
            "grpc hop",
        ][self as usize]
    }
    /// Reached with the generated gRPC client.
    pub(crate) fn grpc(self) -> bool {
        matches!(self, Target::Sidecar | Target::Leased | Target::Hop)
    }
    /// Whether the table has this target at concurrency `c`.
    pub(crate) fn runs_at(self, c: usize) -> bool {
        self != Target::Direct || c <= DIRECT_MAX
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

impl Spec {
    /// The same run against another pgsidecar process.
    pub(crate) fn against(self, sidecar: &Sidecar) -> Spec {
        Spec {
            endpoint: sidecar.1.to_string(),
            cpu_pid: Some(sidecar.0.id()),
            ..self
        }
    }
}

/// The 10,000-client run and pgsidecar's memory after it.
#[derive(Serialize)]
pub(crate) struct BigRun {
    pub(crate) load: Measured,
    /// VmRSS of the fresh process before the run, MiB.
    pub(crate) rss_before_mib: Option<f64>,
    /// VmHWM (peak resident set since the process started) read right after the run, MiB.
    pub(crate) peak_rss_mib: Option<f64>,
    /// VmRSS right after the run, MiB.
    pub(crate) rss_after_mib: Option<f64>,
}

/// One cell of the pipeline sweep.
#[derive(Serialize)]
pub(crate) struct SweepRun {
    pub(crate) connections: usize,
    pub(crate) depth: usize,
    pub(crate) load: Measured,
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
    // 1,000 PgBouncer clients and 10,000 gRPC calls need more descriptors than a default
    // soft limit of 1024; raise it towards the hard limit (a failure shows up as errors).
    let _ = rlimit::increase_nofile_limit(65_536);
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
    let began = Instant::now();
    // BENCH_QUICK: the select workload, the 10,000-client run and a reduced sweep, tables on
    // stdout and no report files; for trying a change to the hot path in a few minutes.
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    if !Path::new(PGBOUNCER).exists() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-pgbouncer.sh");
        run_checked(
            Command::new("bash").arg(script),
            "scripts/install-pgbouncer.sh",
        );
    }
    let as_postgres = output("id", &["-u"]) == "0";
    // Other work on the machine skews every figure: the load average says how busy it was.
    let loadavg = read_loadavg();
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
    // Durability off (the cluster is thrown away); 500 connections: direct at 256 plus the
    // pools of PgBouncer, of the two long-lived sidecars and of one short-lived one at a
    // time, with room to spare; a large WAL budget keeps checkpoints out of the runs.
    let cluster =
        cluster::TempCluster::start_tuned(500, "shared_buffers = 256MB\nmax_wal_size = 4GB\n");
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
    let leased = Sidecar::start_with(&url, &[], &[(PIPELINE_CONNECTIONS, "0".into())]).await;
    let hop = HopServer::start();
    // Whether PGSIDECAR_PIPELINE_* take effect in this binary; if not, "pipelined" and the
    // sweep ran the leased path too, which the report says.
    let pipelining = sidecar_knows("--pipeline-connections");
    let spec = |target, workload, concurrency| {
        let (endpoint, cpu_pid) = match target {
            Target::Hop => (hop.1.to_string(), Some(hop.0.id())),
            Target::Direct => (url.clone(), None),
            Target::Bouncer => (bouncer_url.clone(), Some(bouncer.1)),
            Target::Sidecar => (sidecar.1.to_string(), Some(sidecar.0.id())),
            Target::Leased => (leased.1.to_string(), Some(leased.0.id())),
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

    // BENCH_PROFILE: only pgsidecar pipelined, select c=32, for BENCH_SECONDS, its pid on
    // stderr, so that `perf record -p` or `strace -c -p` can watch just that.
    if std::env::var_os("BENCH_PROFILE").is_some() {
        eprintln!("compare: profiling pgsidecar pid {}", sidecar.0.id());
        let m = measure(spec(Target::Sidecar, Workload::Select, 32), None).await;
        println!("\n{}", markdown(&HEADER, &table(&[m], &[]), 3));
        return;
    }
    let (mut runs, mut pgbench_runs) = (Vec::new(), Vec::new());
    let workloads: &[Workload] = if quick {
        &[Workload::Select]
    } else {
        &[Workload::Select, Workload::Mix]
    };
    for &workload in workloads {
        for c in CONCURRENCY {
            // The targets back to back, so that they see the same table and cache state.
            for target in Target::ALL.into_iter().filter(|t| t.runs_at(c)) {
                runs.push(measure(spec(target, workload, c), None).await);
            }
            if workload == Workload::Select && !quick && c <= DIRECT_MAX {
                pgbench_runs.push(pgbench("direct", cluster.port, "prepared", c, secs).await);
                pgbench_runs.push(pgbench("pgbouncer", bouncer.2, "extended", c, secs).await);
            }
        }
    }
    if quick {
        let table = markdown(&HEADER, &table(&runs, &[]), 3);
        println!("\n{table}{}", error_lines(&runs));
    }
    let modes = session_modes(&url, |t| spec(t, Workload::Select, 32)).await;
    if quick {
        let table = markdown(&HEADER, &table(&modes, &[]), 3);
        println!("\n{table}{}", error_lines(&modes));
    }
    // The 10,000 clients: short in BENCH_QUICK, BENCH_SECONDS otherwise.
    let big_secs = if quick { secs.min(3) } else { secs };
    let big = Spec {
        secs: big_secs,
        ..spec(Target::Sidecar, Workload::Select, BIG)
    };
    let big = ten_thousand(&url, big).await;
    if quick {
        println!("\n{}", big_table(&big));
    }
    // The sweep: 12 cells in the full run, 3 in BENCH_QUICK; shorter runs than the table's.
    let sweep_secs = (secs / 2).max(2);
    let (conns, depths): (&[usize], &[usize]) = if quick {
        (&[2], &[4, 16, 32])
    } else {
        (&[1, 2, 4], &[4, 8, 16, 32])
    };
    let cell = Spec {
        secs: sweep_secs,
        ..spec(Target::Sidecar, Workload::Select, 32)
    };
    let sweep = pipeline_sweep(&url, cell, conns, depths).await;
    if quick {
        println!("\n{}", sweep_table(&sweep, &runs));
        let loads = [loadavg, read_loadavg()];
        let wall = began.elapsed().as_secs();
        println!("\n{}", targets_table(&pipeline_checks(&runs, &big)));
        println!("{}", pipeline_note(pipelining, sweep_secs, big_secs));
        println!(
            "Load (1, 5, 15 min): {} at the start, {} at the end; wall time {wall} s",
            loads[0], loads[1]
        );
        return;
    }
    // Statement cache on vs off, back to back at concurrency 32.
    let on = measure(spec(Target::Sidecar, Workload::Select, 32), None).await;
    let nocache = Sidecar::start(&url, &["--statement-cache-size", "0"]).await;
    let off = spec(Target::Sidecar, Workload::Select, 32).against(&nocache);
    let off = measure(off, None).await;
    drop(nocache);
    // The default single-threaded runtime against one worker per core, back to back.
    let per_core = Sidecar::start(&url, &["--worker-threads", "0"]).await;
    let threads = spec(Target::Sidecar, Workload::Select, 32).against(&per_core);
    let threads = measure(threads, None).await;
    drop(per_core);
    let ddl = spec(Target::Sidecar, Workload::SelectStar, 32);
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
    let versions = [pg_version, bouncer_version];
    let more = Extras {
        cache: [on, off],
        threads,
        modes,
        ddl,
        big,
        big_secs,
        sweep,
        sweep_secs,
        pipelining,
    };
    let wall = began.elapsed().as_secs();
    report(
        secs,
        runs,
        pgbench_runs,
        more,
        versions,
        [loadavg, read_loadavg()],
        wall,
    );
}

/// The 1, 5 and 15 minute load averages.
fn read_loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loads: Vec<&str> = text.split_whitespace().take(3).collect();
    loads.join(" ")
}

/// What session hygiene costs, select c=32 back to back: the table's targets, then
/// pgsidecar (pipelined) with `--read-only` (each statement in a pipelined READ ONLY
/// transaction) and with `--reset-always` (a pipelined reset after each statement).
async fn session_modes(url: &str, spec: impl Fn(Target) -> Spec) -> Vec<Measured> {
    let mut runs = Vec::new();
    for target in Target::ALL {
        runs.push(measure(spec(target), None).await);
    }
    let modes = [
        ("--read-only", "pgsidecar pipelined --read-only"),
        ("--reset-always", "pgsidecar pipelined --reset-always"),
    ];
    for (flag, name) in modes {
        let other = Sidecar::start(url, &[flag, "true"]).await;
        let mut m = measure(spec(Target::Sidecar).against(&other), None).await;
        m.target = name;
        runs.push(m);
    }
    runs
}

/// BIG clients against a fresh pgsidecar with the defaults (the pipelined path), so that
/// its peak resident set (VmHWM) is that of its start and this run; read right after it.
async fn ten_thousand(url: &str, spec: Spec) -> BigRun {
    let fresh = Sidecar::start(url, &[]).await;
    let pid = fresh.0.id();
    let rss_before_mib = status_mib(pid, "VmRSS");
    let load = measure(spec.against(&fresh), None).await;
    let (peak_rss_mib, rss_after_mib) = (status_mib(pid, "VmHWM"), status_mib(pid, "VmRSS"));
    drop(fresh);
    BigRun {
        load,
        rss_before_mib,
        peak_rss_mib,
        rss_after_mib,
    }
}

/// One run of `cell` against a fresh pgsidecar per pipeline setting, connections × depth.
async fn pipeline_sweep(url: &str, cell: Spec, conns: &[usize], depths: &[usize]) -> Vec<SweepRun> {
    let mut out = Vec::new();
    for &connections in conns {
        for &depth in depths {
            eprintln!(
                "compare: sweep {PIPELINE_CONNECTIONS}={connections} {PIPELINE_DEPTH}={depth}"
            );
            let env = [
                (PIPELINE_CONNECTIONS, connections.to_string()),
                (PIPELINE_DEPTH, depth.to_string()),
            ];
            let other = Sidecar::start_with(url, &[], &env).await;
            let load = measure(cell.clone().against(&other), None).await;
            drop(other);
            out.push(SweepRun {
                connections,
                depth,
                load,
            });
        }
    }
    out
}
