//! TLS both ways, with certificates made in the test (rcgen): gRPC clients over TLS and mTLS,
//! and the sidecar's own connections to a private PostgreSQL cluster serving TLS, under each
//! sslmode, including a CancelRequest sent over TLS.

use std::time::Duration;

use crate::support::cluster::TempCluster;
use crate::support::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A certificate authority made for one test.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        Ca(CertifiedIssuer::self_signed(params, key).expect("CA"))
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) and its key, both PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "pgsidecar test");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.0).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

/// A Query over a TLS channel; the error, if any, is reduced to its code.
async fn tls_query(
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
) -> Result<pgsidecar::proto::Value, Code> {
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|_| Code::Unavailable)?;
    let mut c = pgsidecar::proto::data_access_client::DataAccessClient::new(channel);
    let r = query(&mut c, "SELECT 1::int", vec![]).await;
    r.map(|r| scalar(&r).clone()).map_err(|e| e.code())
}

#[tokio::test]
async fn grpc_clients_connect_over_tls_and_mtls() {
    let (server_ca, client_ca, stranger_ca) = (
        Ca::new("server CA"),
        Ca::new("client CA"),
        Ca::new("other CA"),
    );
    let files = TempFiles::new();
    let (cert, key) = server_ca.issue(&["localhost", "127.0.0.1"]);
    let (cert, key) = (
        files.write("server.crt", &cert),
        files.write("server.key", &key),
    );
    let trust = Certificate::from_pem(server_ca.pem());
    let client = || {
        ClientTlsConfig::new()
            .ca_certificate(trust.clone())
            .domain_name("localhost")
    };

    // TLS: a client trusting the CA is served; a plaintext client is not.
    let sidecar = Sidecar::start(&["--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(tls_query(sidecar.grpc, client()).await, Ok(int(1)));
    let mut plain = sidecar.client().await;
    let e = query(&mut plain, "SELECT 1", vec![])
        .await
        .expect_err("plaintext refused");
    assert!(
        matches!(e.code(), Code::Unavailable | Code::Unknown | Code::Internal),
        "{e:?}"
    );
    // A client that does not trust the server's CA refuses it.
    let wrong_trust = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(stranger_ca.pem()))
        .domain_name("localhost");
    assert!(tls_query(sidecar.grpc, wrong_trust).await.is_err());
    drop(sidecar);

    // mTLS: only a client certificate signed by the client CA gets in.
    let ca = files.write("clients.crt", &client_ca.pem());
    let sidecar = Sidecar::start(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
    ]);
    let (c_cert, c_key) = client_ca.issue(&["app"]);
    let with_id = client().identity(Identity::from_pem(&c_cert, &c_key));
    assert_eq!(tls_query(sidecar.grpc, with_id).await, Ok(int(1)));
    assert!(
        tls_query(sidecar.grpc, client()).await.is_err(),
        "no client certificate"
    );
    let (s_cert, s_key) = stranger_ca.issue(&["app"]);
    let stranger = client().identity(Identity::from_pem(&s_cert, &s_key));
    assert!(
        tls_query(sidecar.grpc, stranger).await.is_err(),
        "certificate from another CA"
    );
}

/// Whether the sidecar's connection runs over TLS, as PostgreSQL sees it.
async fn ssl_in_use(sidecar: &Sidecar) -> Result<bool, tonic::Status> {
    let mut c = sidecar.client().await;
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let r = query(&mut c, sql, vec![]).await?;
    Ok(scalar(&r) == &boolean(true))
}

fn sidecar_for(url: &str) -> Sidecar {
    Sidecar::start(&[
        "--database-url",
        url,
        "--pool-min",
        "0",
        "--connection-timeout",
        "2000",
    ])
}

#[tokio::test]
async fn postgres_connections_use_tls_as_sslmode_says() {
    let (ca, stranger_ca) = (Ca::new("db CA"), Ca::new("other CA"));
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    let cluster = TempCluster::start_tls(40, &cert, &key);
    let files = TempFiles::new();
    let root = files.write("root.crt", &ca.pem());
    let wrong_root = files.write("wrong.crt", &stranger_ca.pem());
    let base = cluster.url();

    for (query_string, encrypted) in [
        ("sslmode=disable", false),
        ("sslmode=prefer", true),
        ("sslmode=require", true),
        (
            &format!("sslmode=verify-ca&sslrootcert={root}") as &str,
            true,
        ),
        (&format!("sslmode=verify-full&sslrootcert={root}"), true),
    ] {
        let sidecar = sidecar_for(&format!("{base}?{query_string}"));
        let ssl = ssl_in_use(&sidecar).await;
        assert_eq!(ssl.map_err(|e| e.code()), Ok(encrypted), "{query_string}");
    }

    // Verification that must fail: a root that did not sign the server's certificate.
    let sidecar = sidecar_for(&format!(
        "{base}?sslmode=verify-full&sslrootcert={wrong_root}"
    ));
    let e = ssl_in_use(&sidecar)
        .await
        .expect_err("untrusted server refused");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    drop(sidecar);

    // A certificate for another name: verify-full refuses it, verify-ca accepts it.
    let other = ca.issue(&["db.elsewhere.example"]);
    drop(cluster);
    let cluster = TempCluster::start_tls(40, &other.0, &other.1);
    let base = cluster.url();
    let full = sidecar_for(&format!("{base}?sslmode=verify-full&sslrootcert={root}"));
    let e = ssl_in_use(&full).await.expect_err("name mismatch refused");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let chain_only = sidecar_for(&format!("{base}?sslmode=verify-ca&sslrootcert={root}"));
    assert_eq!(
        ssl_in_use(&chain_only).await.map_err(|e| e.code()),
        Ok(true)
    );

    // A deadline's CancelRequest reaches PostgreSQL over TLS too.
    let mut c = chain_only.client().await;
    let mut req = tonic::Request::new(request(
        "SELECT pg_sleep(30)::text AS tls_cancel_probe",
        vec![],
    ));
    req.set_timeout(Duration::from_millis(800));
    let e = c.query(req).await.expect_err("deadline");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("admin");
    tokio::spawn(conn);
    let stopped = eventually(Duration::from_secs(3), || {
        let admin = &admin;
        async move { active_statements(admin, "tls_cancel_probe").await == 0 }
    })
    .await;
    assert!(stopped, "the statement was cancelled in PostgreSQL");
}
