//! Fuzz target: request validation. The input is a protobuf `QueryRequest` as a client could
//! send it; it goes through every check and classification that runs before any SQL reaches
//! PostgreSQL, with tight limits so that the limit paths run too. None may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsidecar::config::Limits;
use pgsidecar::rpc::checks;
use pgsidecar::telemetry::report;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pgsidecar::proto::QueryRequest::decode(data) else {
        return;
    };
    for limits in [
        Limits { max_sql_bytes: 1 << 20, max_params: 65535, max_message_bytes: 4 << 20, max_rows: 10_000, max_concurrent_streams: 200 },
        Limits { max_sql_bytes: 16, max_params: 2, max_message_bytes: 1024, max_rows: 1, max_concurrent_streams: 1 },
    ] {
        let _ = checks::validate_statement(&req.sql, &req.params, &limits);
    }
    let _ = checks::may_change_session(&req.sql);
    let _ = checks::transaction_control(&req.sql);
    let _ = checks::command_tag_shape(&req.sql).render(7);
    let _ = report::fingerprint(&req.sql);
    let _ = report::key_of(&req.sql);
});
