//! pgsidecar: a gRPC data-access sidecar that gives services in any language pooled, typed,
//! prioritised access to PostgreSQL through the `dataaccess.v1.DataAccess` service.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod auth;
pub mod codec;
pub mod config;
pub mod error;
pub mod health;
pub mod pool;
pub mod proto;
pub mod server;
pub mod service;
pub mod statements;
pub mod telemetry;
