//! The fault matrix (issue 12): each test is one row of the README's table,
//! a fault injected by `FaultRelay` between the proxy and a real
//! redis-server, and what the client then sees, what is counted and that
//! the proxy keeps serving. On a plaintext upstream (`--no-tls`) the relay
//! reads the server's replies, so a fault sits at an exact point of the
//! stream; over TLS it works on bytes.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{encode_command, text, At, Fault, FaultRelay, Proxy, RedisOptions, RedisServer, Resp};
use elasticache_auth_proxy::{config, error::Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The upstream, the relay in front of it and the proxy in front of that.
type Stack = (RedisServer, FaultRelay, Proxy);

/// A redis-server with a plaintext port, a relay in front of it, and a
/// proxy (`--no-tls`) in front of the relay; `more` adjusts the settings.
/// The matrix's faults hit the next upstream connection, a client's: the
/// warm pool, whose connections open ahead of the client, is off.
async fn plain_stack(more: impl FnOnce(&mut config::Args)) -> Stack {
    let redis = RedisServer::start(RedisOptions {
        plain_port: true,
        ..RedisOptions::default()
    });
    let relay = FaultRelay::start(redis.plain_addr().unwrap()).await;
    let mut args = Proxy::no_pool(Proxy::args(&redis));
    args.upstream = Some(relay.addr.to_string().parse().unwrap());
    args.tls_ca_file = None;
    args.no_tls = Some(true);
    more(&mut args);
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    (redis, relay, proxy)
}

/// A connection straight to `redis`'s plaintext port, authenticated.
async fn direct(redis: &RedisServer) -> Resp {
    let mut c = Resp::connect(redis.plain_addr().unwrap()).await;
    assert_eq!(
        text(&c.cmd(&[b"AUTH", b"app", b"app-secret-pw"]).await),
        "+OK"
    );
    c
}

/// The error line the proxy sends for `kind`.
fn line(kind: Kind) -> String {
    format!("-{}", kind.client_message())
}

async fn metric(proxy: &Proxy, series: &str) -> f64 {
    common::metric(proxy.admin, series).await
}

/// The fault moved `series` exactly once.
async fn counted_once(proxy: &Proxy, series: &str) {
    assert_eq!(metric(proxy, series).await, 1.0, "{series}");
}

/// After a fault the proxy serves the next client as before.
async fn still_serves(relay: &FaultRelay, proxy: SocketAddr) {
    relay.set(Fault::Pass);
    let mut c = Resp::connect(proxy).await;
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
}

/// `GET big` through the proxy with the upstream reset `into` bytes into
/// the 200,000-byte reply: what the client receives until the close.
async fn get_big_reset_into(into: usize) -> (Vec<u8>, Vec<u8>, Stack) {
    let (redis, relay, proxy) = plain_stack(|_| {}).await;
    let value = vec![b'v'; 200_000];
    let mut d = direct(&redis).await;
    assert_eq!(text(&d.cmd(&[b"SET", b"big", &value]).await), "+OK");
    // The AUTH reply, then `into` bytes of GET's.
    relay.set(Fault::Reset(At {
        replies: 1,
        bytes: into,
    }));
    let mut c = Resp::connect(proxy.addr).await;
    c.send(&[b"GET", b"big"]).await;
    let got = c.read_until_closed().await;
    let mut whole = format!("${}\r\n", value.len()).into_bytes();
    whole.extend_from_slice(&value);
    whole.extend_from_slice(b"\r\n");
    (got, whole, (redis, relay, proxy))
}

/// Row: the upstream resets early in a reply, before the proxy has passed
/// any of it on (it holds a reply's first 64 KiB until it is whole). The
/// client gets the error in the reply's place, then the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_early_in_a_reply_is_an_error_in_its_place() {
    let (got, _, (_redis, relay, proxy)) = get_big_reset_into(1000).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("{}\r\n", line(Kind::Io))
    );
    counted_once(&proxy, r#"upstream_errors_total{kind="io"}"#).await;
    still_serves(&relay, proxy.addr).await;
}

/// Row: the upstream resets after the proxy began streaming a large reply.
/// The bytes relayed reach the client, then the connection closes: no
/// error is appended to a half-sent reply (a client would read it as the
/// reply's rest), exactly as a reset looks direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_stream_closes_after_the_bytes_relayed() {
    let (got, whole, (_redis, relay, proxy)) = get_big_reset_into(150_000).await;
    assert!(
        got.len() > 64 * 1024 && got.len() <= 150_000,
        "{} bytes",
        got.len()
    );
    assert!(whole.starts_with(&got), "not a prefix of the reply");
    counted_once(&proxy, r#"upstream_errors_total{kind="io"}"#).await;
    still_serves(&relay, proxy.addr).await;
}

/// Row: the upstream resets between replies of a pipeline. The replies
/// that came are delivered, the next one owed becomes one error, and the
/// connection closes: the rest of the pipeline fails as it would direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_pipeline_delivers_what_came_then_one_error() {
    let (_redis, relay, proxy) = plain_stack(|_| {}).await;
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
    drop(c);
    // AUTH's reply and 4 of the 10 INCRs'.
    relay.set(Fault::Reset(At {
        replies: 5,
        bytes: 0,
    }));
    let mut c = Resp::connect(proxy.addr).await;
    let mut pipeline = Vec::new();
    for _ in 0..10 {
        pipeline.extend(encode_command(&[b"INCR", b"pipe"]));
    }
    c.send_raw(&pipeline).await;
    for n in 1..=4 {
        assert_eq!(text(&c.read().await), format!(":{n}"));
    }
    assert_eq!(text(&c.read().await), line(Kind::Io));
    assert!(c.read_closed().await, "closed after the error");
    counted_once(&proxy, r#"upstream_errors_total{kind="io"}"#).await;
    still_serves(&relay, proxy.addr).await;
}

/// Row: the upstream (TLS) resets when the proxy sends its AUTH. The
/// client's commands are answered with the connection error (each in
/// turn, for a while, so the app's first real command carries it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_auth_is_the_error_for_each_command() {
    let redis = RedisServer::start(RedisOptions::default());
    let relay = FaultRelay::start(redis.tls_addr()).await;
    // The pool off: the fault hits the client's own connection.
    let mut args = Proxy::no_pool(Proxy::args(&redis));
    args.upstream = Some(format!("localhost:{}", relay.addr.port()).parse().unwrap());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    // TLS 1.3: the proxy's Finished, then its AUTH.
    relay.set(Fault::ResetOnClientRecord(2));
    let mut c = Resp::connect(proxy.addr).await;
    for _ in 0..2 {
        let reply = text(&c.cmd(&[b"PING"]).await);
        assert!(reply.starts_with(&line(Kind::Io)), "{reply}");
    }
    let failed = r#"auth_attempts_total{method="password",outcome="failure"}"#;
    counted_once(&proxy, failed).await;
    still_serves(&relay, proxy.addr).await;
}

/// Row: the upstream never answers the proxy's AUTH. After --auth-timeout
/// the client's commands get the AUTH-timeout error, each in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_auth_reply_is_an_auth_timeout_error() {
    let (_redis, relay, proxy) =
        plain_stack(|a| a.auth_timeout = Some("500ms".parse().unwrap())).await;
    relay.set(Fault::Stall(At {
        replies: 0,
        bytes: 0,
    }));
    let started = Instant::now();
    let mut c = Resp::connect(proxy.addr).await;
    let first = text(&c.cmd(&[b"PING"]).await);
    assert!(first.starts_with(&line(Kind::AuthTimeout)), "{first}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Each command in turn is answered with it.
    let second = text(&c.cmd(&[b"GET", b"k"]).await);
    assert!(second.starts_with(&line(Kind::AuthTimeout)), "{second}");
    let counted = r#"upstream_errors_total{kind="auth_timeout"}"#;
    counted_once(&proxy, counted).await;
    still_serves(&relay, proxy.addr).await;
}

/// Row: the upstream stalls mid-session. The client waits, as it would
/// direct (its own timeout decides); other clients are served meanwhile,
/// and closing the stalled client frees its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_holds_only_its_own_client() {
    let (_redis, relay, proxy) = plain_stack(|_| {}).await;
    relay.set(Fault::Stall(At {
        replies: 2,
        bytes: 0,
    }));
    let mut stalled = Resp::connect(proxy.addr).await;
    assert_eq!(text(&stalled.cmd(&[b"PING"]).await), "+PONG");
    stalled.send(&[b"GET", b"k"]).await;
    relay.set(Fault::Pass);
    let mut other = Resp::connect(proxy.addr).await;
    let started = Instant::now();
    assert_eq!(text(&other.cmd(&[b"PING"]).await), "+PONG");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Still no reply, and no error made up in its place.
    let nothing = tokio::time::timeout(Duration::from_secs(1), stalled.read()).await;
    assert!(nothing.is_err(), "a reply came: {nothing:?}");
    assert_eq!(metric(&proxy, "client_connections_active").await, 2.0);
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&proxy, "client_connections_active").await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled session was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Row: latency on every chunk both ways. Replies stay whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_keeps_pipelined_replies_whole_and_in_order() {
    let (_redis, relay, proxy) = plain_stack(|_| {}).await;
    relay.set(Fault::Latency(Duration::from_millis(20)));
    let mut c = Resp::connect(proxy.addr).await;
    let mut pipeline = Vec::new();
    for _ in 0..200 {
        pipeline.extend(encode_command(&[b"INCR", b"slow"]));
    }
    c.send_raw(&pipeline).await;
    for n in 1..=200 {
        assert_eq!(text(&c.read().await), format!(":{n}"));
    }
}

/// Row: a black-holed TLS upstream (TCP accepted, the handshake never
/// answered). The client's first command gets the TLS-handshake timeout
/// within --connect-timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_tls_upstream_times_out_the_handshake() {
    let redis = RedisServer::start(RedisOptions::default());
    let relay = FaultRelay::start(redis.tls_addr()).await;
    relay.set(Fault::BlackHole);
    let mut args = Proxy::args(&redis);
    args.upstream = Some(format!("localhost:{}", relay.addr.port()).parse().unwrap());
    args.connect_timeout = Some("1s".parse().unwrap());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let started = Instant::now();
    let mut c = Resp::connect(proxy.addr).await;
    let first = text(&c.cmd(&[b"PING"]).await);
    assert!(first.starts_with(&line(Kind::TlsHandshake)), "{first}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    counted_once(&proxy, r#"upstream_errors_total{kind="tls_handshake"}"#).await;
    still_serves(&relay, proxy.addr).await;
}

/// Row: the proxy runs out of file descriptors (EMFILE). The accept loop
/// survives and logs one line when it starts and one when it ends; clients
/// wait in the listen backlog and are served once others close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_waits_and_recovers() {
    let redis = RedisServer::start(RedisOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let port = common::free_port();
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=48:48")
        .arg(env!("CARGO_BIN_EXE_elasticache-auth-proxy"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--upstream",
            &format!("localhost:{}", redis.tls_port),
            "--tls-ca-file",
        ])
        .arg(&redis.certs.ca)
        .args(["--password-user", "app", "--password-env", "PW"])
        .env_clear()
        .env("PW", "app-secret-pw")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("prlimit (util-linux) runs the proxy");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "proxy not listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut first = Resp::connect(addr).await;
    assert_eq!(text(&first.cmd(&[b"PING"]).await), "+PONG");
    // More idle clients than descriptors: the kernel completes their TCP
    // handshakes, the proxy cannot accept them all.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut waiting = Resp::connect(addr).await;
    waiting.send(&[b"PING"]).await;
    let early = tokio::time::timeout(Duration::from_secs(1), waiting.read()).await;
    assert!(early.is_err(), "served while out of descriptors: {early:?}");
    // The connected client keeps working meanwhile.
    assert_eq!(text(&first.cmd(&[b"GET", b"k"]).await), "_");
    drop(idle);
    let served = tokio::time::timeout(Duration::from_secs(10), waiting.read()).await;
    assert_eq!(text(&served.expect("served once others closed")), "+PONG");
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    let starts = log
        .matches("cannot accept clients: out of file descriptors")
        .count();
    assert_eq!(starts, 1, "{log}");
    assert_eq!(log.matches("accepting clients again").count(), 1, "{log}");
}

/// 200 clients at once, each sending `ACL WHOAMI`: the replies.
async fn wave(proxy: SocketAddr) -> Vec<String> {
    let clients: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Resp::connect(proxy).await;
                text(&c.cmd(&[b"ACL", b"WHOAMI"]).await)
            })
        })
        .collect();
    let mut replies = Vec::new();
    for c in clients {
        replies.push(c.await.unwrap());
    }
    replies
}

/// A cache that admits 5 IAM authentications a second, and an IAM proxy in
/// front of it (`more` adds the fallback), the warm pool off: the storm is
/// one IAM AUTH per client connection, and the tests count them.
async fn throttling(
    more: impl FnOnce(&mut config::Args),
) -> (RedisServer, common::Emulator, Proxy) {
    let redis = RedisServer::start(common::backend_options());
    let options = common::EmulatorOptions {
        iam_auth_rate: 5,
        ..common::EmulatorOptions::default()
    };
    let emulator = common::Emulator::start(&redis, &options);
    let mut args = Proxy::no_pool(Proxy::iam_args(&redis, emulator.addr.port()));
    more(&mut args);
    let creds =
        aws_credential_types::Credentials::new("AKIDTEST", "test-secret-key", None, None, "t");
    let proxy = Proxy::start_with_credentials(args, "app-secret-pw", creds).await;
    (redis, emulator, proxy)
}

/// How many of `replies` to `ACL WHOAMI` name the IAM user.
fn iam_sessions(replies: &[String]) -> usize {
    let iam = format!("${}", common::IAM_USER);
    replies.iter().filter(|r| **r == iam).count()
}

/// IAM AUTHs the emulator saw: admitted and throttled.
fn iam_auths(emulator: &common::Emulator) -> u64 {
    emulator.stat("iam_auth_success_total") + emulator.stat("iam_auth_throttled_total")
}

/// Row: an IAM throttling storm. 200 clients connect at once to a cache
/// that admits 5 IAM authentications a second. With the password as
/// fallback every client is served: each connection tries IAM at most
/// once (no retries), the throttled ones fall back on the same connection,
/// and the next wave, inside the backoff, does not try IAM at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iam_throttling_storm_falls_back_without_a_retry_storm() {
    let (_redis, emulator, proxy) = throttling(|args| {
        args.auth = Some(config::AuthMode::IamWithPasswordFallback);
        args.password_user = Some("app".into());
        args.password_env = Some(common::PASSWORD_ENV.into());
    })
    .await;

    let first = wave(proxy.addr).await;
    let iam = iam_sessions(&first);
    let password = first.iter().filter(|r| *r == "$app").count();
    assert_eq!(iam + password, 200, "every client served: {first:?}");
    assert!((1..=10).contains(&iam), "{iam} IAM sessions at 5/s");
    let attempts = iam_auths(&emulator);
    assert!(
        attempts <= 200,
        "{attempts} IAM AUTHs for 200 connections: retried"
    );
    let throttled = emulator.stat("iam_auth_throttled_total");
    assert_eq!(
        metric(&proxy, r#"auth_fallbacks_total{reason="throttled"}"#).await,
        throttled as f64
    );

    // Inside the backoff: straight to the password, no IAM AUTH at all.
    let second = wave(proxy.addr).await;
    assert!(second.iter().all(|r| r == "$app"), "{second:?}");
    let after = iam_auths(&emulator);
    assert_eq!(after, attempts, "the second wave tried IAM");
    assert!(metric(&proxy, r#"auth_fallbacks_total{reason="backoff"}"#).await >= 200.0);
}

/// Row: the same storm with IAM only (no fallback). The throttled clients
/// are told so, each command in turn; none is retried by the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iam_throttling_storm_without_fallback_tells_the_throttled_clients() {
    let (_redis, emulator, proxy) = throttling(|_| {}).await;
    let replies = wave(proxy.addr).await;
    let iam = iam_sessions(&replies);
    let refused: Vec<&String> = replies.iter().filter(|r| r.starts_with("-")).collect();
    assert_eq!(iam + refused.len(), 200, "{replies:?}");
    assert!((1..=10).contains(&iam), "{iam}");
    assert!(
        refused
            .iter()
            .all(|r| r.contains("rejected the proxy's AUTH")),
        "{refused:?}"
    );
    assert!(
        refused.iter().all(|r| r.contains("throttled")),
        "{refused:?}"
    );
    let attempts = iam_auths(&emulator);
    assert_eq!(attempts, 200, "one IAM AUTH per connection");
    assert_eq!(
        metric(&proxy, "iam_authentication_throttled_total").await,
        (200 - iam) as f64
    );
}

/// Runs `f(i)` for `0..n`, 100 at a time, and returns the results in order.
async fn each<T, F>(n: usize, f: impl Fn(usize) -> F) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(100) {
        let batch: Vec<_> = (start..n.min(start + 100))
            .map(|i| tokio::spawn(f(i)))
            .collect();
        for task in batch {
            out.push(task.await.unwrap());
        }
    }
    out
}

/// Row: the upstream restarts under 1,000 live sessions. Idle clients see
/// the close (nothing was owed), blocked ones the error in place of their
/// reply; reconnected, every client reads back its own writes from the
/// new server, and the proxy holds exactly one upstream connection per
/// client: none of the old ones leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_restart_under_1000_sessions_closes_them_cleanly_and_they_reconnect() {
    const SESSIONS: usize = 1000;
    const BLOCKED: usize = 10;
    let mut old = RedisServer::start(RedisOptions::default());
    let relay = FaultRelay::start(old.tls_addr()).await;
    let mut args = Proxy::args(&old);
    args.upstream = Some(format!("localhost:{}", relay.addr.port()).parse().unwrap());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let addr = proxy.addr;
    let idle = each(SESSIONS - BLOCKED, move |i| async move {
        let mut c = Resp::connect(addr).await;
        let key = format!("restart:{i}");
        assert_eq!(
            text(&c.cmd(&[b"SET", key.as_bytes(), b"before"]).await),
            "+OK"
        );
        c
    })
    .await;
    let blocked = each(BLOCKED, move |_| async move {
        let mut c = Resp::connect(addr).await;
        c.send(&[b"BLPOP", b"restart:queue", b"0"]).await;
        c
    })
    .await;
    let active = r#"upstream_connections_active{method="password"}"#;
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&proxy, active).await != SESSIONS as f64 {
        assert!(Instant::now() < deadline, "sessions not all open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The restart: the old server dies, a new one (same CA) takes over.
    old.kill();
    let new = RedisServer::start_with_certs(RedisOptions::default(), old.certs.clone());
    relay.set_upstream(new.tls_addr());
    let told = each(BLOCKED, {
        let blocked = std::sync::Arc::new(tokio::sync::Mutex::new(blocked));
        move |i| {
            let blocked = blocked.clone();
            async move {
                let mut c = blocked.lock().await.pop().unwrap();
                let reply = tokio::time::timeout(Duration::from_secs(10), c.read()).await;
                (i, reply.map(|r| text(&r)).unwrap_or_default())
            }
        }
    })
    .await;
    for (i, reply) in told {
        assert_eq!(reply, line(Kind::Closed), "blocked client {i}");
    }
    let mut idle = idle;
    for (i, c) in idle.iter_mut().enumerate() {
        assert_eq!(
            c.read_until_closed().await,
            b"",
            "idle client {i} got bytes"
        );
    }
    drop(idle);

    // Reconnected, each client sees its own writes on the new server.
    let again = each(SESSIONS, move |i| async move {
        let mut c = Resp::connect(addr).await;
        let (key, value) = (format!("restart:{i}"), format!("after-{i}"));
        let before = text(&c.cmd(&[b"GET", key.as_bytes()]).await);
        assert_eq!(before, "_", "the new server has no {key}");
        assert_eq!(
            text(&c.cmd(&[b"SET", key.as_bytes(), value.as_bytes()]).await),
            "+OK"
        );
        (c, key, value)
    })
    .await;
    // Held open until the gauges are read below.
    let mut held = Vec::new();
    for (mut c, key, value) in again {
        assert_eq!(
            text(&c.cmd(&[b"GET", key.as_bytes()]).await),
            format!("${value}")
        );
        held.push(c);
    }
    assert_eq!(
        metric(&proxy, active).await,
        SESSIONS as f64,
        "old upstream connections leaked"
    );
    assert_eq!(
        metric(&proxy, "client_connections_active").await,
        SESSIONS as f64
    );
    drop(held);
}

/// Sends `input`, half-closes (FIN, still reading), and returns every byte
/// until the peer closes.
async fn half_closed<S>(mut s: S, input: &[u8]) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(input).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("closed")
        .unwrap_or_default();
    out
}

/// Row: the client half-closes after its commands (`printf ... | nc`, a
/// script that shuts down its write side). Every reply it is owed arrives,
/// then the close, byte for byte as direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_half_close_gets_every_reply_then_the_close_as_direct() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let input = b"AUTH app app-secret-pw\r\nSET half 1\r\nINCR half\r\nGET half\r\n";
    let tls = common::tls_connect(&redis.tls_connector(), redis.tls_port)
        .await
        .unwrap();
    let direct = half_closed(tls, input).await;
    assert_eq!(direct, b"+OK\r\n+OK\r\n:2\r\n$1\r\n2\r\n");
    let through = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(half_closed(through, input).await, direct);
}

/// An IAM proxy whose every upstream chunk is 250 ms late each way, so a
/// re-authentication (1 s after each AUTH) is in flight for half a second:
/// long enough to stop the proxy in the middle of one.
async fn iam_behind_latency() -> (RedisServer, common::Emulator, FaultRelay, Proxy) {
    let redis = RedisServer::start(common::backend_options());
    let emulator = common::Emulator::start(&redis, &common::EmulatorOptions::default());
    let relay = FaultRelay::start(emulator.addr).await;
    relay.set(Fault::Latency(Duration::from_millis(250)));
    let mut args = Proxy::iam_args(&redis, relay.addr.port());
    args.reauth_after = Some("1s".parse().unwrap());
    args.drain_timeout = Some("3s".parse().unwrap());
    let creds =
        aws_credential_types::Credentials::new("AKIDTEST", "test-secret-key", None, None, "t");
    let proxy = Proxy::start_with_credentials(args, "unused", creds).await;
    (redis, emulator, relay, proxy)
}

/// Every byte `c` receives until the proxy closes it.
async fn rest_of(c: &mut Resp) -> Vec<u8> {
    c.read_until_closed().await
}

/// Waits until `series` passes `from`: the moment a re-authentication (or
/// migration) completed. The next one starts `--reauth-after` (1 s) later.
async fn completes(proxy: &Proxy, series: &str, from: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = metric(proxy, series).await;
        if n > from {
            return n;
        }
        assert!(Instant::now() < deadline, "{series} stays at {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Row: SIGTERM (the drain) in the middle of a re-authentication. The
/// idle session closes with nothing sent (the proxy's own AUTH reply never
/// reaches the client); a command sent meanwhile gets its reply, then the
/// close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_during_a_reauthentication_sends_the_client_nothing_of_it() {
    let (_redis, _emulator, _relay, mut proxy) = iam_behind_latency().await;
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(
        text(&c.cmd(&[b"ACL", b"WHOAMI"]).await),
        format!("${}", common::IAM_USER)
    );
    let reauths = r#"reauthentications_total{outcome="success"}"#;
    let done = completes(&proxy, reauths, 0.0).await;
    // The next one starts 1 s (+5% jitter) after that one was sent, 500 ms
    // before it was seen done, and takes 500 ms: in flight from about
    // 500 to 1,000 ms from here.
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert_eq!(
        metric(&proxy, reauths).await,
        done,
        "the next one already finished"
    );
    c.send(&[b"INCR", b"drain:n"]).await;
    // Read by the proxy (held until the AUTH's reply, or sent on).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = proxy.shutdown();
    assert_eq!(text(&c.read().await), ":1");
    assert!(
        rest_of(&mut c).await.is_empty(),
        "bytes of the proxy's AUTH reached the client"
    );
    tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .unwrap()
        .unwrap();
}

/// Row: SIGTERM while a RESP2 subscriber is being moved to a fresh
/// connection. It receives only whole messages, none twice, nothing of the
/// move (no second subscribe confirmation), then the close at the drain
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_during_a_migration_leaks_nothing_of_it() {
    let (redis, _emulator, _relay, mut proxy) = iam_behind_latency().await;
    let mut sub = Resp::connect(proxy.addr).await;
    assert_eq!(
        text(&sub.cmd(&[b"SUBSCRIBE", b"drain:ch"]).await),
        "[subscribe,drain:ch,1]"
    );
    let mut publisher = direct(&redis).await;
    let moved = r#"session_migrations_total{outcome="success"}"#;
    completes(&proxy, moved, 0.0).await;
    // The next move is due 1 s after the new connection's AUTH was
    // answered, which was before restoring, retiring and the overlap PING
    // (three round trips, 1.5 s): it starts at once, and its new
    // connection takes about 1 s to open (TLS and AUTH) before it
    // subscribes.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let drained = proxy.shutdown();
    for n in 1..=5 {
        let m = format!("m{n}");
        assert_eq!(
            text(
                &publisher
                    .cmd(&[b"PUBLISH", b"drain:ch", m.as_bytes()])
                    .await
            ),
            ":1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rest = rest_of(&mut sub).await;
    let mut frames = Vec::new();
    let mut buf = &rest[..];
    while !buf.is_empty() {
        let (frame, used) = common::try_decode(buf).unwrap().expect("whole frames only");
        frames.push(text(&frame));
        buf = &buf[used..];
    }
    let want: Vec<String> = (1..=5)
        .map(|n| format!("[message,drain:ch,m{n}]"))
        .collect();
    assert_eq!(frames, want, "lost, doubled or leaked");
    tokio::time::timeout(Duration::from_secs(6), drained)
        .await
        .unwrap()
        .unwrap();
}
