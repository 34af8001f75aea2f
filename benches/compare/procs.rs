//! The processes a run drives: pgbench, PgBouncer, the sidecar, and the small helpers that
//! start, run and stop them (as the `postgres` user when root).

use super::*;

/// pgbench's own figures for the select workload.
#[derive(Serialize)]
pub(crate) struct PgbenchRun {
    pub(crate) via: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) concurrency: usize,
    pub(crate) tps: f64,
    pub(crate) latency_avg_ms: f64,
    pub(crate) failed: f64,
}

/// `pgbench -n -S -M <mode> -c C -j min(C,2) -T secs` against `port`.
pub(crate) async fn pgbench(
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
pub(crate) async fn pg_tool(program: &str, args: &str, limit_secs: u64) -> String {
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
pub(crate) fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().expect(what);
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {text}");
}

/// Trimmed stdout of a command, or "unknown".
pub(crate) fn output(program: &str, args: &[&str]) -> String {
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
pub(crate) fn as_user(as_postgres: bool, program: &str) -> Command {
    if !as_postgres {
        return Command::new(program);
    }
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", program]);
    c
}

pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Sends SIGTERM, waits up to 10 s, then kills.
pub(crate) fn stop(child: &mut Child, pid: u32) {
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
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// PgBouncer in transaction mode in front of the cluster; stopped when dropped. Holds the
/// child (runuser, when root), pgbouncer's own pid from its pidfile, and its port.
pub(crate) struct PgBouncer(pub(crate) Child, pub(crate) u32, pub(crate) u16);

impl PgBouncer {
    pub(crate) fn start(dir: &Path, pg_port: u16, as_postgres: bool) -> PgBouncer {
        let (port, d) = (free_port(), dir.display());
        // auth_type = any: no passwords; the [databases] entry fixes the server-side user.
        // Room for the most clients of any run (the table's largest concurrency) and a
        // backlog that takes them all connecting at once.
        let clients = BOUNCER_MAX_CLIENTS;
        let ini = format!(
            "[databases]\npostgres = host=127.0.0.1 port={pg_port} dbname=postgres user=postgres\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {d}\n\
             auth_type = any\npool_mode = transaction\ndefault_pool_size = {POOL}\n\
             min_pool_size = {POOL}\nreserve_pool_size = 0\nmax_client_conn = {clients}\n\
             listen_backlog = 4096\n\
             logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\nlog_connections = 0\n\
             log_disconnections = 0\nignore_startup_parameters = extra_float_digits,options\n"
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");
        // PgBouncer does not raise its own open-files limit, and runuser's PAM session sets
        // the soft limit back to 1024: a shell raises it (up to the hard limit) before exec,
        // so that max_client_conn clients plus the pool fit. -q: messages go to the logfile.
        let mut cmd = as_user(as_postgres, "sh");
        let fds = BOUNCER_MAX_CLIENTS + 2 * POOL + 64;
        let script = format!(
            "ulimit -n {fds} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\""
        );
        cmd.args(["-c", &script, PGBOUNCER, "-q"])
            .arg(dir.join("pgbouncer.ini"));
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
pub(crate) struct Sidecar(pub(crate) Child, pub(crate) SocketAddr);

impl Sidecar {
    /// Starts it with a pool of POOL backends and waits until they are all open.
    pub(crate) async fn start(url: &str, extra: &[&str]) -> Sidecar {
        Sidecar::start_with(url, extra, &[]).await
    }

    /// As [`Sidecar::start`], with `env` added to its environment. Settings a binary may not
    /// know yet go here rather than in `extra`: an unknown variable is ignored, an unknown
    /// flag makes it exit. PGSIDECAR_PIPELINE_* from the bench's own environment are
    /// removed first, so that a sidecar started without them runs with the defaults.
    pub(crate) async fn start_with(url: &str, extra: &[&str], env: &[(&str, String)]) -> Sidecar {
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
        cmd.env_remove("DATABASE_URL")
            .env_remove(PIPELINE_CONNECTIONS)
            .env_remove(PIPELINE_DEPTH);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let cmd = cmd.stdin(Stdio::null()).stderr(log);
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

/// Whether this pgsidecar binary knows a flag (its `--help` names it): PGSIDECAR_PIPELINE_*
/// take effect only in a binary that knows `--pipeline-connections`.
pub(crate) fn sidecar_knows(flag: &str) -> bool {
    let help = Command::new(env!("CARGO_BIN_EXE_pgsidecar"))
        .arg("--help")
        .stdin(Stdio::null())
        .output();
    help.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

/// A `/proc/<pid>/status` field in kB (VmHWM: peak resident set; VmRSS: resident now), as MiB.
pub(crate) fn status_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    let kib: f64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib / 1024.0)
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let pid = self.0.id();
        stop(&mut self.0, pid);
    }
}

/// The do-nothing `DataAccess` server of the Hop target (see hop.rs), its own process.
pub(crate) struct HopServer(pub(crate) Child, pub(crate) SocketAddr);

impl HopServer {
    /// Starts this bench binary again as the hop server and reads its address.
    pub(crate) fn start() -> HopServer {
        let exe = std::env::current_exe().expect("the bench binary");
        let mut child = Command::new(exe)
            .arg("--hop-server")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the hop server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let addr = line
            .trim()
            .strip_prefix("grpc=")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the hop server did not print its address ({line:?})");
        };
        HopServer(child, addr)
    }
}

impl Drop for HopServer {
    fn drop(&mut self) {
        let pid = self.0.id();
        stop(&mut self.0, pid);
    }
}
