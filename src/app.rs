//! The running sidecar: gRPC (DataAccess, health, reflection) and HTTP (metrics, pool JSON)
//! listeners, background tasks, and a graceful shutdown that flips health before draining.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State as AxumState;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codegen::http;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::{Config, ServerTls};
use crate::error::Error;
use crate::health::Health;
use crate::listen::Listener;
use crate::pool::{PoolError, Pools};
use crate::proto::data_access_server::DataAccessServer;
use crate::rpc::auth::BearerAuth;
use crate::rpc::{DataAccessService, State, Stats};
use crate::telemetry;

/// Why the sidecar could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The pools could not be built.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// Reflection descriptors could not be loaded.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A TLS file could not be read.
    #[error("cannot read TLS file {path:?}: {source}")]
    Tls {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A task of the server panicked or was aborted: the process must not report success.
    #[error("the {task} task crashed: {message}")]
    Crashed {
        /// Which task.
        task: &'static str,
        /// The panic message, or why it ended.
        message: String,
    },
}

/// The result of a joined task, a panic included: a crash is an error, never a success.
fn joined(
    task: &'static str,
    result: Result<Result<(), ServerError>, tokio::task::JoinError>,
) -> Result<(), ServerError> {
    result.unwrap_or_else(|e| {
        let message = if e.is_panic() {
            let panic = e.into_panic();
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into())
        } else {
            "cancelled".into()
        };
        Err(ServerError::Crashed { task, message })
    })
}

/// A started sidecar.
pub struct Running {
    /// The bound gRPC address (the real port when configured with port 0).
    pub grpc_addr: SocketAddr,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// Begins a graceful shutdown.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the sidecar has stopped.
    pub async fn wait(self) -> Result<(), ServerError> {
        joined("server", self.task.await)
    }
}

/// A bound listener and its real address (the port chosen when configured with port 0).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Binds the listeners and starts serving; returns once both listen.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    telemetry::metrics_handle();
    let pools = Pools::new(&config)?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health::new(reporter);
    health.start_serving().await;

    let (grpc_listener, grpc_addr) = bind(config.grpc_addr).await?;
    let (http_listener, http_addr) = bind(config.http_addr).await?;

    let (stopping_tx, stopping) = watch::channel(false);
    let pipeline = crate::pipeline::Pipeline::new(&config, &pools);
    let state = Arc::new(State {
        stopping,
        pipeline: pipeline.clone(),
        stats: Stats::new(config.slow_query),
        config: config.clone(),
        pools: pools.clone(),
        health: health.clone(),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Sent once health has flipped: the listeners stop and connections get GOAWAY.
    let (drain_tx, drain_rx) = watch::channel(false);
    spawn_pool_tasks(&config, &pools, &pipeline, &health, &shutdown_rx);

    let grpc = grpc_server(
        &config,
        &state,
        health_service,
        grpc_listener,
        drain_rx.clone(),
    )?;
    let http = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health/pool", get(pool_json))
        .with_state(state.clone());
    let http_listener = Listener::new(
        http_listener,
        "http",
        config.http_max_connections,
        None,
        false,
    );
    let http = serve_http(http_listener, http, config.handshake_timeout, drain_rx);

    let drain = Drain {
        grace: config.shutdown_grace,
        health,
        pools,
        pipeline,
        stopping: stopping_tx,
        drain: drain_tx,
    };
    let task = tokio::spawn(drain.run(
        shutdown_rx,
        tokio::spawn(grpc),
        tokio::spawn(async move {
            http.await;
            Ok(())
        }),
    ));
    tracing::info!(%grpc_addr, %http_addr, "pgsidecar listening");
    Ok(Running {
        grpc_addr,
        http_addr,
        shutdown: shutdown_tx,
        task,
    })
}

/// Prewarms the pools and gives the pipelined path its connections, then keeps probing
/// (readiness waits for the minimum to be open), and runs pool maintenance, until shutdown.
fn spawn_pool_tasks(
    config: &Config,
    pools: &Pools,
    pipeline: &crate::pipeline::Pipeline,
    health: &Health,
    shutdown: &watch::Receiver<bool>,
) {
    let (pools_, health, stop) = (pools.clone(), health.clone(), shutdown.clone());
    let filler = pipeline.clone();
    let interval = config.health_check_interval;
    tokio::spawn(async move {
        match pools_.prewarm().await {
            Ok(n) => tracing::info!(connections = n, "pools prewarmed"),
            Err(e) => tracing::warn!(error = %e, "prewarm failed; will keep probing"),
        }
        filler.fill().await;
        health.run_probe(pools_, interval, stop).await;
    });
    // Often enough that an idle timeout is honoured within about a second of its due.
    let every = config.idle_timeout.min(std::time::Duration::from_secs(1));
    tokio::spawn(pools.clone().run_maintenance(
        every,
        config.idle_timeout,
        config.max_lifetime,
        shutdown.clone(),
    ));
    tokio::spawn(
        pipeline
            .clone()
            .run_maintenance(every, config.idle_timeout, shutdown.clone()),
    );
    tokio::spawn(
        pools
            .clone()
            .run_replica_probe(config.replica_probe_interval, shutdown.clone()),
    );
}

/// The gRPC server, serving until `drain`: DataAccess behind bearer-token auth, health,
/// reflection, the metrics and oversized-request layers, TLS when configured.
fn grpc_server<H: tonic_health::pb::health_server::Health>(
    config: &Config,
    state: &Arc<State>,
    health_service: tonic_health::pb::health_server::HealthServer<H>,
    listener: TcpListener,
    drain: watch::Receiver<bool>,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + use<H>, ServerError> {
    let grpc_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.grpc_addr,
        source,
    })?;
    let limit = config.limits.max_message_bytes;
    let data_access = DataAccessServer::new(DataAccessService::new(state.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    // Only DataAccess asks for a token: health must answer probes, and reflection describes
    // nothing but the public contract.
    let auth = BearerAuth::new(&config.auth_tokens);
    warn_if_exposed(grpc_addr, config.tls.is_some(), auth.enabled());
    let data_access = InterceptedService::new(data_access, auth);
    let (reflection_v1, reflection_v1alpha) = if config.reflection {
        let v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        (Some(v1), Some(v1alpha))
    } else {
        (None, None)
    };
    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(server_tls(tls)?)?;
    }
    // tonic's own incoming retries a failed accept at once, spinning a core when out of file
    // descriptors, and holds connections that never speak; this one pauses, caps and times
    // out (see listen.rs).
    let incoming = Listener::new(
        listener,
        "grpc",
        config.grpc_max_connections,
        Some(config.handshake_timeout),
        config.tls.is_some(),
    )
    .incoming();
    let oversized: fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> =
        oversized_is_invalid_argument;
    Ok(builder
        .tcp_nodelay(true)
        // No BDP pings: beside its app on loopback there is no bandwidth-delay product to
        // learn, and the pings cost a frame and a wakeup per burst (measured: c=32 select
        // load went from 9.7k to 12.3k q/s without them).
        .http2_adaptive_window(Some(false))
        // A client that vanished without closing its connection (host gone, network cut)
        // is noticed by these pings, which ends its streams and rolls back its transactions.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .max_concurrent_streams(Some(config.limits.max_concurrent_streams))
        // Outermost: metrics see the status the client gets, after the mapping below.
        .layer(telemetry::grpc::GrpcMetricsLayer)
        .layer(tower::util::MapResponseLayer::new(oversized))
        .add_service(health_service)
        .add_service(data_access)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, wait_for(drain)))
}

/// Serves the HTTP port until `drain`, then lets open requests finish. hyper's header read
/// timeout (`timeout`) closes a connection that sends no request, trickles its headers
/// (slowloris) or idles between keep-alive requests: axum's own `serve` sets no timer, so
/// those were held forever.
async fn serve_http(
    listener: Listener,
    router: axum::Router,
    timeout: std::time::Duration,
    drain: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let stop = wait_for(drain);
    tokio::pin!(stop);
    loop {
        let io = tokio::select! {
            io = listener.accept() => io,
            _ = &mut stop => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What the shutdown sequence works with.
struct Drain {
    grace: std::time::Duration,
    health: Health,
    pools: Pools,
    pipeline: crate::pipeline::Pipeline,
    /// Tells open streams that the grace period is nearly over.
    stopping: watch::Sender<bool>,
    /// Stops the listeners.
    drain: watch::Sender<bool>,
}

impl Drain {
    /// Waits for the shutdown signal, then: health NOT_SERVING, listeners stopped, calls
    /// given the grace period, streams still open near its end told why, CancelRequests
    /// delivered, pools closed. A crashed server task is an error.
    async fn run(
        self,
        mut on_shutdown: watch::Receiver<bool>,
        grpc: JoinHandle<Result<(), tonic::transport::Error>>,
        http: JoinHandle<Result<(), ServerError>>,
    ) -> Result<(), ServerError> {
        let _ = on_shutdown.wait_for(|stop| *stop).await;
        // Health flips first, so probes and Watch subscribers hear NOT_SERVING before
        // connections are told to go away; then the listeners stop and the drain begins.
        self.health.shutting_down().await;
        tokio::time::sleep(HEALTH_LEAD).await;
        let _ = self.drain.send(true);
        // Open transactions may finish within the grace period; those still open when
        // little of it is left are rolled back and told so (UNAVAILABLE SHUTTING_DOWN)
        // while the process can still answer them.
        let grace = self.grace;
        let left = (grace / 5).min(std::time::Duration::from_secs(1));
        let stopping = self.stopping;
        tokio::spawn(async move {
            tokio::time::sleep(grace - left).await;
            let _ = stopping.send(true);
        });
        let drained = tokio::time::timeout(grace, async { (grpc.await, http.await) }).await;
        // Statements stopped at the end of the grace period must hear their CancelRequest
        // before the process exits, or PostgreSQL runs them on, orphaned.
        crate::exec::cancels_delivered(std::time::Duration::from_secs(1)).await;
        self.pipeline.close();
        self.pools.close();
        match drained {
            Ok((g, h)) => {
                joined("gRPC server", g.map(|r| r.map_err(ServerError::from)))?;
                joined("HTTP server", h)?;
            }
            Err(_) => tracing::warn!(?grace, "shutdown grace period ended with calls in flight"),
        }
        Ok(())
    }
}

/// A listener beyond loopback serves whoever can reach it: say so when nothing guards it.
fn warn_if_exposed(addr: SocketAddr, tls: bool, tokens: bool) {
    if addr.ip().is_loopback() || (tls && tokens) {
        return;
    }
    let mut missing = Vec::new();
    if !tls {
        missing.push("TLS (PGSIDECAR_TLS_CERT, PGSIDECAR_TLS_KEY)");
    }
    if !tokens {
        missing.push("bearer tokens (PGSIDECAR_AUTH_TOKENS_FILE)");
    }
    tracing::warn!(
        %addr,
        missing = missing.join(", "),
        "gRPC listens beyond loopback without protection: anyone who can reach it can run SQL"
    );
}

/// The listener's TLS settings from the configured PEM files.
fn server_tls(tls: &ServerTls) -> Result<ServerTlsConfig, ServerError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServerError::Tls {
            path: path.to_owned(),
            source,
        })
    };
    let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

/// How long NOT_SERVING is out before the listeners stop: enough for the update to reach
/// Watch streams ahead of the GOAWAY on the same connection.
const HEALTH_LEAD: std::time::Duration = std::time::Duration::from_millis(100);

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// tonic refuses a request over the message size limit with OUT_OF_RANGE and no details;
/// the contract makes it INVALID_ARGUMENT with an ErrorInfo like every other bad request.
fn oversized_is_invalid_argument<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_none_or(|v| v != "11") {
        return response;
    }
    let message = headers
        .get("grpc-message")
        .map(|v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    if message.starts_with("Error, decoded message length too large") {
        let status = tonic::Status::from(Error::invalid("request", message));
        headers.remove("grpc-message");
        let _ = status.add_header(headers);
    }
    response
}

async fn metrics(AxumState(state): AxumState<Arc<State>>) -> String {
    telemetry::export_pools(
        &state.pools.stats(),
        &state.pools.cache_stats(),
        state.health.database_reachable(),
    );
    if let Some(counters) = state.pipeline.counters() {
        telemetry::export_pipeline(counters);
    }
    telemetry::metrics_handle().render()
}

async fn pool_json(AxumState(state): AxumState<Arc<State>>) -> Json<serde_json::Value> {
    let primary = state.pools.primary_stats();
    let q = state.stats.snapshot();
    Json(serde_json::json!({
        "activeConnections": primary.active_connections,
        "idleConnections": primary.idle_connections,
        "totalConnections": primary.total_connections,
        "waitingRequests": primary.waiting_requests,
        "maxConnections": primary.max_connections,
        "utilizationPercentage": primary.utilization_percent,
        "averageQueryTime": q.latency_avg_ms,
        "totalQueries": q.total,
        "failedQueries": q.failed,
        "databaseReachable": state.health.database_reachable(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_task_is_an_error_that_says_why() {
        let crashed = tokio::spawn(async { panic!("boom") }).await;
        let err = joined("gRPC server", crashed.map(|()| Ok(()))).expect_err("a crash");
        assert_eq!(err.to_string(), "the gRPC server task crashed: boom");
        let fine = tokio::spawn(async { Ok(()) }).await;
        assert!(joined("HTTP server", fine).is_ok());
    }
}
