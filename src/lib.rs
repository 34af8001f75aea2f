//! pgsidecar: a gRPC data-access sidecar that gives services in any language pooled, typed,
//! prioritised access to PostgreSQL through the `dataaccess.v1.DataAccess` service.
//!
//! The modules follow a request's path, and each imports only from those listed before it:
//! leaves (`proto`, `hash`, `time`, `conninfo`, `config`, `sql`, `codec`, `telemetry`, `listen`) →
//! `pool` → `error` → `exec` → `pipeline` → `health`, `rpc` → `app`. `analyze` is a client of the API.
//! One exception, by path only: the generated code in `proto` encodes and decodes with
//! `rpc::codec`, so that an undecodable request is answered like any other bad request.
#![forbid(unsafe_code)]

pub mod proto;

pub mod codec;
pub mod config;
pub mod conninfo;
pub mod hash;
pub mod sql;
pub mod telemetry;
pub mod time;

pub mod listen;

pub mod pool;

pub mod error;

pub mod exec;

pub mod pipeline;

pub mod health;
pub mod rpc;

pub mod analyze;
pub mod app;
