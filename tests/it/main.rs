//! The integration tests, one binary (as tokio-postgres's `tests/test/main.rs`): each
//! module drives the real pgsidecar binary over gRPC against a real PostgreSQL, sharing
//! `support` (the sidecar launcher, a temporary cluster, a fault-injecting TCP proxy).

mod support;

mod abuse;
mod codec;
mod command_tags;
mod differential;
mod error_contracts;
mod errors;
mod faults;
mod hygiene;
mod late_database;
mod memory;
mod observability;
mod pipeline;
mod pool;
mod query;
mod replicas;
mod roundtrip;
mod security;
mod server;
mod session_leaks;
mod stalled;
mod statements;
mod stream;
mod tls;
mod transaction;
mod transaction_faults;
