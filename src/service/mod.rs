//! The DataAccess service: one module per RPC family, sharing the state built at start.

mod command_tag;
mod deadline;
mod query;
mod session;
mod sql_text;
mod statement;
mod status;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Config;
use crate::error::Error;
use crate::health::Health;
use crate::pool::Pools;
use crate::proto::data_access_server::DataAccess;
use crate::proto::{
    PoolStatusRequest, PoolStatusResponse, QueryRequest, QueryResponse, TransactionRequest,
    TransactionResponse,
};

pub use status::Stats;

/// Everything the RPCs share.
pub struct State {
    /// The settings the sidecar runs with.
    pub config: Config,
    /// Primary and failover pools.
    pub pools: Pools,
    /// Query counters and latency window.
    pub stats: Stats,
    /// Readiness.
    pub health: Health,
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

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

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
        _request: Request<QueryRequest>,
    ) -> Result<Response<Self::StreamQueryStream>, Status> {
        Err(
            Error::Unimplemented("StreamQuery is not implemented yet; use Query with max_rows")
                .into(),
        )
    }

    type TransactionStream = BoxStream<TransactionResponse>;

    async fn transaction(
        &self,
        _request: Request<Streaming<TransactionRequest>>,
    ) -> Result<Response<Self::TransactionStream>, Status> {
        Err(Error::Unimplemented("Transaction is not implemented yet").into())
    }

    async fn pool_status(
        &self,
        _request: Request<PoolStatusRequest>,
    ) -> Result<Response<PoolStatusResponse>, Status> {
        Ok(Response::new(status::pool_status(&self.state)))
    }
}
