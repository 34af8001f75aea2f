//! The one mapping of every failure to a gRPC `Status`: code, message, and the
//! `google.rpc.ErrorInfo` (domain `pgsidecar`), `BadRequest` and `RetryInfo` it carries.

use std::collections::HashMap;

use tokio_postgres::error::DbError;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use super::{
    DOMAIN, Error, Fault, RETRY_CAPACITY, RETRY_CONFLICT, code_for_sqlstate, condition_name,
};
use crate::codec::BindError;
use crate::pool::PoolError;

/// ErrorInfo metadata for a PostgreSQL error: `sqlstate` always, the rest where sent.
fn db_metadata(db: &DbError) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert("sqlstate".to_owned(), db.code().code().to_owned());
    m.insert("message".to_owned(), db.message().to_owned());
    m.insert("severity".to_owned(), db.severity().to_owned());
    let optional = [
        ("detail", db.detail()),
        ("hint", db.hint()),
        ("constraint", db.constraint()),
        ("table", db.table()),
        ("column", db.column()),
        ("schema", db.schema()),
        ("datatype", db.datatype()),
        ("where", db.where_()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            m.insert(k.to_owned(), v.to_owned());
        }
    }
    if let Some(pos) = db.position() {
        let pos = match pos {
            tokio_postgres::error::ErrorPosition::Original(p) => *p,
            tokio_postgres::error::ErrorPosition::Internal { position, .. } => *position,
        };
        m.insert("position".to_owned(), pos.to_string());
    }
    m
}

/// The parameter a bind-time error from PostgreSQL blames ("... portal parameter $2"), so
/// a BadRequest can name it.
fn blamed_param(db: &DbError) -> Option<usize> {
    let where_ = db.where_()?;
    let after = where_.split("parameter $").nth(1)?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<usize>().ok()?.checked_sub(1)
}

struct Parts {
    code: Code,
    message: String,
    details: ErrorDetails,
}

fn parts(code: Code, message: String, reason: &str, metadata: HashMap<String, String>) -> Parts {
    Parts {
        code,
        message,
        details: ErrorDetails::with_error_info(reason, DOMAIN, metadata),
    }
}

fn postgres_parts(e: &tokio_postgres::Error, code_override: Option<Code>) -> Parts {
    match e.as_db_error() {
        Some(db) => {
            let sqlstate = db.code().code();
            let code = code_override.unwrap_or_else(|| code_for_sqlstate(sqlstate, db.message()));
            let mut p = parts(
                code,
                db.message().to_owned(),
                &condition_name(sqlstate),
                db_metadata(db),
            );
            match code {
                Code::Aborted => {
                    p.details.set_retry_info(Some(RETRY_CONFLICT));
                }
                Code::ResourceExhausted | Code::Unavailable => {
                    p.details.set_retry_info(Some(RETRY_CAPACITY));
                }
                _ => {}
            }
            if let Some(i) = blamed_param(db) {
                p.details
                    .add_bad_request_violation(format!("params[{i}]"), db.message());
            }
            p
        }
        None => match Fault::of(e) {
            Some(Fault::Protocol) => parts(
                code_override.unwrap_or(Code::Internal),
                format!(
                    "PostgreSQL answered with a message the sidecar does not handle ({e}); \
                     the connection was closed. COPY to or from the client is not supported"
                ),
                "PROTOCOL_ERROR",
                HashMap::new(),
            ),
            Some(Fault::Encode) => {
                let mut p = parts(
                    code_override.unwrap_or(Code::InvalidArgument),
                    format!("the request cannot be sent to PostgreSQL ({e})"),
                    "INVALID_REQUEST",
                    HashMap::new(),
                );
                p.details
                    .add_bad_request_violation("request", "cannot be encoded for PostgreSQL");
                p
            }
            Some(Fault::Param(i)) => {
                let mut p = parts(
                    code_override.unwrap_or(Code::InvalidArgument),
                    e.to_string(),
                    "INVALID_PARAMETER",
                    HashMap::new(),
                );
                p.details
                    .add_bad_request_violation(format!("params[{i}]"), e.to_string());
                p
            }
            Some(Fault::Connection) | None => connection_parts(e, code_override),
        },
    }
}

/// The connection broke or could not be made.
fn connection_parts(e: &tokio_postgres::Error, code_override: Option<Code>) -> Parts {
    let mut p = parts(
        code_override.unwrap_or(Code::Unavailable),
        format!("connection to PostgreSQL failed: {e}"),
        "DATABASE_UNAVAILABLE",
        HashMap::new(),
    );
    p.details.set_retry_info(Some(RETRY_CAPACITY));
    p
}

/// A pool that could not lend a connection.
fn pool_parts(e: &PoolError) -> Parts {
    let (code, reason) = match e {
        // PostgreSQL refused the connection itself (bad password, too many connections):
        // its SQLSTATE decides, as for any other PostgreSQL error.
        PoolError::Unavailable { source, .. } if source.as_db_error().is_some() => {
            return postgres_parts(source, None);
        }
        PoolError::Exhausted { .. } => (Code::ResourceExhausted, "POOL_EXHAUSTED"),
        PoolError::DeadlineExceeded { .. } => (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
        PoolError::Closed { .. } => (Code::Unavailable, "SHUTTING_DOWN"),
        PoolError::NoReplica { .. } => (Code::Unavailable, "NO_REPLICA"),
        PoolError::Config { .. } => (Code::Internal, "POOL_MISCONFIGURED"),
        PoolError::Unavailable { .. } | PoolError::ConnectTimeout { .. } => {
            (Code::Unavailable, "DATABASE_UNAVAILABLE")
        }
    };
    let mut p = parts(code, e.to_string(), reason, HashMap::new());
    if matches!(code, Code::ResourceExhausted | Code::Unavailable) {
        p.details.set_retry_info(Some(RETRY_CAPACITY));
    }
    p
}

impl From<&Error> for Parts {
    fn from(err: &Error) -> Parts {
        let none = HashMap::new;
        // An error that carries nothing but its message.
        let plain = |code, reason| parts(code, err.to_string(), reason, none());
        match err {
            Error::Postgres(e) => postgres_parts(e, None),
            Error::DeadlineExceeded { cause: None } => {
                plain(Code::DeadlineExceeded, "DEADLINE_EXCEEDED")
            }
            Error::Decode(_) => plain(Code::Internal, "DECODE_FAILED"),
            Error::ResponseTooLarge { .. }
            | Error::HeldTooLarge { .. }
            | Error::RowTooLarge { .. } => plain(Code::ResourceExhausted, "RESPONSE_TOO_LARGE"),
            Error::ClientGone => plain(Code::Cancelled, "CANCELLED"),
            Error::StreamStalled(_) => plain(Code::Aborted, "STREAM_IDLE_TIMEOUT"),
            Error::TransactionIdleTimeout(_) => plain(Code::Aborted, "TRANSACTION_IDLE_TIMEOUT"),
            Error::TransactionTooLong(_) => plain(Code::Aborted, "TRANSACTION_MAX_DURATION"),
            Error::Unauthenticated(_) => plain(Code::Unauthenticated, "UNAUTHENTICATED"),
            // Refused, not downgraded: the caller asked for the reserve and must hear that
            // it may not have it, rather than learn it later from a slower queue.
            Error::PriorityNotAllowed => plain(Code::PermissionDenied, "PRIORITY_NOT_ALLOWED"),
            Error::DeadlineExceeded { cause: Some(e) } => {
                postgres_parts(e, Some(Code::DeadlineExceeded))
            }
            Error::Bind(b) => {
                let code = match b {
                    BindError::OutOfRange { .. } => Code::OutOfRange,
                    _ => Code::InvalidArgument,
                };
                let mut p = parts(code, b.to_string(), "INVALID_PARAMETER", none());
                p.details
                    .add_bad_request_violation(b.field(), b.to_string());
                p
            }
            Error::InvalidRequest { field, message } => {
                let mut p = parts(
                    Code::InvalidArgument,
                    err.to_string(),
                    "INVALID_REQUEST",
                    none(),
                );
                p.details.add_bad_request_violation(field, message);
                p
            }
            Error::Unsupported { statement, .. } => {
                let mut metadata = none();
                metadata.insert("statement".to_owned(), (*statement).to_owned());
                parts(
                    Code::Unimplemented,
                    err.to_string(),
                    "UNSUPPORTED_STATEMENT",
                    metadata,
                )
            }
            Error::Pool(e) => pool_parts(e),
            Error::ShuttingDown => {
                let mut p = parts(Code::Unavailable, err.to_string(), "SHUTTING_DOWN", none());
                p.details.set_retry_info(Some(RETRY_CAPACITY));
                p
            }
            Error::CommitOutcomeUnknown { txid, wrote } => {
                let mut metadata = none();
                if let Some(t) = txid {
                    metadata.insert("txid".to_owned(), t.clone());
                }
                if let Some(w) = wrote {
                    metadata.insert("wrote".to_owned(), w.to_string());
                }
                parts(
                    Code::Unavailable,
                    err.to_string(),
                    "COMMIT_OUTCOME_UNKNOWN",
                    metadata,
                )
            }
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> tonic::Status {
        let p = Parts::from(&err);
        tonic::Status::with_error_details(p.code, p.message, p.details)
    }
}

impl Error {
    /// The same status as a `google.rpc.Status` message, for errors answered in-band.
    pub fn to_rpc_status(&self) -> tonic_types::pb::Status {
        let p = Parts::from(self);
        let status = tonic::Status::with_error_details(p.code, p.message, p.details);
        // tonic-types encodes the whole google.rpc.Status into the details bytes.
        <tonic_types::pb::Status as prost::Message>::decode(status.details()).unwrap_or_else(|_| {
            tonic_types::pb::Status {
                code: status.code() as i32,
                message: status.message().to_owned(),
                details: vec![],
            }
        })
    }
}
