//! Real client libraries (redis-py, ioredis, node-redis) as child processes:
//! runs the scripts in `tests/clients/` against an endpoint and returns the
//! one JSON line each prints of what the library did. Owns finding the
//! project-local installs (scripts/deps.sh) and bounding the child; what to
//! ask the library and what to expect is the tests' business.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{run_bounded, RedisServer};

/// The scripts bound each of their own waits to well under this (5–8 s), so
/// hitting it means the library or the script hung, not the peer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client library, with its script and its project-local install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Library {
    /// redis-py (PyPI `redis`), from tests/clients/python.
    RedisPy,
    /// ioredis, from tests/clients/node_modules.
    Ioredis,
    /// node-redis (npm `redis`), from tests/clients/node_modules.
    NodeRedis,
}

impl Library {
    fn script(self) -> &'static str {
        match self {
            Library::RedisPy => "redis_py.py",
            Library::Ioredis => "ioredis.js",
            Library::NodeRedis => "node_redis.js",
        }
    }

    /// A file that exists only once scripts/deps.sh installed the library.
    fn installed_marker(self) -> &'static str {
        match self {
            Library::RedisPy => "python/redis/__init__.py",
            Library::Ioredis => "node_modules/ioredis/package.json",
            Library::NodeRedis => "node_modules/redis/package.json",
        }
    }

    fn command(self, dir: &Path) -> Command {
        match self {
            Library::RedisPy => {
                // `-s`: no user site-packages; the project-local install
                // comes first on the path, ahead of any global redis-py.
                let mut cmd = Command::new("python3");
                cmd.arg("-s").env("PYTHONPATH", dir.join("python"));
                cmd
            }
            // Node resolves `require` from the script's own directory, so
            // tests/clients/node_modules is found without NODE_PATH.
            Library::Ioredis | Library::NodeRedis => Command::new("node"),
        }
    }
}

/// Where and how a library connects.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// TLS trusting this CA (server name `localhost`); plain when `None`.
    pub tls_ca: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl Endpoint {
    /// A proxy's plain listener, with no password: what an app is given.
    pub fn proxy(addr: SocketAddr) -> Endpoint {
        Endpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            tls_ca: None,
            user: None,
            password: None,
        }
    }

    /// `redis` itself over TLS as the test user `app`, as an app would
    /// connect without the proxy.
    pub fn direct(redis: &RedisServer) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port: redis.tls_port,
            tls_ca: Some(redis.certs.ca.clone()),
            user: Some("app".into()),
            password: Some("app-secret-pw".into()),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--host".to_string(),
            self.host.clone(),
            "--port".into(),
            self.port.to_string(),
        ];
        let optional = [
            (
                "--tls-ca",
                self.tls_ca.as_ref().map(|p| p.display().to_string()),
            ),
            ("--user", self.user.clone()),
            ("--password", self.password.clone()),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                a.extend([flag.to_string(), value]);
            }
        }
        a
    }
}

/// What one script run printed.
#[derive(Debug)]
pub struct Run {
    /// The JSON line the script printed last.
    pub json: serde_json::Value,
    /// Whatever the library logged (console.error, warnings, tracebacks).
    pub stderr: String,
}

impl Library {
    /// Runs this library's script: `flags` (library-specific, e.g.
    /// `--asyncio`), then `scenario` (`command` or `kill`, see the scripts)
    /// with the command `words`, against `endpoint`. Panics with the
    /// script's output if it does not print JSON, and with "run
    /// scripts/deps.sh" if the library is not installed. Runs on a blocking
    /// thread so the in-process proxy keeps serving meanwhile.
    pub async fn run(
        self,
        flags: &[&str],
        endpoint: &Endpoint,
        scenario: &str,
        words: &[&str],
    ) -> Run {
        let lib = self;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
        let marker = dir.join(lib.installed_marker());
        assert!(
            marker.exists(),
            "{lib:?} is not installed ({} is missing): run scripts/deps.sh",
            marker.display()
        );
        let mut cmd = lib.command(&dir);
        cmd.arg(dir.join(lib.script()))
            .args(flags)
            .args(endpoint.args())
            .arg(scenario)
            .args(words)
            .current_dir(&dir);
        let what = format!("{lib:?} {flags:?} {scenario} {words:?}");
        let out = tokio::task::spawn_blocking(move || run_bounded(&mut cmd, &what, CLIENT_TIMEOUT))
            .await
            .expect("client runner thread");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
        match last.map(serde_json::from_str::<serde_json::Value>) {
        Some(Ok(json)) if out.status.success() => Run { json, stderr },
        _ => panic!(
            "{lib:?} script {scenario} {words:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        ),
    }
    }
}
