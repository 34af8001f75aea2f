//! The crate error: every way a call can fail, and the SQLSTATE → gRPC code table; `status`
//! is the one mapping of each to a gRPC `Status` with its `ErrorInfo`, `BadRequest` and
//! `RetryInfo`.

mod sqlstate_names;
mod status;

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tonic::Code;

use crate::codec::{BindError, DecodeError};
use crate::pool::PoolError;

/// `ErrorInfo.domain` of every error the sidecar returns.
pub const DOMAIN: &str = "pgsidecar";

/// Retry delay suggested for serialization failures and deadlocks: short, they clear fast.
const RETRY_CONFLICT: Duration = Duration::from_millis(50);
/// Retry delay suggested when the pool or the server is out of capacity.
const RETRY_CAPACITY: Duration = Duration::from_millis(250);

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL answered with an error, or the connection failed.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// A parameter does not bind to its placeholder's type.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A result cell could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No connection could be had.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The request itself is malformed: a field is missing, empty or too large.
    #[error("{field}: {message}")]
    InvalidRequest {
        /// The request field at fault, e.g. `sql`.
        field: String,
        /// Why.
        message: String,
    },
    /// A statement the sidecar cannot carry, refused before it is sent (COPY to or from the
    /// client needs PostgreSQL's copy sub-protocol).
    #[error("{statement} is not supported: {advice}")]
    Unsupported {
        /// What was refused, e.g. `COPY FROM STDIN`.
        statement: &'static str,
        /// What to do instead.
        advice: &'static str,
    },
    /// The request's deadline or timeout passed; `cause` is PostgreSQL's cancel error when
    /// the statement was running.
    #[error("deadline exceeded{}", cause.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    DeadlineExceeded {
        /// The error PostgreSQL answered to the cancel, if it ran that far.
        cause: Option<tokio_postgres::Error>,
    },
    /// The response would exceed the gRPC message size limit.
    #[error(
        "the result exceeds the {limit}-byte response limit; lower max_rows or use StreamQuery \
         (a single row over the limit: select less of it, e.g. substring of a large value)"
    )]
    ResponseTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// PostgreSQL began sending a row larger than any response can carry: it was refused as
    /// its header arrived, before it was read into memory, and its connection closed.
    #[error(
        "a single row of {size} bytes exceeds the {limit}-byte response limit; it was refused \
         unread (select less of it: a substring, its length, or a hash)"
    )]
    RowTooLarge {
        /// The row's size on the wire, as PostgreSQL declared it.
        size: u64,
        /// The response limit in bytes.
        limit: usize,
    },
    /// A streamed statement that must be held whole before it streams (it needs
    /// PostgreSQL's text output but cannot run as a cursor) returned more than the limit.
    #[error(
        "the result exceeds the {limit}-byte limit for a streamed statement that is held whole: \
         it returns values PostgreSQL must print (cast them to text) and cannot run as a cursor \
         (a write with RETURNING, SHOW, ...); lower max_rows or cast those columns to text"
    )]
    HeldTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The client cancelled or went away mid-call.
    #[error("the client cancelled the call")]
    ClientGone,
    /// The client took no message of a stream for the stream idle timeout: the stream was
    /// ended, its statement cancelled (a transaction rolled back).
    #[error(
        "the client read nothing for {0:?} (PGSIDECAR_STREAM_IDLE_TIMEOUT): the stream was ended \
         and its statement cancelled (an open transaction is rolled back)"
    )]
    StreamStalled(Duration),
    /// A transaction stream was idle longer than its idle timeout and was rolled back.
    #[error("the transaction was idle for more than {0:?} and was rolled back")]
    TransactionIdleTimeout(Duration),
    /// A transaction outlived the maximum transaction duration and was rolled back.
    #[error("the transaction ran longer than {0:?} and was rolled back")]
    TransactionTooLong(Duration),
    /// The call carried no bearer token, or one that is not accepted.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The call asked for `PRIORITY_CRITICAL` with a token that lacks the `critical` scope.
    #[error(
        "PRIORITY_CRITICAL is not allowed for this token (it lacks the critical scope); send PRIORITY_NORMAL"
    )]
    PriorityNotAllowed,
    /// The sidecar is shutting down and its grace period is nearly over: a stream still open
    /// was ended (a transaction rolled back, a streaming query cancelled).
    #[error(
        "the sidecar is shutting down: the stream was ended (an open transaction is rolled back)"
    )]
    ShuttingDown,
    /// The connection was lost while COMMIT was in flight: it may or may not have committed.
    #[error(
        "the connection was lost during COMMIT; the outcome is unknown{}",
        txid.as_ref().map(|t| format!(" (txid {t}: check it with txid_status)")).unwrap_or_default()
    )]
    CommitOutcomeUnknown {
        /// The PostgreSQL transaction id, when it was learned before the loss; `None` also
        /// when the transaction wrote nothing (no id was assigned).
        txid: Option<String>,
        /// Whether the transaction had been assigned an id (had written) when last seen.
        wrote: Option<bool>,
    },
}

impl Error {
    /// A malformed request field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The condition name of a SQLSTATE (`UNIQUE_VIOLATION`), or `SQLSTATE_<code>` when unknown.
pub fn condition_name(code: &str) -> String {
    sqlstate_names::CONDITION_NAMES
        .binary_search_by(|(c, _)| (*c).cmp(code))
        .map(|i| sqlstate_names::CONDITION_NAMES[i].1.to_owned())
        .unwrap_or_else(|_| format!("SQLSTATE_{code}"))
}

/// API.md's table for single conditions; the rest go by class.
const EXACT: &[(SqlState, Code)] = &[
    (SqlState::T_R_SERIALIZATION_FAILURE, Code::Aborted),
    (SqlState::T_R_DEADLOCK_DETECTED, Code::Aborted),
    (SqlState::UNIQUE_VIOLATION, Code::AlreadyExists),
    (
        SqlState::IN_FAILED_SQL_TRANSACTION,
        Code::FailedPrecondition,
    ),
    (SqlState::UNDEFINED_TABLE, Code::NotFound),
    (SqlState::UNDEFINED_COLUMN, Code::NotFound),
    (SqlState::UNDEFINED_FUNCTION, Code::NotFound),
    (SqlState::UNDEFINED_DATABASE, Code::NotFound),
    (SqlState::INVALID_SCHEMA_NAME, Code::NotFound),
    (SqlState::INVALID_CURSOR_NAME, Code::NotFound),
    (SqlState::INVALID_SQL_STATEMENT_NAME, Code::NotFound),
    (SqlState::NO_DATA_FOUND, Code::NotFound),
    (SqlState::INSUFFICIENT_PRIVILEGE, Code::PermissionDenied),
    // A write in read-only mode (or on a hot standby) is refused, not malformed.
    (SqlState::READ_ONLY_SQL_TRANSACTION, Code::PermissionDenied),
    (SqlState::NUMERIC_VALUE_OUT_OF_RANGE, Code::OutOfRange),
    (SqlState::ADMIN_SHUTDOWN, Code::Unavailable),
    (SqlState::CRASH_SHUTDOWN, Code::Unavailable),
    (SqlState::CANNOT_CONNECT_NOW, Code::Unavailable),
    (SqlState::FEATURE_NOT_SUPPORTED, Code::Unimplemented),
    (SqlState::INTERNAL_ERROR, Code::Internal),
];

/// The gRPC code for a SQLSTATE: API.md's table, and for codes it does not list, the code a
/// client would act on the same way.
pub fn code_for_sqlstate(code: &str, message: &str) -> Code {
    let state = SqlState::from_code(code);
    if state == SqlState::QUERY_CANCELED {
        // statement_timeout expiring is a deadline; a cancel request is a cancel.
        return match message.contains("statement timeout") {
            true => Code::DeadlineExceeded,
            false => Code::Cancelled,
        };
    }
    if let Some((_, grpc)) = EXACT.iter().find(|(s, _)| *s == state) {
        return *grpc;
    }
    match code.get(..2).unwrap_or("") {
        "23" | "55" | "25" | "2B" | "2D" | "3B" | "24" | "27" | "2F" | "38" | "39" | "44"
        | "20" | "P0" => Code::FailedPrecondition,
        "28" | "0L" | "0P" => Code::PermissionDenied,
        "42" | "22" | "21" | "54" | "0B" | "0F" | "0Z" => Code::InvalidArgument,
        "53" => Code::ResourceExhausted,
        "08" | "57" | "58" | "HV" => Code::Unavailable,
        "40" => Code::Aborted,
        "XX" | "F0" => Code::Internal,
        _ => Code::Unknown,
    }
}

/// What a tokio-postgres error without a SQLSTATE says, which decides its code and whether
/// the statement may be sent again: only a lost connection is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection broke, timed out or could not be made: UNAVAILABLE.
    Connection,
    /// PostgreSQL sent what the sidecar does not handle (the copy sub-protocol, say): the
    /// connection is out of step and must be closed, and sending again would do the same.
    Protocol,
    /// The request could not be put on the wire (a NUL in a string, a message too large);
    /// nothing was sent and the connection is fine.
    Encode,
    /// Parameter `n` could not be serialized; nothing was sent.
    Param(usize),
}

impl Fault {
    /// The fault of an error PostgreSQL did not send (`None` when it did). tokio-postgres
    /// keeps its error kinds private; its `Display` names them, one fixed text per kind.
    pub fn of(e: &tokio_postgres::Error) -> Option<Fault> {
        if e.as_db_error().is_some() {
            return None;
        }
        Some(Self::from_text(&e.to_string()))
    }

    fn from_text(text: &str) -> Fault {
        if text.starts_with("unexpected message from server")
            || text.starts_with("error parsing response from server")
        {
            Fault::Protocol
        } else if text.starts_with("error encoding message to server") {
            Fault::Encode
        } else if let Some(n) = text.strip_prefix("error serializing parameter ") {
            let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
            Fault::Param(digits.parse().unwrap_or(0))
        } else {
            Fault::Connection
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_names_cover_known_and_unknown_codes() {
        assert_eq!(condition_name("23505"), "UNIQUE_VIOLATION");
        assert_eq!(condition_name("40001"), "SERIALIZATION_FAILURE");
        assert_eq!(condition_name("42P01"), "UNDEFINED_TABLE");
        assert_eq!(condition_name("ZZ999"), "SQLSTATE_ZZ999");
    }

    #[test]
    fn faults_without_sqlstate_are_told_apart_by_tokio_postgres_texts() {
        let cases = [
            ("unexpected message from server", Fault::Protocol),
            ("error parsing response from server", Fault::Protocol),
            ("error encoding message to server", Fault::Encode),
            ("error serializing parameter 3", Fault::Param(3)),
            ("connection closed", Fault::Connection),
            ("error communicating with the server", Fault::Connection),
            ("timeout waiting for server", Fault::Connection),
            ("error connecting to server", Fault::Connection),
        ];
        for (text, fault) in cases {
            assert_eq!(Fault::from_text(text), fault, "{text}");
        }
    }

    #[test]
    fn codes_follow_the_contract_table() {
        let cases = [
            ("40001", Code::Aborted),
            ("40P01", Code::Aborted),
            ("23505", Code::AlreadyExists),
            ("23503", Code::FailedPrecondition),
            ("25P02", Code::FailedPrecondition),
            ("55P03", Code::FailedPrecondition),
            ("42P01", Code::NotFound),
            ("42703", Code::NotFound),
            ("42883", Code::NotFound),
            ("42501", Code::PermissionDenied),
            ("28P01", Code::PermissionDenied),
            ("42601", Code::InvalidArgument),
            ("22P02", Code::InvalidArgument),
            ("22003", Code::OutOfRange),
            ("57014", Code::Cancelled),
            ("53300", Code::ResourceExhausted),
            ("08006", Code::Unavailable),
            ("57P01", Code::Unavailable),
            ("0A000", Code::Unimplemented),
            ("XX000", Code::Internal),
        ];
        for (sqlstate, code) in cases {
            assert_eq!(code_for_sqlstate(sqlstate, "x"), code, "{sqlstate}");
        }
        assert_eq!(
            code_for_sqlstate("57014", "canceling statement due to statement timeout"),
            Code::DeadlineExceeded
        );
    }
}
