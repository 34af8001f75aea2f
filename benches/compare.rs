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
#[path = "../tests/it/support/cluster.rs"]
mod cluster;

use hdrhistogram::Histogram;
use pgsidecar::proto::data_access_client::DataAccessClient;
use pgsidecar::proto::{PoolStatusRequest, QueryRequest, Value, value::Kind};
use serde::Serialize;
use tokio::sync::{Barrier, oneshot};
use tokio::time::{sleep, sleep_until, timeout};
use tokio_postgres::types::{ToSql, Type};
use tonic::transport::{Channel, Endpoint};

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
/// Client concurrencies of the table.
const CONCURRENCY: [usize; 3] = [1, 32, 256];
/// Backends of PgBouncer's pool and of pgsidecar's pool in every run: the concurrency-32
/// direct run's connection count, so at 32 all three targets use as many backends, and at 256
/// both poolers multiplex 256 clients onto 32 backends (already 16 per core here).
const POOL: usize = 32;
/// At most this many tonic Channels (HTTP/2 connections) shared by the sidecar workers.
const MAX_CHANNELS: usize = 4;
/// pgbench_accounts rows at scale 10.
const ACCOUNTS: u64 = 1_000_000;
const SELECT_SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const UPDATE_SQL: &str = "UPDATE pgbench_accounts SET abalance = abalance + $2 WHERE aid = $1";
/// `SELECT *`, so that adding or dropping a column changes the result type.
const SELECT_STAR_SQL: &str = "SELECT * FROM pgbench_accounts WHERE aid = $1";
const WARMUP: Duration = Duration::from_secs(1);
/// An operation taking longer is an error; with CONNECT_TIMEOUT it bounds every loop.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Clock ticks per second of /proc/<pid>/stat, from `getconf CLK_TCK`.
static CLK_TCK: OnceLock<u64> = OnceLock::new();

/// Which client path a load run drives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    Bouncer,
    Sidecar,
}

impl Target {
    const ALL: [Target; 3] = [Target::Direct, Target::Bouncer, Target::Sidecar];
    fn name(self) -> &'static str {
        ["direct", "pgbouncer", "pgsidecar"][self as usize]
    }
}

/// What the workers send: point selects, the 4:1 select/update mix, or `SELECT *` selects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
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
struct Spec {
    target: Target,
    /// A postgres URL (direct, PgBouncer) or the sidecar's gRPC address.
    endpoint: String,
    /// The proxy process (PgBouncer, pgsidecar) whose CPU time is charged to the queries.
    cpu_pid: Option<u32>,
    workload: Workload,
    concurrency: usize,
    secs: u64,
}

/// The figures of one load run.
#[derive(Clone, Serialize)]
struct Measured {
    target: &'static str,
    workload: &'static str,
    concurrency: usize,
    /// Successful operations started in the measured part.
    queries: u64,
    qps: f64,
    p50_us: f64,
    p99_us: f64,
    /// Failed operations, warm-up included; a connection that could not be opened counts.
    errors: u64,
    cpu_us_per_query: Option<f64>,
    /// Up to three distinct error messages.
    error_samples: Vec<String>,
    /// pgsidecar's statement-cache counters over the run: hits, misses, invalidations.
    sidecar_cache: Option<[u64; 3]>,
}

/// One worker's connection to its target.
enum Conn {
    /// Named statements (select, update), prepared once per connection.
    Direct(tokio_postgres::Client, [tokio_postgres::Statement; 2]),
    /// Unnamed statements (parse, bind, execute in one round trip): PgBouncer 1.18 in
    /// transaction mode keeps no named prepared statements between transactions.
    Bouncer(tokio_postgres::Client),
    Sidecar(DataAccessClient<Channel>),
}

impl Conn {
    /// Opens a connection, bounded by CONNECT_TIMEOUT.
    async fn open(spec: &Spec, channel: &Option<Channel>, select: &str) -> Result<Conn, String> {
        let open = async {
            Ok(match spec.target {
                Target::Direct => {
                    let client = pg_connect(&spec.endpoint).await?;
                    let select = client.prepare(select).await.map_err(pg_err)?;
                    let update = client.prepare(UPDATE_SQL).await.map_err(pg_err)?;
                    Conn::Direct(client, [select, update])
                }
                Target::Bouncer => Conn::Bouncer(pg_connect(&spec.endpoint).await?),
                Target::Sidecar => {
                    Conn::Sidecar(DataAccessClient::new(channel.clone().expect("channel")))
                }
            })
        };
        let opened = timeout(CONNECT_TIMEOUT, open).await;
        opened.unwrap_or_else(|_| Err("connect timed out".into()))
    }

    /// Runs the select (which must return one row) or, with `delta`, the update.
    async fn call(&mut self, select: &str, aid: i32, delta: Option<i32>) -> Result<(), String> {
        let sql = if delta.is_some() { UPDATE_SQL } else { select };
        let rows = match (self, delta) {
            (Conn::Direct(client, [_, update]), Some(d)) => {
                client.execute(update, &[&aid, &d]).await.map_err(pg_err)? as usize
            }
            (Conn::Direct(client, [select, _]), None) => {
                client.query(select, &[&aid]).await.map_err(pg_err)?.len()
            }
            (Conn::Bouncer(client), _) => {
                let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&aid, Type::INT4)];
                params.extend(delta.as_ref().map(|d| (d as _, Type::INT4)));
                let rows = client.query_typed(sql, &params).await.map_err(pg_err)?;
                if delta.is_some() { 1 } else { rows.len() }
            }
            (Conn::Sidecar(client), _) => {
                let params = [Some(aid), delta].into_iter().flatten().map(int).collect();
                let request = QueryRequest {
                    sql: sql.to_owned(),
                    params,
                    ..Default::default()
                };
                let response = client.query(request).await;
                let response = response.map_err(|s| format!("{:?}: {}", s.code(), s.message()));
                let response = response?.into_inner();
                let updated = response.rows_affected as usize;
                if delta.is_some() {
                    updated
                } else {
                    response.rows.len()
                }
            }
        };
        if rows == 1 {
            Ok(())
        } else {
            Err(format!("{rows} rows instead of 1"))
        }
    }

    /// A PostgreSQL connection closed by the server or PgBouncer must be replaced.
    fn broken(&self) -> bool {
        match self {
            Conn::Direct(client, _) | Conn::Bouncer(client) => client.is_closed(),
            Conn::Sidecar(_) => false,
        }
    }
}

fn int(n: i32) -> Value {
    let kind = Some(Kind::IntValue(i64::from(n)));
    Value { kind }
}

fn pg_err(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connected = tokio_postgres::connect(url, tokio_postgres::NoTls).await;
    let (client, conn) = connected.map_err(pg_err)?;
    tokio::spawn(conn);
    Ok(client)
}

/// Latencies of the measured part (ns, 1 µs to 60 s, 3 significant figures) and errors.
struct Tally(Histogram<u64>, u64, Vec<String>);

impl Tally {
    fn new() -> Tally {
        let hist = Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds");
        Tally(hist, 0, Vec::new())
    }
    /// Counts an error and notes its message.
    fn error(&mut self, message: String) {
        self.1 += 1;
        self.note(message);
    }
    /// Keeps a message if it is one of the first three distinct ones.
    fn note(&mut self, message: String) {
        if self.2.len() < 3 && !self.2.contains(&message) {
            self.2.push(message);
        }
    }
    fn merge(&mut self, other: Tally) {
        self.0.add(&other.0).expect("merge histograms");
        self.1 += other.1;
        other.2.into_iter().for_each(|m| self.note(m));
    }
}

/// Connects, waits at the barrier for the others, then runs operations back to back for the
/// warm-up and the measured part, recording the latency of those started in the latter.
async fn worker(spec: Spec, seed: u64, channel: Option<Channel>, barrier: Arc<Barrier>) -> Tally {
    let mut tally = Tally::new();
    let select = if spec.workload == Workload::SelectStar {
        SELECT_STAR_SQL
    } else {
        SELECT_SQL
    };
    let opened = Conn::open(&spec, &channel, select).await;
    let mut conn = opened
        .map_err(|e| tally.error(format!("connect: {e}")))
        .ok();
    barrier.wait().await;
    // Every worker's window starts the same WARMUP after the barrier releases them all.
    let from = Instant::now() + WARMUP;
    let to = from + Duration::from_secs(spec.secs);
    let Some(conn) = conn.as_mut() else {
        return tally;
    };
    // xorshift64*: uniform enough to pick accounts, and no dependency.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = move |n: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    for i in 0u64.. {
        let start = Instant::now();
        if start >= to {
            break;
        }
        let aid = random(ACCOUNTS) as i32 + 1;
        // Every fifth operation of the mix is the update: exactly 4:1 whatever the length.
        let mix = spec.workload == Workload::Mix && i % 5 == 4;
        let delta = mix.then(|| random(10_001) as i32 - 5000);
        let call = timeout(OP_TIMEOUT, conn.call(select, aid, delta)).await;
        match call.unwrap_or_else(|_| Err("timed out".into())) {
            Ok(()) if start >= from => tally.0.saturating_record(start.elapsed().as_nanos() as u64),
            Ok(()) => {}
            Err(e) => {
                tally.error(e);
                if conn.broken() {
                    match Conn::open(&spec, &channel, select).await {
                        Ok(fresh) => *conn = fresh,
                        Err(_) => sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }
    }
    tally
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; after its ')' come fields 3 (state) onwards.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// pgsidecar's statement-cache counters: hits, misses, invalidations.
async fn sidecar_cache(channel: Option<&Channel>) -> Option<[u64; 3]> {
    let mut client = DataAccessClient::new(channel?.clone());
    let status = timeout(CONNECT_TIMEOUT, client.pool_status(PoolStatusRequest {})).await;
    let cache = status.ok()?.ok()?.into_inner().statement_cache?;
    Some([cache.hits, cache.misses, cache.invalidations])
}

/// Drives one load run and measures it; `started` is told when the measured part begins.
async fn measure(spec: Spec, started: Option<oneshot::Sender<()>>) -> Measured {
    let (target, workload, c) = (spec.target, spec.workload, spec.concurrency);
    let names = (workload.name(), target.name());
    eprintln!("compare: {} {} c={c}, {} s", names.0, names.1, spec.secs);
    let mut channels = Vec::new();
    while target == Target::Sidecar && channels.len() < c.min(MAX_CHANNELS) {
        let endpoint = Endpoint::from_shared(format!("http://{}", spec.endpoint)).expect("uri");
        let channel = timeout(CONNECT_TIMEOUT, endpoint.tcp_nodelay(true).connect()).await;
        channels.push(channel.expect("in time").expect("connect to pgsidecar"));
    }
    let cache0 = sidecar_cache(channels.first()).await;
    // Connecting is not timed: the window starts when every worker has connected (or
    // failed to, within CONNECT_TIMEOUT).
    let barrier = Arc::new(Barrier::new(c + 1));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..c {
        let channel = channels.get(w % MAX_CHANNELS.min(c)).cloned();
        workers.spawn(worker(spec.clone(), w as u64 + 1, channel, barrier.clone()));
    }
    barrier.wait().await;
    let from = Instant::now() + WARMUP;
    let to = from + Duration::from_secs(spec.secs);
    sleep_until(from.into()).await;
    let cpu0 = spec.cpu_pid.and_then(cpu_ticks);
    if let Some(started) = started {
        let _ = started.send(());
    }
    sleep_until(to.into()).await;
    let cpu1 = spec.cpu_pid.and_then(cpu_ticks);
    let mut all = Tally::new();
    let deadline = tokio::time::Instant::from_std(to) + OP_TIMEOUT + CONNECT_TIMEOUT;
    while let Ok(Some(tally)) = tokio::time::timeout_at(deadline, workers.join_next()).await {
        all.merge(tally.expect("worker task"));
    }
    if !workers.is_empty() {
        // Past every bound an operation has; should it happen, they count as failures.
        all.1 += workers.len() as u64;
        all.note(format!("{} workers stuck past the end", workers.len()));
        workers.abort_all();
    }
    let cache1 = sidecar_cache(channels.first()).await;
    let queries = all.0.len();
    let clk = *CLK_TCK.get().expect("CLK_TCK") as f64;
    let cpu = cpu0.zip(cpu1).filter(|_| queries > 0);
    let cache = cache0.zip(cache1);
    Measured {
        target: names.1,
        workload: names.0,
        concurrency: c,
        queries,
        qps: queries as f64 / spec.secs as f64,
        p50_us: all.0.value_at_quantile(0.50) as f64 / 1000.0,
        p99_us: all.0.value_at_quantile(0.99) as f64 / 1000.0,
        errors: all.1,
        cpu_us_per_query: cpu.map(|(a, b)| (b - a) as f64 * 1e6 / clk / queries as f64),
        error_samples: all.2,
        sidecar_cache: cache.map(|(a, b)| [0, 1, 2].map(|i| b[i].saturating_sub(a[i]))),
    }
}

/// pgbench's own figures for the select workload.
#[derive(Serialize)]
struct PgbenchRun {
    via: &'static str,
    mode: &'static str,
    concurrency: usize,
    tps: f64,
    latency_avg_ms: f64,
    failed: f64,
}

/// `pgbench -n -S -M <mode> -c C -j min(C,2) -T secs` against `port`.
async fn pgbench(
    via: &'static str,
    port: u16,
    mode: &'static str,
    c: usize,
    secs: u64,
) -> PgbenchRun {
    eprintln!("compare: pgbench {via} -M {mode} c={c}, {secs} s");
    let j = c.min(2);
    let args = format!("-n -S -M {mode} -c {c} -j {j} -T {secs} -h 127.0.0.1 -p {port}");
    let out = pg_tool("pgbench", &args, secs + 60).await;
    let field = |prefix: &str| -> f64 {
        let value = out.lines().find_map(|l| l.strip_prefix(prefix));
        let value = value.and_then(|v| v.split_whitespace().next()?.parse().ok());
        value.unwrap_or(f64::NAN)
    };
    let (tps, latency_avg_ms) = (field("tps = "), field("latency average = "));
    let failed = field("number of failed transactions: ");
    PgbenchRun {
        via,
        mode,
        concurrency: c,
        tps,
        latency_avg_ms,
        failed,
    }
}

/// A PostgreSQL client program as user postgres on database postgres, bounded in time.
async fn pg_tool(program: &str, args: &str, limit_secs: u64) -> String {
    let mut cmd = tokio::process::Command::new(cluster::bin_dir().join(program));
    cmd.args(args.split_whitespace())
        .args(["-U", "postgres", "postgres"]);
    let run = cmd.stdin(Stdio::null()).kill_on_drop(true).output();
    let out = timeout(Duration::from_secs(limit_secs), run).await;
    let out = out.expect("in time").expect(program);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} {args}: {text}{err}");
    text
}

/// Runs a command to completion; panics with its output if it fails.
fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().expect(what);
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {text}");
}

/// Trimmed stdout of a command, or "unknown".
fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().map(|o| o.stdout);
    let text = String::from_utf8_lossy(&out.unwrap_or_default())
        .trim()
        .to_owned();
    if text.is_empty() {
        "unknown".to_owned()
    } else {
        text
    }
}

/// A command run as the `postgres` OS user when we are root: PostgreSQL and PgBouncer
/// refuse to run as root.
fn as_user(as_postgres: bool, program: &str) -> Command {
    if !as_postgres {
        return Command::new(program);
    }
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", program]);
    c
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Sends SIGTERM, waits up to 10 s, then kills.
fn stop(child: &mut Child, pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The private working directory (cluster, PgBouncer config, logs); removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// PgBouncer in transaction mode in front of the cluster; stopped when dropped. Holds the
/// child (runuser, when root), pgbouncer's own pid from its pidfile, and its port.
struct PgBouncer(Child, u32, u16);

impl PgBouncer {
    fn start(dir: &Path, pg_port: u16, as_postgres: bool) -> PgBouncer {
        let (port, d) = (free_port(), dir.display());
        // auth_type = any: no passwords; the [databases] entry fixes the server-side user.
        let ini = format!(
            "[databases]\npostgres = host=127.0.0.1 port={pg_port} dbname=postgres user=postgres\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {d}\n\
             auth_type = any\npool_mode = transaction\ndefault_pool_size = {POOL}\n\
             min_pool_size = {POOL}\nreserve_pool_size = 0\nmax_client_conn = 1000\n\
             logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\nlog_connections = 0\n\
             log_disconnections = 0\nignore_startup_parameters = extra_float_digits,options\n"
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");
        let mut cmd = as_user(as_postgres, PGBOUNCER);
        // -q: its messages go to the logfile only.
        cmd.arg("-q").arg(dir.join("pgbouncer.ini"));
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let child = cmd.spawn().expect("spawn pgbouncer");
        let mut bouncer = PgBouncer(child, 0, port);
        // Ready once the pidfile names it and the port accepts connections (at most 20 s).
        for _ in 0..400 {
            let pid = std::fs::read_to_string(dir.join("pgbouncer.pid")).unwrap_or_default();
            let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if let Some(pid) = pid.trim().parse().ok().filter(|_| listening) {
                bouncer.1 = pid;
                return bouncer;
            }
            if let Ok(Some(status)) = bouncer.0.try_wait() {
                let log = std::fs::read_to_string(dir.join("pgbouncer.log"));
                panic!("pgbouncer exited ({status}): {}", log.unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pgbouncer did not start within 20 s");
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let pid = if self.1 == 0 { self.0.id() } else { self.1 };
        stop(&mut self.0, pid);
    }
}

/// A pgsidecar process (the release binary); stopped when dropped.
struct Sidecar(Child, SocketAddr);

impl Sidecar {
    /// Starts it with a pool of POOL backends and waits until they are all open.
    async fn start(url: &str, extra: &[&str]) -> Sidecar {
        let n = POOL.to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsidecar"));
        cmd.args(["--database-url", url, "--grpc-addr", "127.0.0.1:0"])
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--pool-max",
                &n,
                "--pool-min",
                &n,
            ])
            .args(["--failover-pool-min", "0", "--log-level", "warn"])
            .args(extra);
        // Its log goes to target/bench/pgsidecar.log (kept after the run, out of the way of
        // the table); stdout is read for the address, then drained for the life of the
        // process so that it never blocks on a full pipe.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/pgsidecar.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        let log = log.expect("open target/bench/pgsidecar.log");
        let cmd = cmd
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stderr(log);
        let cmd = cmd.stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn pgsidecar");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let _ = tx.send(lines.next().unwrap_or_default());
            lines.for_each(drop);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let grpc = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="));
        let Some(grpc) = grpc.and_then(|a| a.parse().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pgsidecar did not print its address ({line:?}); see target/bench/pgsidecar.log"
            );
        };
        let sidecar = Sidecar(child, grpc);
        // Runs must not time the pool's own start: wait (at most 30 s) until a query succeeds
        // and all POOL connections are open.
        for _ in 0..100 {
            let ready = async {
                let endpoint = Endpoint::from_shared(format!("http://{grpc}")).ok()?;
                let mut client = DataAccessClient::new(endpoint.connect().await.ok()?);
                let request = QueryRequest {
                    sql: "SELECT 1".to_owned(),
                    ..Default::default()
                };
                client.query(request).await.ok()?;
                let status = client.pool_status(PoolStatusRequest {}).await.ok()?;
                let pools = status.into_inner().pools;
                let primary = pools.into_iter().find(|p| p.name == "primary")?;
                (primary.total_connections as usize >= POOL).then_some(())
            };
            if let Ok(Some(())) = timeout(Duration::from_millis(300), ready).await {
                return sidecar;
            }
            sleep(Duration::from_millis(100)).await;
        }
        panic!("pgsidecar at {grpc} was not ready with {POOL} connections within 30 s");
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let pid = self.0.id();
        stop(&mut self.0, pid);
    }
}

/// The DDL extra: what clients saw while the table's shape changed under them.
#[derive(Serialize)]
struct DdlRun {
    load: Measured,
    /// Each DDL statement and how it went.
    statements: Vec<(String, String)>,
}

/// `SELECT *` point selects through pgsidecar at concurrency 32; a third and two thirds into
/// the measured part, a column is added to and dropped from the table.
async fn ddl_during_load(url: &str, spec: Spec) -> DdlRun {
    let admin = pg_connect(url).await.expect("admin connection");
    let timeout_20s = admin.batch_execute("SET statement_timeout = '20s'").await;
    timeout_20s.expect("statement_timeout");
    let (tx, rx) = oneshot::channel();
    let load = tokio::spawn(measure(spec.clone(), Some(tx)));
    let _ = timeout(Duration::from_secs(90), rx).await;
    let mut statements = Vec::new();
    for sql in [
        "ALTER TABLE pgbench_accounts ADD COLUMN bench_note text DEFAULT 'ddl'",
        "ALTER TABLE pgbench_accounts DROP COLUMN IF EXISTS bench_note",
    ] {
        sleep(Duration::from_millis(spec.secs * 1000 / 3)).await;
        let t = Instant::now();
        let outcome = match timeout(Duration::from_secs(30), admin.batch_execute(sql)).await {
            Ok(Ok(())) => format!("ok in {} ms", t.elapsed().as_millis()),
            Ok(Err(e)) => format!("failed: {}", pg_err(e)),
            Err(_) => "timed out".to_owned(),
        };
        statements.push((sql.to_owned(), outcome));
    }
    let load = load.await.expect("DDL load run");
    DdlRun { load, statements }
}

fn main() {
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

async fn run(secs: u64) {
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
    let spec = |target, sidecar: &Sidecar, workload, concurrency| {
        let (endpoint, cpu_pid) = match target {
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
    report(secs, runs, pgbench_runs, [on, off], threads, ddl, versions);
}

/// Renders a Markdown table padded to its column widths, so that it reads in a terminal too;
/// the first `left` columns are left-aligned, the others right-aligned.
fn markdown(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let cells = cells.iter().zip(&widths).enumerate().map(|(i, (c, &w))| {
            if i < left {
                format!("{c:<w$}")
            } else {
                format!("{c:>w$}")
            }
        });
        format!("| {} |\n", cells.collect::<Vec<_>>().join(" | "))
    };
    let rule = widths.iter().enumerate().map(|(i, &w)| {
        let dashes = "-".repeat(w + 1);
        if i < left {
            format!(":{dashes}")
        } else {
            format!("{dashes}:")
        }
    });
    let mut out = line(header.to_vec());
    out += &format!("|{}|\n", rule.collect::<Vec<_>>().join("|"));
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The table's rows: each run with its ratios; pgbench's figures after the select rows.
fn table(runs: &[Measured], pgbench_runs: &[PgbenchRun]) -> Vec<Vec<String>> {
    let qps_of = |m: &Measured, target: Target| {
        let same = |r: &&Measured| r.workload == m.workload && r.concurrency == m.concurrency;
        let found = runs.iter().filter(same).find(|r| r.target == target.name());
        found.map_or(f64::NAN, |r| r.qps)
    };
    let mut rows = Vec::new();
    for m in runs {
        let (direct, bouncer) = (qps_of(m, Target::Direct), qps_of(m, Target::Bouncer));
        let cpu = m.cpu_us_per_query.map_or("—".into(), |c| format!("{c:.1}"));
        let (p50, p99) = (format!("{:.1}", m.p50_us), format!("{:.1}", m.p99_us));
        let (label, conc) = (m.workload.to_owned(), m.concurrency.to_string());
        let ratios = [m.qps / direct, m.qps / bouncer].map(|r| format!("{r:.2}"));
        let [to_direct, to_bouncer] = ratios;
        let (qps, errors) = (format!("{:.0}", m.qps), m.errors.to_string());
        let target = m.target.to_owned();
        rows.push(vec![
            label, conc, target, qps, p50, p99, to_direct, to_bouncer, errors, cpu,
        ]);
        if m.workload != "select" || m.target != "pgsidecar" {
            continue;
        }
        for p in pgbench_runs
            .iter()
            .filter(|p| p.concurrency == m.concurrency)
        {
            let (label, conc) = (m.workload.to_owned(), m.concurrency.to_string());
            let target = format!("pgbench {} -M {}", p.via, p.mode);
            let ratios = [p.tps / direct, p.tps / bouncer].map(|r| format!("{r:.2}"));
            let [to_direct, to_bouncer] = ratios;
            let (tps, failed, dash) = (format!("{:.0}", p.tps), p.failed.to_string(), "—");
            let avg = format!("avg {:.1}", p.latency_avg_ms * 1000.0);
            let row = [
                label,
                conc,
                target,
                tps,
                avg,
                dash.into(),
                to_direct,
                to_bouncer,
            ];
            rows.push(row.into_iter().chain([failed, dash.into()]).collect());
        }
    }
    rows
}

/// The targets, each with the figures it was judged on: [target, measured, met].
fn checks(runs: &[Measured], [on, off]: &[Measured; 2]) -> Vec<[String; 3]> {
    let get = |w: Workload, c: usize, t: Target| {
        let same = |m: &&Measured| m.workload == w.name() && m.concurrency == c;
        runs.iter()
            .filter(same)
            .find(|m| m.target == t.name())
            .expect("run")
    };
    let vs = |a: f64, b: f64| format!("{:.2}× ({a:.0} vs {b:.0} q/s)", a / b);
    let met = |ok: bool| if ok { "met" } else { "NOT met" }.to_owned();
    let mut out = Vec::new();
    for w in [Workload::Select, Workload::Mix] {
        let name = w.name();
        let s = get(w, 32, Target::Sidecar).qps;
        let (d, b) = (
            get(w, 32, Target::Direct).qps,
            get(w, 32, Target::Bouncer).qps,
        );
        let target = format!("{name}: c=32 pgsidecar ≥ 1.2× PgBouncer");
        out.push([target, vs(s, b), met(s >= 1.2 * b)]);
        out.push([
            format!("{name}: c=32 pgsidecar ≥ 0.6× direct"),
            vs(s, d),
            met(s >= 0.6 * d),
        ]);
        let (d, s) = (
            get(w, 1, Target::Direct).p50_us,
            get(w, 1, Target::Sidecar).p50_us,
        );
        let measured = format!("{:+.1} µs ({s:.1} vs {d:.1} µs)", s - d);
        let target = format!("{name}: c=1 pgsidecar p50 ≤ direct p50 + 80 µs");
        out.push([target, measured, met(s - d <= 80.0)]);
    }
    let target = "statement cache on ≥ 1.5× off (select, c=32)".to_owned();
    out.push([target, vs(on.qps, off.qps), met(on.qps >= 1.5 * off.qps)]);
    let sidecar = runs.iter().filter(|m| m.target == "pgsidecar");
    let cpu = sidecar.filter_map(|m| Some((m.cpu_us_per_query?, m.workload, m.concurrency)));
    let worst = cpu.max_by(|a, b| a.0.total_cmp(&b.0));
    let measured = worst.map_or("not measured".into(), |(c, w, n)| {
        format!("{c:.1} µs ({w} c={n})")
    });
    let target = "pgsidecar CPU ≤ 20 µs per query (worst run of the table)".to_owned();
    out.push([
        target,
        measured,
        met(worst.is_some_and(|(c, ..)| c <= 20.0)),
    ]);
    let at256 = runs
        .iter()
        .filter(|m| m.target == "pgsidecar" && m.concurrency == 256);
    let (errors, queries) = at256.fold((0, 0), |(e, q), m| (e + m.errors, q + m.queries));
    let measured = format!("{errors} errors in {queries} queries (both workloads)");
    let target = "256 concurrent pgsidecar clients, zero errors".to_owned();
    out.push([target, measured, met(errors == 0 && queries > 0)]);
    out
}

const HEADER: [&str; 10] = [
    "workload",
    "conc",
    "target",
    "q/s",
    "p50 µs",
    "p99 µs",
    "×direct",
    "×pgbouncer",
    "errors",
    "proxy CPU µs/q",
];

/// Prints the table, the extras and the targets; writes the JSON and Markdown reports.
fn report(
    secs: u64,
    runs: Vec<Measured>,
    pgbench: Vec<PgbenchRun>,
    cache: [Measured; 2],
    threads: Measured,
    ddl: DdlRun,
    [pg_version, bouncer_version, loadavg]: [String; 3],
) {
    let results = markdown(&HEADER, &table(&runs, &pgbench), 3);
    let [on, off] = &cache;
    let cpu = |m: &Measured| m.cpu_us_per_query.map_or("—".into(), |c| format!("{c:.1}"));
    let d = &ddl.load;
    let mut extras = vec![
        format!(
            "Statement cache, select c=32: on {:.0} q/s, off {:.0} q/s, {:.2}× (errors {} / {}; \
             pgsidecar cache hits/misses/invalidations on {:?}, off {:?})",
            on.qps,
            off.qps,
            on.qps / off.qps,
            on.errors,
            off.errors,
            on.sidecar_cache,
            off.sidecar_cache
        ),
        format!(
            "Runtime, select c=32: one thread (the default) {:.0} q/s at {} pgsidecar CPU µs/q; \
             one worker per core (`--worker-threads 0`) {:.0} q/s at {} µs/q (errors {} / {})",
            on.qps,
            cpu(on),
            threads.qps,
            cpu(&threads),
            on.errors,
            threads.errors
        ),
        format!(
            "DDL during a pgsidecar load run (SELECT *, c=32): {} client-visible errors in {} \
             queries ({:.0} q/s, p99 {:.1} µs; cache hits/misses/invalidations {:?})",
            d.errors, d.queries, d.qps, d.p99_us, d.sidecar_cache
        ),
    ];
    extras.extend(
        ddl.statements
            .iter()
            .map(|(sql, outcome)| format!("`{sql}`: {outcome}")),
    );
    extras.extend(d.error_samples.iter().map(|e| format!("client error: {e}")));
    let extras: String = extras.iter().map(|e| format!("- {e}\n")).collect();
    let checks = checks(&runs, &cache);
    let rows: Vec<Vec<String>> = checks.iter().map(|c| c.to_vec()).collect();
    let targets = markdown(&["target", "measured", "met"], &rows, 3);
    println!("\n{results}\n{extras}\n{targets}");

    let command = match std::env::var("BENCH_SECONDS") {
        Ok(v) => format!("BENCH_SECONDS={v} cargo bench --bench compare"),
        Err(_) => "cargo bench --bench compare".to_owned(),
    };
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let proc_field = |file: &str, key: &str| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut pairs = text.lines().filter_map(|l| l.split_once(':'));
        let value = pairs
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_owned());
        value.unwrap_or_else(|| "unknown".to_owned())
    };
    let cpu = proc_field("/proc/cpuinfo", "model name");
    let mem = proc_field("/proc/meminfo", "MemTotal");
    let settings = format!(
        "every run: {}s warm-up, then {secs} s measured. Backend pool {POOL} for both PgBouncer \
         (transaction mode, default_pool_size = min_pool_size = {POOL}) and pgsidecar \
         (--pool-min = --pool-max = {POOL}, --failover-pool-min 0, other settings default). \
         pgsidecar workers share min(concurrency, {MAX_CHANNELS}) gRPC channels; direct and \
         PgBouncer workers hold one connection each. One tokio multi-thread load generator in \
         the bench process; aid uniform in 1..={ACCOUNTS}. Latency is client-side per \
         operation; errors include the warm-up. Proxy CPU = utime+stime of the PgBouncer or \
         pgsidecar process over the measured part / successful queries (CLK_TCK {}).",
        WARMUP.as_secs(),
        CLK_TCK.get().expect("CLK_TCK")
    );
    let met = |[t, m, ok]: &[String; 3]| serde_json::json!({"target": t, "measured": m, "met": ok == "met"});
    let targets_json: Vec<_> = checks.iter().map(met).collect();
    let json = serde_json::json!({
        "date": date, "command": command, "settings": settings, "seconds": secs, "pool": POOL,
        "machine": { "nproc": nproc, "cpu": cpu, "memory": mem },
        "versions": { "postgresql": pg_version, "pgbouncer": bouncer_version },
        "loadavg_at_start": loadavg,
        "runs": runs, "pgbench": pgbench, "targets": targets_json, "ddl_during_load": ddl,
        "statement_cache": { "on": on, "off": off, "ratio": on.qps / off.qps },
        "runtime": { "one_thread": on, "per_core": threads, "ratio": on.qps / threads.qps },
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let body = serde_json::to_string_pretty(&json).expect("json") + "\n";
    std::fs::write(root.join("target/bench/compare.json"), body).expect("write compare.json");

    let doc = format!(
        "# Benchmarks\n\nWritten by `benches/compare.rs` (see `benches/README.md`); every \
         figure comes from the one run described here. Rerun the command to refresh; do not \
         edit by hand.\n\n## Run\n\n- Command: `{command}`\n- Date: {date}\n- Machine: {nproc} \
         CPUs ({cpu}), {mem} memory; load average (1, 5, 15 min) at the start: {loadavg}\n- PostgreSQL: {pg_version}\n- PgBouncer: {bouncer_version}\n\
         - Settings: {settings}\n\n## Results\n\nRatios are throughput over the direct or \
         PgBouncer run of the same workload and concurrency. The pgbench rows are pgbench's own \
         figures for the select workload (`-S`, one select per transaction); pgbench reports \
         only the average latency, shown in the p50 column as `avg`.\n\n{results}\n\
         ## Extras\n\n{extras}\n## Targets\n\n{targets}"
    );
    std::fs::create_dir_all(root.join("docs")).expect("mkdir docs");
    std::fs::write(root.join("docs/BENCHMARKS.md"), doc).expect("write docs/BENCHMARKS.md");
    eprintln!(
        "compare: wrote target/bench/compare.json, docs/BENCHMARKS.md; pgsidecar log in target/bench/pgsidecar.log"
    );
}
