//! PoolStatus and StatementReport: answers built from the pools' and the figures' snapshots.

use crate::proto::{PoolStatusResponse, StatementReportResponse};

use super::State;

/// Builds the StatementReport answer.
pub(super) fn statement_report(state: &State, limit: u32) -> StatementReportResponse {
    let limit = if limit == 0 { 20 } else { limit as usize };
    StatementReportResponse {
        statements: state.stats.top_statements(limit),
    }
}

/// Builds the PoolStatus answer.
pub(super) fn pool_status(state: &State) -> PoolStatusResponse {
    PoolStatusResponse {
        pools: state.pools.stats(),
        queries: Some(state.stats.snapshot()),
        statement_cache: Some(state.pools.cache_stats()),
        database_reachable: state.health.database_reachable(),
        uptime: prost_types::Duration::try_from(state.stats.uptime()).ok(),
    }
}
