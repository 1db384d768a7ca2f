//! A real `redis-server` child with TLS, owned per test and killed on drop;
//! owns process lifecycle and readiness, not what tests say to it.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{free_port, tls_connector, Certs};

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while waiting for readiness, not a fixed startup delay.
const POLL: Duration = Duration::from_millis(10);
/// Attempts when another process grabs our free port before redis binds it.
const PORT_ATTEMPTS: usize = 5;
const READY_LINE: &str = "Ready to accept connections";
const LOG_FILE: &str = "redis.log";
const STDIO_FILE: &str = "stdio.log";

#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `(name, password)`, each created `on >password ~* &* +@all`.
    pub users: Vec<(String, String)>,
    /// Disable `default`, so unauthenticated commands get `-NOAUTH`.
    pub default_user_off: bool,
    /// Also listen in plaintext on 127.0.0.1.
    pub plain_port: bool,
    /// `tls-auth-clients yes`: handshakes without a cert from our CA fail.
    pub require_client_cert: bool,
    /// Appended verbatim, e.g. `["--enable-debug-command", "yes"]`.
    pub extra_args: Vec<String>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            users: vec![("app".into(), "app-secret-pw".into())],
            default_user_off: true,
            plain_port: false,
            require_client_cert: false,
            extra_args: Vec::new(),
        }
    }
}

/// A running redis-server. Dropping it SIGKILLs the process and removes its
/// directory (log, any dump); `certs` lives on while other holders keep it.
pub struct RedisServer {
    pub tls_port: u16,
    pub plain_port: Option<u16>,
    pub certs: Arc<Certs>,
    child: Child,
    // Holds the log; removed only after `drop` has killed the process.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts redis with freshly minted certificates; panics with the log
    /// tail if it is not ready within 10 s.
    pub fn start(opts: RedisOptions) -> RedisServer {
        RedisServer::start_with_certs(opts, Arc::new(Certs::mint()))
    }

    /// As `start`, reusing `certs`, e.g. to bring up a replacement upstream
    /// that clients configured with the same CA must accept.
    pub fn start_with_certs(opts: RedisOptions, certs: Arc<Certs>) -> RedisServer {
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new().prefix("redis-").tempdir();
            let dir = dir.expect("tempdir");
            let (tls_port, plain_port) = (free_port(), opts.plain_port.then(free_port));
            let stdio = File::create(dir.path().join(STDIO_FILE)).expect("stdio file");
            let child = Command::new("redis-server")
                .args(args(&opts, &certs, tls_port, plain_port, dir.path()))
                .stdin(Stdio::null())
                // Config errors go to stderr, before the log file is opened.
                .stdout(stdio.try_clone().expect("dup stdio file"))
                .stderr(stdio)
                .spawn()
                .expect("spawn redis-server (is it installed?)");
            let certs = Arc::clone(&certs);
            let mut server = RedisServer {
                tls_port,
                plain_port,
                certs,
                child,
                dir,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                // Lost the race for a free port: drop (kill) and retry.
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("redis-server did not become ready:\n{}", tail(&log)),
            }
        }
        panic!("redis-server: no free port after {PORT_ATTEMPTS} attempts");
    }

    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tls_port))
    }

    pub fn plain_addr(&self) -> Option<SocketAddr> {
        let port = self.plain_port?;
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// SIGKILL now and reap, e.g. for "upstream died mid-session" tests.
    /// Idempotent; `Drop` calls it too.
    pub fn kill(&mut self) {
        // Errors mean it is already dead and reaped, which is the goal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The whole server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    /// A connector trusting the test CA, without a client certificate.
    pub fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        tls_connector(&self.certs.ca, None)
    }

    /// `Ok` once the log says ready and the TLS port accepts; `Err(log)` if
    /// the process exited first. Panics on timeout.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{}\n(exited: {status})", self.diagnostics()));
            }
            if self.log().contains(READY_LINE)
                && TcpStream::connect_timeout(&self.tls_addr(), POLL * 10).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server not ready in {READY_TIMEOUT:?}:\n{}",
                    tail(&self.diagnostics())
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Log file plus stdout/stderr, where redis reports config errors.
    fn diagnostics(&self) -> String {
        let stdio = std::fs::read_to_string(self.dir.path().join(STDIO_FILE));
        format!("{}{}", self.log(), stdio.unwrap_or_default())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn args(
    opts: &RedisOptions,
    certs: &Certs,
    tls_port: u16,
    plain_port: Option<u16>,
    dir: &Path,
) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let flags = [
        ("--port", plain_port.unwrap_or(0).to_string()), // 0: no plaintext listener
        ("--tls-port", tls_port.to_string()),
        ("--tls-cert-file", path(&certs.server_cert)),
        ("--tls-key-file", path(&certs.server_key)),
        ("--tls-ca-cert-file", path(&certs.ca)),
        ("--tls-auth-clients", yes_no(opts.require_client_cert)),
        ("--bind", "127.0.0.1".into()),
        ("--save", "".into()), // no RDB snapshots
        ("--appendonly", "no".into()),
        ("--daemonize", "no".into()),
        ("--dir", path(dir)),
        ("--logfile", path(&dir.join(LOG_FILE))),
    ];
    let mut a: Vec<String> = flags
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect();
    // Each `--user` starts one ACL line; redis quotes the following argv
    // words itself, so `>password` needs no extra quoting. A `user default`
    // line recreates `default` from scratch: `off` leaves it off and `-@all`.
    if opts.default_user_off {
        a.extend(["--user", "default", "off"].map(String::from));
    }
    for (name, password) in &opts.users {
        let line = [
            "--user",
            name,
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
        ];
        a.extend(line.map(String::from));
    }
    a.extend(opts.extra_args.iter().cloned());
    a
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
