//! IAM end to end: client → proxy → local IAM emulator (which recomputes every
//! SigV4 signature) → real redis-server. In-process tests bring their own
//! credentials; process tests run the real binary on the AWS SDK's real
//! credential chain (environment, container-credentials endpoint).

mod common;

use std::{
    net::SocketAddr,
    process::Command,
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use aws_credential_types::Credentials;
use common::{
    backend_options, text, AwsCreds, Emulator, EmulatorOptions, Proxy, ProxyProcess, RedisServer,
    Resp, CACHE, IAM_USER, REGION,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

fn test_creds() -> Credentials {
    Credentials::new("AKIDTEST", "test-secret-key", None, None, "test")
}

fn setup(opts: &EmulatorOptions) -> (RedisServer, Emulator) {
    let redis = RedisServer::start(backend_options());
    let emulator = Emulator::start(&redis, opts);
    (redis, emulator)
}

/// IAM settings with the warm pool off: these tests count the AUTHs and
/// signings each client connection costs, which the pool's own would add to.
fn fresh_args(redis: &RedisServer, emulator: &Emulator) -> elasticache_auth_proxy::config::Args {
    Proxy::no_pool(Proxy::iam_args(redis, emulator.addr.port()))
}

/// The extra flags that turn the warm pool off, for the same reason.
const NO_POOL: [&str; 2] = ["--pool-size", "0"];

async fn whoami(addr: SocketAddr) -> String {
    let mut c = Resp::connect(addr).await;
    text(&c.cmd(&[b"ACL", b"WHOAMI"]).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_authenticate_as_the_iam_user_without_signing_each_time() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let args = fresh_args(&redis, &emulator);
    let proxy = Proxy::start_with_credentials(args, "unused", test_creds()).await;
    for _ in 0..20 {
        assert_eq!(whoami(proxy.addr).await, format!("${IAM_USER}"));
    }
    // Twenty connections, each with a token the emulator verified...
    assert_eq!(emulator.stat("iam_auth_success_total"), 20);
    assert_eq!(emulator.stat("iam_auth_failure_total"), 0);
    // ...and one signature: the connection path only reads the current token.
    let stats = proxy.auth.as_ref().unwrap().iam_stats().unwrap();
    assert_eq!(stats.signatures.load(Ordering::Relaxed), 1);
    assert_eq!(stats.credential_fetches.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_and_reset_carry_fresh_tokens() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let args = fresh_args(&redis, &emulator);
    let proxy = Proxy::start_with_credentials(args, "unused", test_creds()).await;
    let mut c = Resp::connect(proxy.addr).await;
    // The client's own credentials are replaced by the proxy's IAM token.
    let hello = text(
        &c.cmd(&[
            b"HELLO",
            b"3",
            b"AUTH",
            b"someone",
            b"old-password",
            b"SETNAME",
            b"n1",
        ])
        .await,
    );
    assert!(hello.contains("proto:3"), "{hello}");
    assert_eq!(
        text(&c.cmd(&[b"ACL", b"WHOAMI"]).await),
        format!("${IAM_USER}")
    );
    assert_eq!(text(&c.cmd(&[b"CLIENT", b"GETNAME"]).await), "$n1");
    assert_eq!(text(&c.cmd(&[b"RESET"]).await), "+RESET");
    assert_eq!(
        text(&c.cmd(&[b"ACL", b"WHOAMI"]).await),
        format!("${IAM_USER}")
    );
    // Connection AUTH, HELLO AUTH, AUTH after RESET: three verified tokens.
    assert_eq!(emulator.stat("iam_auth_success_total"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serverless_tokens_carry_the_resource_type() {
    let opts = EmulatorOptions {
        serverless: true,
        ..EmulatorOptions::default()
    };
    let (redis, emulator) = setup(&opts);
    let mut args = fresh_args(&redis, &emulator);
    args.serverless = Some(true);
    let proxy = Proxy::start_with_credentials(args, "unused", test_creds()).await;
    assert_eq!(whoami(proxy.addr).await, format!("${IAM_USER}"));

    // A node-based token is refused by a serverless cache.
    let args = fresh_args(&redis, &emulator);
    let proxy = Proxy::start_with_credentials(args, "unused", test_creds()).await;
    let mut c = Resp::connect(proxy.addr).await;
    let refused = text(&c.cmd(&[b"PING"]).await);
    assert!(
        refused.starts_with("-ERR elasticache-auth-proxy: the upstream server rejected"),
        "{refused}"
    );
    assert!(
        !refused.contains("X-Amz"),
        "no token in client errors: {refused}"
    );
    assert_eq!(emulator.stat("iam_auth_failure_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_fails_in_iam_mode_and_falls_back_to_the_password() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let wrong = Credentials::new("AKIDTEST", "not-the-secret", None, None, "test");

    let args = fresh_args(&redis, &emulator);
    let proxy = Proxy::start_with_credentials(args, "unused", wrong.clone()).await;
    let mut c = Resp::connect(proxy.addr).await;
    let refused = text(&c.cmd(&[b"PING"]).await);
    assert!(
        refused.starts_with("-ERR elasticache-auth-proxy:"),
        "{refused}"
    );

    let mut args = fresh_args(&redis, &emulator);
    args.auth = Some(elasticache_auth_proxy::config::AuthMode::IamWithPasswordFallback);
    args.password_user = Some("app".into());
    args.password_env = Some(common::PASSWORD_ENV.into());
    let proxy = Proxy::start_with_credentials(args, "app-secret-pw", wrong).await;
    assert_eq!(whoami(proxy.addr).await, "$app");
    assert_eq!(emulator.stat("iam_auth_failure_total"), 2);
    assert_eq!(emulator.stat("password_auth_total"), 1);
}

// ---- the real binary on the real AWS credential chain ----

/// `GET path` over plain HTTP/1.1: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_environment() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDTEST".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key".to_string()),
        ("AWS_REGION", REGION.to_string()),
    ];
    let proxy = ProxyProcess::start(&emulator, &redis, &[], &env);
    assert_eq!(whoami(proxy.addr).await, format!("${IAM_USER}"));
    let log = proxy.stderr();
    assert!(log.contains("upstream AUTH succeeded"), "{log}");
    assert!(
        !log.contains("test-secret-key") && !log.contains("X-Amz-Signature"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_are_a_clear_error() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let env = [("AWS_REGION", REGION.to_string())];
    let proxy = ProxyProcess::start(&emulator, &redis, &[], &env);
    // In iam mode there is nothing to serve with: never started, never ready.
    assert_eq!(http_get(proxy.admin, "/startup").await.0, 503);
    assert_eq!(
        http_get(proxy.admin, "/readiness").await,
        (503, "starting".to_string())
    );
    let started = Instant::now();
    let reply = whoami(proxy.addr).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no long wait for credentials that cannot come"
    );
    assert_eq!(
        reply,
        "-ERR elasticache-auth-proxy: no credentials to authenticate upstream (the proxy log has the reason) [iam: no credentials]"
    );
    let log = proxy.stderr();
    assert!(log.contains("no AWS credentials"), "{log}");
}

/// A container-credentials endpoint (what ECS and EKS Pod Identity serve)
/// that hands out a new set of temporary credentials every `period`, each
/// valid for `validity` from the start of its period.
struct CredentialsEndpoint {
    addr: SocketAddr,
    served: Arc<Mutex<Vec<String>>>,
}

const PERIOD: Duration = Duration::from_secs(3);
const VALIDITY: Duration = Duration::from_secs(12);

fn rotation(start: SystemTime, k: u32) -> AwsCreds {
    AwsCreds {
        access_key_id: format!("ASIAROTATE{k:04}"),
        secret_access_key: format!("rotating-secret-{k}"),
        session_token: Some(format!("rotating-session-{k}")),
        expires_at: Some(
            humantime::format_rfc3339_seconds(start + PERIOD * k + VALIDITY).to_string(),
        ),
    }
}

impl CredentialsEndpoint {
    async fn start(start: SystemTime) -> CredentialsEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Mutex::new(Vec::new()));
        let log = served.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let k = (SystemTime::now()
                    .duration_since(start)
                    .unwrap_or_default()
                    .as_secs_f64()
                    / PERIOD.as_secs_f64()) as u32;
                let c = rotation(start, k);
                log.lock().unwrap().push(c.access_key_id.clone());
                tokio::spawn(async move {
                    let mut req = vec![0u8; 4096];
                    let _ = s.read(&mut req).await;
                    let body = format!(
                        r#"{{"AccessKeyId":"{}","SecretAccessKey":"{}","Token":"{}","Expiration":"{}"}}"#,
                        c.access_key_id,
                        c.secret_access_key,
                        c.session_token.unwrap(),
                        c.expires_at.unwrap()
                    );
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        CredentialsEndpoint { addr, served }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_container_credentials_keep_new_connections_authenticating() {
    let start = SystemTime::now();
    let opts = EmulatorOptions {
        credentials: (0..12).map(|k| rotation(start, k)).collect(),
        ..EmulatorOptions::default()
    };
    let (redis, emulator) = setup(&opts);
    let endpoint = CredentialsEndpoint::start(start).await;
    let env = container_env(endpoint.addr);
    // At trace level too, the credentials the endpoint serves stay out of the log.
    let extra = [&["--log-level", "trace"][..], &NO_POOL].concat();
    let proxy = ProxyProcess::start(&emulator, &redis, &extra, &env);
    // Past the first credentials' expiry (12 s): every new connection still
    // authenticates, with tokens from newer credentials.
    let until = Instant::now() + VALIDITY + Duration::from_secs(4);
    let mut connections = 0;
    while Instant::now() < until {
        assert_eq!(
            whoami(proxy.addr).await,
            format!("${IAM_USER}"),
            "connection {connections}"
        );
        connections += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let served = endpoint.served.lock().unwrap().clone();
    let mut distinct = served.clone();
    distinct.dedup();
    assert!(distinct.len() >= 3, "credentials rotated: {served:?}");
    // Tokens signed with expired credentials would be refused here.
    assert_eq!(emulator.stat("iam_auth_failure_total"), 0);
    assert_eq!(emulator.stat("iam_auth_success_total"), connections);
    let log = proxy.stderr();
    assert!(
        !log.contains("rotating-secret") && !log.contains("rotating-session"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_prints_a_token_the_emulator_accepts() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let out = Command::new(env!("CARGO_BIN_EXE_elasticache-auth-proxy"))
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "token",
            "--cache-name",
            CACHE,
            "--iam-user",
            IAM_USER,
            "--region",
            REGION,
        ])
        .output()
        .expect("run token command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim();
    assert!(
        token.starts_with(&format!("{CACHE}/?Action=connect&User={IAM_USER}&")),
        "{token}"
    );
    // As redis-cli --user app-iam --pass "$(elasticache-auth-proxy token ...)" would.
    let tls = common::tls_connect(&redis.tls_connector(), emulator.addr.port())
        .await
        .expect("TLS to the emulator");
    let mut c = Resp::over(tls);
    assert_eq!(
        text(
            &c.cmd(&[b"AUTH", IAM_USER.as_bytes(), token.as_bytes()])
                .await
        ),
        "+OK"
    );
    assert_eq!(
        text(&c.cmd(&[b"ACL", b"WHOAMI"]).await),
        format!("${IAM_USER}")
    );
}

/// The migration guide's fallback step, end to end: a wrong AWS secret and
/// a valid password user. The client works, /metrics counts the fallback
/// with its reason, and the JSON audit log has exactly one line for the
/// failed IAM attempt and one for the password success; no secret is logged
/// even at trace level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_falls_back_with_metrics_and_a_json_audit_trail() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDTEST".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "wrong-SECRET-SENTINEL".to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("UPSTREAM_PW", "app-secret-pw".to_string()),
    ];
    let extra = [
        "--password-user",
        "app",
        "--password-env",
        "UPSTREAM_PW",
        "--log-format",
        "json",
        "--log-level",
        "trace",
        NO_POOL[0],
        NO_POOL[1],
    ];
    let proxy = ProxyProcess::start(&emulator, &redis, &extra, &env);
    assert_eq!(whoami(proxy.addr).await, "$app", "the client is unaffected");

    // Scrape once the client's session has ended (its gauge is back to 0).
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let (status, metrics) = http_get(proxy.admin, "/metrics").await;
        assert_eq!(status, 200);
        if metrics
            .contains("elasticache_auth_proxy_upstream_connections_active{method=\"password\"} 0")
        {
            break metrics;
        }
        assert!(Instant::now() < deadline, "session still open:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for series in [
        "elasticache_auth_proxy_auth_fallbacks_total{reason=\"rejected\"} 1",
        "elasticache_auth_proxy_auth_attempts_total{method=\"iam\",outcome=\"failure\"} 1",
        "elasticache_auth_proxy_auth_attempts_total{method=\"password\",outcome=\"success\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }

    let log = proxy.stderr();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let auth: Vec<&serde_json::Value> = events.iter().filter(|e| e["target"] == "auth").collect();
    assert_eq!(auth.len(), 2, "one line per attempt: {auth:#?}");
    let (iam, password) = (auth[0], auth[1]);
    assert_eq!(
        (&iam["method"], &iam["outcome"], &iam["fallback"]),
        (&"iam".into(), &"failure".into(), &false.into())
    );
    assert_eq!(iam["user"], IAM_USER);
    assert!(
        iam["reason"].as_str().unwrap().starts_with("WRONGPASS"),
        "{iam}"
    );
    assert_eq!(
        (
            &password["method"],
            &password["outcome"],
            &password["fallback"]
        ),
        (&"password".into(), &"success".into(), &true.into())
    );
    for e in [iam, password] {
        for field in ["conn", "client", "user", "duration_us", "reauth"] {
            assert!(!e[field].is_null(), "{field} in {e}");
        }
    }
    for secret in [
        "wrong-SECRET-SENTINEL",
        "app-secret-pw",
        "X-Amz-Signature",
        "X-Amz-Credential",
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
}

/// What a flaky container-credentials endpoint does with each request.
#[derive(Clone, Copy, Debug)]
enum Serve {
    /// Valid temporary credentials, an hour to live.
    Good,
    /// Accepts and closes without answering (the endpoint is down).
    Down,
    /// Answers after this long (past the SDK's 5 s read timeout).
    Slow(Duration),
    /// 200 with a body that is not the credentials JSON.
    Garbage,
    /// Valid JSON whose credentials expired an hour ago.
    Expired,
}

const FLAKY_AKID: &str = "ASIAFLAKYEXAMPLE";
const FLAKY_SECRET: &str = "flaky-secret-EXAMPLE";
const FLAKY_SESSION: &str = "flaky-session-EXAMPLE";

/// What the emulator accepts from the flaky endpoint: its STS credentials.
fn flaky_credentials() -> Vec<AwsCreds> {
    vec![AwsCreds {
        access_key_id: FLAKY_AKID.into(),
        secret_access_key: FLAKY_SECRET.into(),
        session_token: Some(FLAKY_SESSION.into()),
        expires_at: None,
    }]
}

/// The environment that points the AWS SDK's chain at a container-credentials
/// endpoint (as ECS and EKS Pod Identity set it).
fn container_env(endpoint: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{endpoint}/v2/credentials"),
        ),
        ("AWS_REGION", REGION.to_string()),
    ]
}

/// A container-credentials endpoint whose behaviour a test switches.
struct FlakyEndpoint {
    addr: SocketAddr,
    serve: Arc<Mutex<Serve>>,
}

impl FlakyEndpoint {
    async fn start(serve: Serve) -> FlakyEndpoint {
        FlakyEndpoint::start_valid_for(serve, 3600).await
    }

    /// Good credentials live `validity` seconds.
    async fn start_valid_for(serve: Serve, validity: i64) -> FlakyEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = Arc::new(Mutex::new(serve));
        let mode = serve.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let serve = *mode.lock().unwrap();
                tokio::spawn(async move {
                    let mut req = vec![0u8; 4096];
                    let _ = s.read(&mut req).await;
                    let expires = |d: i64| {
                        let at = if d >= 0 {
                            SystemTime::now() + Duration::from_secs(d as u64)
                        } else {
                            SystemTime::now() - Duration::from_secs((-d) as u64)
                        };
                        humantime::format_rfc3339_seconds(at).to_string()
                    };
                    let json = |expiration: String| {
                        format!(
                            r#"{{"AccessKeyId":"{FLAKY_AKID}","SecretAccessKey":"{FLAKY_SECRET}","Token":"{FLAKY_SESSION}","Expiration":"{expiration}"}}"#
                        )
                    };
                    let body = match serve {
                        Serve::Down => return,
                        Serve::Slow(d) => {
                            tokio::time::sleep(d).await;
                            json(expires(validity))
                        }
                        Serve::Good => json(expires(validity)),
                        Serve::Garbage => "<html>upstream connect error</html>".to_string(),
                        Serve::Expired => json(expires(-3600)),
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        FlakyEndpoint { addr, serve }
    }

    fn set(&self, serve: Serve) {
        *self.serve.lock().unwrap() = serve;
    }
}

/// Fault-matrix rows for the credentials endpoint (ECS container
/// credentials, as EKS Pod Identity serves them too): down at start, slow,
/// answering garbage, or handing out credentials that already expired.
/// In IAM mode the proxy is not started and each client is told there are
/// no credentials, the log says why, no secret is logged; once the
/// endpoint serves good credentials the proxy recovers by itself.
async fn credentials_endpoint_fault(serve: Serve, logged: &str) {
    let opts = EmulatorOptions {
        credentials: flaky_credentials(),
        ..EmulatorOptions::default()
    };
    let (redis, emulator) = setup(&opts);
    let endpoint = FlakyEndpoint::start(serve).await;
    let env = container_env(endpoint.addr);
    let proxy = ProxyProcess::start(&emulator, &redis, &["--log-level", "debug"], &env);
    // The first refresh fails (the SDK gives up on a slow endpoint after
    // its read timeout and retries).
    let deadline = Instant::now() + Duration::from_secs(40);
    while !proxy.log().contains("IAM token refresh failed") {
        assert!(
            Instant::now() < deadline,
            "{serve:?}: no failed refresh logged:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let reply = whoami(proxy.addr).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{serve:?}: a client waited"
    );
    assert!(
        reply.starts_with("-ERR elasticache-auth-proxy: no credentials to authenticate upstream"),
        "{serve:?}: {reply}"
    );
    assert_eq!(http_get(proxy.admin, "/startup").await.0, 503, "{serve:?}");
    let log = proxy.log();
    assert!(log.contains(logged), "{serve:?}: {logged:?} not in\n{log}");
    assert_eq!(emulator.stat("iam_auth_success_total"), 0, "{serve:?}");

    // The endpoint recovers; so does the proxy, within its backoff.
    endpoint.set(Serve::Good);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let reply = whoami(proxy.addr).await;
        if reply == format!("${IAM_USER}") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{serve:?}: not recovered: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(http_get(proxy.admin, "/startup").await.0, 200, "{serve:?}");
    let log = proxy.stderr();
    for secret in [FLAKY_SECRET, FLAKY_SESSION, "X-Amz-Signature"] {
        assert!(!log.contains(secret), "{serve:?}: {secret} logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_endpoint_down_at_start_then_recovers() {
    credentials_endpoint_fault(Serve::Down, "no AWS credentials").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_endpoint_slow_then_recovers() {
    credentials_endpoint_fault(Serve::Slow(Duration::from_secs(8)), "no AWS credentials").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_endpoint_garbage_then_recovers() {
    credentials_endpoint_fault(Serve::Garbage, "no AWS credentials").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_already_expired_are_refused_with_the_reason_then_recovers() {
    credentials_endpoint_fault(Serve::Expired, "expired at").await;
}

/// Issue 12's secrets check: the faults of the matrix that touch identity
/// (throttling with the password fallback, re-authentication and a
/// subscriber's migration past a short session age, credentials that
/// expire, come back garbled and recover, a reset during AUTH, a
/// black-holed upstream) run through the real binary at `--log-level trace`
/// with JSON logs. No log line, no metric and no reply a client saw holds
/// the password, the AWS secret, the session token, a client's own AUTH
/// password or any part of a signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_log_line_metric_or_client_reply_under_faults() {
    let opts = EmulatorOptions {
        credentials: flaky_credentials(),
        iam_auth_rate: 3,
        max_session_age: "3s".into(),
        ..EmulatorOptions::default()
    };
    let (redis, emulator) = setup(&opts);
    // Short-lived credentials: the refresher fetches again every few seconds.
    let endpoint = FlakyEndpoint::start_valid_for(Serve::Good, 10).await;
    let relay = common::FaultRelay::start(emulator.addr).await;
    let mut env = container_env(endpoint.addr);
    env.push(("CACHE_PASSWORD", "app-secret-pw".to_string()));
    let extra = [
        "--log-level",
        "trace",
        "--log-format",
        "json",
        "--password-user",
        "app",
        "--password-env",
        "CACHE_PASSWORD",
        "--max-session-age",
        "3s",
        "--reauth-after",
        "1s",
        "--connect-timeout",
        "1s",
        // Each fault hits the next upstream connection: a client's.
        NO_POOL[0],
        NO_POOL[1],
    ];
    let proxy = ProxyProcess::start_to(relay.addr.port(), &redis, &extra, &env);
    let mut seen = Vec::new();

    // A legacy client's own password, answered by the proxy.
    let mut c = Resp::connect(proxy.addr).await;
    seen.push(text(&c.cmd(&[b"AUTH", b"client-own-secret-pw"]).await));
    seen.push(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await));
    // Past the session age: re-authentication in place, and a RESP2
    // subscriber moved to a fresh connection.
    let mut sub = Resp::connect(proxy.addr).await;
    seen.push(text(&sub.cmd(&[b"SUBSCRIBE", b"secrets:ch"]).await));
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        seen.push(text(&c.cmd(&[b"PING"]).await));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A burst the emulator throttles: the rest fall back to the password.
    let burst: Vec<_> = (0..20).map(|_| tokio::spawn(whoami(proxy.addr))).collect();
    for b in burst {
        seen.push(b.await.unwrap());
    }
    // Credentials expired, then garbled, then good again.
    for serve in [Serve::Expired, Serve::Garbage] {
        endpoint.set(serve);
        tokio::time::sleep(Duration::from_secs(3)).await;
        seen.push(whoami(proxy.addr).await);
    }
    endpoint.set(Serve::Good);
    // A reset during the AUTH (the proxy's second TLS record), then a
    // black hole: each a client error.
    relay.set(common::Fault::ResetOnClientRecord(2));
    seen.push(whoami(proxy.addr).await);
    relay.set(common::Fault::BlackHole);
    seen.push(whoami(proxy.addr).await);
    relay.set(common::Fault::Pass);
    seen.push(whoami(proxy.addr).await);
    let metrics = http_get(proxy.admin, "/metrics").await.1;
    drop((c, sub));
    let log = proxy.stderr();

    // Each fault happened (or this test would prove nothing).
    for (what, evidence) in [
        ("throttling", "throttled"),
        ("a re-authentication", "\"reauth\":true"),
        (
            "a migration",
            "session moved to a fresh authenticated connection",
        ),
        ("a failed refresh", "IAM token refresh failed"),
        ("expired credentials", "expired at"),
        ("a reset", "cannot open upstream connection"),
    ] {
        assert!(
            log.contains(evidence),
            "no {what} ({evidence:?}) in the log"
        );
    }
    assert!(log.lines().all(|l| l.starts_with('{')), "not all JSON");
    let replies = seen.join("\n");
    for secret in [
        "app-secret-pw",
        "client-own-secret-pw",
        FLAKY_SECRET,
        FLAKY_SESSION,
        "X-Amz-Signature",
        "X-Amz-Security-Token",
        "X-Amz-Credential",
    ] {
        for (name, text) in [
            ("log", &log),
            ("metrics", &metrics),
            ("client replies", &replies),
        ] {
            assert!(!text.contains(secret), "{secret} in the {name}");
        }
    }
}

/// Fault-matrix row: STS credentials expire while sessions live. Live
/// sessions re-authenticate (before the 4 s session age) with tokens from
/// the credentials current at the time, never from expired ones: across
/// the first credentials' expiry, no session is cut and no AUTH refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_credentials_expiring_under_live_sessions_never_cut_them() {
    let start = SystemTime::now();
    let opts = EmulatorOptions {
        credentials: (0..12).map(|k| rotation(start, k)).collect(),
        max_session_age: "4s".into(),
        ..EmulatorOptions::default()
    };
    let (redis, emulator) = setup(&opts);
    let endpoint = CredentialsEndpoint::start(start).await;
    let env = container_env(endpoint.addr);
    let extra = ["--max-session-age", "4s", "--reauth-after", "2s"];
    let proxy = ProxyProcess::start(&emulator, &redis, &extra, &env);
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let mut c = Resp::connect(proxy.addr).await;
        assert_eq!(
            text(&c.cmd(&[b"ACL", b"WHOAMI"]).await),
            format!("${IAM_USER}")
        );
        sessions.push(c);
    }
    // Past the first credentials' expiry (12 s).
    let until = Instant::now() + VALIDITY + Duration::from_secs(3);
    while Instant::now() < until {
        for (i, c) in sessions.iter_mut().enumerate() {
            assert_eq!(
                text(&c.cmd(&[b"ACL", b"WHOAMI"]).await),
                format!("${IAM_USER}"),
                "session {i}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let served = endpoint.served.lock().unwrap().clone();
    let mut distinct = served.clone();
    distinct.dedup();
    assert!(distinct.len() >= 3, "credentials rotated: {served:?}");
    assert_eq!(emulator.stat("sessions_expired_total"), 0);
    assert_eq!(emulator.stat("iam_auth_failure_total"), 0);
    // Five sessions, a re-authentication each about every 2 s for 15 s.
    assert!(emulator.stat("iam_auth_success_total") >= 5 + 5 * 5);
}
