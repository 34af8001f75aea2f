//! Command tags against PostgreSQL itself: every case of `tests/fixtures/command_tags.toml`
//! (one or more per tag of PostgreSQL's list, cmdtaglist.h) runs once directly, where the
//! tag is read off the wire (CommandComplete), and once through the sidecar, which rebuilds
//! it from the statement's text; the two must be the same, and the same as the table's.
//!
//! The cases run on a private cluster (roles, databases, tablespaces and subscriptions are
//! cluster-wide), one after another, since many of them change the catalog.

use bytes::BytesMut;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::cluster::TempCluster;
use crate::support::*;

#[derive(Debug, serde::Deserialize)]
struct Table {
    case: Vec<Case>,
}

#[derive(Debug, serde::Deserialize)]
struct Case {
    /// What PostgreSQL 15 sends, row count included.
    tag: String,
    sql: String,
    #[serde(default)]
    setup: Vec<String>,
    #[serde(default)]
    cleanup: Vec<String>,
    /// Runs inside a transaction (with its setup and cleanup), rolled back after.
    #[serde(default)]
    transaction: bool,
    /// Transaction control, which the sidecar refuses by design.
    #[serde(default)]
    refused: bool,
    /// Why the sidecar's tag is known to differ: an explained, documented limit.
    differs: Option<String>,
}

/// A bare connection speaking the simple query protocol, for the one thing tokio-postgres
/// does not hand over: the command tag itself.
struct Wire {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire {
    async fn connect(port: u16) -> Wire {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut wire = Wire {
            stream,
            buf: BytesMut::new(),
        };
        let mut out = BytesMut::new();
        frontend::startup_message([("user", "postgres"), ("database", "postgres")], &mut out)
            .expect("startup message");
        wire.stream.write_all(&out).await.expect("send startup");
        wire.until_ready().await.expect("trust authentication");
        wire
    }

    /// Runs `sql` (one statement): its tag, or the SQLSTATE it failed with.
    async fn run(&mut self, sql: &str) -> Result<String, String> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).expect("query message");
        self.stream.write_all(&out).await.expect("send query");
        self.until_ready().await
    }

    /// Reads up to ReadyForQuery: the last CommandComplete tag, or the error's SQLSTATE.
    async fn until_ready(&mut self) -> Result<String, String> {
        use fallible_iterator::FallibleIterator;
        let (mut tag, mut error) = (String::new(), None);
        loop {
            while let Some(message) = backend::Message::parse(&mut self.buf).expect("parse") {
                match message {
                    backend::Message::CommandComplete(body) => {
                        tag = body.tag().expect("tag").to_owned();
                    }
                    backend::Message::ErrorResponse(body) => {
                        let mut fields = body.fields();
                        while let Some(f) = fields.next().expect("field") {
                            if f.type_() == b'C' {
                                let code = String::from_utf8_lossy(f.value_bytes()).into_owned();
                                error = Some(code);
                            }
                        }
                    }
                    backend::Message::ReadyForQuery(_) => {
                        return match error {
                            Some(code) => Err(code),
                            None => Ok(tag),
                        };
                    }
                    _ => {}
                }
            }
            let n = self.stream.read_buf(&mut self.buf).await.expect("read");
            assert!(n > 0, "PostgreSQL closed the connection");
        }
    }

    async fn must(&mut self, sql: &str) {
        if let Err(code) = self.run(sql).await {
            panic!("{sql}: failed with {code}");
        }
    }
}

/// The tag the sidecar gives for `case`, run as the case says.
async fn through_sidecar(
    client: &mut pgsidecar::proto::data_access_client::DataAccessClient<tonic::transport::Channel>,
    wire: &mut Wire,
    case: &Case,
) -> Result<String, String> {
    if !case.transaction {
        for sql in &case.setup {
            wire.must(sql).await;
        }
        let tag = query(client, &case.sql, vec![])
            .await
            .map(|r| r.command_tag)
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
        for sql in &case.cleanup {
            wire.must(sql).await;
        }
        return tag;
    }
    use pgsidecar::proto::statement_result::Outcome;
    let mut tx = TxStream::open(client, pgsidecar::proto::BeginTransaction::default()).await;
    let _begun = tx.next().await.expect("begun");
    let all: Vec<&String> = case
        .setup
        .iter()
        .chain([&case.sql])
        .chain(&case.cleanup)
        .collect();
    for (i, sql) in all.iter().enumerate() {
        tx.execute(&i.to_string(), sql, vec![]).await;
    }
    let mut tag = Err("no result".to_owned());
    for (i, sql) in all.iter().enumerate() {
        let result = tx.result().await;
        let this = match result.outcome {
            Some(Outcome::Response(r)) => Ok(r.command_tag),
            Some(Outcome::Error(e)) => Err(format!("{} ({sql})", e.message)),
            None => Err("empty result".to_owned()),
        };
        if i == case.setup.len() {
            tag = this;
        } else if let Err(e) = this {
            panic!("setup or cleanup of {:?} failed: {e}", case.sql);
        }
    }
    tx.rollback().await;
    tag
}

/// The tag PostgreSQL sends for `case`, run on `wire`.
async fn directly(wire: &mut Wire, case: &Case) -> Result<String, String> {
    if case.transaction {
        wire.must("BEGIN").await;
    }
    for sql in &case.setup {
        wire.must(sql).await;
    }
    let tag = wire.run(&case.sql).await;
    for sql in &case.cleanup {
        wire.must(sql).await;
    }
    if case.transaction {
        wire.must("ROLLBACK").await;
    }
    tag
}

#[tokio::test]
async fn every_command_tag_is_the_one_postgresql_sends() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/command_tags.toml"
    );
    let table: Table = toml::from_str(&std::fs::read_to_string(path).expect("the tag table"))
        .expect("the tag table parses");
    let cluster =
        TempCluster::start_tuned(30, "max_prepared_transactions = 2\nwal_level = logical\n");
    let url = cluster.url();
    let sidecar = Sidecar::start(&["--database-url", &url]);
    let mut client = sidecar.client().await;
    let mut wire = Wire::connect(cluster.port).await;
    let mut failures = Vec::new();
    let (mut refused, mut explained) = (0, 0);
    for case in &table.case {
        let real = directly(&mut wire, case).await;
        if real.as_deref() != Ok(case.tag.as_str()) {
            failures.push(format!(
                "{}: PostgreSQL sent {real:?}, the table says {:?}",
                case.sql, case.tag
            ));
            continue;
        }
        if case.refused {
            // Transaction control: refused before it reaches PostgreSQL, with the reason.
            let e = query(&mut client, &case.sql, vec![])
                .await
                .expect_err("transaction control is refused");
            if e.code() != tonic::Code::InvalidArgument {
                failures.push(format!("{}: refused with {e:?}", case.sql));
            }
            refused += 1;
            continue;
        }
        let ours = through_sidecar(&mut client, &mut wire, case).await;
        let same = ours.as_deref() == Ok(case.tag.as_str());
        match (&case.differs, same) {
            (None, true) => {}
            (Some(_), false) => explained += 1,
            (None, false) => failures.push(format!(
                "{}: PostgreSQL sent {:?}, the sidecar said {ours:?}",
                case.sql, case.tag
            )),
            (Some(why), true) => failures.push(format!(
                "{}: marked as differing ({why}), but the sidecar now agrees",
                case.sql
            )),
        }
    }
    println!(
        "command tags: {} cases ({refused} refused by design, {explained} explained \
         differences), {} failures",
        table.case.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        table.case.len(),
        failures.join("\n")
    );
}
