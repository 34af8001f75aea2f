//! Error contracts that once misled clients: a NUL byte, an undecodable message, a streamed
//! row over the message limit, a non-positive idle timeout and COPY to or from the client
//! each get a clear, non-retryable code with an ErrorInfo, and none reaches PostgreSQL as
//! something it cannot answer.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use bytes::BufMut;
use pgsidecar::proto::transaction_response::Event;
use pgsidecar::proto::{
    BeginTransaction, PoolStatusRequest, QueryResponse, TransactionRequest, TransactionResponse,
    statement_result::Outcome, transaction_request::Action,
};
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::support::*;

/// Sends request bytes exactly as given, and decodes answers as the generated client does:
/// the way to put a malformed message on the wire of a real HTTP/2 gRPC call.
struct RawCodec<U>(PhantomData<U>);

impl<U> Default for RawCodec<U> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<U: Message + Default + Send + 'static> Codec for RawCodec<U> {
    type Encode = Vec<u8>;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder<U>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder<U> {
        RawDecoder(PhantomData)
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

struct RawDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for RawDecoder<U> {
    type Item = U;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, tonic::Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

async fn raw_query(channel: &Channel, body: Vec<u8>) -> Result<QueryResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = PathAndQuery::from_static("/dataaccess.v1.DataAccess/Query");
    grpc.unary(tonic::Request::new(body), path, RawCodec::default())
        .await
        .map(tonic::Response::into_inner)
}

async fn raw_stream_query(channel: &Channel, body: Vec<u8>) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = PathAndQuery::from_static("/dataaccess.v1.DataAccess/StreamQuery");
    let mut s = grpc
        .server_streaming(
            tonic::Request::new(body),
            path,
            RawCodec::<QueryResponse>::default(),
        )
        .await?
        .into_inner();
    while s.message().await?.is_some() {}
    Ok(())
}

/// A key of field `field` with wire type LEN, then the length.
fn len_field(out: &mut Vec<u8>, field: u32, len: usize) {
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(len as u64, out);
}

/// A QueryRequest `SELECT $1` whose one parameter is an array nested `depth` deep, written
/// byte by byte (inside out, no recursion) so that any depth can be sent.
fn nested_request(depth: usize) -> Vec<u8> {
    // The innermost value: null_value (field 1, varint 0).
    let mut value = vec![0x08, 0x00];
    for _ in 0..depth {
        let mut array = Vec::with_capacity(value.len() + 8);
        len_field(&mut array, 1, value.len()); // ArrayValue.values
        array.extend_from_slice(&value);
        value.clear();
        len_field(&mut value, 12, array.len()); // Value.array_value
        value.extend_from_slice(&array);
    }
    let mut req = Vec::with_capacity(value.len() + 16);
    len_field(&mut req, 1, "SELECT $1".len()); // QueryRequest.sql
    req.extend_from_slice(b"SELECT $1");
    len_field(&mut req, 2, value.len()); // QueryRequest.params
    req.extend_from_slice(&value);
    req
}

/// The request bodies no decoder accepts, by name.
fn undecodable_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("truncated varint", vec![0x0a, 0xff, 0xff, 0xff]),
        ("invalid wire type", vec![0x0f, 0x01]),
        ("length past the end", vec![0x0a, 0x40, b'S']),
        ("invalid UTF-8 in sql", vec![0x0a, 0x03, b'S', 0xff, 0xfe]),
        ("arrays nested 50 deep", nested_request(50)),
        ("arrays nested 1000 deep", nested_request(1000)),
    ]
}

/// Statements retried so far, from PoolStatus.
async fn retried(c: &mut pgsidecar::proto::data_access_client::DataAccessClient<Channel>) -> u64 {
    c.pool_status(PoolStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .queries
        .expect("query figures")
        .retried
}

fn assert_invalid_request(status: &tonic::Status, field: &str, what: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert_eq!(error_info(status).0, "INVALID_REQUEST", "{what}");
    assert_eq!(bad_field(status).as_deref(), Some(field), "{what}");
}

#[tokio::test]
async fn a_nul_byte_in_sql_is_invalid_argument_and_never_retried() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let before = retried(&mut c).await;
    let sql = "SELECT 1\0 -- the rest";
    let started = Instant::now();
    let err = query(&mut c, sql, vec![]).await.expect_err("NUL in sql");
    assert_invalid_request(&err, "sql", "Query");
    // Three retries took 2.8 s; a refusal before any connection is taken takes none.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    let mut s = c.stream_query(request(sql, vec![])).await;
    let err = match &mut s {
        Err(e) => e.clone(),
        Ok(s) => s.get_mut().message().await.expect_err("NUL in sql"),
    };
    assert_invalid_request(&err, "sql", "StreamQuery");
    assert_eq!(retried(&mut c).await, before, "nothing was retried");

    let mut tx = TxStream::open(&mut c, BeginTransaction::default()).await;
    assert!(matches!(tx.next().await, Ok(Some(Event::Begun(_)))));
    tx.execute("nul", sql, vec![]).await;
    tx.execute("after", "SELECT 2", vec![]).await;
    let r = tx.result().await;
    let Some(Outcome::Error(e)) = &r.outcome else {
        panic!("{r:?}")
    };
    let (code, reason, _) = rpc_error(e);
    assert_eq!(
        (code, reason.as_str()),
        (Code::InvalidArgument, "INVALID_REQUEST")
    );
    // Refused before it was sent, it left the transaction as it was.
    let r = tx.result().await;
    assert!(matches!(r.outcome, Some(Outcome::Response(_))), "{r:?}");
    tx.rollback().await;
}

#[tokio::test]
async fn a_nul_byte_in_a_parameter_is_invalid_parameter_naming_it() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let cases = [
        ("SELECT $1::text", text("a\0b"), "params[0]"),
        ("SELECT $1::varchar", text("\0"), "params[0]"),
        ("SELECT $1::inet", text("10.0.0.1\0"), "params[0]"),
        (
            "SELECT $1::text[]",
            array(vec![text("ok"), text("n\0l")]),
            "params[0].array_value.values[1]",
        ),
        ("SELECT $1::json", json("\"a\0b\""), "params[0]"),
        ("SELECT $1::jsonb", json("{\"k\": \"\0\"}"), "params[0]"),
        (
            "SELECT $1::jsonb[]",
            array(vec![json("1"), json("\"\0\"")]),
            "params[0].array_value.values[1]",
        ),
    ];
    let before = retried(&mut c).await;
    for (sql, value, field) in cases {
        let err = query(&mut c, sql, vec![value]).await.expect_err(sql);
        assert_eq!(err.code(), Code::InvalidArgument, "{sql}: {err:?}");
        assert_eq!(error_info(&err).0, "INVALID_PARAMETER", "{sql}");
        assert_eq!(bad_field(&err).as_deref(), Some(field), "{sql}");
    }
    assert_eq!(retried(&mut c).await, before, "nothing was retried");
}

#[tokio::test]
async fn an_undecodable_request_is_invalid_argument_with_error_info() {
    let sidecar = Sidecar::start(&[]);
    let channel = sidecar.channel().await;
    for (what, body) in undecodable_bodies() {
        let err = raw_query(&channel, body.clone()).await.expect_err(what);
        assert_invalid_request(&err, "request", &format!("Query, {what}"));
        let err = raw_stream_query(&channel, body).await.expect_err(what);
        assert_invalid_request(&err, "request", &format!("StreamQuery, {what}"));
    }
    // Nesting within prost's limit is decoded, and refused by the binding rules instead.
    let err = raw_query(&channel, nested_request(10))
        .await
        .expect_err("10 deep");
    assert_eq!(error_info(&err).0, "INVALID_PARAMETER", "{err:?}");
    let ok = raw_query(&channel, nested_request(0))
        .await
        .expect("a well-formed request");
    assert_eq!(scalar(&ok), &null());
    assert!(!sidecar.stderr().contains("panicked"));
}

#[tokio::test]
async fn an_undecodable_message_in_a_transaction_ends_it_invalid_argument() {
    let sidecar = Sidecar::start(&[]);
    let channel = sidecar.channel().await;
    for (what, body) in undecodable_bodies() {
        let begin = TransactionRequest {
            action: Some(Action::Begin(BeginTransaction::default())),
        }
        .encode_to_vec();
        let (send, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        send.send(begin).await.expect("queue begin");
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let path = PathAndQuery::from_static("/dataaccess.v1.DataAccess/Transaction");
        let mut recv = grpc
            .streaming(
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                path,
                RawCodec::<TransactionResponse>::default(),
            )
            .await
            .expect("open")
            .into_inner();
        let first = recv.message().await.expect("begun").expect("an event");
        assert!(matches!(first.event, Some(Event::Begun(_))), "{first:?}");
        send.send(body).await.expect("queue garbage");
        let err = tokio::time::timeout(Duration::from_secs(30), recv.message())
            .await
            .expect("an answer")
            .expect_err(what);
        assert_invalid_request(&err, "request", &format!("Transaction, {what}"));
    }
}

#[tokio::test]
async fn a_streamed_row_over_the_message_limit_is_response_too_large() {
    let sidecar = Sidecar::start(&["--max-message-bytes", "4096"]);
    let mut c = sidecar.client().await.max_decoding_message_size(4096);
    let mut s = c
        .stream_query(request("SELECT repeat('x', 10000) AS big", vec![]))
        .await
        .expect("stream")
        .into_inner();
    let err = stream_error(&mut s, "a 10000-byte row went through a 4096-byte limit").await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(error_info(&err).0, "RESPONSE_TOO_LARGE");

    // Rows that each fit stream, however they would have been grouped, every message
    // within the limit (the client refuses anything larger).
    let mut s = c
        .stream_query(request(
            "SELECT repeat('y', 2040) AS wide FROM generate_series(1, 7)",
            vec![],
        ))
        .await
        .expect("stream")
        .into_inner();
    let (mut rows, mut last) = (0, None);
    while let Some(m) = s.message().await.expect("every message fits") {
        rows += m.rows.len();
        last = Some(m);
    }
    assert_eq!(rows, 7);
    assert_eq!(last.expect("a last message").command_tag, "SELECT 7");
    // The sidecar still serves.
    assert_eq!(
        scalar(&query(&mut c, "SELECT 1", vec![]).await.expect("after")),
        &int(1)
    );
}

#[tokio::test]
async fn an_idle_timeout_must_be_positive() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    for (seconds, nanos) in [(-1, 0), (0, -5), (0, 0)] {
        let begin = BeginTransaction {
            idle_timeout: Some(prost_types::Duration { seconds, nanos }),
            ..Default::default()
        };
        let mut tx = TxStream::open(&mut c, begin).await;
        let err = tx.next().await.expect_err("refused");
        assert_invalid_request(&err, "begin.idle_timeout", &format!("{seconds}s {nanos}ns"));
    }
    // A negative Query timeout is refused the same way, naming its field.
    let mut req = request("SELECT 1", vec![]);
    req.timeout = Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    });
    let err = c.query(req).await.expect_err("negative timeout");
    assert_invalid_request(&err, "timeout", "Query timeout");
}

#[tokio::test]
async fn copy_to_or_from_the_client_is_refused_before_it_is_sent() {
    let (sidecar, _app) = Sidecar::start_tagged("copy", 1);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let t = unique("copy");
    db.batch_execute(&format!("CREATE TABLE {t} (id int)"))
        .await
        .expect("create");
    let pid = |r: &QueryResponse| scalar(r).clone();
    let before = pid(&query(&mut c, "SELECT pg_backend_pid()", vec![])
        .await
        .expect("pid"));
    let refused = [
        format!("COPY {t} FROM STDIN"),
        format!("copy {t} (id) from stdin with (format csv)"),
        format!("/* load */ COPY {t} FROM STDIN"),
        format!("COPY {t} TO STDOUT"),
        "COPY (SELECT 'not stdout' AS x) TO stdout WITH (FORMAT csv)".to_owned(),
        format!("-- export\nCOPY {t} TO STDOUT (FORMAT binary)"),
    ];
    for sql in &refused {
        let err = query(&mut c, sql, vec![]).await.expect_err(sql);
        assert_eq!(err.code(), Code::Unimplemented, "{sql}: {err:?}");
        let (reason, meta) = error_info(&err);
        assert_eq!(reason, "UNSUPPORTED_STATEMENT", "{sql}");
        assert!(meta["statement"].starts_with("COPY"), "{meta:?}");
        assert!(err.message().contains("COPY"), "{}", err.message());
        let err = match c.stream_query(request(sql, vec![])).await {
            Err(e) => e,
            Ok(s) => s.into_inner().message().await.expect_err(sql),
        };
        assert_eq!(
            err.code(),
            Code::Unimplemented,
            "StreamQuery {sql}: {err:?}"
        );
    }
    // Not fooled by the words in quotes, comments or a subquery.
    for sql in [
        "SELECT 'COPY t FROM STDIN'".to_owned(),
        "SELECT 1 /* COPY t TO STDOUT */".to_owned(),
        "COPY (SELECT 'STDOUT') TO '/dev/null'".to_owned(),
    ] {
        query(&mut c, &sql, vec![]).await.expect(&sql);
    }
    // Nothing reached PostgreSQL: the one connection is the one from before.
    let after = pid(&query(&mut c, "SELECT pg_backend_pid()", vec![])
        .await
        .expect("pid"));
    assert_eq!(before, after, "the pooled connection was kept");

    // In a transaction the refusal is in-band and leaves the transaction as it was.
    let mut tx = TxStream::open(&mut c, BeginTransaction::default()).await;
    assert!(matches!(tx.next().await, Ok(Some(Event::Begun(_)))));
    tx.execute("copy", &refused[0], vec![]).await;
    tx.execute("after", &format!("INSERT INTO {t} VALUES (1)"), vec![])
        .await;
    tx.commit().await;
    let r = tx.result().await;
    let Some(Outcome::Error(e)) = &r.outcome else {
        panic!("{r:?}")
    };
    let (code, reason, _) = rpc_error(e);
    assert_eq!(
        (code, reason.as_str()),
        (Code::Unimplemented, "UNSUPPORTED_STATEMENT")
    );
    let r = tx.result().await;
    assert!(matches!(r.outcome, Some(Outcome::Response(_))), "{r:?}");
    assert!(matches!(tx.next().await, Ok(Some(Event::Committed(_)))));
    db.batch_execute(&format!("DROP TABLE {t}"))
        .await
        .expect("drop");
}
