//! Integration-test harness: a real TLS `redis-server` per test, certificates
//! minted per run, a raw RESP client, the real `redis-cli`, and real client
//! libraries.
//!
//! Layout: `certs` (PKI on disk), `redis` (server process), `resp` (client
//! framing), `clients` (real client libraries run as scripts), `cluster`
//! (a TLS Redis Cluster), `emulator` (the IAM emulator), `fault` (a
//! fault-injecting relay), `process` (the proxy's binary as a child),
//! `proxy` (the proxy in-process). This file holds the small free functions
//! shared by them.
//! Nothing here is global: every test owns its ports, files and processes.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

mod certs;
mod clients;
mod cluster;
mod emulator;
mod fault;
mod process;
mod proxy;
mod redis;
mod resp;

use std::fs::File;
use std::io::{Read, Seek};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{client::TlsStream, TlsConnector};

pub use certs::Certs;
#[allow(unused_imports)] // Only the library tests run client libraries.
pub use clients::{Endpoint, Library, Run};
#[allow(unused_imports)] // Only the cluster tests start a cluster.
pub use cluster::{Announce, RedisCluster};
#[allow(unused_imports)] // Only the IAM tests use the emulator.
pub use emulator::{
    backend_options, AwsCreds, Emulator, EmulatorOptions, BACKEND_PASSWORD, CACHE, IAM_USER, REGION,
};
#[allow(unused_imports)] // Only the fault matrix injects faults.
pub use fault::{At, Fault, FaultRelay};
#[allow(unused_imports)] // Only tests that need a whole process run the binary.
pub use process::ProxyProcess;
#[allow(unused_imports)] // Not every test binary reads the password variable.
pub use proxy::{Proxy, PASSWORD_ENV};
pub use redis::{RedisOptions, RedisServer};
#[allow(unused_imports)] // Each test binary uses part of the client API.
pub use resp::{blobs, encode_command, text, try_decode, Resp};

const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// A port that was free a moment ago. Racy by nature: callers that bind it
/// in another process must retry on "address in use" (`RedisServer` does).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A client TLS connector trusting only `ca`, optionally presenting a client
/// certificate `(cert, key)` for mTLS.
pub fn tls_connector(ca: &Path, client: Option<(&Path, &Path)>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA PEM") {
        roots.add(cert.expect("parse CA PEM")).expect("add CA root");
    }
    // Name the provider so the harness does not depend on which crypto
    // features other crates in the build happen to enable.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default TLS versions")
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                .expect("read client cert PEM")
                .collect::<Result<_, _>>()
                .expect("parse client cert PEM");
            let key = PrivateKeyDer::from_pem_file(key).expect("read client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert/key")
        }
    };
    TlsConnector::from(Arc::new(config))
}

/// TCP-connects to 127.0.0.1:`port` and handshakes as `localhost`. Returns the
/// error instead of panicking so tests can assert on refused handshakes.
pub async fn tls_connect(
    connector: &TlsConnector,
    port: u16,
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let name = ServerName::try_from("localhost").expect("valid DNS name");
    connector.connect(name, tcp).await
}

/// `GET path` over a fresh HTTP/1.1 connection (`Connection: close`), for
/// the admin endpoints: `(status, body)`; panics after 5 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no response within 5 s"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let raw = String::from_utf8(raw).unwrap_or_else(|e| panic!("GET {path}: not UTF-8: {e}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no end of head in {raw:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: bad status line in {head:?}"));
    (status, body.to_string())
}

/// One series of the proxy's `/metrics` at `admin`, by its name without the
/// `elasticache_auth_proxy_` prefix and with its labels as rendered
/// (`upstream_errors_total{kind="io"}`); 0 when absent.
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let want = format!("elasticache_auth_proxy_{series} ");
    http_get(admin, "/metrics")
        .await
        .1
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Runs the real `redis-cli` with `args`, killing it after 10 s.
pub fn redis_cli(args: &[&str]) -> Output {
    let mut cmd = Command::new("redis-cli");
    cmd.args(args);
    run_bounded(&mut cmd, &format!("redis-cli {args:?}"), CLI_TIMEOUT)
}

/// Runs `cmd` with no stdin, killing it (and failing the test) after
/// `limit`; `what` names it in panics.
pub fn run_bounded(cmd: &mut Command, what: &str, limit: Duration) -> Output {
    // Output goes to files, not pipes, so a chatty child cannot block on a
    // full pipe while we poll for its exit.
    let (mut out, mut err) = (
        tempfile::tempfile().expect("tempfile"),
        tempfile::tempfile().expect("tempfile"),
    );
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e} (is it installed? run scripts/deps.sh)"));
    let deadline = Instant::now() + limit;
    let read_all = |f: &mut File| {
        let mut buf = Vec::new();
        f.rewind()
            .and_then(|_| f.read_to_end(&mut buf))
            .expect("read child output");
        buf
    };
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} still running after {limit:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&read_all(&mut out)),
                String::from_utf8_lossy(&read_all(&mut err)),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    }
}
