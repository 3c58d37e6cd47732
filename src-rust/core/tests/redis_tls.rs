//! The Redis transport over TLS (`rediss://`) against a real `redis-server` listening only on a
//! TLS port, with a CA and a server certificate made by the `openssl` CLI for each test (skipped,
//! with a note, when redis-server or openssl is not on PATH).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rqueue_core::transport::redis::{RedisBroker, RedisConfig};
use rqueue_core::Error;

fn on_path(program: &str, version_arg: &str) -> bool {
    Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA `<name>.pem` (key `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN=rqueue test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(pem)
}

/// `server.pem`/`server.key` for 127.0.0.1 and localhost, signed by the CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

struct TlsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl TlsServer {
    fn start() -> Option<TlsServer> {
        for (program, arg) in [("redis-server", "--version"), ("openssl", "version")] {
            if !on_path(program, arg) {
                eprintln!("note: {program} not on PATH; skipping");
                return None;
            }
        }
        let mut dir = tempfile::tempdir().unwrap();
        make_ca(dir.path(), "ca");
        make_ca(dir.path(), "other-ca");
        make_server_cert(dir.path(), "ca");
        // Tests run in parallel, each given a free port by the kernel: two may be given the same
        // one, and the second server then exits. Ready means this test's CA verifies the server
        // answering there; a server whose port was taken is started again on another port.
        for _ in 0..5 {
            let port = free_port();
            let path = |name: &str| dir.path().join(name).display().to_string();
            let child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--tls-cert-file", &path("server.pem")])
                .args(["--tls-key-file", &path("server.key")])
                .args(["--tls-ca-cert-file", &path("ca.pem")])
                .args(["--tls-auth-clients", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut server = TlsServer { port, dir, child };
            if server.ready() {
                return Some(server);
            }
            // Drop kills this child; the certificates are kept for the next port (taken out of
            // the server, whose Drop forbids moving them).
            dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
        }
        panic!("redis-server did not start on any of 5 free TLS ports");
    }

    /// Waits until the server answering on the port is this one (its certificate is signed by
    /// this test's CA); false when it exited or never answered.
    fn ready(&mut self) -> bool {
        let probe = format!(
            "rediss://127.0.0.1:{}/0?ssl_cert_reqs=required&ssl_ca_certs={}",
            self.port,
            self.ca("ca")
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false; // the port was taken
            }
            let mut cfg = RedisConfig::new(probe.clone());
            cfg.connect_timeout = Duration::from_millis(500);
            if RedisBroker::connect(cfg).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn ca(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("{name}.pem"))
            .display()
            .to_string()
    }

    fn url(&self, query: &str) -> String {
        format!("rediss://:s3cret-pw@127.0.0.1:{}/0?{query}", self.port)
    }

    fn connect(&self, query: &str) -> rqueue_core::Result<RedisBroker> {
        let mut cfg = RedisConfig::new(self.url(query));
        cfg.connect_timeout = Duration::from_secs(3);
        RedisBroker::connect(cfg)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

macro_rules! server {
    () => {
        match TlsServer::start() {
            Some(s) => s,
            None => return,
        }
    };
}

#[test]
fn test_rediss_publish_fetch_ack_with_a_custom_ca() {
    let s = server!();
    // No password is configured on the server: AUTH with one fails after the handshake, so the
    // round trip uses a URL without it; the masked one is checked below.
    let mut cfg = RedisConfig::new(format!(
        "rediss://127.0.0.1:{}/0?ssl_cert_reqs=required&ssl_ca_certs={}",
        s.port,
        s.ca("ca")
    ));
    cfg.global_keyprefix = "tls:".into();
    let b = RedisBroker::connect(cfg).unwrap();
    b.publish("q", b"{\"m\":1}", 0, None).unwrap();
    b.publish("q", b"{\"m\":2}", 0, None).unwrap();
    assert_eq!(b.queue_length("q").unwrap(), 2);
    let got = b.fetch(&["q".to_string()], 10, "w1").unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].payload, b"{\"m\":1}".to_vec());
    let tags: Vec<&str> = got.iter().map(|d| d.tag.as_str()).collect();
    assert_eq!(b.leased_count("w1").unwrap(), 2);
    assert_eq!(b.ack(&tags).unwrap(), 2);
    assert_eq!(b.leased_count("w1").unwrap(), 0);
    assert_eq!(b.queue_length("q").unwrap(), 0);
}

#[test]
fn test_rediss_with_the_wrong_ca_is_a_clear_error() {
    let s = server!();
    for query in [
        format!("ssl_ca_certs={}", s.ca("other-ca")),
        // the system's roots do not know the test CA either
        String::new(),
    ] {
        let e = s.connect(&query).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::Connection(_)), "{text}");
        assert!(text.contains("certificate"), "{text}");
        assert!(text.contains("ssl_ca_certs"), "{text}");
        assert!(
            !text.contains("s3cret-pw") && text.contains(":***@"),
            "{text}"
        );
    }
}

#[test]
fn test_rediss_cert_reqs_none_skips_verification() {
    let s = server!();
    let url = format!("rediss://127.0.0.1:{}/0?ssl_cert_reqs=CERT_NONE", s.port);
    let b = RedisBroker::connect(RedisConfig::new(url)).unwrap();
    b.publish("q", b"x", 0, None).unwrap();
    assert_eq!(b.queue_length("q").unwrap(), 1);
}

#[test]
fn test_plain_redis_url_on_a_tls_port_fails() {
    let s = server!();
    let mut cfg = RedisConfig::new(format!("redis://127.0.0.1:{}/0", s.port));
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.socket_timeout = Duration::from_secs(2);
    assert!(RedisBroker::connect(cfg).is_err());
}
