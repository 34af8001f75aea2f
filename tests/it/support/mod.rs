//! Test support: runs the real pgsidecar binary on ephemeral ports against the real
//! PostgreSQL, and offers a generated client, a direct admin connection and value helpers.

pub mod cluster;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pgsidecar::proto::data_access_client::DataAccessClient;
use pgsidecar::proto::{ArrayValue, QueryRequest, QueryResponse, Value, value::Kind};
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// The PostgreSQL the tests use: `DATABASE_URL`, else the local server.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A unique lowercase identifier for tables, types and schemas of one test.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running pgsidecar process; killed when dropped.
pub struct Sidecar {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Sidecar {
    /// Starts the binary with small pools (so parallel tests stay under max_connections) and
    /// `extra` flags, and waits for its "listening" line.
    pub fn start(extra: &[&str]) -> Sidecar {
        Self::start_with_env(extra, &[])
    }

    /// As [`Sidecar::start`], with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Sidecar {
        Self::start_wrapped(&[], extra, env)
    }

    /// As [`Sidecar::start_with_env`], run by `wrapper` (a program that execs its
    /// arguments, e.g. `prlimit --nofile=256:4096 --`), which keeps the sidecar's pid.
    pub fn start_wrapped(wrapper: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Sidecar {
        let url = database_url();
        let mut args = vec![
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--pool-max",
            "4",
            "--pool-min",
            "1",
            "--failover-pool-max",
            "2",
            "--failover-pool-min",
            "0",
        ];
        args.extend_from_slice(extra);
        let bin = env!("CARGO_BIN_EXE_pgsidecar");
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.args(&args)
            .env_remove("DATABASE_URL")
            .env("PGSIDECAR_LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn pgsidecar");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        {
            let sink = stderr.clone();
            let err = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                // Read as bytes: a line that is not UTF-8 must not end the capture (and then
                // fill the pipe until the sidecar blocks writing its log).
                let mut err = BufReader::new(err);
                let mut line = Vec::new();
                while err.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    let mut s = sink.lock().expect("lock");
                    s.push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
            });
        }
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read listening line");
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| {
                    panic!("no {key} in {line:?}; stderr: {}", stderr.lock().unwrap())
                })
                .parse()
                .expect("address")
        };
        let (grpc, http) = (addr("grpc="), addr("http="));
        Sidecar {
            child,
            grpc,
            http,
            stderr,
        }
    }

    /// Starts one with a pool of `pool` connections, all open from the start, under an
    /// application_name of its own (returned), so that `terminate_backends` reaches only
    /// this sidecar's connections.
    pub fn start_tagged(prefix: &str, pool: u32) -> (Sidecar, String) {
        Self::start_tagged_with(prefix, pool, &[])
    }

    /// As [`Sidecar::start_tagged`], with `extra` arguments.
    pub fn start_tagged_with(prefix: &str, pool: u32, extra: &[&str]) -> (Sidecar, String) {
        let app = unique(prefix);
        let url = format!("{}?application_name={app}", database_url());
        let pool = pool.to_string();
        let mut args = vec![
            "--database-url",
            &url,
            "--pool-max",
            &pool,
            "--pool-min",
            &pool,
            "--failover-pool-min",
            "0",
        ];
        args.extend_from_slice(extra);
        (Sidecar::start(&args), app)
    }

    /// A generated client connected over TCP.
    pub async fn client(&self) -> DataAccessClient<Channel> {
        DataAccessClient::new(self.channel().await)
    }

    /// A channel to the gRPC port, for any service (DataAccess, health).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect to sidecar")
    }

    /// What the process has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pgsidecar did not exit within 15 s of SIGTERM");
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A direct connection for setting up and checking the database.
pub async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    client
}

/// A request for `sql` with `params`.
pub fn request(sql: &str, params: Vec<Value>) -> QueryRequest {
    QueryRequest {
        sql: sql.to_owned(),
        params,
        ..Default::default()
    }
}

/// Runs a Query.
pub async fn query(
    client: &mut DataAccessClient<Channel>,
    sql: &str,
    params: Vec<Value>,
) -> Result<QueryResponse, tonic::Status> {
    client
        .query(request(sql, params))
        .await
        .map(tonic::Response::into_inner)
}

/// Reads a stream to the error that must end it; `what` says why one was expected.
pub async fn stream_error<T>(stream: &mut tonic::Streaming<T>, what: &str) -> tonic::Status {
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended cleanly: {what}"),
            Err(e) => return e,
        }
    }
}

/// The single value of a one-row, one-column result.
pub fn scalar(resp: &QueryResponse) -> &Value {
    assert_eq!(resp.rows.len(), 1, "one row expected: {resp:?}");
    assert_eq!(resp.rows[0].values.len(), 1, "one column expected");
    &resp.rows[0].values[0]
}

/// `ErrorInfo` reason and metadata of a failed call, asserting the domain.
pub fn error_info(status: &tonic::Status) -> (String, std::collections::HashMap<String, String>) {
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "pgsidecar");
    (info.reason.clone(), info.metadata.clone())
}

/// The field named by the first `BadRequest` violation, if any.
pub fn bad_field(status: &tonic::Status) -> Option<String> {
    status
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
}

pub fn null() -> Value {
    Value {
        kind: Some(Kind::NullValue(0)),
    }
}
pub fn boolean(b: bool) -> Value {
    Value {
        kind: Some(Kind::BoolValue(b)),
    }
}
pub fn int(n: i64) -> Value {
    Value {
        kind: Some(Kind::IntValue(n)),
    }
}
pub fn float(x: f64) -> Value {
    Value {
        kind: Some(Kind::FloatValue(x)),
    }
}
pub fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::TextValue(s.to_owned())),
    }
}
pub fn bytes(b: &[u8]) -> Value {
    Value {
        kind: Some(Kind::BytesValue(b.to_vec())),
    }
}
pub fn numeric(s: &str) -> Value {
    Value {
        kind: Some(Kind::NumericValue(s.to_owned())),
    }
}
pub fn date(s: &str) -> Value {
    Value {
        kind: Some(Kind::DateValue(s.to_owned())),
    }
}
pub fn uuid(s: &str) -> Value {
    Value {
        kind: Some(Kind::UuidValue(s.to_owned())),
    }
}
pub fn json(s: &str) -> Value {
    Value {
        kind: Some(Kind::JsonValue(s.to_owned())),
    }
}
pub fn timestamp(seconds: i64, nanos: i32) -> Value {
    Value {
        kind: Some(Kind::TimestampValue(prost_types::Timestamp {
            seconds,
            nanos,
        })),
    }
}
pub fn array(values: Vec<Value>) -> Value {
    Value {
        kind: Some(Kind::ArrayValue(ArrayValue {
            values,
            ..Default::default()
        })),
    }
}

/// A plain HTTP/1.1 GET on loopback; returns (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("http connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// Polls `check` every 50 ms for up to `limit`; true once it holds.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A Transaction stream driven by the test: requests go in through a channel, so a test may
/// send many before reading (pipelining) or drop the stream at any point.
pub struct TxStream {
    pub send: Option<tokio::sync::mpsc::Sender<pgsidecar::proto::TransactionRequest>>,
    pub recv: tonic::Streaming<pgsidecar::proto::TransactionResponse>,
}

impl TxStream {
    /// Opens the stream and sends `begin`.
    pub async fn open(
        client: &mut DataAccessClient<Channel>,
        begin: pgsidecar::proto::BeginTransaction,
    ) -> TxStream {
        use pgsidecar::proto::{TransactionRequest, transaction_request::Action};
        let (send, rx) = tokio::sync::mpsc::channel(4096);
        send.send(TransactionRequest {
            action: Some(Action::Begin(begin)),
        })
        .await
        .expect("queue begin");
        let recv = client
            .transaction(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("open transaction stream")
            .into_inner();
        TxStream {
            send: Some(send),
            recv,
        }
    }

    /// Sends any request.
    pub async fn send(&self, action: pgsidecar::proto::transaction_request::Action) {
        self.send
            .as_ref()
            .expect("not half-closed")
            .send(pgsidecar::proto::TransactionRequest {
                action: Some(action),
            })
            .await
            .expect("queue request");
    }

    /// Sends a statement.
    pub async fn execute(&self, id: &str, sql: &str, params: Vec<Value>) {
        self.send(pgsidecar::proto::transaction_request::Action::Execute(
            pgsidecar::proto::Statement {
                request_id: id.to_owned(),
                sql: sql.to_owned(),
                params,
                max_rows: 0,
            },
        ))
        .await;
    }

    pub async fn commit(&self) {
        self.send(pgsidecar::proto::transaction_request::Action::Commit(
            pgsidecar::proto::CommitTransaction {},
        ))
        .await;
    }

    pub async fn rollback(&self) {
        self.send(pgsidecar::proto::transaction_request::Action::Rollback(
            pgsidecar::proto::RollbackTransaction {},
        ))
        .await;
    }

    /// Half-closes the client side.
    pub fn half_close(&mut self) {
        self.send = None;
    }

    /// The next event; `Ok(None)` when the stream ended OK.
    pub async fn next(
        &mut self,
    ) -> Result<Option<pgsidecar::proto::transaction_response::Event>, tonic::Status> {
        let msg = tokio::time::timeout(Duration::from_secs(30), self.recv.message())
            .await
            .expect("an answer within 30 s")?;
        Ok(msg.map(|m| m.event.expect("event set")))
    }

    /// The next event, which must be a statement result; returns it.
    pub async fn result(&mut self) -> pgsidecar::proto::StatementResult {
        match self.next().await {
            Ok(Some(pgsidecar::proto::transaction_response::Event::Result(r))) => r,
            other => panic!("expected a statement result, got {other:?}"),
        }
    }
}

/// Code, reason and SQLSTATE of an in-band error.
pub fn rpc_error(status: &tonic_types::pb::Status) -> (Code, String, Option<String>) {
    use prost::Message;
    let info = status
        .details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.ErrorInfo"))
        .map(|a| tonic_types::pb::ErrorInfo::decode(a.value.as_slice()).expect("ErrorInfo"))
        .expect("ErrorInfo in the in-band status");
    assert_eq!(info.domain, "pgsidecar");
    (
        Code::from_i32(status.code),
        info.reason.clone(),
        info.metadata.get("sqlstate").cloned(),
    )
}

use tonic::Code;

/// How many other backends are running a statement whose text contains `marker` now.
pub async fn active_statements(db: &tokio_postgres::Client, marker: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND state = 'active' AND pid <> pg_backend_pid()",
        &[&format!("%{marker}%")],
    )
    .await
    .expect("pg_stat_activity")
    .get(0)
}

/// The readiness status (`dataaccess.v1.DataAccess`) the sidecar reports now; UNKNOWN when
/// the check itself fails.
pub async fn readiness(
    channel: &Channel,
) -> tonic_health::pb::health_check_response::ServingStatus {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let service = "dataaccess.v1.DataAccess".to_owned();
    match health.check(HealthCheckRequest { service }).await {
        Ok(r) => r.into_inner().status(),
        Err(_) => ServingStatus::Unknown,
    }
}

/// Terminates every backend whose application_name is `app`; returns how many.
pub async fn terminate_backends(db: &tokio_postgres::Client, app: &str) -> i64 {
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                WHERE application_name = $1";
    db.query_one(kill, &[&app]).await.expect("terminate").get(0)
}

/// Peak (VmHWM) and current (VmRSS) resident memory of a process, in KiB, from /proc.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Files in a temp dir of their own (certificates, token lists), removed on drop.
pub struct TempFiles(std::path::PathBuf);

impl TempFiles {
    pub fn new() -> TempFiles {
        let dir = std::env::temp_dir().join(unique("pgsidecar-files"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        TempFiles(dir)
    }

    /// Writes `name` with `text`; returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8 path").to_owned()
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The sidecar's metrics, parsed.
pub async fn scrape(sidecar: &Sidecar) -> prometheus_parse::Scrape {
    let (code, body) = http_get(sidecar.http, "/metrics").await;
    assert_eq!(code, 200);
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text")
}

/// Sum of a counter or gauge's samples whose labels include `labels`.
pub fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}
