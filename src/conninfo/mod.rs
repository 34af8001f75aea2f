//! Connection strings: libpq URLs and key=value strings turned into a
//! `tokio_postgres::Config` with the session settings every pooled connection starts with,
//! the password kept out of anything printed, sslmode/sslrootcert over rustls, and the
//! guard that bounds what one message from PostgreSQL may make us buffer.

pub mod connector;
pub mod framing;
pub mod redact;
pub mod tls;

pub use connector::PgConnect;
pub use framing::Tripwire;
pub use redact::redact_url;

use std::str::FromStr;
use std::time::Duration;

/// What every pooled session starts with, beyond what the connection string says.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// `statement_timeout`; `None` leaves it off.
    pub statement_timeout: Option<Duration>,
    /// `idle_in_transaction_session_timeout`.
    pub idle_in_transaction_timeout: Duration,
    /// Start sessions with `default_transaction_read_only=on`.
    pub read_only: bool,
    /// Limit on opening the connection.
    pub connect_timeout: Duration,
    /// Longest message accepted from PostgreSQL (its declared length); a longer one is
    /// refused before it is read, and its connection closed.
    pub max_backend_message: u64,
}

/// The driver configuration and TLS connector for `url` with `settings` applied. The
/// settings go in the startup packet, so they cost no round trip and `RESET ALL` returns to
/// them.
pub fn session_config(
    url: &str,
    settings: &SessionSettings,
) -> Result<(tokio_postgres::Config, PgConnect), String> {
    let (url, tls) = tls::split(url)?;
    let mut pg = tokio_postgres::Config::from_str(&url).map_err(|e| e.to_string())?;
    if pg.get_application_name().is_none() {
        pg.application_name("pgsidecar");
    }
    let statement_timeout = settings.statement_timeout.map_or(0, |d| d.as_millis());
    // Result text forms (interval, timestamps inside composites) assume these settings.
    let mut ours = format!(
        "-c statement_timeout={statement_timeout} \
         -c idle_in_transaction_session_timeout={} \
         -c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres",
        settings.idle_in_transaction_timeout.as_millis()
    );
    // Read-only mode: RESET returns to this startup value, so a session that changed it is
    // put back before reuse.
    if settings.read_only {
        ours.push_str(" -c default_transaction_read_only=on");
    }
    let options = match pg.get_options() {
        Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    pg.options(&options);
    pg.connect_timeout(settings.connect_timeout);
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(30));
    let connect = PgConnect::configure(
        &mut pg,
        tls.mode,
        tls.connector()?,
        settings.max_backend_message,
    )?;
    Ok((pg, connect))
}
