//! TLS for `rediss://` URLs: the query options Celery and kombu users know, mapped onto redis-rs
//! (rustls with the ring provider; the system's trust store unless `ssl_ca_certs` names a CA).
//!
//! - `ssl_cert_reqs=required` (the default; also `CERT_REQUIRED`): the server's certificate must
//!   chain to a trusted root and name the host of the URL.
//! - `ssl_cert_reqs=optional` (`CERT_OPTIONAL`): as for Python's `ssl` module on the client side,
//!   a server always presents a certificate, so it is verified exactly like `required`.
//! - `ssl_cert_reqs=none` (`CERT_NONE`): NO verification at all; anyone between the worker and
//!   Redis can read and change every message. Only for a throwaway self-signed dev server.
//! - `ssl_ca_certs=/path/ca.pem`: trust this CA (PEM, one or more certificates) instead of the
//!   system's roots.
//!
//! Option values are decoded like Python's `parse_qs`, so redis-py reads the same URL the same way.

use std::path::PathBuf;

use redis::{ConnectionAddr, IntoConnectionInfo, TlsCertificates};

use crate::error::{Error, Result};

/// The `ssl_*` query options rqueue understands.
pub const TLS_OPTIONS: [&str; 2] = ["ssl_cert_reqs", "ssl_ca_certs"];

/// How a `rediss://` connection checks the server's certificate (`ssl_cert_reqs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertReqs {
    #[default]
    Required,
    /// Same checks as `Required` (the server always presents a certificate).
    Optional,
    /// No verification (self-signed dev servers only).
    None,
}

impl CertReqs {
    /// Parses kombu's spellings: `required`/`CERT_REQUIRED`, `optional`/`CERT_OPTIONAL`,
    /// `none`/`CERT_NONE` (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim().to_ascii_lowercase();
        match v.strip_prefix("cert_").unwrap_or(&v) {
            "required" => Some(CertReqs::Required),
            "optional" => Some(CertReqs::Optional),
            "none" => Some(CertReqs::None),
            _ => None,
        }
    }

    /// Whether the server's certificate is verified.
    pub fn verifies(self) -> bool {
        self != CertReqs::None
    }
}

/// The TLS options of a `rediss://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    pub cert_reqs: CertReqs,
    pub ca_certs: Option<PathBuf>,
}

fn scheme(url: &str) -> String {
    url.split("://").next().unwrap_or("").to_ascii_lowercase()
}

/// The TLS options of `url`: `None` for a plain (`redis://`, `unix://`) URL. An `ssl_*` option
/// on a plain URL, an unknown `ssl_*` option or a bad value is an error naming the option.
pub fn tls_options(url: &str) -> std::result::Result<Option<TlsOptions>, String> {
    let tls = scheme(url) == "rediss";
    let query = url
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(""))
        .unwrap_or("");
    let mut options = TlsOptions::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if !key.starts_with("ssl_") {
            continue;
        }
        if !tls {
            return Err(format!(
                "{key} only applies to TLS connections; use a rediss:// URL"
            ));
        }
        match key.as_ref() {
            "ssl_cert_reqs" => {
                options.cert_reqs = CertReqs::parse(&value).ok_or_else(|| {
                    format!("ssl_cert_reqs={value:?} is not one of required, optional, none")
                })?;
            }
            "ssl_ca_certs" if value.is_empty() => {
                return Err("ssl_ca_certs is empty; name a PEM file of CA certificates".into())
            }
            "ssl_ca_certs" => options.ca_certs = Some(PathBuf::from(value.as_ref())),
            other => {
                return Err(format!(
                    "unknown TLS option {other}; rediss:// URLs take {}",
                    TLS_OPTIONS.join(", ")
                ))
            }
        }
    }
    Ok(tls.then_some(options))
}

/// Makes ring rustls's process-wide crypto provider (a no-op when one is installed already).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads a CA bundle, refusing a file without any PEM certificate (it would fail every
/// handshake with an unhelpful "unknown issuer").
fn read_ca_certs(path: &std::path::Path) -> std::result::Result<Vec<u8>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("ssl_ca_certs={}: cannot read it ({e})", path.display()))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(format!(
            "ssl_ca_certs={}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Ok(pem)
}

/// The redis-rs client of `url`, with its TLS options applied. `masked` names the URL in errors.
/// Returns the client and whether it speaks TLS.
pub fn client_for(url: &str, masked: &str) -> Result<(redis::Client, bool)> {
    let invalid =
        |e: redis::RedisError| Error::Config(format!("{masked}: invalid Redis URL ({e})"));
    let options = tls_options(url).map_err(|e| Error::Config(format!("{masked}: {e}")))?;
    let mut info = url.into_connection_info().map_err(invalid)?;
    let Some(options) = options else {
        return Ok((redis::Client::open(info).map_err(invalid)?, false));
    };
    install_crypto_provider();
    if let ConnectionAddr::TcpTls { insecure, .. } = &mut info.addr {
        if !options.cert_reqs.verifies() {
            *insecure = true;
        }
    }
    let client = match &options.ca_certs {
        Some(path) if options.cert_reqs.verifies() => {
            let pem = read_ca_certs(path).map_err(|e| Error::Config(format!("{masked}: {e}")))?;
            let certs = TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certs).map_err(|e| {
                Error::Config(format!("{masked}: ssl_ca_certs={}: {e}", path.display()))
            })?
        }
        _ => redis::Client::open(info).map_err(invalid)?,
    };
    Ok((client, true))
}

/// A hint for a failed TLS connection: a rejected certificate says which option to look at.
pub fn tls_connect_hint(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("certificate") || e.contains("unknownissuer") || e.contains("notvalidforname") {
        "the server's TLS certificate was not accepted: name the CA that signed it with \
         ssl_ca_certs=/path/ca.pem, and check the certificate names the host of the URL"
    } else {
        "is Redis listening for TLS there (rediss:// needs Redis's tls-port)?"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cert_reqs_spellings() {
        assert_eq!(CertReqs::parse("required"), Some(CertReqs::Required));
        assert_eq!(CertReqs::parse("CERT_REQUIRED"), Some(CertReqs::Required));
        assert_eq!(CertReqs::parse("Optional"), Some(CertReqs::Optional));
        assert_eq!(CertReqs::parse("CERT_NONE"), Some(CertReqs::None));
        assert_eq!(CertReqs::parse("never"), None);
    }

    #[test]
    fn test_tls_options_from_urls() {
        assert_eq!(tls_options("redis://h:1/0?db=2").unwrap(), None);
        assert_eq!(
            tls_options("rediss://h:1/0").unwrap(),
            Some(TlsOptions::default())
        );
        let got =
            tls_options("rediss://u:p@h/0?ssl_cert_reqs=CERT_NONE&ssl_ca_certs=%2Ftmp%2Fa%20b.pem")
                .unwrap()
                .unwrap();
        assert_eq!(got.cert_reqs, CertReqs::None);
        assert_eq!(got.ca_certs, Some(PathBuf::from("/tmp/a b.pem")));
        let e = tls_options("rediss://h/0?ssl_cert_reqs=maybe").unwrap_err();
        assert!(e.contains("required, optional, none"), "{e}");
        let e = tls_options("rediss://h/0?ssl_keyfile=/k.pem").unwrap_err();
        assert!(e.contains("unknown TLS option ssl_keyfile"), "{e}");
        let e = tls_options("redis://h/0?ssl_ca_certs=/ca.pem").unwrap_err();
        assert!(e.contains("rediss://"), "{e}");
    }

    #[test]
    fn test_client_for_checks_the_ca_file() {
        let e = client_for(
            "rediss://u:pw@127.0.0.1:1/0?ssl_ca_certs=/nonexistent/ca.pem",
            "m",
        )
        .unwrap_err();
        assert!(matches!(e, Error::Config(_)));
        assert!(e.to_string().contains("cannot read"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let e = client_for(
            &format!("rediss://127.0.0.1:1/0?ssl_ca_certs={}", path.display()),
            "m",
        )
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let (_, tls) = client_for("rediss://127.0.0.1:1/0?ssl_cert_reqs=none", "m").unwrap();
        assert!(tls);
        let (_, tls) = client_for("redis://127.0.0.1:1/0", "m").unwrap();
        assert!(!tls);
    }
}
