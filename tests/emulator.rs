//! The ElastiCache IAM emulator binary against a real redis-server backend:
//! token checks, WRONGPASS text, HELLO 3, MULTI, throttling, session age,
//! stats, and that no secret reaches its log.
//!
//! Tokens are made here by a small SigV4 presigner (same math as botocore);
//! `test_signer_matches_botocore` pins it to the committed botocore vectors,
//! and the emulator's verifier is pinned to the same vectors in its unit tests.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use common::{text, RedisOptions, RedisServer, Resp};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const BIN: &str = env!("CARGO_BIN_EXE_elasticache-iam-emulator");
const BACKEND_PW_ENV: &str = "EMULATOR_TEST_BACKEND_PASSWORD";
const BACKEND_PW: &str = "backend-shared-pw-0123";
const IAM_USER: &str = "iam-user-01";
/// Configured mixed-case: the emulator must compare the lowercased name.
const CACHE_NAME: &str = "Test-Cache";
const REGION: &str = "eu-west-1";
const AKID: &str = "AKIDTESTEXAMPLE";
const SECRET: &str = "test/secret+key=EXAMPLE";
const STS_AKID: &str = "ASIATESTEXAMPLE";
const STS_SECRET: &str = "sts-secret-EXAMPLE";
const STS_TOKEN: &str = "IQoJb3JpZ2luX2Vj/session+token==";
const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.";
/// ElastiCache's reply over the IAM authentication rate (the default).
const THROTTLED: &str = "-ERR Exceeded limit of IAM Authentication requests";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- signer

/// Inputs of one presigned token.
#[derive(Clone)]
struct Sign<'a> {
    cache: &'a str,
    user: &'a str,
    region: &'a str,
    service: &'a str,
    serverless: bool,
    akid: &'a str,
    secret: &'a str,
    session: Option<&'a str>,
    at: SystemTime,
}

impl Sign<'_> {
    /// A valid token for the test emulator, signed now.
    fn now() -> Sign<'static> {
        Sign {
            cache: "test-cache",
            user: IAM_USER,
            region: REGION,
            service: "elasticache",
            serverless: false,
            akid: AKID,
            secret: SECRET,
            session: None,
            at: SystemTime::now(),
        }
    }

    fn sts() -> Sign<'static> {
        Sign {
            akid: STS_AKID,
            secret: STS_SECRET,
            session: Some(STS_TOKEN),
            ..Sign::now()
        }
    }

    /// SigV4 query presign of `GET http://<cache>/?Action=connect&User=<user>`
    /// with only `host` signed, 900 s expiry, scheme stripped.
    fn token(&self) -> String {
        let stamp = humantime::format_rfc3339_seconds(self.at).to_string();
        let amz_date: String = stamp.chars().filter(|c| *c != '-' && *c != ':').collect();
        let date = &amz_date[..8];
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let mut params = vec![
            ("Action", "connect".to_string()),
            ("User", self.user.into()),
        ];
        if self.serverless {
            params.push(("ResourceType", "ServerlessCache".into()));
        }
        params.extend([
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".into()),
            ("X-Amz-Credential", format!("{}/{scope}", self.akid)),
            ("X-Amz-Date", amz_date.clone()),
            ("X-Amz-Expires", "900".into()),
            ("X-Amz-SignedHeaders", "host".into()),
        ]);
        if let Some(session) = self.session {
            params.push(("X-Amz-Security-Token", session.into()));
        }
        let mut pairs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        pairs.sort();
        let query = pairs.join("&");
        let canonical = format!(
            "GET\n/\n{query}\nhost:{}\n\nhost\n{}",
            self.cache,
            hex(&Sha256::digest(b""))
        );
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = format!("AWS4{}", self.secret).into_bytes();
        for part in [date, self.region, self.service, "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex(&hmac(&key, to_sign.as_bytes()));
        format!("{}/?{query}&X-Amz-Signature={signature}", self.cache)
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signature(token: &str) -> &str {
    token.rsplit_once("X-Amz-Signature=").expect("signed").1
}

#[test]
fn test_signer_matches_botocore() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/iam_vectors.json")).unwrap();
    for v in doc["vectors"].as_array().unwrap() {
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        let (cache, user) = (s("cache_name").to_lowercase(), s("user_id").to_lowercase());
        let (region, service, akid, secret) = (
            s("region"),
            s("service"),
            s("access_key_id"),
            s("secret_access_key"),
        );
        let session = v["session_token"].as_str();
        let sign = Sign {
            cache: &cache,
            user: &user,
            region: &region,
            service: &service,
            serverless: v["serverless"].as_bool().unwrap(),
            akid: &akid,
            secret: &secret,
            session,
            at: humantime::parse_rfc3339(&s("time")).unwrap(),
        };
        assert_eq!(
            signature(&sign.token()),
            signature(&s("token")),
            "{}",
            s("name")
        );
    }
}

// ---------------------------------------------------------------- harness

/// The emulator binary, killed on drop.
struct Emulator {
    child: Child,
    addr: SocketAddr,
    stats: SocketAddr,
    stderr: PathBuf,
    connector: tokio_rustls::TlsConnector,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// Starts it in front of `redis`'s plaintext port; `extra` is appended to
    /// the config file.
    fn start(redis: &RedisServer, extra: &str) -> Emulator {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = redis.plain_addr().expect("redis has a plain port");
        let config = format!(
            r#"listen = "127.0.0.1:0"
stats-listen = "127.0.0.1:0"
backend = "{backend}"
backend-password-env = "{BACKEND_PW_ENV}"
tls-cert = "{cert}"
tls-key = "{key}"
cache-name = "{CACHE_NAME}"
region = "{REGION}"
iam-users = ["{IAM_USER}"]
{extra}

[[credentials]]
access-key-id = "{AKID}"
secret-access-key = "{SECRET}"

[[credentials]]
access-key-id = "{STS_AKID}"
secret-access-key = "{STS_SECRET}"
session-token = "{STS_TOKEN}"
"#,
            cert = redis.certs.server_cert.display(),
            key = redis.certs.server_key.display(),
        );
        let path = dir.path().join("emulator.toml");
        std::fs::write(&path, config).expect("write config");
        let stderr = dir.path().join("stderr.log");
        let mut child = Command::new(BIN)
            .env_clear()
            .env(BACKEND_PW_ENV, BACKEND_PW)
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // A file, not a pipe: a chatty child never blocks on a full pipe.
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn emulator");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let next = |prefix: &str| -> SocketAddr {
            let line = rx.recv_timeout(STARTUP_TIMEOUT).unwrap_or_else(|_| {
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                panic!("emulator printed no `{prefix}` line:\n{log}")
            });
            let addr = line
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected `{prefix}<addr>`, got {line:?}"));
            addr.parse().expect("an address")
        };
        let (addr, stats) = (next("listening "), next("stats "));
        Emulator {
            child,
            addr,
            stats,
            stderr,
            connector: common::tls_connector(&redis.certs.ca, None),
            _dir: dir,
        }
    }

    async fn connect(&self) -> Resp<TlsStream<TcpStream>> {
        let tls = common::tls_connect(&self.connector, self.addr.port())
            .await
            .expect("TLS to the emulator");
        Resp::over(tls)
    }

    /// Every counter from the stats listener.
    async fn stats(&self) -> HashMap<String, u64> {
        let mut stream = TcpStream::connect(self.stats).await.expect("stats connect");
        let mut body = String::new();
        tokio::time::timeout(STARTUP_TIMEOUT, stream.read_to_string(&mut body))
            .await
            .expect("stats in time")
            .expect("stats read");
        body.lines()
            .map(|line| {
                let (name, value) = line.rsplit_once(' ').expect("name value");
                (name.to_string(), value.parse().expect("a number"))
            })
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Asserts the log holds none of the test's secrets or tokens.
    fn assert_log_clean(&self, tokens: &[&str]) {
        let log = self.log();
        for secret in [SECRET, STS_SECRET, STS_TOKEN, BACKEND_PW] {
            assert!(!log.contains(secret), "secret in the log:\n{log}");
        }
        for token in tokens {
            assert!(!log.contains(signature(token)), "token in the log:\n{log}");
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis() -> RedisServer {
    RedisServer::start(RedisOptions {
        users: vec![
            (IAM_USER.into(), BACKEND_PW.into()),
            ("app".into(), "app-secret-pw".into()),
        ],
        plain_port: true,
        ..Default::default()
    })
}

async fn cmd<S>(conn: &mut Resp<S>, args: &[&str]) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    text(&conn.cmd(&args).await)
}

fn expect_counters(stats: &HashMap<String, u64>, want: &[(&str, u64)]) {
    for (name, value) in want {
        assert_eq!(stats.get(*name), Some(value), "{name} in {stats:#?}");
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn iam_and_password_auth() {
    let redis = redis();
    let mut emulator = Emulator::start(&redis, "");
    let valid = Sign::now().token();

    // A valid token authenticates the same-named ACL user on the backend.
    let mut a = emulator.connect().await;
    assert_eq!(cmd(&mut a, &["AUTH", IAM_USER, &valid]).await, "+OK");
    assert_eq!(
        cmd(&mut a, &["ACL", "WHOAMI"]).await,
        format!("${IAM_USER}")
    );

    // Wrong secret: ElastiCache's exact line, and the connection stays usable.
    let wrong = Sign {
        secret: "not-the-secret",
        ..Sign::now()
    }
    .token();
    let mut b = emulator.connect().await;
    assert_eq!(cmd(&mut b, &["AUTH", IAM_USER, &wrong]).await, WRONGPASS);
    assert_eq!(
        cmd(&mut b, &["GET", "k"]).await,
        "-NOAUTH Authentication required."
    );
    let sts = Sign::sts().token();
    assert_eq!(cmd(&mut b, &["AUTH", IAM_USER, &sts]).await, "+OK");
    assert_eq!(cmd(&mut b, &["SET", "k", "v"]).await, "+OK");

    // HELLO 3 AUTH with a valid token: the RESP3 map from the backend.
    let mut c = emulator.connect().await;
    let hello = cmd(&mut c, &["HELLO", "3", "AUTH", IAM_USER, &valid]).await;
    assert!(
        hello.starts_with("%{") && hello.contains("proto:3"),
        "{hello}"
    );
    assert_eq!(
        cmd(&mut c, &["ACL", "WHOAMI"]).await,
        format!("${IAM_USER}")
    );
    // ... and an invalid one in HELLO.
    let other_user = Sign {
        user: "someone-else",
        ..Sign::now()
    }
    .token();
    let hello = cmd(&mut c, &["HELLO", "3", "AUTH", IAM_USER, &other_user]).await;
    assert_eq!(hello, WRONGPASS);

    // A password user goes through to the backend unchanged.
    let mut d = emulator.connect().await;
    assert_eq!(cmd(&mut d, &["AUTH", "app", "nope"]).await, WRONGPASS);
    assert_eq!(cmd(&mut d, &["AUTH", "app", "app-secret-pw"]).await, "+OK");
    assert_eq!(cmd(&mut d, &["ACL", "WHOAMI"]).await, "$app");
    assert_eq!(cmd(&mut d, &["GET", "k"]).await, "$v");

    let stats = emulator.stats().await;
    expect_counters(
        &stats,
        &[
            ("connections_total", 4),
            ("connections_active", 4),
            ("iam_auth_success_total", 3),
            ("iam_auth_failure_total", 2),
            ("iam_auth_failure_total{reason=\"signature\"}", 1),
            ("iam_auth_failure_total{reason=\"user\"}", 1),
            ("iam_auth_throttled_total", 0),
            ("password_auth_total", 2),
            ("sessions_expired_total", 0),
            ("iam_auth_in_multi_total", 0),
        ],
    );

    drop((a, b, c, d));
    emulator.assert_log_clean(&[&valid, &wrong, &sts, &other_user]);

    // SIGTERM: a clean exit.
    let pid = emulator.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.expect("run kill").success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = emulator.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}\n{}", emulator.log());
}

#[tokio::test]
async fn iam_auth_in_multi_aborts_exec() {
    let redis = redis();
    let emulator = Emulator::start(&redis, "");
    let mut conn = emulator.connect().await;
    assert_eq!(
        cmd(&mut conn, &["AUTH", "app", "app-secret-pw"]).await,
        "+OK"
    );
    assert_eq!(cmd(&mut conn, &["MULTI"]).await, "+OK");
    assert_eq!(cmd(&mut conn, &["SET", "x", "1"]).await, "+QUEUED");
    let token = Sign::now().token();
    let refused = cmd(&mut conn, &["AUTH", IAM_USER, &token]).await;
    assert!(
        refused.starts_with("-ERR unknown command 'IAM-AUTH-NOT-SUPPORTED-IN-MULTI'"),
        "{refused}"
    );
    assert!(!refused.contains(&token));
    assert_eq!(
        cmd(&mut conn, &["EXEC"]).await,
        "-EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(cmd(&mut conn, &["ACL", "WHOAMI"]).await, "$app");
    assert_eq!(cmd(&mut conn, &["GET", "x"]).await, "_");
    // Outside MULTI the same token works.
    assert_eq!(cmd(&mut conn, &["AUTH", IAM_USER, &token]).await, "+OK");

    let stats = emulator.stats().await;
    expect_counters(
        &stats,
        &[
            ("iam_auth_in_multi_total", 1),
            ("iam_auth_success_total", 1),
            ("iam_auth_failure_total", 0),
            ("password_auth_total", 1),
        ],
    );
}

/// Each of ElastiCache's throttling replies, byte for byte, in the place of
/// the throttled AUTH among pipelined replies.
#[tokio::test]
async fn answers_each_elasticache_throttling_reply_exactly_and_in_order() {
    let redis = redis();
    for (setting, reply) in [
        (
            "exceeded-limit",
            "-ERR Exceeded limit of IAM Authentication requests\r\n",
        ),
        (
            "iam-service-unavailable",
            "-ERR IAM Authentication service is not available\r\n",
        ),
        ("service-unavailable", "-ERR service is not available\r\n"),
    ] {
        let emulator = Emulator::start(
            &redis,
            &format!("iam-auth-rate = 1\nthrottle-reply = \"{setting}\""),
        );
        let mut conn = emulator.connect().await;
        let good = Sign::now().token();
        let auth = common::encode_command(&[b"AUTH", IAM_USER.as_bytes(), good.as_bytes()]);
        let mut frames = auth.clone();
        frames.extend(&auth);
        frames.extend(common::encode_command(&[b"PING"]));
        conn.send_raw(&frames).await;
        let mut want = b"+OK\r\n".to_vec();
        want.extend(reply.as_bytes());
        want.extend(b"+PONG\r\n");
        let mut got = Vec::new();
        while got.len() < want.len() {
            let n = tokio::time::timeout(Duration::from_secs(5), conn.stream().read_buf(&mut got))
                .await
                .expect("replies")
                .unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{setting}"
        );
        let stats = emulator.stats().await;
        expect_counters(
            &stats,
            &[
                ("iam_auth_throttled_total", 1),
                ("iam_auth_success_total", 1),
            ],
        );
    }
}

#[tokio::test]
async fn throttles_beyond_the_rate() {
    let redis = redis();
    let emulator = Emulator::start(&redis, "iam-auth-rate = 2");
    let mut conn = emulator.connect().await;
    let bad = Sign {
        secret: "wrong",
        ..Sign::now()
    }
    .token();
    let good = Sign::now().token();
    // Five AUTHs in one write, while unauthenticated: two bad, three good.
    let tokens = [&bad, &bad, &good, &good, &good];
    let frames: Vec<u8> = tokens
        .iter()
        .flat_map(|t| common::encode_command(&[b"AUTH", IAM_USER.as_bytes(), t.as_bytes()]))
        .collect();
    conn.send_raw(&frames).await;
    let mut replies = Vec::new();
    for _ in &tokens {
        replies.push(text(&conn.read().await));
    }
    let throttled = replies.iter().filter(|r| *r == THROTTLED).count() as u64;
    let ok = replies.iter().filter(|r| *r == "+OK").count() as u64;
    let wrong = replies.iter().filter(|r| *r == WRONGPASS).count() as u64;
    assert_eq!(throttled + ok + wrong, 5, "{replies:#?}");
    // The burst is 2: at least the third attempt is throttled, and it is
    // throttled while the connection is still unauthenticated.
    assert!(throttled >= 1, "{replies:#?}");
    assert_eq!(replies[2], THROTTLED, "{replies:#?}");

    // The bucket refills at 2/s.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        cmd(&mut conn, &["AUTH", IAM_USER, &Sign::now().token()]).await,
        "+OK"
    );
    let stats = emulator.stats().await;
    expect_counters(
        &stats,
        &[
            ("iam_auth_throttled_total", throttled),
            ("iam_auth_success_total", ok + 1),
            ("iam_auth_failure_total", wrong),
            ("iam_auth_failure_total{reason=\"signature\"}", wrong),
        ],
    );
}

#[tokio::test]
async fn closes_iam_sessions_at_max_session_age() {
    let redis = redis();
    let emulator = Emulator::start(&redis, "max-session-age = \"2s\"");

    // Authenticates once, then idles: closed by the emulator, no reply.
    let idle = async {
        let mut conn = emulator.connect().await;
        assert_eq!(
            cmd(&mut conn, &["AUTH", IAM_USER, &Sign::now().token()]).await,
            "+OK"
        );
        let start = Instant::now();
        assert!(conn.read_closed().await, "still open after 2 s + 5 s");
        let after = start.elapsed();
        assert!(
            after >= Duration::from_millis(1900) && after < Duration::from_secs(4),
            "closed after {after:?}"
        );
    };
    // Re-authenticates every 500 ms with fresh tokens: stays open past 4 s.
    let refreshing = async {
        let mut conn = emulator.connect().await;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(4500) {
            assert_eq!(
                cmd(&mut conn, &["AUTH", IAM_USER, &Sign::sts().token()]).await,
                "+OK"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(cmd(&mut conn, &["PING"]).await, "+PONG");
    };
    // Moves from IAM to a password user: no IAM session left to expire.
    let switched = async {
        let mut conn = emulator.connect().await;
        assert_eq!(
            cmd(&mut conn, &["AUTH", IAM_USER, &Sign::now().token()]).await,
            "+OK"
        );
        assert_eq!(
            cmd(&mut conn, &["AUTH", "app", "app-secret-pw"]).await,
            "+OK"
        );
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert_eq!(cmd(&mut conn, &["PING"]).await, "+PONG");
    };
    tokio::join!(idle, refreshing, switched);

    let stats = emulator.stats().await;
    expect_counters(
        &stats,
        &[
            ("sessions_expired_total", 1),
            ("connections_total", 3),
            ("iam_auth_failure_total", 0),
        ],
    );
}

#[test]
fn bad_config_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "backend = \"127.0.0.1:1\"\nsecret-access-key = \"TOPSECRET\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .env_clear()
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run emulator");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("configuration error"), "{stderr}");
    assert!(!stderr.contains("TOPSECRET"), "{stderr}");
    assert!(out.stdout.is_empty());
}
