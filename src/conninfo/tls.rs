//! TLS to PostgreSQL: libpq's `sslmode` and `sslrootcert`, read from the connection string
//! and carried out with rustls (managed PostgreSQL requires TLS, usually verified).
//!
//! tokio-postgres itself knows only `disable`, `prefer` and `require`, and never verifies a
//! certificate; so `verify-ca`, `verify-full` and `sslrootcert` are taken out of the string
//! here, the negotiation is ours (connector.rs), and the rustls verifier does the
//! verifying. As in libpq: `prefer` (the default) and `require` encrypt without checking the
//! certificate, unless `sslrootcert` is given, which makes `require` act as `verify-ca`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection uses TLS, as libpq's `sslmode` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// If the server offers it, unverified (libpq's default).
    Prefer,
    /// Always, unverified.
    Require,
    /// Always, the certificate chain checked against the root certificates.
    VerifyCa,
    /// Always, the chain checked and the host name matched against the certificate.
    VerifyFull,
}

/// The TLS settings of one connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgTls {
    /// The mode.
    pub mode: SslMode,
    /// PEM file of the root certificates to trust; `None` = the platform's store.
    pub root_cert: Option<String>,
}

/// The connection string without the options tokio-postgres refuses, and the TLS settings
/// they held. Works on both forms: `postgres://...?sslmode=verify-full` and
/// `host=... sslmode=verify-full` (key=value values with spaces must not be TLS options).
pub fn split(conn: &str) -> Result<(String, PgTls), String> {
    let mut tls = PgTls {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let mut taken_any = false;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => {
                tls.mode = match value {
                    "disable" | "allow" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode must be disable, prefer, require, verify-ca or verify-full, got {other:?}"
                        ));
                    }
                };
                taken_any = true;
                Ok(true)
            }
            "sslrootcert" => {
                tls.root_cert = Some(value.to_owned()).filter(|v| v != "system");
                taken_any = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        // Only the query is ours to read: the rest goes to tokio-postgres as written, which
        // also takes what a generic URL parser refuses (`host1:5432,host2:5433`).
        let (base, query) = conn.split_once('?').unwrap_or((conn, ""));
        // The pairs we do not take are passed on byte for byte, as written: decoding and
        // encoding them again would change what tokio-postgres reads (`+`, `%20`).
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |t: &str| {
                percent_encoding::percent_decode_str(t)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            if !take(&decode(k), &decode(v))? {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for word in conn.split_whitespace() {
            let taken = match word.split_once('=') {
                Some((k, v)) => take(k.trim(), v.trim_matches('\''))?,
                None => false,
            };
            if !taken {
                kept.push(word);
            }
        }
        kept.join(" ")
    };
    // Untouched strings pass through byte for byte.
    let rest = if taken_any { rest } else { conn.to_owned() };
    // libpq: a root certificate given with require means verify-ca.
    if tls.mode == SslMode::Require && tls.root_cert.is_some() {
        tls.mode = SslMode::VerifyCa;
    }
    Ok((rest, tls))
}

impl PgTls {
    /// The connector for these settings; reads the root certificates, if any.
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let check = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Check::Nothing,
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("root certificates: {e}"))?;
                if self.mode == SslMode::VerifyCa {
                    Check::Chain(webpki)
                } else {
                    Check::ChainAndName(webpki)
                }
            }
        };
        let verifier = Verifier {
            check,
            algorithms: provider.signature_verification_algorithms,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {path:?}: {e}"))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("sslrootcert {path:?}: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {path:?}: {e}"))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
            }
        }
        if roots.is_empty() {
            return Err("no root certificates to verify the server with (set sslrootcert)".into());
        }
        Ok(roots)
    }
}

/// What is checked of the server's certificate.
#[derive(Debug)]
enum Check {
    /// Nothing: libpq's `prefer` and `require` encrypt without checking who answered.
    Nothing,
    /// libpq's `verify-ca`: the chain must lead to a trusted root; the name is not checked.
    Chain(Arc<WebPkiServerVerifier>),
    /// libpq's `verify-full`: the chain, and the host name or address against it.
    ChainAndName(Arc<WebPkiServerVerifier>),
}

/// The server certificate verifier for every sslmode. Handshake signatures are always
/// checked, so even an unverified connection's handshake is sound.
#[derive(Debug)]
struct Verifier {
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        let (webpki, name_matters) = match &self.check {
            Check::Nothing => return Ok(ServerCertVerified::assertion()),
            Check::Chain(webpki) => (webpki, false),
            Check::ChainAndName(webpki) => (webpki, true),
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !name_matters => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_options_are_taken_out_of_both_forms() {
        let (rest, tls) = split(
            "postgres://u:p@db:5432/app?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/app?application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert.as_deref(), Some("/ca.pem"));
        let (rest, tls) = split("host=db user=u sslmode=require sslrootcert=/ca.pem").unwrap();
        assert_eq!(rest, "host=db user=u");
        assert_eq!(
            tls.mode,
            SslMode::VerifyCa,
            "libpq: require + a root cert = verify-ca"
        );
        let (rest, tls) = split("postgres://db/app").unwrap();
        assert_eq!(
            (rest.as_str(), tls.mode),
            ("postgres://db/app", SslMode::Prefer)
        );
        let (_, tls) = split("postgres://db/app?sslmode=disable").unwrap();
        assert_eq!(tls.mode, SslMode::Disable);
        assert!(split("postgres://db/app?sslmode=sometimes").is_err());
        // Several hosts, and the other pairs passed on exactly as written.
        let (rest, tls) = split(
            "postgres://u@db1:5432,db2:5433/app?options=-c%20x%3Dy&sslmode=require&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u@db1:5432,db2:5433/app?options=-c%20x%3Dy&target_session_attrs=read-write"
        );
        assert_eq!(tls.mode, SslMode::Require);
        let (_, tls) = split("postgres://db/app?sslm%6Fde=disable").unwrap();
        assert_eq!(tls.mode, SslMode::Disable, "keys are percent-decoded");
    }
}
