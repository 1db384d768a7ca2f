//! What a client sees when something goes wrong: upstream TLS, connect and
//! AUTH failures, the upstream dying, malformed input, the connection limit;
//! and the listener and upstream variants (Unix socket, plaintext, legacy
//! password). Each failure asserts the exact line the client gets.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{text, Proxy, RedisOptions, RedisServer, Resp};
use elasticache_auth_proxy::{auth, config, error::Kind, upstream::Connector};
use tokio::io::AsyncReadExt;

/// Every error the proxy itself makes starts with this.
const PROXY_ERR: &str = "-ERR elasticache-auth-proxy:";
/// Deadline for polls that should succeed within milliseconds.
const POLL_DEADLINE: Duration = Duration::from_secs(5);

/// The exact line (as rendered by `text`) a client gets for `kind`.
fn line(kind: Kind) -> String {
    format!("-{}", kind.client_message())
}

/// Connects, sends a command and returns the proxy's answer; asserts the
/// next command gets the same answer (every command is told, in its turn).
async fn refused_line(addr: std::net::SocketAddr) -> String {
    let mut c = Resp::connect(addr).await;
    let reply = text(&c.cmd(&[b"PING"]).await);
    assert_eq!(text(&c.cmd(&[b"GET", b"k"]).await), reply);
    reply
}

async fn assert_serves(addr: std::net::SocketAddr) {
    let mut c = Resp::connect(addr).await;
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
}

// ---- upstream TLS ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_certificate_is_a_tls_handshake_error() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.tls_ca_file = Some(redis.certs.other_ca.clone());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let reply = refused_line(proxy.addr).await;
    assert!(reply.starts_with(PROXY_ERR), "{reply}");
    assert_eq!(reply, line(Kind::TlsHandshake));
    // The proxy is still up and says the same to the next client.
    assert_eq!(refused_line(proxy.addr).await, line(Kind::TlsHandshake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_name_is_a_tls_handshake_error() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.tls_server_name = Some("not-the-server.example".into());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    assert_eq!(refused_line(proxy.addr).await, line(Kind::TlsHandshake));
    assert_eq!(refused_line(proxy.addr).await, line(Kind::TlsHandshake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_without_a_client_cert_fails_and_with_one_works() {
    let redis = RedisServer::start(RedisOptions {
        require_client_cert: true,
        ..Default::default()
    });
    let without = Proxy::start(&redis).await;
    // With TLS 1.3 the refusal comes as an alert after the handshake, on
    // the proxy's read of its AUTH reply (today reported as Kind::Protocol,
    // "sent invalid RESP"); the client must get a proxy error either way.
    let reply = refused_line(without.addr).await;
    assert!(reply.starts_with(PROXY_ERR), "{reply}");

    let mut args = Proxy::args(&redis);
    args.tls_client_cert = Some(redis.certs.client_cert.clone());
    args.tls_client_key = Some(redis.certs.client_key.clone());
    let with = Proxy::start_with(args, "app-secret-pw").await;
    assert_serves(with.addr).await;
}

// ---- TLS and plaintext mixed up ----

/// The upstream connector `args` configure, as sessions use it.
fn connector(args: config::Args) -> Connector {
    let env = |k: &str| (k == common::PASSWORD_ENV).then(|| "app-secret-pw".to_string());
    let cfg = config::Config::load(args, &env).expect("test config is valid");
    Connector::new(&cfg).expect("connector")
}

/// What a client that sends PING reads first: the reply, or the proxy's
/// error in its place (however the proxy words and times it).
async fn first_reply(addr: std::net::SocketAddr) -> String {
    let mut c = Resp::connect(addr).await;
    c.send(&[b"PING"]).await;
    text(&c.read().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plaintext_port_says_so_well_before_the_timeout() {
    let redis = RedisServer::start(RedisOptions {
        plain_port: true,
        ..Default::default()
    });
    let mut args = Proxy::args(&redis);
    let plain = redis.plain_port.expect("plain port requested");
    // TLS on, as by default, pointed at redis-server's plaintext port.
    args.upstream = Some(format!("localhost:{plain}").parse().unwrap());
    args.connect_timeout = Some("5s".parse().unwrap());

    // redis-server waits for a newline the ClientHello never sends, so only
    // asking it in plaintext tells it from a slow TLS server.
    let started = Instant::now();
    let err = match connector(args.clone()).connect().await {
        Ok(_) => panic!("TLS handshake with a plaintext port succeeded"),
        Err(e) => e,
    };
    let took = started.elapsed();
    assert_eq!(err.kind, Kind::NotTls, "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}: {err}");
    // The log says what the server did answer, and the fix.
    assert!(err.detail.contains("NOAUTH"), "{err}");
    assert!(err.detail.contains("--no-tls"), "{err}");
    assert!(
        !err.client_line().contains("--tls-ca-file"),
        "{}",
        err.client_line()
    );

    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let started = Instant::now();
    let reply = first_reply(proxy.addr).await;
    assert_eq!(reply, line(Kind::NotTls));
    assert!(
        reply.contains("plaintext port") && reply.contains("--no-tls"),
        "{reply}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A server that answers whatever it is sent with `answer`, then closes.
async fn answering(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
                // Drain so the close is a FIN, not a reset.
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_answer_to_the_client_hello_is_not_tls_at_once() {
    // A server that answers the ClientHello's bytes as a bad command.
    let (port, _server) = answering(b"-ERR unknown command\r\n").await;
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.upstream = Some(format!("localhost:{port}").parse().unwrap());
    args.connect_timeout = Some("5s".parse().unwrap());
    let started = Instant::now();
    let err = match connector(args).connect().await {
        Ok(_) => panic!("TLS handshake succeeded"),
        Err(e) => e,
    };
    assert_eq!(err.kind, Kind::NotTls, "{err}");
    // Told by the handshake itself, not by waiting.
    assert!(err.detail.contains("not TLS"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tls_to_a_tls_port_says_it_looks_like_a_tls_port() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.tls_ca_file = None;
    args.no_tls = Some(true);

    // redis-server's TLS port resets the connection on the plaintext AUTH.
    let c = connector(args.clone());
    let (mut stream, _) = c.connect().await.expect("TCP connects");
    let identity = auth::Identity {
        method: auth::Method::Password,
        user: Some("app".into()),
        secret: auth::Secret::new("app-secret-pw"),
    };
    let mut rest = bytes::BytesMut::new();
    let err = c
        .authenticate(&mut stream, &identity, &mut rest)
        .await
        .expect_err("plaintext AUTH to a TLS port");
    assert_eq!(err.kind, Kind::TlsExpected, "{err}");
    assert!(err.detail.contains("--no-tls"), "{err}");
    assert!(!err.detail.contains("app-secret-pw"), "{err}");

    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let reply = first_reply(proxy.addr).await;
    assert_eq!(reply, line(Kind::TlsExpected));
    assert!(
        reply.contains("TLS port") && reply.contains("--no-tls"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tls_to_a_server_answering_with_a_tls_alert_looks_like_a_tls_port() {
    // A TLS server may answer plaintext with a protocol_version alert record.
    let (port, _server) = answering(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]).await;
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.tls_ca_file = None;
    args.no_tls = Some(true);
    args.upstream = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    assert_eq!(first_reply(proxy.addr).await, line(Kind::TlsExpected));
}

// ---- upstream connect ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_prompt_connect_error() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    // Nobody listens here: connect is refused at once.
    let port = common::free_port();
    args.upstream = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let started = Instant::now();
    assert_eq!(refused_line(proxy.addr).await, line(Kind::Connect));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_error_reaches_a_client_that_sent_first() {
    // Real clients write their first command right after connecting; the
    // proxy must not reset the connection over the unread command before the
    // client has read why.
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    let port = common::free_port();
    args.upstream = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    for i in 0..20 {
        let mut c = Resp::connect(proxy.addr).await;
        c.send(&[b"PING"]).await;
        assert_eq!(text(&c.read().await), line(Kind::Connect), "attempt {i}");
        // QUIT ends it as Redis would.
        assert_eq!(text(&c.cmd(&[b"QUIT"]).await), "+OK", "attempt {i}");
        assert!(c.read_closed().await, "attempt {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_a_silent_upstream() {
    // Accepts TCP (the kernel does, into the backlog) but never speaks TLS.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.upstream = Some(
        format!("localhost:{}", silent.local_addr().unwrap().port())
            .parse()
            .unwrap(),
    );
    args.connect_timeout = Some("300ms".parse().unwrap());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let started = Instant::now();
    assert_eq!(refused_line(proxy.addr).await, line(Kind::TlsHandshake));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_an_unanswered_tcp_connect() {
    // A listener with a full accept queue: Linux drops further SYNs, so a
    // TCP connect hangs until the connecting side gives up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    let mut hangs = false;
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filler connect failed: {e}"),
            Err(_) => {
                hangs = true;
                break;
            }
        }
    }
    assert!(hangs, "accept queue never filled");

    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.upstream = Some(format!("127.0.0.1:{}", addr.port()).parse().unwrap());
    args.connect_timeout = Some("300ms".parse().unwrap());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let started = Instant::now();
    assert_eq!(refused_line(proxy.addr).await, line(Kind::ConnectTimeout));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop((fillers, full));
}

// ---- upstream AUTH ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_upstream_auth_is_reported_without_the_password() {
    let redis = RedisServer::start(RedisOptions::default());
    let password = "wrong-pw-MUST-NOT-LEAK";
    let proxy = Proxy::start_with(Proxy::args(&redis), password).await;
    let mut c = Resp::connect(proxy.addr).await;
    c.send(&[b"PING"]).await;
    let mut raw = vec![0u8; 4096];
    let n = tokio::time::timeout(POLL_DEADLINE, c.stream().read(&mut raw))
        .await
        .expect("an answer")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw[..n]);
    // The fixed line, and which method failed how (the server's error code).
    let rejected = format!("{} [password: WRONGPASS]", line(Kind::AuthRejected));
    assert_eq!(raw, format!("{rejected}\r\n"));
    assert!(!raw.contains(password) && !raw.contains("MUST-NOT-LEAK"));
    assert_eq!(refused_line(proxy.addr).await, rejected);
}

// ---- upstream dies mid-session ----

/// Two clients through one proxy, one blocked in BLPOP; then the upstream
/// process is SIGKILLed. Returns what each client read before the close
/// (`None`: nothing, just the close).
async fn kill_upstream_under_blocked_and_idle_clients() -> Vec<(&'static str, Option<String>)> {
    let mut redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut blocked = Resp::connect(proxy.addr).await;
    let mut idle = Resp::connect(proxy.addr).await;
    assert_eq!(text(&idle.cmd(&[b"PING"]).await), "+PONG");
    assert_eq!(text(&blocked.cmd(&[b"PING"]).await), "+PONG");
    blocked.send(&[b"BLPOP", b"never", b"0"]).await;
    // Make sure the BLPOP reached redis and is blocking before the kill.
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        let info = text(&idle.cmd(&[b"INFO", b"clients"]).await);
        if info.contains("blocked_clients:1") {
            break;
        }
        assert!(Instant::now() < deadline, "BLPOP never blocked: {info}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.kill();
    let mut seen = Vec::new();
    for (name, c) in [("blocked", &mut blocked), ("idle", &mut idle)] {
        let reply = if c.read_closed().await {
            None
        } else {
            Some(text(&c.read().await))
        };
        assert!(
            reply.is_none() || c.read_closed().await,
            "{name} not closed after {reply:?}"
        );
        seen.push((name, reply));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_killed_mid_session_tells_the_blocked_client_and_closes_the_idle_one() {
    let seen = kill_upstream_under_blocked_and_idle_clients().await;
    // The blocked client is owed a reply: the error goes in its place.
    assert_eq!(seen[0], ("blocked", Some(line(Kind::Closed))));
    // The idle one is owed nothing: it sees the close, as it would direct.
    assert_eq!(seen[1], ("idle", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_an_idle_connection_is_a_plain_close() {
    // redis closes it itself (CLIENT KILL): the clean-close path.
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut victim = Resp::connect(proxy.addr).await;
    let id = text(&victim.cmd(&[b"CLIENT", b"ID"]).await);
    let id = id.trim_start_matches(':').to_string();
    let mut admin = Resp::connect(proxy.addr).await;
    let killed = admin.cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]).await;
    assert_eq!(text(&killed), ":1");
    // Nothing was owed: no error frame, just the close (as direct).
    assert!(victim.read_closed().await);
    assert_eq!(text(&admin.cmd(&[b"PING"]).await), "+PONG");
}

// ---- malformed client input ----

const EXPECTED_DOLLAR: &str = "-ERR Protocol error: expected '$', got ':'";
/// Redis's own answer past proto-max-bulk-len, also past max-frame-size.
const BULK_TOO_LONG: &str = "-ERR Protocol error: invalid bulk length";

/// A proxy whose frame limit is 1 KiB, so the oversize case is cheap.
async fn small_frame_proxy(redis: &RedisServer) -> Proxy {
    let mut args = Proxy::args(redis);
    args.max_frame_size = Some("1KiB".parse().unwrap());
    Proxy::start_with(args, "app-secret-pw").await
}

/// Sends `input` as one write and expects `replies`, then the close.
async fn expect_replies_then_close(addr: std::net::SocketAddr, input: &[u8], replies: &[&str]) {
    let mut c = Resp::connect(addr).await;
    c.send_raw(input).await;
    for want in replies {
        assert_eq!(
            &text(&c.read().await),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert!(c.read_closed().await, "still open after {replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_bulk_argument_is_a_protocol_error_after_earlier_replies() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut batch = common::encode_command(&[b"SET", b"a", b"1"]);
    batch.extend(common::encode_command(&[b"GET", b"a"]));
    batch.extend(b"PING\r\n");
    batch.extend(b"*2\r\n:1\r\n");
    batch.extend(common::encode_command(&[b"SET", b"a", b"after-garbage"]));
    let replies = ["+OK", "$1", "+PONG", EXPECTED_DOLLAR];
    expect_replies_then_close(proxy.addr, &batch, &replies).await;
    // Nothing after the garbage ran, and the proxy serves on.
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"GET", b"a"]).await), "$1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbalanced_inline_quotes_are_a_protocol_error() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let unbalanced = "-ERR Protocol error: unbalanced quotes in request";
    expect_replies_then_close(proxy.addr, b"SET k \"unterminated\r\n", &[unbalanced]).await;
    let input = b"SET k v\r\nSET k 'open\r\nSET k w\r\n";
    expect_replies_then_close(proxy.addr, input, &["+OK", unbalanced]).await;
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"GET", b"k"]).await), "$v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_over_max_frame_size_is_redis_invalid_bulk_length() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = small_frame_proxy(&redis).await;
    let mut c = Resp::connect(proxy.addr).await;
    // At the limit is fine.
    let at_limit = vec![b'x'; 1024];
    assert_eq!(text(&c.cmd(&[b"SET", b"k", &at_limit]).await), "+OK");
    // Only the header is needed: the length alone is refused.
    let mut input = common::encode_command(&[b"PING"]);
    input.extend(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n");
    expect_replies_then_close(proxy.addr, &input, &["+PONG", BULK_TOO_LONG]).await;
    assert_serves(proxy.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_error_as_the_first_input_is_answered_and_closes() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = small_frame_proxy(&redis).await;
    expect_replies_then_close(proxy.addr, b"*2\r\n:1\r\n", &[EXPECTED_DOLLAR]).await;
    let oversize = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n";
    expect_replies_then_close(proxy.addr, oversize, &[BULK_TOO_LONG]).await;
    // Also after earlier replies have been read: nothing is outstanding.
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
    c.send_raw(b"*1\r\n:1\r\n").await;
    assert_eq!(text(&c.read().await), EXPECTED_DOLLAR);
    assert!(c.read_closed().await);
}

/// Panics on tokio worker threads in this test binary: a panicking session
/// task only drops its client, so count them to prove none happened.
static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_worker_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("tokio-runtime-worker") {
            WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
}

/// xorshift64*: deterministic noise without extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Half raw noise, half RESP-shaped noise built from tokens the scanners
/// and the command classifier care about. Nothing destructive (no FLUSH*,
/// SHUTDOWN, DEBUG, CONFIG, KILL) can be spelled. Raw noise includes NUL.
fn fuzz_input(rng: &mut Rng) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"*",
        b"$",
        b":",
        b"+",
        b"-",
        b"%",
        b"~",
        b">",
        b"_",
        b"\r\n",
        b"\r",
        b"\n",
        b"0",
        b"1",
        b"2",
        b"3",
        b"-1",
        b"4294967296",
        b"99999999999999999999",
        b" ",
        b"\t",
        b"\"",
        b"'",
        b"\\",
        b"\\x4",
        b"PING",
        b"ECHO",
        b"SET",
        b"GET",
        b"AUTH",
        b"HELLO",
        b"CLIENT",
        b"REPLY",
        b"OFF",
        b"SKIP",
        b"RESET",
        b"QUIT",
        b"MULTI",
        b"EXEC",
        b"SUBSCRIBE",
        b"MONITOR",
    ];
    let mut out = Vec::new();
    let pieces = rng.below(40);
    let raw = rng.below(2) == 0;
    for _ in 0..pieces {
        if raw {
            let n = 1 + rng.below(8);
            out.extend((0..n).map(|_| rng.next() as u8));
        } else {
            out.extend_from_slice(TOKENS[rng.below(TOKENS.len())]);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_input_never_crashes_the_proxy() {
    count_worker_panics();
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut survivor = Resp::connect(proxy.addr).await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for batch in 0..10 {
        for _ in 0..20 {
            let input = fuzz_input(&mut rng);
            let mut c = Resp::connect(proxy.addr).await;
            // Write and hang up without reading: whether the proxy answers
            // or closes is asserted by the targeted tests above; here it
            // only has to survive.
            c.send_raw(&input).await;
        }
        assert_eq!(WORKER_PANICS.load(Ordering::SeqCst), 0, "batch {batch}");
        assert_serves(proxy.addr).await;
        assert_eq!(text(&survivor.cmd(&[b"PING"]).await), "+PONG");
    }
}

// ---- connection limit ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_then_readmits() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.max_connections = Some(2);
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let mut first = Resp::connect(proxy.addr).await;
    let mut second = Resp::connect(proxy.addr).await;
    assert_eq!(text(&first.cmd(&[b"PING"]).await), "+PONG");
    assert_eq!(text(&second.cmd(&[b"PING"]).await), "+PONG");

    let refused = refused_line(proxy.addr).await;
    assert_eq!(
        refused,
        "-ERR elasticache-auth-proxy: max connections (2) reached; try again later"
    );
    // The admitted clients are unaffected.
    assert_eq!(text(&second.cmd(&[b"PING"]).await), "+PONG");

    drop(first);
    // The slot frees when the proxy notices the close; poll for it.
    let deadline = Instant::now() + POLL_DEADLINE;
    let mut third = loop {
        let mut c = Resp::connect(proxy.addr).await;
        c.send(&[b"PING"]).await;
        match text(&c.read().await).as_str() {
            "+PONG" => break c,
            r if r.starts_with("-ERR elasticache-auth-proxy: max connections (2)") => {}
            r => panic!("unexpected reply {r}"),
        }
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(text(&third.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    assert_eq!(
        refused_line(proxy.addr).await,
        "-ERR elasticache-auth-proxy: max connections (2) reached; try again later"
    );
}

// ---- listener and upstream variants ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_serves_with_mode_0660() {
    let redis = RedisServer::start(RedisOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.sock");
    let mut args = Proxy::args(&redis);
    args.unix_socket = Some(path.clone());
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    assert_eq!(proxy.unix_socket.as_deref(), Some(path.as_path()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o660, "mode {mode:o}");

    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let mut c = Resp::over(stream);
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    assert_eq!(text(&c.cmd(&[b"SET", b"via", b"unix"]).await), "+OK");
    // TCP is served alongside.
    let mut tcp = Resp::connect(proxy.addr).await;
    assert_eq!(text(&tcp.cmd(&[b"GET", b"via"]).await), "$unix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tls_talks_plaintext_to_the_plain_port() {
    let redis = RedisServer::start(RedisOptions {
        plain_port: true,
        ..Default::default()
    });
    let mut args = Proxy::args(&redis);
    let plain = redis.plain_port.expect("plain port requested");
    args.upstream = Some(format!("127.0.0.1:{plain}").parse().unwrap());
    args.tls_ca_file = None;
    args.no_tls = Some(true);
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    assert_serves(proxy.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_single_password_authenticates_as_default() {
    // With `default_user_off: false` the harness writes no `user default off`
    // line; the `default` entry below then gives it the legacy password.
    let redis = RedisServer::start(RedisOptions {
        users: vec![("default".into(), "legacy-pw".into())],
        default_user_off: false,
        ..Default::default()
    });
    let mut args = Proxy::args(&redis);
    args.password_user = None;
    let proxy = Proxy::start_with(args, "legacy-pw").await;
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$default");
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");

    // And the password really is required: a wrong one is rejected.
    let mut args = Proxy::args(&redis);
    args.password_user = None;
    let wrong = Proxy::start_with(args, "not-the-legacy-pw").await;
    assert_eq!(
        refused_line(wrong.addr).await,
        format!("{} [password: WRONGPASS]", line(Kind::AuthRejected))
    );
}
