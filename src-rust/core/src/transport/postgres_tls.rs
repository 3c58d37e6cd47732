//! TLS for `postgresql://` URLs: libpq's `sslmode` and `sslrootcert` query options, mapped onto
//! rustls with the ring provider (the system's trust store unless `sslrootcert` names a CA file).
//!
//! - no `sslmode`, `disable`, `allow`, `prefer`: a plain connection (libpq's `prefer` would try an
//!   unverified TLS first: no protection against anyone on the path either way; ask for TLS with
//!   `require` or `verify-full`).
//! - `require`: TLS. Without `sslrootcert`, as in libpq, the certificate is NOT verified (the
//!   traffic is encrypted, but anyone on the path can pose as the server); with `sslrootcert` it is
//!   verified like `verify-full`.
//! - `verify-ca`, `verify-full`: the certificate must chain to a trusted root AND name the URL's
//!   host (`verify-ca` is checked as strictly as `verify-full`: rustls has no chain-only mode).
//! - `sslrootcert=/path/ca.pem`: trust these CAs (PEM) instead of the system's; `system` (as in
//!   libpq 16) is the system's trust store.
//! - `sslcert=/path/client.pem&sslkey=/path/client.key`: a client certificate (PEM, with any
//!   intermediates after it) and its private key (PEM: PKCS#8, PKCS#1 or SEC1), for a server whose
//!   `pg_hba.conf` asks for one (`hostssl ... cert`, or `clientcert=verify-full`). Both or neither;
//!   only with TLS. Files that cannot be read, hold no certificate or key, or do not belong
//!   together are an error before connecting, naming the option and the file. (libpq's defaults
//!   under `~/.postgresql/` are not looked for: name the files.)
//!
//! Other `ssl*` options are refused by name.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WantsClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The query options handled here (taken out of the URL before the client parses it).
pub const TLS_OPTIONS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// A client certificate and its key (`sslcert`, `sslkey`), PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a connection protects itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// A plain connection.
    Off,
    /// Encrypted, the server's certificate not verified (`sslmode=require` without `sslrootcert`).
    Unverified,
    /// Encrypted, the certificate verified against `roots` (None: the system's) and the host.
    Verified { roots: Option<PathBuf> },
}

/// Splits a PostgreSQL URL into the URL without [`TLS_OPTIONS`], its TLS mode and its client
/// certificate. An unknown `sslmode`, an `sslrootcert` or client certificate without TLS, an
/// `sslcert` without its `sslkey` (or the other way round), or another `ssl*` option is an error
/// naming it.
pub fn split_tls(url: &str) -> std::result::Result<(String, TlsMode, Option<ClientCert>), String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => return Ok((url.to_string(), TlsMode::Off, None)),
    };
    let mut kept = form_urlencoded::Serializer::new(String::new());
    let mut any_kept = false;
    let (mut mode, mut root) = (None::<String>, None::<String>);
    let (mut cert, mut key) = (None::<PathBuf>, None::<PathBuf>);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "sslmode" => mode = Some(value.into_owned()),
            "sslrootcert" | "sslcert" | "sslkey" if value.is_empty() => {
                return Err(format!("{name} is empty; name a PEM file"))
            }
            "sslrootcert" => root = Some(value.into_owned()),
            "sslcert" => cert = Some(PathBuf::from(value.as_ref())),
            "sslkey" => key = Some(PathBuf::from(value.as_ref())),
            other if other.starts_with("ssl") => {
                return Err(format!(
                    "the TLS option {other} is not supported; PostgreSQL URLs take {}",
                    TLS_OPTIONS.join(", ")
                ))
            }
            _ => {
                kept.append_pair(&name, &value);
                any_kept = true;
            }
        }
    }
    let client = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
        (Some(_), None) => {
            return Err(
                "sslcert needs sslkey: name the client certificate's private key too".into(),
            )
        }
        (None, Some(_)) => {
            return Err("sslkey needs sslcert: name the client certificate too".into())
        }
    };
    let clean = if any_kept {
        format!("{base}?{}", kept.finish())
    } else {
        base.to_string()
    };
    let roots = root.filter(|r| r != "system").map(PathBuf::from);
    let tls = match mode.as_deref().unwrap_or("prefer") {
        "disable" | "allow" | "prefer" => {
            if roots.is_some() {
                return Err(
                    "sslrootcert only applies to TLS connections; add sslmode=verify-full".into(),
                );
            }
            if client.is_some() {
                return Err(
                    "sslcert and sslkey only apply to TLS connections; add sslmode=verify-full"
                        .into(),
                );
            }
            TlsMode::Off
        }
        "require" if roots.is_none() => TlsMode::Unverified,
        "require" | "verify-ca" | "verify-full" => TlsMode::Verified { roots },
        other => {
            return Err(format!(
                "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ))
        }
    };
    Ok((clean, tls, client))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls connector of a TLS mode and client certificate (`None` for a plain connection). A
/// CA, certificate or key file that cannot be read or holds nothing usable is an error here, not
/// a failed handshake later.
pub fn connector(mode: &TlsMode, client: Option<&ClientCert>) -> Result<Option<MakeRustlsConnect>> {
    let builder = match mode {
        TlsMode::Off => return Ok(None),
        _ => ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS for PostgreSQL: {e}")))?,
    };
    let config = match mode {
        TlsMode::Off => return Ok(None),
        TlsMode::Unverified => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider()))),
        TlsMode::Verified { roots } => {
            let mut store = RootCertStore::empty();
            match roots {
                Some(path) => {
                    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                        .and_then(|it| it.collect::<std::result::Result<_, _>>())
                        .map_err(|e| {
                            Error::Config(format!(
                                "sslrootcert={}: cannot read PEM certificates from it ({e})",
                                path.display()
                            ))
                        })?;
                    if certs.is_empty() {
                        return Err(Error::Config(format!(
                            "sslrootcert={}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                            path.display()
                        )));
                    }
                    store.add_parsable_certificates(certs);
                }
                None => {
                    store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                }
            }
            builder.with_root_certificates(store)
        }
    };
    Ok(Some(MakeRustlsConnect::new(with_client(config, client)?)))
}

/// The config with the client certificate (or without any).
fn with_client(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    client: Option<&ClientCert>,
) -> Result<ClientConfig> {
    let Some(client) = client else {
        return Ok(builder.with_no_client_auth());
    };
    let (cert_path, key_path) = (client.cert.display(), client.key.display());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&client.cert)
        .and_then(|it| it.collect::<std::result::Result<_, _>>())
        .map_err(|e| {
            Error::Config(format!(
                "sslcert={cert_path}: cannot read a PEM certificate from it ({e})"
            ))
        })?;
    if chain.is_empty() {
        return Err(Error::Config(format!(
            "sslcert={cert_path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&client.key).map_err(|e| {
        Error::Config(format!(
            "sslkey={key_path}: cannot read a PEM private key from it ({e})"
        ))
    })?;
    builder.with_client_auth_cert(chain, key).map_err(|e| {
        Error::Config(format!(
            "sslcert={cert_path} with sslkey={key_path}: not a usable client certificate and key ({e})"
        ))
    })
}

/// `sslmode=require` without a CA: libpq's behaviour, encryption without authentication. The
/// handshake's signatures are still checked (the session key belongs to whoever answered).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_tls_modes() {
        let (url, mode, _) = split_tls("postgresql://h/db").unwrap();
        assert_eq!((url.as_str(), mode), ("postgresql://h/db", TlsMode::Off));
        let (url, mode, _) =
            split_tls("postgresql://h/db?sslmode=require&connect_timeout=3").unwrap();
        assert_eq!(
            (url.as_str(), mode),
            ("postgresql://h/db?connect_timeout=3", TlsMode::Unverified)
        );
        let (_, mode, _) =
            split_tls("postgresql://h/db?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            mode,
            TlsMode::Verified {
                roots: Some("/ca.pem".into())
            }
        );
        let (_, mode, client) =
            split_tls("postgresql://h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!((mode, client), (TlsMode::Verified { roots: None }, None));
        let (url, _, client) =
            split_tls("postgresql://h/db?sslmode=verify-full&sslcert=/c.pem&sslkey=/c.key")
                .unwrap();
        assert_eq!(url, "postgresql://h/db");
        assert_eq!(
            client,
            Some(ClientCert {
                cert: "/c.pem".into(),
                key: "/c.key".into()
            })
        );
    }

    #[test]
    fn test_split_tls_refuses_what_it_cannot_honour() {
        for (url, needle) in [
            (
                "postgresql://h/db?sslmode=sometimes",
                "sslmode=\"sometimes\"",
            ),
            (
                "postgresql://h/db?sslmode=require&sslcert=/c.pem",
                "sslcert needs sslkey",
            ),
            (
                "postgresql://h/db?sslmode=require&sslkey=/c.key",
                "sslkey needs sslcert",
            ),
            (
                "postgresql://h/db?sslcert=/c.pem&sslkey=/c.key",
                "only apply to TLS connections",
            ),
            (
                "postgresql://h/db?sslcrl=/crl.pem",
                "sslcrl is not supported",
            ),
            (
                "postgresql://h/db?sslrootcert=/ca.pem",
                "add sslmode=verify-full",
            ),
            (
                "postgresql://h/db?sslmode=verify-full&sslrootcert=",
                "sslrootcert is empty",
            ),
        ] {
            let err = split_tls(url).unwrap_err();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn test_connector_checks_the_ca_file() {
        let missing = TlsMode::Verified {
            roots: Some("/nonexistent/ca.pem".into()),
        };
        let err = connector(&missing, None).err().unwrap().to_string();
        assert!(err.contains("sslrootcert=/nonexistent/ca.pem"), "{err}");
        assert!(connector(&TlsMode::Off, None).unwrap().is_none());
        assert!(connector(&TlsMode::Unverified, None).unwrap().is_some());
        assert!(connector(&TlsMode::Verified { roots: None }, None)
            .unwrap()
            .is_some());
    }

    #[test]
    fn test_connector_checks_the_client_certificate_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not PEM at all\n").unwrap();
        let client = |cert: &std::path::Path, key: &std::path::Path| ClientCert {
            cert: cert.into(),
            key: key.into(),
        };
        let missing = dir.path().join("missing.pem");
        let err = connector(&TlsMode::Unverified, Some(&client(&missing, &empty)))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("sslcert={}", missing.display())),
            "{err}"
        );
        let err = connector(&TlsMode::Unverified, Some(&client(&empty, &empty)))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
