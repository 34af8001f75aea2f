//! Streams whose client stops reading: a raw HTTP/2 client that answers PINGs but never
//! opens its flow-control window. The stream must be ended within the stream idle timeout,
//! its statement cancelled (its transaction rolled back) and its pool connection freed.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pgsidecar::proto::transaction_request::Action;
use pgsidecar::proto::{BeginTransaction, QueryRequest, Statement, TransactionRequest};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::codegen::http;

use crate::support::{Sidecar, active_statements, admin, error_info, eventually, int, query};
use crate::support::{scalar, unique};

/// A gRPC message frame: uncompressed flag, length, message.
fn frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut buf = BytesMut::with_capacity(5 + body.len());
    buf.put_u8(0);
    buf.put_u32(body.len() as u32);
    buf.put_slice(&body);
    buf.freeze()
}

/// A raw HTTP/2 connection whose streams start with a receive window of `window` bytes;
/// sending on the returned channel widens every window (connection and streams) to that.
async fn connect(
    addr: SocketAddr,
    window: u32,
) -> (h2::client::SendRequest<Bytes>, mpsc::Sender<u32>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .expect("h2 handshake");
    let (widen, mut widen_rx) = mpsc::channel::<u32>(1);
    tokio::spawn(async move {
        // Polling the connection answers the server's PINGs: the client looks alive.
        poll_fn(|cx| {
            while let Poll::Ready(Some(size)) = widen_rx.poll_recv(cx) {
                conn.set_target_window_size(size);
                let _ = conn.set_initial_window_size(size);
            }
            Pin::new(&mut conn).poll(cx)
        })
        .await
    });
    (send, widen)
}

/// Opens a gRPC call on `path` with `first` as its first message; the request stays open
/// (the returned sender may send more).
async fn open_call(
    send: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
    first: &impl prost::Message,
    end: bool,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut ready = send.clone().ready().await.expect("ready");
    let (response, mut body) = ready.send_request(request, false).expect("send request");
    body.send_data(frame(first), end).expect("send message");
    *send = ready;
    (response, body)
}

/// A unary gRPC call over a raw connection.
pub async fn grpc_call(
    send: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
    message: &impl prost::Message,
) -> h2::client::ResponseFuture {
    open_call(send, addr, path, message, true).await.0
}

/// Reads a response to its end, giving the window back as data arrives: the data bytes
/// and the trailers.
pub async fn read_to_end(response: h2::client::ResponseFuture) -> (usize, http::HeaderMap) {
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("response headers")
        .expect("response");
    let mut body = response.into_body();
    let mut bytes = 0;
    let read = async {
        while let Some(data) = body.data().await {
            let data = data.expect("data");
            bytes += data.len();
            let _ = body.flow_control().release_capacity(data.len());
        }
        body.trailers().await.expect("trailers").unwrap_or_default()
    };
    let trailers = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the stream ends");
    (bytes, trailers)
}

/// The status carried by trailers (or by headers, for a call refused at once).
fn status_of(trailers: &http::HeaderMap) -> tonic::Status {
    tonic::Status::from_header_map(trailers).expect("grpc-status")
}

#[tokio::test]
async fn a_stream_query_stalled_on_flow_control_is_ended_and_its_statement_cancelled() {
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "1",
        "--stream-idle-timeout",
        "1000",
        "--query-timeout",
        "60000",
    ]);
    let marker = unique("stalled_stream");
    let sql = format!("SELECT repeat('x', 1000) AS {marker} FROM generate_series(1, 20000)");
    let (mut send, widen) = connect(sidecar.grpc, 1).await;
    let request = QueryRequest {
        sql: sql.clone(),
        ..Default::default()
    };
    let path = "/dataaccess.v1.DataAccess/StreamQuery";
    let (response, _body) = open_call(&mut send, sidecar.grpc, path, &request, true).await;
    let db = admin().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            active_statements(&db, &marker).await == 1
        })
        .await,
        "the statement never ran"
    );
    // PostgreSQL is now blocked writing rows nobody reads; the stream idle timeout must
    // cancel it (statement_timeout cannot reach it there).
    assert!(
        eventually(Duration::from_secs(15), || async {
            active_statements(&db, &marker).await == 0
        })
        .await,
        "the stalled statement still runs"
    );
    // The pool's only connection is free again.
    let mut client = sidecar.client().await;
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        query(&mut client, "SELECT 7::int8", vec![]),
    )
    .await
    .expect("served while the stream is stalled")
    .expect("query");
    assert_eq!(*scalar(&resp), int(7));
    // A client that finally reads learns why its stream ended, long before 20 MB.
    widen.send(4 << 20).await.unwrap();
    let (bytes, trailers) = read_to_end(response).await;
    let status = status_of(&trailers);
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert_eq!(error_info(&status).0, "STREAM_IDLE_TIMEOUT");
    assert!(
        bytes < 20_000_000,
        "{bytes} bytes: the stream was not ended"
    );
}

#[tokio::test]
async fn a_transaction_whose_responses_are_not_read_is_rolled_back_and_frees_its_connection() {
    let sidecar = Sidecar::start(&["--pool-max", "1", "--stream-idle-timeout", "1000"]);
    let key: i64 = 7_000_000 + i64::from(std::process::id() % 1_000_000);
    let (mut send, widen) = connect(sidecar.grpc, 1).await;
    let begin = TransactionRequest {
        action: Some(Action::Begin(BeginTransaction::default())),
    };
    let path = "/dataaccess.v1.DataAccess/Transaction";
    let (response, mut body) = open_call(&mut send, sidecar.grpc, path, &begin, false).await;
    let execute = |id: usize, sql: String| TransactionRequest {
        action: Some(Action::Execute(Statement {
            request_id: id.to_string(),
            sql,
            ..Default::default()
        })),
    };
    body.send_data(
        frame(&execute(0, format!("SELECT pg_advisory_xact_lock({key})"))),
        false,
    )
    .unwrap();
    // Far more answers than are buffered ahead of a reader.
    for id in 1..60 {
        let sql = "SELECT repeat('y', 20000)".to_owned();
        body.send_data(frame(&execute(id, sql)), false).unwrap();
    }
    let db = admin().await;
    let locks = || async {
        let row = db
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1::bigint::oid",
                &[&key],
            )
            .await
            .expect("pg_locks");
        row.get::<_, i64>(0)
    };
    assert!(
        eventually(Duration::from_secs(10), || async { locks().await == 1 }).await,
        "the transaction never took its lock"
    );
    assert!(
        eventually(Duration::from_secs(15), || async { locks().await == 0 }).await,
        "the stalled transaction still holds its lock"
    );
    let mut client = sidecar.client().await;
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        query(&mut client, "SELECT 8::int8", vec![]),
    )
    .await
    .expect("served while the transaction stream is stalled")
    .expect("query");
    assert_eq!(*scalar(&resp), int(8));
    widen.send(4 << 20).await.unwrap();
    let (_, trailers) = read_to_end(response).await;
    let status = status_of(&trailers);
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert_eq!(error_info(&status).0, "STREAM_IDLE_TIMEOUT");
}
