//! The proxy's real binary as a child process, killed on drop: for tests
//! that need a whole process (its own descriptor limit, the real AWS
//! credential chain, its real log).

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{free_port, Emulator, RedisServer, CACHE, IAM_USER};

/// A proxy process, killed on drop.
pub struct ProxyProcess {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Holds HOME and the log file (a pipe would fill up and stall the
    /// proxy at trace level).
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts the binary with exactly `env` (plus PATH) and IAM flags for
    /// the emulator; waits until it accepts connections.
    pub fn start(
        emulator: &Emulator,
        redis: &RedisServer,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> ProxyProcess {
        ProxyProcess::start_to(emulator.addr.port(), redis, extra, env)
    }

    /// As `start`, with `localhost:<upstream>` as the upstream (a relay in
    /// front of the emulator, say).
    pub fn start_to(
        upstream: u16,
        redis: &RedisServer,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> ProxyProcess {
        let port = free_port();
        let admin_port = free_port();
        let home = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_elasticache-auth-proxy"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // No ~/.aws of the machine running the tests, and no IMDS.
            .env("HOME", home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--upstream", &format!("localhost:{upstream}")])
            .arg("--tls-ca-file")
            .arg(&redis.certs.ca)
            .args(["--iam-user", IAM_USER, "--cache-name", CACHE])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.path().join("stderr.log")).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn proxy");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        // Up when the admin server answers /liveness: probing the proxy port
        // itself would open (and audit) a session. (/startup waits for a
        // token, which some tests withhold on purpose.)
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(admin) {
                use std::io::{Read, Write};
                let _ =
                    s.write_all(b"GET /liveness HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                if reply.starts_with("HTTP/1.1 200") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "proxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        ProxyProcess {
            child,
            addr,
            admin,
            dir: home,
        }
    }

    /// The log so far, while it runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn stderr(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
