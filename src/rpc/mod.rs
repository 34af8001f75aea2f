//! The DataAccess service: one module per RPC family, sharing the state built at start.

pub mod auth;
mod chunks;
pub(crate) mod codec;
mod deadline;
mod outbound;
mod query;
mod routing;
mod status;
mod stream_query;
mod transaction;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Config;
use crate::health::Health;
use crate::pool::Pools;
use crate::proto::data_access_server::DataAccess;
use crate::proto::{
    PoolStatusRequest, PoolStatusResponse, QueryRequest, QueryResponse, StatementReportRequest,
    StatementReportResponse, TransactionRequest, TransactionResponse,
};

/// The checks and classifications a request's text goes through before any SQL reaches
/// PostgreSQL, public for the fuzz targets in `fuzz/`: none may panic on any input.
pub mod checks {
    pub use crate::exec::validate as validate_statement;
    pub use crate::sql::command_tag::shape as command_tag_shape;
    pub use crate::sql::session::{may_change_session, transaction_control};
}
pub use crate::telemetry::stats::Stats;

/// Everything the RPCs share.
pub struct State {
    /// The settings the sidecar runs with.
    pub config: Config,
    /// Primary and failover pools.
    pub pools: Pools,
    /// The shared, pipelined primary connections of Query.
    pub pipeline: crate::pipeline::Pipeline,
    /// Query counters and latency window.
    pub stats: Stats,
    /// Readiness.
    pub health: Health,
    /// Turns true when open transactions must end: near the end of the shutdown grace
    /// period, so that their clients hear why before the process exits.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl State {
    /// Resolves once open transactions must end (never, if the server is gone without
    /// saying so).
    pub(crate) async fn stopping(&self) {
        let mut rx = self.stopping.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What goes around an autocommit statement (Query, StreamQuery) under these settings and
/// the caller's token: read-only under `PGSIDECAR_READ_ONLY` or a token without `write`.
fn autocommit(state: &State, grant: auth::Grant) -> crate::exec::Around {
    crate::exec::Around {
        read_only: grant.read_only,
        reset: state.config.reset_always,
    }
}

/// The `dataaccess.v1.DataAccess` implementation.
#[derive(Clone)]
pub struct DataAccessService {
    state: Arc<State>,
}

impl DataAccessService {
    /// A service over shared state.
    pub fn new(state: Arc<State>) -> Self {
        DataAccessService { state }
    }
}

/// A boxed stream of responses, as the streaming RPCs return.
pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl DataAccess for DataAccessService {
    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        query::query(&self.state, request).await
    }

    type StreamQueryStream = BoxStream<QueryResponse>;

    async fn stream_query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<Self::StreamQueryStream>, Status> {
        stream_query::stream_query(self.state.clone(), request).await
    }

    type TransactionStream = BoxStream<TransactionResponse>;

    async fn transaction(
        &self,
        request: Request<Streaming<TransactionRequest>>,
    ) -> Result<Response<Self::TransactionStream>, Status> {
        transaction::transaction(self.state.clone(), request).await
    }

    async fn statement_report(
        &self,
        request: Request<StatementReportRequest>,
    ) -> Result<Response<StatementReportResponse>, Status> {
        let limit = request.into_inner().limit;
        Ok(Response::new(status::statement_report(&self.state, limit)))
    }

    async fn pool_status(
        &self,
        _request: Request<PoolStatusRequest>,
    ) -> Result<Response<PoolStatusResponse>, Status> {
        Ok(Response::new(status::pool_status(&self.state)))
    }
}
