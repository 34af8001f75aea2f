//! gRPC server metrics as a tower layer: `grpc_server_started_total`,
//! `grpc_server_handled_total` and `grpc_server_handling_seconds` with the familiar labels.
//! The code is read from the response headers (trailers-only answers) or, for streamed and
//! ordinary answers, from the trailers at the end of the body; a body dropped before its
//! trailers (the client went away) counts as Canceled.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use metrics::{Counter, Histogram, counter, histogram};
use tonic::codegen::http;
use tower::{Layer, Service};

use super::{Memo, names};

/// Adds gRPC server metrics to a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

/// Labels of one call. Only known methods get their own names, so a client sending random
/// paths cannot grow the label set.
#[derive(Clone, Copy)]
struct Call {
    /// Its place in [`KNOWN`], or `KNOWN.len()` for any other path.
    index: usize,
    start: Instant,
}

/// The methods with labels of their own: path, then kind, service and method labels.
const KNOWN: &[(&str, &str, &str, &str)] = &[
    (
        "/dataaccess.v1.DataAccess/Query",
        "unary",
        "dataaccess.v1.DataAccess",
        "Query",
    ),
    (
        "/dataaccess.v1.DataAccess/StreamQuery",
        "server_stream",
        "dataaccess.v1.DataAccess",
        "StreamQuery",
    ),
    (
        "/dataaccess.v1.DataAccess/Transaction",
        "bidi_stream",
        "dataaccess.v1.DataAccess",
        "Transaction",
    ),
    (
        "/dataaccess.v1.DataAccess/PoolStatus",
        "unary",
        "dataaccess.v1.DataAccess",
        "PoolStatus",
    ),
    (
        "/grpc.health.v1.Health/Check",
        "unary",
        "grpc.health.v1.Health",
        "Check",
    ),
    (
        "/grpc.health.v1.Health/Watch",
        "server_stream",
        "grpc.health.v1.Health",
        "Watch",
    ),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "bidi_stream",
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "bidi_stream",
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    ),
];
/// Methods with labels of their own, and one for all others.
const METHODS: usize = KNOWN.len() + 1;

/// The place of `path` in [`KNOWN`], or `KNOWN.len()`.
fn index_of(path: &str) -> usize {
    KNOWN
        .iter()
        .position(|(p, ..)| *p == path)
        .unwrap_or(KNOWN.len())
}

/// The kind, service and method labels of a method's place.
fn labels(index: usize) -> (&'static str, &'static str, &'static str) {
    KNOWN
        .get(index)
        .map(|&(_, kind, service, method)| (kind, service, method))
        .unwrap_or(("unary", "unknown", "unknown"))
}

#[cfg(test)]
fn classify(path: &str) -> (&'static str, &'static str, &'static str) {
    labels(index_of(path))
}

/// The handles of each method's metrics, made at its first call.
static STARTED: Memo<Counter, METHODS> = Memo::new();
static HANDLED: Memo<Counter, { METHODS * CODES }> = Memo::new();
static SECONDS: Memo<Histogram, METHODS> = Memo::new();

/// gRPC codes, OK to Unauthenticated.
const CODES: usize = 17;

/// gRPC code names as grpc-go prints them, which is what existing dashboards expect.
const NAMES: [&str; CODES] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// A code's place in [`NAMES`]; anything else is Unknown (2).
fn code_index(code: i32) -> usize {
    usize::try_from(code)
        .ok()
        .filter(|i| *i < CODES)
        .unwrap_or(2)
}

#[cfg(test)]
fn code_name(code: i32) -> &'static str {
    NAMES[code_index(code)]
}

/// Canceled: a call whose body was dropped before its trailers.
const CANCELED: usize = 1;
/// Unknown: a body that ended without trailers.
const UNKNOWN: usize = 2;

impl Call {
    fn finish(self, code: usize) {
        let Call { index, start } = self;
        let (kind, service, method) = labels(index);
        HANDLED
            .get(index * CODES + code, || {
                counter!(names::GRPC_HANDLED, "grpc_type" => kind, "grpc_service" => service,
                    "grpc_method" => method, "grpc_code" => NAMES[code])
            })
            .increment(1);
        SECONDS
            .get(index, || {
                histogram!(names::GRPC_HANDLING_SECONDS, "grpc_type" => kind,
                    "grpc_service" => service, "grpc_method" => method)
            })
            .record(start.elapsed().as_secs_f64());
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<usize> {
    let raw = headers.get("grpc-status")?.to_str().ok()?;
    Some(code_index(raw.parse().unwrap_or(2)))
}

impl<S, B, RB> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Body,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let index = index_of(req.uri().path());
        let call = Call {
            index,
            start: Instant::now(),
        };
        STARTED
            .get(index, || {
                let (kind, service, method) = labels(index);
                counter!(names::GRPC_STARTED, "grpc_type" => kind, "grpc_service" => service,
                    "grpc_method" => method)
            })
            .increment(1);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            // A trailers-only answer carries its code in the headers.
            let pending = match status_of(response.headers()) {
                Some(code) => {
                    call.finish(code);
                    None
                }
                None => Some(call),
            };
            Ok(response.map(|inner| MeteredBody { inner, pending }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call when its trailers pass, or when it is dropped
    /// unfinished.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        pending: Option<Call>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().pending.take() {
                call.finish(CANCELED);
            }
        }
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of)
                    && let Some(call) = this.pending.take()
                {
                    call.finish(code);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.pending.take() {
                    call.finish(UNKNOWN);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_get_their_labels_and_others_do_not() {
        assert_eq!(
            classify("/dataaccess.v1.DataAccess/Transaction"),
            ("bidi_stream", "dataaccess.v1.DataAccess", "Transaction")
        );
        assert_eq!(classify("/evil/a-b-c-123"), ("unary", "unknown", "unknown"));
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(14), "Unavailable");
        assert_eq!(code_name(99), "Unknown");
    }
}
