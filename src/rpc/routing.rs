//! Where a request may be served, from its `ReadFrom`: the primary, or a read replica
//! under a staleness bound and a read-your-writes token; and the token itself, the
//! primary's WAL position read once a write has committed.

use std::time::Duration;

use super::State;
use crate::error::Error;
use crate::pool::{Lsn, Preference, ReadRoute};
use crate::proto::{Priority, ReadFrom, ReadPreference};

/// The route of a request's `read_from` (`field` names it in errors): `None` for the
/// primary, as when it is unset.
pub(super) fn read_route(read: Option<&ReadFrom>, field: &str) -> Result<Option<ReadRoute>, Error> {
    let Some(read) = read else {
        return Ok(None);
    };
    let preference = match ReadPreference::try_from(read.preference) {
        Ok(ReadPreference::Unspecified | ReadPreference::Primary) => None,
        Ok(ReadPreference::ReplicaPreferred) => Some(Preference::ReplicaPreferred),
        Ok(ReadPreference::ReplicaOnly) => Some(Preference::ReplicaOnly),
        Err(_) => {
            return Err(Error::invalid(
                format!("{field}.preference"),
                format!("unknown read preference {}", read.preference),
            ));
        }
    };
    let max_staleness = match read.max_staleness.map(std::time::Duration::try_from) {
        None => None,
        Some(Ok(d)) if d.is_zero() => None,
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => {
            return Err(Error::invalid(
                format!("{field}.max_staleness"),
                "must not be negative; leave it unset for the server's default",
            ));
        }
    };
    let min_lsn = match read.min_lsn.as_str() {
        "" => None,
        text => Some(text.parse::<Lsn>().map_err(|why| {
            Error::invalid(format!("{field}.min_lsn"), format!("{why}, got {text:?}"))
        })?),
    };
    Ok(preference.map(|preference| ReadRoute {
        preference,
        max_staleness,
        min_lsn,
    }))
}

/// Longest wait for the commit LSN after a commit: the statement is done, and the answer
/// must not hang on a connection that stopped answering.
const COMMIT_LSN_WAIT: Duration = Duration::from_secs(2);

/// The read-your-writes token after a commit on `client`: the primary's WAL insert
/// position (without a page header just begun), which is at or past the end of the commit
/// record just written (a standby that has replayed it has replayed the commit), in
/// `pg_lsn` text.
pub(crate) async fn commit_lsn(client: &tokio_postgres::Client) -> Result<String, Error> {
    let asked = client.simple_query(crate::pool::INSERT_POSITION_SQL);
    let rows = tokio::time::timeout(COMMIT_LSN_WAIT, asked)
        .await
        .map_err(|_| Error::DeadlineExceeded { cause: None })??;
    Ok(crate::pool::insert_position(&crate::pool::first_row(&rows))
        .map(|lsn| lsn.to_string())
        .unwrap_or_default())
}

/// Whether `pool` reaches the primary's server itself: the primary pool, and the failover
/// pool unless `DB_FAILOVER_DATABASE_URL` names another server. Only there is a commit LSN
/// the primary's position.
pub(super) fn on_primary(state: &State, pool: &str) -> bool {
    pool == "primary"
        || (pool == "failover"
            && state.config.failover.database_url == state.config.primary.database_url)
}

/// The priority a read routed by `route` has when no replica could take it: its own,
/// except that a read-your-writes read must reach the primary's server, so it does not go
/// to a failover pool that names another one.
pub(super) fn fallback_priority(
    state: &State,
    route: Option<&ReadRoute>,
    priority: Priority,
) -> Priority {
    match route {
        Some(r) if r.min_lsn.is_some() && !on_primary(state, "failover") => Priority::Normal,
        _ => priority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_from_is_checked_field_by_field() {
        assert!(read_route(None, "read_from").unwrap().is_none());
        let primary = ReadFrom {
            preference: ReadPreference::Primary as i32,
            min_lsn: "0/1".into(),
            ..Default::default()
        };
        assert!(read_route(Some(&primary), "read_from").unwrap().is_none());
        let bad = |r: ReadFrom| match read_route(Some(&r), "read_from") {
            Err(Error::InvalidRequest { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let replica = ReadFrom {
            preference: ReadPreference::ReplicaOnly as i32,
            ..Default::default()
        };
        assert_eq!(
            bad(ReadFrom {
                preference: 9,
                ..replica.clone()
            }),
            "read_from.preference"
        );
        assert_eq!(
            bad(ReadFrom {
                min_lsn: "nope".into(),
                ..replica.clone()
            }),
            "read_from.min_lsn"
        );
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(
            bad(ReadFrom {
                max_staleness: Some(negative),
                ..replica.clone()
            }),
            "read_from.max_staleness"
        );
        let ok = ReadFrom {
            min_lsn: "1/2".into(),
            ..replica
        };
        let route = read_route(Some(&ok), "read_from").unwrap().unwrap();
        assert_eq!(route.preference, Preference::ReplicaOnly);
        assert_eq!(route.min_lsn, Some(Lsn((1 << 32) | 2)));
        assert_eq!(route.max_staleness, None);
    }
}
