//! The load generator: one connection kind per target, closed-loop workers, the tally of
//! latencies and errors, CPU per query from /proc, and DDL during load.

use super::*;

/// One worker's connection to its target.
pub(crate) enum Conn {
    /// Named statements (select, update), prepared once per connection.
    Direct(tokio_postgres::Client, [tokio_postgres::Statement; 2]),
    /// Unnamed statements (parse, bind, execute in one round trip): PgBouncer 1.18 in
    /// transaction mode keeps no named prepared statements between transactions.
    Bouncer(tokio_postgres::Client),
    Sidecar(DataAccessClient<Channel>),
}

impl Conn {
    /// Opens a connection, bounded by CONNECT_TIMEOUT.
    pub(crate) async fn open(
        spec: &Spec,
        channel: &Option<Channel>,
        select: &str,
    ) -> Result<Conn, String> {
        let open = async {
            Ok(match spec.target {
                Target::Direct => {
                    let client = pg_connect(&spec.endpoint).await?;
                    let select = client.prepare(select).await.map_err(pg_err)?;
                    let update = client.prepare(UPDATE_SQL).await.map_err(pg_err)?;
                    Conn::Direct(client, [select, update])
                }
                Target::Bouncer => Conn::Bouncer(pg_connect(&spec.endpoint).await?),
                Target::Sidecar | Target::Leased | Target::Hop => {
                    Conn::Sidecar(DataAccessClient::new(channel.clone().expect("channel")))
                }
            })
        };
        let opened = timeout(CONNECT_TIMEOUT, open).await;
        opened.unwrap_or_else(|_| Err("connect timed out".into()))
    }

    /// Runs the select (which must return one row) or, with `delta`, the update.
    pub(crate) async fn call(
        &mut self,
        select: &str,
        aid: i32,
        delta: Option<i32>,
    ) -> Result<(), Failure> {
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
                let response = client.query(request).await.map_err(|s| {
                    let retry = s.get_details_retry_info().and_then(|r| r.retry_delay);
                    Failure(format!("{:?}: {}", s.code(), s.message()), retry)
                });
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
            Err(format!("{rows} rows instead of 1").into())
        }
    }

    /// A PostgreSQL connection closed by the server or PgBouncer must be replaced.
    pub(crate) fn broken(&self) -> bool {
        match self {
            Conn::Direct(client, _) | Conn::Bouncer(client) => client.is_closed(),
            Conn::Sidecar(_) => false,
        }
    }
}

/// A failed operation: its message and the delay the server asked for (gRPC RetryInfo,
/// which pgsidecar sends with RESOURCE_EXHAUSTED and UNAVAILABLE).
pub(crate) struct Failure(pub(crate) String, pub(crate) Option<Duration>);

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure(message, None)
    }
}

/// The longest pause a worker takes after a failure, whatever RetryInfo asks.
pub(crate) const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

pub(crate) fn int(n: i32) -> Value {
    let kind = Some(Kind::IntValue(i64::from(n)));
    Value { kind }
}

pub(crate) fn pg_err(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

pub(crate) async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connected = tokio_postgres::connect(url, tokio_postgres::NoTls).await;
    let (client, conn) = connected.map_err(pg_err)?;
    tokio::spawn(conn);
    Ok(client)
}

/// Latencies of the measured part (ns) and errors. A worker keeps a plain list, not a
/// histogram of its own: at 10,000 workers that many histograms (~150 KB each) would cost
/// more memory than the run's latencies do.
pub(crate) struct Tally(pub(crate) Vec<u64>, pub(crate) u64, pub(crate) Vec<String>);

/// The run's latency histogram: ns, 1 µs to 60 s, 3 significant figures.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds")
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally(Vec::new(), 0, Vec::new())
    }
    /// Counts an error and notes its message.
    pub(crate) fn error(&mut self, message: String) {
        self.1 += 1;
        self.note(message);
    }
    /// Keeps a message if it is one of the first three distinct ones.
    pub(crate) fn note(&mut self, message: String) {
        if self.2.len() < 3 && !self.2.contains(&message) {
            self.2.push(message);
        }
    }
    /// Adds `other`'s errors to these and its latencies to `hist`.
    pub(crate) fn merge(&mut self, other: Tally, hist: &mut Histogram<u64>) {
        other.0.iter().for_each(|&ns| hist.saturating_record(ns));
        self.1 += other.1;
        other.2.into_iter().for_each(|m| self.note(m));
    }
}

/// Connects, waits at the barrier for the others, then runs operations back to back for the
/// warm-up and the measured part, recording the latency of those started in the latter.
pub(crate) async fn worker(
    spec: Spec,
    seed: u64,
    channel: Option<Channel>,
    barrier: Arc<Barrier>,
    connecting: Arc<Semaphore>,
) -> Tally {
    let mut tally = Tally::new();
    let select = if spec.workload == Workload::SelectStar {
        SELECT_STAR_SQL
    } else {
        SELECT_SQL
    };
    // At most CONNECTING connection setups at once (1,000 clients connecting in one burst
    // would overflow listen backlogs and wait out SYN retransmits), and the wait for a turn
    // within CONNECT_TIMEOUT too, so that the connecting phase is bounded as a whole.
    let open = async {
        let _turn = connecting.acquire().await.expect("never closed");
        Conn::open(&spec, &channel, select).await
    };
    let opened = timeout(CONNECT_TIMEOUT, open).await;
    let opened = opened.unwrap_or_else(|_| Err("no turn to connect in time".into()));
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
        match call.unwrap_or_else(|_| Err("timed out".to_owned().into())) {
            Ok(()) if start >= from => tally.0.push(start.elapsed().as_nanos() as u64),
            Ok(()) => {}
            Err(Failure(e, retry)) => {
                tally.error(e);
                // As a client honouring RetryInfo would (at most MAX_RETRY_PAUSE, never past
                // the window): rejected workers retrying at once would turn an overload into
                // a storm of rejections that the run then measures instead. Every failed
                // attempt still counts as an error.
                if let Some(pause) = retry {
                    let until = Instant::now() + pause.min(MAX_RETRY_PAUSE);
                    sleep_until(until.min(to).into()).await;
                }
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
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; after its ')' come fields 3 (state) onwards.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// pgsidecar's statement-cache counters: hits, misses, invalidations.
pub(crate) async fn sidecar_cache(channel: Option<&Channel>) -> Option<[u64; 3]> {
    let mut client = DataAccessClient::new(channel?.clone());
    let status = timeout(CONNECT_TIMEOUT, client.pool_status(PoolStatusRequest {})).await;
    let cache = status.ok()?.ok()?.into_inner().statement_cache?;
    Some([cache.hits, cache.misses, cache.invalidations])
}

/// Drives one load run and measures it; `started` is told when the measured part begins.
pub(crate) async fn measure(spec: Spec, started: Option<oneshot::Sender<()>>) -> Measured {
    let (target, workload, c) = (spec.target, spec.workload, spec.concurrency);
    let names = (workload.name(), target.name());
    eprintln!("compare: {} {} c={c}, {} s", names.0, names.1, spec.secs);
    let mut channels = Vec::new();
    while target.grpc() && channels.len() < channels_for(c) {
        let endpoint = Endpoint::from_shared(format!("http://{}", spec.endpoint)).expect("uri");
        let channel = timeout(CONNECT_TIMEOUT, endpoint.tcp_nodelay(true).connect()).await;
        channels.push(channel.expect("in time").expect("connect to pgsidecar"));
    }
    let cache0 = sidecar_cache(channels.first()).await;
    // Connecting is not timed: the window starts when every worker has connected (or
    // failed to, within CONNECT_TIMEOUT).
    let barrier = Arc::new(Barrier::new(c + 1));
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..c {
        let channel = channels.get(w % channels.len().max(1)).cloned();
        let (seed, barrier, connecting) = (w as u64 + 1, barrier.clone(), connecting.clone());
        workers.spawn(worker(spec.clone(), seed, channel, barrier, connecting));
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
    let (mut all, mut hist) = (Tally::new(), histogram());
    let deadline = tokio::time::Instant::from_std(to) + OP_TIMEOUT + CONNECT_TIMEOUT;
    while let Ok(Some(tally)) = tokio::time::timeout_at(deadline, workers.join_next()).await {
        all.merge(tally.expect("worker task"), &mut hist);
    }
    if !workers.is_empty() {
        // Past every bound an operation has; should it happen, they count as failures.
        all.1 += workers.len() as u64;
        all.note(format!("{} workers stuck past the end", workers.len()));
        workers.abort_all();
    }
    let cache1 = sidecar_cache(channels.first()).await;
    let queries = hist.len();
    let clk = *CLK_TCK.get().expect("CLK_TCK") as f64;
    let cpu = cpu0.zip(cpu1).filter(|_| queries > 0);
    let cache = cache0.zip(cache1);
    Measured {
        target: names.1,
        workload: names.0,
        concurrency: c,
        queries,
        qps: queries as f64 / spec.secs as f64,
        p50_us: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
        errors: all.1,
        cpu_us_per_query: cpu.map(|(a, b)| (b - a) as f64 * 1e6 / clk / queries as f64),
        error_samples: all.2,
        sidecar_cache: cache.map(|(a, b)| [0, 1, 2].map(|i| b[i].saturating_sub(a[i]))),
    }
}

/// The DDL extra: what clients saw while the table's shape changed under them.
#[derive(Serialize)]
pub(crate) struct DdlRun {
    pub(crate) load: Measured,
    /// Each DDL statement and how it went.
    pub(crate) statements: Vec<(String, String)>,
}

/// `SELECT *` point selects through pgsidecar at concurrency 32; a third and two thirds into
/// the measured part, a column is added to and dropped from the table.
pub(crate) async fn ddl_during_load(url: &str, spec: Spec) -> DdlRun {
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
