//! The floor of one gRPC hop: a `DataAccess` server that does no work, answering every
//! Query with the one-row result a point select returns. It runs as a process of its own
//! (the bench binary started with `--hop-server`), on one thread and with the transport
//! settings pgsidecar uses, so that "hop + direct" is an honest floor for pgsidecar.

use std::pin::Pin;

use pgsidecar::proto::data_access_server::{DataAccess, DataAccessServer};
use pgsidecar::proto::{
    PoolStatusRequest, PoolStatusResponse, QueryRequest, QueryResponse, Row,
    StatementReportRequest, StatementReportResponse, TransactionRequest, TransactionResponse,
    Value, value::Kind,
};
use tonic::{Request, Response, Status, Streaming};

type Empty<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

struct Hop;

#[tonic::async_trait]
impl DataAccess for Hop {
    async fn query(&self, _: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        let value = Value {
            kind: Some(Kind::IntValue(0)),
        };
        Ok(Response::new(QueryResponse {
            rows: vec![Row {
                values: vec![value],
            }],
            rows_affected: 1,
            command_tag: "SELECT 1".to_owned(),
            ..Default::default()
        }))
    }

    type StreamQueryStream = Empty<QueryResponse>;

    async fn stream_query(
        &self,
        _: Request<QueryRequest>,
    ) -> Result<Response<Self::StreamQueryStream>, Status> {
        Err(Status::unimplemented("the hop server answers Query only"))
    }

    type TransactionStream = Empty<TransactionResponse>;

    async fn transaction(
        &self,
        _: Request<Streaming<TransactionRequest>>,
    ) -> Result<Response<Self::TransactionStream>, Status> {
        Err(Status::unimplemented("the hop server answers Query only"))
    }

    async fn statement_report(
        &self,
        _: Request<StatementReportRequest>,
    ) -> Result<Response<StatementReportResponse>, Status> {
        Err(Status::unimplemented("the hop server answers Query only"))
    }

    async fn pool_status(
        &self,
        _: Request<PoolStatusRequest>,
    ) -> Result<Response<PoolStatusResponse>, Status> {
        Err(Status::unimplemented("the hop server answers Query only"))
    }
}

/// Serves on a free loopback port until killed; prints `grpc=ADDR` first, as pgsidecar
/// does, so the same launcher code reads it.
pub(crate) fn serve() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        println!("grpc={addr}");
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            let accepted = l.accept().await.map(|(stream, _)| stream);
            Some((accepted, l))
        });
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_adaptive_window(Some(false))
            // pgsidecar's default per-connection stream limit (tonic's own is none).
            .max_concurrent_streams(Some(1024))
            .add_service(DataAccessServer::new(Hop))
            .serve_with_incoming(incoming)
            .await
            .expect("serve");
    });
}
