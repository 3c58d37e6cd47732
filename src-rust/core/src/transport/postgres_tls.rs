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
//!
//! Client certificates (`sslcert`, `sslkey`) and other `ssl*` options are refused by name.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The query options handled here (taken out of the URL before the client parses it).
pub const TLS_OPTIONS: [&str; 2] = ["sslmode", "sslrootcert"];

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

/// Splits a PostgreSQL URL into the URL without [`TLS_OPTIONS`] and its TLS mode. An unknown
/// `sslmode`, an `sslrootcert` without TLS, or another `ssl*` option is an error naming it.
pub fn split_tls(url: &str) -> std::result::Result<(String, TlsMode), String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => return Ok((url.to_string(), TlsMode::Off)),
    };
    let mut kept = form_urlencoded::Serializer::new(String::new());
    let mut any_kept = false;
    let (mut mode, mut root) = (None::<String>, None::<String>);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "sslmode" => mode = Some(value.into_owned()),
            "sslrootcert" if value.is_empty() => {
                return Err("sslrootcert is empty; name a PEM file of CA certificates".into())
            }
            "sslrootcert" => root = Some(value.into_owned()),
            other if other.starts_with("ssl") => {
                return Err(format!(
                    "the TLS option {other} is not supported; PostgreSQL URLs take {}",
                    TLS_OPTIONS.join(", ")
                ))
            }
            _ => {
                kept.append_pair(&key, &value);
                any_kept = true;
            }
        }
    }
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
    Ok((clean, tls))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls connector of a TLS mode (`None` for a plain connection). A CA file that cannot be
/// read or holds no certificate is an error here, not a failed handshake later.
pub fn connector(mode: &TlsMode) -> Result<Option<MakeRustlsConnect>> {
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
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
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
            builder.with_root_certificates(store).with_no_client_auth()
        }
    };
    Ok(Some(MakeRustlsConnect::new(config)))
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
        let (url, mode) = split_tls("postgresql://h/db").unwrap();
        assert_eq!((url.as_str(), mode), ("postgresql://h/db", TlsMode::Off));
        let (url, mode) = split_tls("postgresql://h/db?sslmode=require&connect_timeout=3").unwrap();
        assert_eq!(
            (url.as_str(), mode),
            ("postgresql://h/db?connect_timeout=3", TlsMode::Unverified)
        );
        let (_, mode) = split_tls("postgresql://h/db?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            mode,
            TlsMode::Verified {
                roots: Some("/ca.pem".into())
            }
        );
        let (_, mode) =
            split_tls("postgresql://h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(mode, TlsMode::Verified { roots: None });
    }

    #[test]
    fn test_split_tls_refuses_what_it_cannot_honour() {
        for (url, needle) in [
            (
                "postgresql://h/db?sslmode=sometimes",
                "sslmode=\"sometimes\"",
            ),
            (
                "postgresql://h/db?sslcert=/c.pem",
                "sslcert is not supported",
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
        let err = connector(&missing).err().unwrap().to_string();
        assert!(err.contains("sslrootcert=/nonexistent/ca.pem"), "{err}");
        assert!(connector(&TlsMode::Off).unwrap().is_none());
        assert!(connector(&TlsMode::Unverified).unwrap().is_some());
        assert!(connector(&TlsMode::Verified { roots: None })
            .unwrap()
            .is_some());
    }
}
