//! What an operator sees: `/metrics` scraped over real HTTP, and the
//! `/startup`, `/readiness` and `/liveness` probes, checked against what a
//! real client of the proxy sees at the same moment. Client → proxy (in
//! process) → local IAM emulator → real redis-server.

mod common;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aws_credential_types::{
    provider::{error::CredentialsError, future, ProvideCredentials, SharedCredentialsProvider},
    Credentials,
};
use common::{
    backend_options, text, Emulator, EmulatorOptions, Proxy, RedisServer, Resp, IAM_USER,
    PASSWORD_ENV, REGION,
};
use elasticache_auth_proxy::{
    admin::Admin,
    auth,
    config::{self, AuthMode},
    error::Kind,
    metrics::{Metrics, PREFIX},
    server::Server,
};
use tokio::{
    sync::{oneshot, Notify},
    task::JoinHandle,
    time::timeout,
};

/// Deadline for anything that should happen within milliseconds.
const DEADLINE: Duration = Duration::from_secs(5);
/// The password of the backend's password user `app`.
const PASSWORD: &str = "app-secret-pw";

fn good_creds() -> Credentials {
    Credentials::new("AKIDTEST", "test-secret-key", None, None, "test")
}

/// Keys the emulator knows, with the wrong secret: every token is refused.
fn wrong_creds() -> Credentials {
    Credentials::new("AKIDTEST", "not-the-secret", None, None, "test")
}

fn setup(opts: &EmulatorOptions) -> (RedisServer, Emulator) {
    let redis = RedisServer::start(backend_options());
    let emulator = Emulator::start(&redis, opts);
    (redis, emulator)
}

/// IAM against `emulator`, the warm pool off: these tests count each
/// client connection's AUTH attempts and fallbacks, to which the pool's own
/// connections would add theirs.
fn iam_args(redis: &RedisServer, emulator: &Emulator) -> config::Args {
    Proxy::no_pool(Proxy::iam_args(redis, emulator.addr.port()))
}

/// As `iam_args`, with the password user `app` as the fallback.
fn fallback_args(redis: &RedisServer, emulator: &Emulator) -> config::Args {
    config::Args {
        auth: Some(AuthMode::IamWithPasswordFallback),
        password_user: Some("app".into()),
        password_env: Some(PASSWORD_ENV.into()),
        ..iam_args(redis, emulator)
    }
}

async fn whoami(c: &mut Resp) -> String {
    text(&c.cmd(&[b"ACL", b"WHOAMI"]).await)
}

// ---- HTTP and the Prometheus text ----

/// One HTTP response: status and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

/// `GET path` over a fresh TCP connection (`Connection: close`).
async fn get(admin: SocketAddr, path: &str) -> Reply {
    let (status, body) = common::http_get(admin, path).await;
    Reply { status, body }
}

/// `(status, body)` of `GET path`, for compact assertions.
async fn probe(admin: SocketAddr, path: &str) -> (u16, String) {
    let r = get(admin, path).await;
    (r.status, r.body)
}

/// One scrape of `/metrics`.
struct Scrape(String);

impl Scrape {
    async fn take(admin: SocketAddr) -> Scrape {
        let r = get(admin, "/metrics").await;
        assert_eq!(r.status, 200, "/metrics: {}", r.body);
        Scrape(r.body)
    }

    /// The value of one exact series, named without the common prefix:
    /// `auth_fallbacks_total{reason="rejected"}`. `None` if absent.
    fn get(&self, series: &str) -> Option<f64> {
        let want = format!("{PREFIX}_{series}");
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(name, _)| *name == want)
            .map(|(_, v)| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{want}: not a number: {v:?}"))
            })
    }

    /// Like `get`, with an absent series (a label set never used) as 0.
    fn n(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }

    /// Asserts each `(series, value)`; an absent series counts as 0.
    fn expect(&self, want: &[(&str, f64)]) {
        for &(series, value) in want {
            assert_eq!(self.n(series), value, "{series} in\n{}", self.0);
        }
    }
}

// Labelled series, named as `Scrape::get` takes them.

/// Upstream AUTH attempts by `method` (iam, password) and `outcome`.
fn attempts(method: &str, outcome: &str) -> String {
    format!(r#"auth_attempts_total{{method="{method}",outcome="{outcome}"}}"#)
}

/// Password fallbacks by `reason`.
fn fallbacks(reason: &str) -> String {
    format!(r#"auth_fallbacks_total{{reason="{reason}"}}"#)
}

/// AUTH attempts the server refused, by `method`.
fn refused(method: &str) -> String {
    format!(r#"authentication_failures_total{{method="{method}"}}"#)
}

/// Authenticated upstream connections open now, by `method`.
fn upstream_active(method: &str) -> String {
    format!(r#"upstream_connections_active{{method="{method}"}}"#)
}

/// Polls `check` until it holds, panicking with `what` after `DEADLINE`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `series` reads `value` (absent = 0).
async fn metric_becomes(admin: SocketAddr, series: &str, value: f64) {
    eventually(&format!("{series} == {value}"), || async {
        Scrape::take(admin).await.n(series) == value
    })
    .await;
}

/// Waits until `GET path` answers `status` with `body`.
async fn probe_becomes(admin: SocketAddr, path: &str, status: u16, body: &str) {
    eventually(&format!("{path} answers {status} {body}"), || async {
        probe(admin, path).await == (status, body.to_string())
    })
    .await;
}

// ---- a proxy with a credentials provider of the test's own ----

/// A proxy in-process whose IAM tokens are signed with credentials from
/// `provider`; shut down on drop. `tests/common/proxy.rs` wires it the same
/// way for fixed credentials.
struct Sidecar {
    addr: SocketAddr,
    admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    admin_task: JoinHandle<()>,
}

impl Sidecar {
    /// `cold_start` bounds how long `/startup` waits for the first token.
    async fn start(
        args: config::Args,
        provider: impl ProvideCredentials + 'static,
        cold_start: Duration,
    ) -> Sidecar {
        let lookup = |k: &str| (k == PASSWORD_ENV).then(|| PASSWORD.to_string());
        let cfg = config::Config::load(args, &lookup).expect("test config is valid");
        let provider = auth::Provider::with_credentials(
            &cfg.auth,
            Some(SharedCredentialsProvider::new(provider)),
            REGION.into(),
            cold_start,
            Arc::new(Metrics::new()),
        );
        let server = Server::bind_with(&cfg, provider)
            .await
            .expect("proxy binds");
        let addr = server.local_addr();
        let admin = Admin::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("admin binds");
        let admin_addr = admin.local_addr();
        let admin_task = tokio::spawn(admin.run(
            server.health(),
            server.metrics(),
            Arc::new(Notify::new()),
            std::future::pending(),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Sidecar {
            addr,
            admin: admin_addr,
            stop: Some(stop),
            task: Some(task),
            admin_task,
        }
    }

    /// Starts the drain; the returned task ends when it is over.
    fn shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("proxy already shut down")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.admin_task.abort();
    }
}

/// Never has credentials (no role, no keys, metadata service down).
#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "test: no credentials anywhere",
        )))
    }
}

/// Answers the first fetch with `first`, every later one with `then`.
#[derive(Debug)]
struct Switching {
    first: Credentials,
    then: Credentials,
    fetches: AtomicU32,
}

impl ProvideCredentials for Switching {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let creds = match self.fetches.fetch_add(1, Ordering::SeqCst) {
            0 => self.first.clone(),
            _ => self.then.clone(),
        };
        future::ProvideCredentials::ready(Ok(creds))
    }
}

/// Answers with good credentials once `gate` is notified (a slow
/// metadata service at startup).
#[derive(Debug)]
struct Gated {
    gate: Arc<Notify>,
}

impl ProvideCredentials for Gated {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.gate.notified().await;
            Ok(good_creds())
        })
    }
}

// ---- scenarios ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_success_is_counted_and_the_gauges_follow_the_client() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let args = iam_args(&redis, &emulator);
    let proxy = Proxy::start_with_credentials(args, "unused", good_creds()).await;

    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(whoami(&mut c).await, format!("${IAM_USER}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let m = Scrape::take(proxy.admin).await;
    m.expect(&[
        (&attempts("iam", "success"), 1.0),
        (&attempts("iam", "failure"), 0.0),
        (&upstream_active("iam"), 1.0),
        (&upstream_active("password"), 0.0),
        ("client_connections_total", 1.0),
        ("client_connections_active", 1.0),
        ("upstream_connections_total", 1.0),
    ]);
    assert!(m.n(r#"token_refreshes_total{outcome="success"}"#) >= 1.0);
    let expiry = m.n("token_expiry_timestamp_seconds");
    assert!(
        expiry > now && expiry <= now + 901.0,
        "token expiry {expiry} not within 900 s of {now}"
    );
    // One connect, one handshake, one AUTH round trip timed.
    m.expect(&[
        ("upstream_connect_duration_seconds_count", 1.0),
        ("upstream_tls_handshake_duration_seconds_count", 1.0),
        (r#"upstream_auth_duration_seconds_count{method="iam"}"#, 1.0),
    ]);
    assert!(m.n(r#"bytes_total{direction="to_upstream"}"#) > 0.0);
    assert!(m.n(r#"bytes_total{direction="to_client"}"#) > 0.0);
    assert_eq!(emulator.stat("iam_auth_success_total"), 1);

    drop(c);
    metric_becomes(proxy.admin, &upstream_active("iam"), 0.0).await;
    metric_becomes(proxy.admin, "client_connections_active", 0.0).await;
    Scrape::take(proxy.admin)
        .await
        .expect(&[("client_connections_total", 1.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_iam_falls_back_to_the_password_then_backs_off() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let args = fallback_args(&redis, &emulator);
    let proxy = Proxy::start_with_credentials(args, PASSWORD, wrong_creds()).await;

    // The client never notices: it works, as the password user.
    let mut first = Resp::connect(proxy.addr).await;
    assert_eq!(whoami(&mut first).await, "$app");
    let failed_at = Instant::now();
    Scrape::take(proxy.admin).await.expect(&[
        (&attempts("iam", "failure"), 1.0),
        (&attempts("iam", "success"), 0.0),
        (&attempts("password", "success"), 1.0),
        (&fallbacks("rejected"), 1.0),
        (&fallbacks("backoff"), 0.0),
        (&refused("iam"), 1.0),
        (&refused("password"), 0.0),
        (&upstream_active("password"), 1.0),
        (&upstream_active("iam"), 0.0),
    ]);
    assert_eq!(emulator.stat("iam_auth_failure_total"), 1);

    // Within the 1 s backoff the next connection goes straight to the password.
    let mut second = Resp::connect(proxy.addr).await;
    assert_eq!(whoami(&mut second).await, "$app");
    assert!(
        failed_at.elapsed() < Duration::from_millis(900),
        "too slow to test the backoff window: {:?}",
        failed_at.elapsed()
    );
    Scrape::take(proxy.admin).await.expect(&[
        (&attempts("iam", "failure"), 1.0),
        (&attempts("password", "success"), 2.0),
        (&fallbacks("rejected"), 1.0),
        (&fallbacks("backoff"), 1.0),
        (&refused("iam"), 1.0),
        (&upstream_active("password"), 2.0),
    ]);
    assert_eq!(emulator.stat("iam_auth_failure_total"), 1);
    assert_eq!(emulator.stat("password_auth_total"), 2);

    // After the backoff IAM is tried again (and refused again: 2 s now).
    let deadline = Instant::now() + DEADLINE;
    while emulator.stat("iam_auth_failure_total") < 2 {
        assert!(Instant::now() < deadline, "IAM was never retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = Resp::connect(proxy.addr).await;
        assert_eq!(whoami(&mut c).await, "$app");
    }
    let retried_at = Instant::now();
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(whoami(&mut c).await, "$app");
    assert!(retried_at.elapsed() < Duration::from_millis(1500));
    let m = Scrape::take(proxy.admin).await;
    m.expect(&[
        (&attempts("iam", "failure"), 2.0),
        (&fallbacks("rejected"), 2.0),
        (&refused("iam"), 2.0),
    ]);
    // Every connection but the two that tried IAM skipped it.
    let password = m.n(&attempts("password", "success"));
    assert_eq!(m.n(&fallbacks("backoff")), password - 2.0);
    assert_eq!(emulator.stat("iam_auth_failure_total"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_credentials_fall_back_as_token_unavailable() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let args = fallback_args(&redis, &emulator);
    let proxy = Sidecar::start(args, NoCredentials, DEADLINE).await;

    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(whoami(&mut c).await, "$app");
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
    let m = Scrape::take(proxy.admin).await;
    m.expect(&[
        (&fallbacks("token_unavailable"), 1.0),
        (&fallbacks("rejected"), 0.0),
        (&attempts("iam", "failure"), 1.0),
        (&attempts("password", "success"), 1.0),
        // Nothing was sent to the server, so the server refused nothing.
        (&refused("iam"), 0.0),
        (r#"token_refreshes_total{outcome="success"}"#, 0.0),
        (&upstream_active("password"), 1.0),
    ]);
    assert!(m.n(r#"token_refreshes_total{outcome="failure"}"#) >= 1.0);
    assert_eq!(emulator.stat("iam_auth_failure_total"), 0);
    assert_eq!(emulator.stat("password_auth_total"), 1);
}

/// Each of ElastiCache's throttling replies (over the limit, the IAM
/// service unavailable, the bare one before authentication) is throttling
/// to the fallback policy and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_iam_falls_back_as_throttled() {
    for reply in [
        "exceeded-limit",
        "iam-service-unavailable",
        "service-unavailable",
    ] {
        throttled_falls_back(reply).await;
    }
}

async fn throttled_falls_back(reply: &'static str) {
    // One IAM AUTH per second, and a full bucket of one at start.
    let opts = EmulatorOptions {
        iam_auth_rate: 1,
        throttle_reply: reply,
        ..EmulatorOptions::default()
    };
    let (redis, emulator) = setup(&opts);
    let args = fallback_args(&redis, &emulator);
    let proxy = Proxy::start_with_credentials(args, PASSWORD, good_creds()).await;

    let mut first = Resp::connect(proxy.addr).await;
    assert_eq!(whoami(&mut first).await, format!("${IAM_USER}"));
    let mut second = Resp::connect(proxy.addr).await;
    assert_eq!(whoami(&mut second).await, "$app");
    assert_eq!(emulator.stat("iam_auth_throttled_total"), 1);
    Scrape::take(proxy.admin).await.expect(&[
        (&fallbacks("throttled"), 1.0),
        (&fallbacks("rejected"), 0.0),
        ("iam_authentication_throttled_total", 1.0),
        (&attempts("iam", "success"), 1.0),
        (&attempts("iam", "failure"), 1.0),
        (&attempts("password", "success"), 1.0),
        (&upstream_active("iam"), 1.0),
        (&upstream_active("password"), 1.0),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_methods_failing_is_one_error_line_naming_both() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let args = fallback_args(&redis, &emulator);
    let proxy = Proxy::start_with_credentials(args, "not-the-password", wrong_creds()).await;

    // As a real client does: connect and send at once.
    let mut c = Resp::connect(proxy.addr).await;
    c.send(&[b"PING"]).await;
    let want = format!(
        "-{} [iam: WRONGPASS; password: WRONGPASS]",
        Kind::AuthRejected.client_message()
    );
    assert!(
        want.starts_with("-ERR elasticache-auth-proxy: "),
        "client line is the proxy's own: {want}"
    );
    assert_eq!(common::text(&c.read().await), want);
    // QUIT ends the refusal at once, as Redis ends a session.
    c.send(&[b"QUIT"]).await;
    assert_eq!(common::text(&c.read().await), "+OK");
    assert!(c.read_closed().await);

    metric_becomes(proxy.admin, "client_connections_active", 0.0).await;
    Scrape::take(proxy.admin).await.expect(&[
        (&attempts("iam", "failure"), 1.0),
        (&attempts("password", "failure"), 1.0),
        (&attempts("iam", "success"), 0.0),
        (&attempts("password", "success"), 0.0),
        (&refused("iam"), 1.0),
        (&refused("password"), 1.0),
        (r#"upstream_errors_total{kind="auth_rejected"}"#, 1.0),
        (&upstream_active("iam"), 0.0),
        (&upstream_active("password"), 0.0),
        ("client_connections_total", 1.0),
    ]);
    assert_eq!(emulator.stat("iam_auth_failure_total"), 1);
    assert_eq!(emulator.stat("password_auth_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_comes_back_once_the_credentials_work() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let args = fallback_args(&redis, &emulator);
    // Short-lived bad credentials: the refresher refetches within ~4 s
    // (half their life), and gets good ones.
    let expiry = SystemTime::now() + Duration::from_secs(8);
    let provider = Switching {
        first: Credentials::new("AKIDTEST", "not-the-secret", None, Some(expiry), "test"),
        then: good_creds(),
        fetches: AtomicU32::new(0),
    };
    let proxy = Sidecar::start(args, provider, DEADLINE).await;

    let mut first = Resp::connect(proxy.addr).await;
    assert_eq!(whoami(&mut first).await, "$app");
    drop(first);

    // Each IAM failure doubles the backoff (1 s, 2 s, 4 s), so IAM is back
    // within about 8 s of the refetch.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut polls = 0;
    loop {
        polls += 1;
        let mut c = Resp::connect(proxy.addr).await;
        let user = whoami(&mut c).await;
        if user == format!("${IAM_USER}") {
            break;
        }
        assert_eq!(user, "$app", "poll {polls}: the fallback keeps serving");
        assert!(Instant::now() < deadline, "IAM never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..3 {
        let mut c = Resp::connect(proxy.addr).await;
        assert_eq!(whoami(&mut c).await, format!("${IAM_USER}"));
    }

    let m = Scrape::take(proxy.admin).await;
    assert!(m.n(&attempts("iam", "success")) >= 4.0);
    assert!(m.n(&attempts("iam", "failure")) >= 1.0);
    assert!(m.n(&fallbacks("rejected")) >= 1.0);
    assert!(m.n(r#"token_refreshes_total{outcome="success"}"#) >= 2.0);
    // Good credentials never expire: the gauge says so with 0.
    m.expect(&[("credentials_expiry_timestamp_seconds", 0.0)]);
    assert_eq!(emulator.stat("iam_auth_success_total"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_startup_capacity_and_drain() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let mut args = iam_args(&redis, &emulator);
    args.max_connections = Some(1);
    args.drain_timeout = Some("5s".parse().unwrap());
    let gate = Arc::new(Notify::new());
    let provider = Gated { gate: gate.clone() };
    // A cold start far longer than the test waits: only the token starts it.
    let mut proxy = Sidecar::start(args, provider, Duration::from_secs(60)).await;
    let admin = proxy.admin;

    // No token yet: alive, but neither started nor ready.
    assert_eq!(probe(admin, "/liveness").await, (200, "ok".into()));
    assert_eq!(probe(admin, "/startup").await, (503, "starting".into()));
    assert_eq!(probe(admin, "/readiness").await, (503, "starting".into()));
    Scrape::take(admin)
        .await
        .expect(&[(r#"token_refreshes_total{outcome="success"}"#, 0.0)]);

    // A client that comes early waits for the token; it takes the only
    // slot, but "starting" is what readiness reports first.
    let mut c = Resp::connect(proxy.addr).await;
    c.send(&[b"ACL", b"WHOAMI"]).await;
    assert_eq!(probe(admin, "/readiness").await, (503, "starting".into()));

    gate.notify_one();
    probe_becomes(admin, "/startup", 200, "ok").await;
    assert_eq!(text(&c.read().await), format!("${IAM_USER}"));
    assert_eq!(probe(admin, "/liveness").await, (200, "ok".into()));

    // Full: not ready, and a second client is refused with a reason.
    assert_eq!(
        probe(admin, "/readiness").await,
        (503, "at max connections".into())
    );
    assert_eq!(probe(admin, "/liveness").await, (200, "ok".into()));
    let mut refused = Resp::connect(proxy.addr).await;
    assert_eq!(
        text(&refused.cmd(&[b"PING"]).await),
        "-ERR elasticache-auth-proxy: max connections (1) reached; try again later"
    );
    assert!(refused.read_closed().await);
    Scrape::take(admin).await.expect(&[
        ("client_connections_refused_total", 1.0),
        ("client_connections_total", 2.0),
        ("client_connections_active", 1.0),
    ]);
    drop(c);
    probe_becomes(admin, "/readiness", 200, "ok").await;
    assert_eq!(probe(admin, "/startup").await, (200, "ok".into()));

    // Draining with a subscriber still connected (idle sessions close at
    // once): not ready, still alive, and the subscriber is served until it
    // leaves.
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(whoami(&mut c).await, format!("${IAM_USER}"));
    let confirm = text(&c.cmd(&[b"SUBSCRIBE", b"drain-news"]).await);
    assert!(confirm.contains("subscribe"), "{confirm}");
    let drained = proxy.shutdown();
    probe_becomes(admin, "/readiness", 503, "draining").await;
    assert_eq!(probe(admin, "/liveness").await, (200, "ok".into()));
    assert_eq!(probe(admin, "/startup").await, (200, "ok".into()));
    let pong = text(&c.cmd(&[b"PING"]).await);
    assert!(pong.contains("pong"), "{pong}");
    drop(c);
    // The last client left: the drain ends before its deadline.
    timeout(DEADLINE, drained)
        .await
        .expect("drain ends once the last client leaves")
        .expect("server task did not panic");
    assert_eq!(probe(admin, "/readiness").await, (503, "draining".into()));
    assert_eq!(probe(admin, "/liveness").await, (200, "ok".into()));
    Scrape::take(admin)
        .await
        .expect(&[("client_connections_active", 0.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cut_at_the_age_limit_is_an_expiration() {
    let opts = EmulatorOptions {
        max_session_age: "2s".into(),
        ..EmulatorOptions::default()
    };
    let (redis, emulator) = setup(&opts);
    let mut args = iam_args(&redis, &emulator);
    args.max_session_age = Some("2s".parse().unwrap());
    args.reauth_after = Some("1s".parse().unwrap());
    let proxy = Proxy::start_with_credentials(args, "unused", good_creds()).await;

    let mut c = Resp::connect(proxy.addr).await;
    let authed = Instant::now();
    assert_eq!(whoami(&mut c).await, format!("${IAM_USER}"));
    Scrape::take(proxy.admin)
        .await
        .expect(&[("iam_session_expirations_total", 0.0)]);

    // A command blocked across the limit: the proxy cannot re-authenticate
    // while its reply is outstanding, so the server cuts the session.
    c.send(&[b"BLPOP", b"observability:never", b"0"]).await;
    assert_eq!(
        text(&c.read().await),
        format!("-{}", Kind::Closed.client_message())
    );
    let age = authed.elapsed();
    assert!(
        age >= Duration::from_millis(1500) && age < Duration::from_secs(5),
        "cut after {age:?}"
    );
    assert!(c.read_closed().await, "the proxy closes the client too");

    metric_becomes(proxy.admin, "client_connections_active", 0.0).await;
    Scrape::take(proxy.admin).await.expect(&[
        ("iam_session_expirations_total", 1.0),
        (r#"upstream_errors_total{kind="closed"}"#, 1.0),
        (&upstream_active("iam"), 0.0),
    ]);
    assert_eq!(emulator.stat("sessions_expired_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_closes_what_is_left_and_the_gauges_follow() {
    let (redis, emulator) = setup(&EmulatorOptions::default());
    let mut args = iam_args(&redis, &emulator);
    args.drain_timeout = Some("1s".parse().unwrap());
    let mut proxy = Proxy::start_with_credentials(args, "unused", good_creds()).await;

    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(whoami(&mut c).await, format!("${IAM_USER}"));
    // A subscriber is never at a point to close early.
    let confirm = text(&c.cmd(&[b"SUBSCRIBE", b"drain-news"]).await);
    assert!(confirm.contains("subscribe"), "{confirm}");
    let started = Instant::now();
    let drained = proxy.shutdown();
    probe_becomes(proxy.admin, "/readiness", 503, "draining").await;
    // The subscriber stays; the deadline ends its session.
    timeout(DEADLINE, drained)
        .await
        .expect("the drain ends at its deadline")
        .expect("server task did not panic");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        c.read_closed().await,
        "the proxy closed the leftover client"
    );
    Scrape::take(proxy.admin).await.expect(&[
        ("client_connections_active", 0.0),
        (&upstream_active("iam"), 0.0),
    ]);
    assert_eq!(probe(proxy.admin, "/liveness").await, (200, "ok".into()));
}
