//! The local ElastiCache IAM emulator (the crate's second binary) in front of
//! a harness redis-server, started per test and killed on drop.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{RedisOptions, RedisServer};

/// The backend password of every IAM user's same-named ACL user.
pub const BACKEND_PASSWORD: &str = "emulator-backend-pw";
/// The IAM user the tests authenticate as.
pub const IAM_USER: &str = "app-iam";
/// The cache name tokens are signed for.
pub const CACHE: &str = "test-cache";
pub const REGION: &str = "us-east-1";

/// AWS credentials the emulator accepts.
#[derive(Clone, Debug)]
pub struct AwsCreds {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// RFC 3339, e.g. 2026-11-25T12:00:00Z.
    pub expires_at: Option<String>,
}

impl AwsCreds {
    pub fn long_term(akid: &str, secret: &str) -> AwsCreds {
        AwsCreds {
            access_key_id: akid.into(),
            secret_access_key: secret.into(),
            session_token: None,
            expires_at: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    pub serverless: bool,
    pub credentials: Vec<AwsCreds>,
    pub max_session_age: String,
    pub iam_auth_rate: u32,
    /// `throttle-reply`: which of ElastiCache's throttling replies.
    pub throttle_reply: &'static str,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            serverless: false,
            credentials: vec![AwsCreds::long_term("AKIDTEST", "test-secret-key")],
            max_session_age: "12h".into(),
            iam_auth_rate: 0,
            throttle_reply: "exceeded-limit",
        }
    }
}

/// redis options for a backend behind the emulator: a plaintext port, the
/// password user `app` and the IAM user's backend ACL entry.
pub fn backend_options() -> RedisOptions {
    RedisOptions {
        users: vec![
            ("app".into(), "app-secret-pw".into()),
            (IAM_USER.into(), BACKEND_PASSWORD.into()),
        ],
        plain_port: true,
        ..RedisOptions::default()
    }
}

/// A running emulator.
pub struct Emulator {
    pub addr: SocketAddr,
    pub stats_addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// Starts the emulator in front of `redis` (which needs `backend_options()`),
    /// serving TLS with the harness certificate for `localhost`.
    pub fn start(redis: &RedisServer, opts: &EmulatorOptions) -> Emulator {
        Emulator::spawn(redis, opts, "127.0.0.1:0".parse().unwrap())
    }

    /// Kills this emulator (every connection through it drops at once, as
    /// when a cache node restarts) and starts a new one with `opts` on the
    /// same address. The counters start again from zero.
    pub fn restart(&mut self, redis: &RedisServer, opts: &EmulatorOptions) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The old listener's port is free again once the process is reaped
        // (tokio binds with SO_REUSEADDR, so TIME_WAIT does not block it).
        *self = Emulator::spawn(redis, opts, self.addr);
    }

    fn spawn(redis: &RedisServer, opts: &EmulatorOptions, listen: SocketAddr) -> Emulator {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut toml = format!(
            "listen = \"{listen}\"\nstats-listen = \"127.0.0.1:0\"\nbackend = \"{}\"\n\
             backend-password-env = \"EMULATOR_BACKEND_PASSWORD\"\ntls-cert = {:?}\ntls-key = {:?}\n\
             cache-name = \"{CACHE}\"\nregion = \"{REGION}\"\nserverless = {}\niam-users = [\"{IAM_USER}\"]\n\
             max-session-age = \"{}\"\niam-auth-rate = {}\nthrottle-reply = \"{}\"\n",
            redis.plain_addr().expect("backend needs a plain port"),
            redis.certs.server_cert,
            redis.certs.server_key,
            opts.serverless,
            opts.max_session_age,
            opts.iam_auth_rate,
            opts.throttle_reply,
        );
        for c in &opts.credentials {
            toml.push_str(&format!(
                "\n[[credentials]]\naccess-key-id = {:?}\nsecret-access-key = {:?}\n",
                c.access_key_id, c.secret_access_key
            ));
            if let Some(t) = &c.session_token {
                toml.push_str(&format!("session-token = {t:?}\n"));
            }
            if let Some(e) = &c.expires_at {
                toml.push_str(&format!("expires-at = {e:?}\n"));
            }
        }
        let config = dir.path().join("emulator.toml");
        std::fs::write(&config, toml).expect("write emulator config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_elasticache-iam-emulator"))
            .arg("--config")
            .arg(&config)
            .env("EMULATOR_BACKEND_PASSWORD", BACKEND_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn elasticache-iam-emulator");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut next = |prefix: &str| -> SocketAddr {
            let line = lines
                .next()
                .expect("emulator printed its addresses")
                .expect("read stdout");
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
                .trim()
                .parse()
                .expect("address")
        };
        let addr = next("listening ");
        let stats_addr = next("stats ");
        Emulator {
            addr,
            stats_addr,
            child,
            _dir: dir,
        }
    }

    /// The emulator's counters (`name value` lines; labelled names kept whole).
    pub fn stats(&self) -> HashMap<String, u64> {
        let mut text = String::new();
        let mut s = TcpStream::connect(self.stats_addr).expect("stats listener");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s.read_to_string(&mut text).expect("read stats");
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    /// One counter, 0 when absent.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
