//! Liveness and readiness: the gRPC health statuses, and the task that probes PostgreSQL at
//! the health-check interval so readiness follows the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::pool::Pools;

/// The readiness service name: the full name of DataAccess.
pub const READINESS_SERVICE: &str = "dataaccess.v1.DataAccess";

/// Shared view of whether the sidecar can serve.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    reachable: Arc<AtomicBool>,
    shutting_down: Arc<AtomicBool>,
}

impl Health {
    /// Wraps the reporter of the gRPC health service; nothing is ready until probed.
    pub fn new(reporter: HealthReporter) -> Self {
        Health {
            reporter,
            reachable: Arc::new(AtomicBool::new(false)),
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the primary pool reached PostgreSQL at the last probe.
    pub fn database_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Liveness SERVING; readiness as last probed.
    pub async fn start_serving(&self) {
        self.reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        // Registered from the start, so a Watch or Check before the first probe answers
        // NOT_SERVING rather than "service not registered".
        self.reporter
            .set_service_status(READINESS_SERVICE, ServingStatus::NotServing)
            .await;
    }

    async fn set_ready(&self, ready: bool) {
        self.reachable.store(ready, Ordering::Relaxed);
        if self.shutting_down.load(Ordering::Relaxed) {
            return;
        }
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter
            .set_service_status(READINESS_SERVICE, status)
            .await;
    }

    /// Shutdown began: both statuses go NOT_SERVING before the drain, for good.
    pub async fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        self.reporter
            .set_service_status(READINESS_SERVICE, ServingStatus::NotServing)
            .await;
    }

    /// Probes PostgreSQL through the primary pool every `interval` until `stop` changes.
    /// Readiness follows reachability, not busyness: the probe borrows an idle connection
    /// without queueing behind requests, and a pool lent out to its maximum is not down.
    pub async fn run_probe(
        self,
        pools: Pools,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let ok = probe(&pools, interval).await;
            if ok != self.database_reachable() {
                tracing::info!(reachable = ok, "database reachability changed");
            }
            self.set_ready(ok).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

async fn probe(pools: &Pools, interval: Duration) -> bool {
    let deadline = std::time::Instant::now() + interval.max(Duration::from_millis(500));
    pools.probe_primary(deadline).await
}
