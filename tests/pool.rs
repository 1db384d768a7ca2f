//! The warm pool (issue 10): with `--pool-size`, a new client takes an
//! upstream connection that is already connected, TLS-established and
//! authenticated; with reuse on, a connection whose client left cleanly
//! with nothing owed goes back after RESET and AUTH, keeping nothing of that
//! client. Real TLS redis-server (and the IAM emulator), the real proxy, a
//! relay adding latency where round trips must show.

mod common;

use std::time::{Duration, Instant};

use common::{
    backend_options, text, Emulator, EmulatorOptions, Fault, FaultRelay, Proxy, RedisOptions,
    RedisServer, Resp, IAM_USER,
};
use elasticache_auth_proxy::config::Switch;

async fn metric(proxy: &Proxy, series: &str) -> f64 {
    common::metric(proxy.admin, series).await
}

/// Polls until `name` reads `want`.
async fn reaches(proxy: &Proxy, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(proxy, name).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A proxy with `pool` warm connections to `redis` through a relay that
/// delays every chunk by 100 ms each way (a cache a few regions away).
async fn distant(redis: &RedisServer, pool: usize) -> (FaultRelay, Proxy) {
    let relay = FaultRelay::start(redis.tls_addr()).await;
    relay.set(Fault::Latency(Duration::from_millis(100)));
    let mut args = Proxy::args(redis);
    args.upstream = Some(format!("localhost:{}", relay.addr.port()).parse().unwrap());
    args.pool_size = Some(pool);
    // Counts every connection opened: a client's own would be reused.
    args.pool_reuse = (pool > 0).then_some(Switch::Off);
    (relay, Proxy::start_with(args, "app-secret-pw").await)
}

/// How long a new client waits for its first reply.
async fn first_reply(proxy: &Proxy) -> (String, Duration) {
    let started = Instant::now();
    let mut c = Resp::connect(proxy.addr).await;
    let reply = text(&c.cmd(&[b"ACL", b"WHOAMI"]).await);
    (reply, started.elapsed())
}

/// A new client's first reply costs one round trip with the pool warm,
/// against the TLS handshake, the AUTH and the command without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_spares_new_clients_the_tls_handshake_and_the_auth() {
    let redis = RedisServer::start(RedisOptions::default());
    let (_cold_relay, cold) = distant(&redis, 0).await;
    let (_warm_relay, warm) = distant(&redis, 2).await;
    reaches(&warm, "pool_connections", 2.0).await;
    let opened = metric(&warm, "upstream_connections_total").await;

    let (reply, pooled) = first_reply(&warm).await;
    assert_eq!(reply, "$app");
    let (reply, unpooled) = first_reply(&cold).await;
    assert_eq!(reply, "$app");
    // One round trip (200 ms) against at least three.
    assert!(pooled < Duration::from_millis(450), "pooled: {pooled:?}");
    assert!(
        unpooled > Duration::from_millis(550),
        "unpooled: {unpooled:?}"
    );
    assert!(unpooled > pooled * 2, "{pooled:?} vs {unpooled:?}");

    assert_eq!(metric(&warm, "pool_hits_total").await, 1.0);
    assert_eq!(metric(&warm, "pool_misses_total").await, 0.0);
    // The client opened nothing itself; the refill replaces what it took.
    reaches(&warm, "pool_connections", 2.0).await;
    assert_eq!(
        metric(&warm, "upstream_connections_total").await,
        opened + 1.0
    );
    assert_eq!(metric(&warm, "pool_refills_total").await, 3.0);
    assert_eq!(
        metric(&cold, "pool_misses_total").await,
        0.0,
        "no pool, no misses"
    );
}

/// A pooled connection the server has closed is never handed out: the
/// client gets a working session as if there were no pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_server_closed_is_never_handed_out() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.pool_size = Some(2);
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    reaches(&proxy, "pool_connections", 2.0).await;
    // The server drops the idle pooled connections (a restart, a timeout).
    let tls = redis.tls_connector();
    let mut direct = Resp::over(common::tls_connect(&tls, redis.tls_port).await.unwrap());
    assert_eq!(
        text(&direct.cmd(&[b"AUTH", b"app", b"app-secret-pw"]).await),
        "+OK"
    );
    assert_eq!(
        text(&direct.cmd(&[b"CLIENT", b"KILL", b"USER", b"app"]).await),
        ":2"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"SET", b"pool:k", b"v"]).await), "+OK");
    assert_eq!(text(&c.cmd(&[b"GET", b"pool:k"]).await), "$v");
    let discarded = r#"pool_discards_total{reason="closed"}"#;
    assert!(metric(&proxy, discarded).await >= 1.0);
    assert_eq!(
        metric(&proxy, "pool_hits_total").await,
        0.0,
        "a dead one was handed out"
    );
}

/// A proxy with a pool of 2 in front of the IAM emulator, which cuts IAM
/// sessions at 3 s; the proxy re-authenticates after `reauth_after`.
async fn iam_pool_of_2(reauth_after: &str) -> (RedisServer, Emulator, Proxy) {
    let redis = RedisServer::start(backend_options());
    let emulator = Emulator::start(
        &redis,
        &EmulatorOptions {
            max_session_age: "3s".into(),
            ..EmulatorOptions::default()
        },
    );
    let mut args = Proxy::iam_args(&redis, emulator.addr.port());
    args.pool_size = Some(2);
    args.max_session_age = Some("3s".parse().unwrap());
    args.reauth_after = Some(reauth_after.parse().unwrap());
    let creds =
        aws_credential_types::Credentials::new("AKIDTEST", "test-secret-key", None, None, "t");
    let proxy = Proxy::start_with_credentials(args, "unused", creds).await;
    (redis, emulator, proxy)
}

/// IAM sessions taken from the pool re-authenticate on the pooled AUTH's
/// schedule: with a 3 s session age none is cut, and pooled connections
/// too old to re-authenticate in time are retired, not handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_iam_sessions_reauthenticate_in_time_and_old_ones_are_retired() {
    let (_redis, emulator, proxy) = iam_pool_of_2("1s").await;
    reaches(&proxy, "pool_connections", 2.0).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut c = Resp::connect(proxy.addr).await;
        assert_eq!(
            text(&c.cmd(&[b"ACL", b"WHOAMI"]).await),
            format!("${IAM_USER}")
        );
        sessions.push(c);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for c in &mut sessions {
            assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(emulator.stat("sessions_expired_total"), 0);
    assert!(metric(&proxy, "pool_hits_total").await >= 1.0);
    assert!(metric(&proxy, r#"pool_discards_total{reason="aged"}"#).await >= 1.0);
    assert!(metric(&proxy, r#"reauthentications_total{outcome="success"}"#).await >= 6.0);
}

// ---- Reuse after a client leaves ----

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A proxy with a warm pool of `size` in front of `redis` as user `app`,
/// reuse as `reuse` says (unset: the default, on).
async fn pooled(redis: &RedisServer, size: usize, reuse: Option<Switch>) -> Proxy {
    let mut args = Proxy::args(redis);
    args.pool_size = Some(size);
    args.pool_reuse = reuse;
    Proxy::start_with(args, "app-secret-pw").await
}

/// The server's id for the upstream connection behind `c`.
async fn client_id(c: &mut Resp) -> i64 {
    let id = text(&c.cmd(&[b"CLIENT", b"ID"]).await);
    id.strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("CLIENT ID: {id}"))
}

/// A direct TLS connection to `redis` as `app`, beside the proxy.
async fn direct(redis: &RedisServer) -> Resp<Tls> {
    let tls = redis.tls_connector();
    let mut c = Resp::over(common::tls_connect(&tls, redis.tls_port).await.unwrap());
    assert_eq!(
        text(&c.cmd(&[b"AUTH", b"app", b"app-secret-pw"]).await),
        "+OK"
    );
    c
}

/// Polls until the server no longer knows client `id`: its connection was
/// closed, not kept.
async fn gone(admin: &mut Resp<Tls>, id: i64) {
    let id = id.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = text(&admin.cmd(&[b"CLIENT", b"LIST", b"ID", id.as_bytes()]).await);
        if list == "$" {
            return;
        }
        assert!(Instant::now() < deadline, "client {id} still open: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects clients until one sits on the upstream connection `id`
/// (oldest pooled connection first, so within the pool's size); returns it
/// and the others, still open.
async fn client_on(proxy: &Proxy, id: i64, size: usize) -> (Resp, Vec<Resp>) {
    let mut others = Vec::new();
    for _ in 0..size {
        let mut c = Resp::connect(proxy.addr).await;
        if client_id(&mut c).await == id {
            return (c, others);
        }
        others.push(c);
    }
    panic!("no new client got the reused connection {id}");
}

/// `key=value` fields of a `CLIENT INFO` line.
fn client_info(line: &str) -> std::collections::HashMap<String, String> {
    line.trim_start_matches('$')
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The must-show of issue 10: client A sets every piece of connection state
/// it can and leaves; client B, on the very same upstream connection (the
/// same CLIENT ID), finds none of it: database, name, protocol, tracking,
/// WATCH, ACL user, reply mode (READONLY and ASKING where the server takes
/// them). NO-EVICT and NO-TOUCH are not left to RESET (Redis 7.0 keeps
/// NO-EVICT): a client that set them is not reused, shown below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_connection_keeps_nothing_of_its_last_client() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = pooled(&redis, 2, None).await;
    reaches(&proxy, "pool_connections", 2.0).await;
    let mut other = direct(&redis).await;
    let auths = r#"auth_attempts_total{method="password",outcome="success"}"#;
    let auths_before = metric(&proxy, auths).await;

    let mut a = Resp::connect(proxy.addr).await;
    let id = client_id(&mut a).await;
    let ok = |r: String| assert_eq!(r, "+OK");
    ok(text(&a.cmd(&[b"SELECT", b"5"]).await));
    ok(text(&a.cmd(&[b"SET", b"reuse:in5", b"x"]).await));
    ok(text(&a.cmd(&[b"CLIENT", b"SETNAME", b"client-a"]).await));
    // The client's AUTH as another ACL user is answered by the proxy; the
    // connection stays the proxy's user.
    ok(text(&a.cmd(&[b"AUTH", b"someone", b"else"]).await));
    let hello = text(&a.cmd(&[b"HELLO", b"3"]).await);
    assert!(hello.contains("proto:3"), "{hello}");
    let mut flags = String::new();
    match text(&a.cmd(&[b"READONLY"]).await).as_str() {
        "+OK" => flags.push('r'),
        other => eprintln!("READONLY not checked (cluster mode only): {other}"),
    }
    match text(&a.cmd(&[b"ASKING"]).await).as_str() {
        "+OK" => {}
        other => eprintln!("ASKING not checked (cluster mode only): {other}"),
    }
    ok(text(&a.cmd(&[b"WATCH", b"reuse:watched"]).await));
    // Someone else changes the watched key: A's EXEC would now fail.
    ok(text(
        &other.cmd(&[b"SET", b"reuse:watched", b"theirs"]).await,
    ));
    let info = client_info(&text(&a.cmd(&[b"CLIENT", b"INFO"]).await));
    assert_eq!(info["db"], "5");
    assert_eq!(info["name"], "client-a");
    assert_eq!(info["resp"], "3");
    for flag in flags.chars() {
        assert!(info["flags"].contains(flag), "A: {flag} in {info:?}");
    }
    drop(a);

    // Back in the pool after RESET and AUTH, audited like any AUTH.
    reaches(&proxy, "pool_reuses_total", 1.0).await;
    assert_eq!(metric(&proxy, auths).await, auths_before + 1.0);
    let (mut b, _others) = client_on(&proxy, id, 2).await;
    let info = client_info(&text(&b.cmd(&[b"CLIENT", b"INFO"]).await));
    assert_eq!(info["id"], id.to_string(), "the same upstream connection");
    assert_eq!(info["db"], "0", "{info:?}");
    assert_eq!(info["name"], "", "{info:?}");
    assert_eq!(info["resp"], "2", "{info:?}");
    for flag in ['t', 'e', 'T', 'r'] {
        assert!(!info["flags"].contains(flag), "B: {flag} in {info:?}");
    }
    assert_eq!(info["user"], "app", "{info:?}");
    assert_eq!(text(&b.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    assert_eq!(text(&b.cmd(&[b"GET", b"reuse:in5"]).await), "_", "db 0");
    let tracking = text(&b.cmd(&[b"CLIENT", b"TRACKINGINFO"]).await);
    assert!(tracking.starts_with("[flags,[off]"), "{tracking}");
    // WATCH is gone: the transaction commits although the key changed.
    ok(text(&b.cmd(&[b"MULTI"]).await));
    assert_eq!(
        text(&b.cmd(&[b"SET", b"reuse:watched", b"mine"]).await),
        "+QUEUED"
    );
    assert_eq!(text(&b.cmd(&[b"EXEC"]).await), "[OK]");
    assert_eq!(text(&b.cmd(&[b"GET", b"reuse:watched"]).await), "$mine");
    // Replies are on, and nothing of the proxy's RESET or AUTH came through.
    assert_eq!(text(&b.cmd(&[b"PING"]).await), "+PONG");
    assert_eq!(
        metric(&proxy, r#"pool_discards_total{reason="reuse_failed"}"#).await,
        0.0
    );
}

/// How a client leaves that forbids reuse.
type Leave = fn(&mut Resp) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;

/// A client that leaves with something owed, or in a state RESET might not
/// clear, or after a protocol error: its connection is closed, not reused
/// (the next client gets another; the server no longer knows the old one),
/// and the refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_left_with_something_owed_is_never_reused() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = pooled(&redis, 2, None).await;
    let mut admin = direct(&redis).await;
    let cases: &[(&str, Leave)] = &[
        ("in MULTI", |c| {
            Box::pin(async move {
                assert_eq!(text(&c.cmd(&[b"MULTI"]).await), "+OK");
                assert_eq!(text(&c.cmd(&[b"SET", b"k", b"v"]).await), "+QUEUED");
            })
        }),
        ("subscribed", |c| {
            Box::pin(async move {
                assert!(text(&c.cmd(&[b"SUBSCRIBE", b"ch"]).await).starts_with("[subscribe"));
            })
        }),
        ("subscribed in RESP3", |c| {
            Box::pin(async move {
                let _ = c.cmd(&[b"HELLO", b"3"]).await;
                let _ = c.cmd(&[b"SSUBSCRIBE", b"ch"]).await;
            })
        }),
        ("once subscribed", |c| {
            Box::pin(async move {
                let _ = c.cmd(&[b"PSUBSCRIBE", b"p*"]).await;
                let _ = c.cmd(&[b"PUNSUBSCRIBE"]).await;
                assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
            })
        }),
        ("blocked in BLPOP", |c| {
            Box::pin(async move {
                c.send(&[b"BLPOP", b"reuse:empty", b"0"]).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            })
        }),
        ("in MONITOR", |c| {
            Box::pin(async move {
                assert_eq!(text(&c.cmd(&[b"MONITOR"]).await), "+OK");
            })
        }),
        ("with CLIENT REPLY OFF", |c| {
            Box::pin(async move {
                c.send(&[b"CLIENT", b"REPLY", b"OFF"]).await;
                c.send(&[b"SET", b"k", b"v"]).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            })
        }),
        ("with CLIENT REPLY SKIP", |c| {
            Box::pin(async move {
                c.send(&[b"CLIENT", b"REPLY", b"SKIP"]).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            })
        }),
        ("with a pipeline unanswered", |c| {
            Box::pin(async move {
                c.send(&[b"BLPOP", b"reuse:empty", b"1"]).await;
                c.send(&[b"PING"]).await;
                c.send(&[b"PING"]).await;
            })
        }),
        ("with half a command sent", |c| {
            Box::pin(async move {
                c.send_raw(b"*2\r\n$3\r\nGET\r\n$5\r\nab").await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            })
        }),
        ("after a protocol error", |c| {
            Box::pin(async move {
                c.send_raw(b"*1\r\n$x\r\n").await;
                assert!(text(&c.read().await).contains("Protocol error"));
            })
        }),
        // Redis 7.0's RESET keeps NO-EVICT; 7.2's clears both.
        ("after CLIENT NO-EVICT ON", |c| {
            Box::pin(async move {
                assert_eq!(text(&c.cmd(&[b"CLIENT", b"NO-EVICT", b"ON"]).await), "+OK");
            })
        }),
        ("after CLIENT NO-TOUCH ON", |c| {
            Box::pin(async move {
                let _ = c.cmd(&[b"CLIENT", b"NO-TOUCH", b"ON"]).await;
            })
        }),
        // RESET leaves the keys it read in the server's tracking table
        // under its id: a next client turning tracking on would be told of
        // them.
        ("after CLIENT TRACKING ON", |c| {
            Box::pin(async move {
                assert_eq!(text(&c.cmd(&[b"CLIENT", b"TRACKING", b"ON"]).await), "+OK");
                let _ = c.cmd(&[b"GET", b"reuse:tracked"]).await;
            })
        }),
        // Its library name would survive RESET (7.2), whatever the reply.
        ("after CLIENT SETINFO", |c| {
            Box::pin(async move {
                let _ = c.cmd(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"mine"]).await;
            })
        }),
    ];
    let refused = r#"pool_discards_total{reason="reuse_refused"}"#;
    let mut held = Vec::new();
    for (i, (case, leave)) in cases.iter().enumerate() {
        reaches(&proxy, "pool_connections", 2.0).await;
        let reuses = metric(&proxy, "pool_reuses_total").await;
        let mut a = Resp::connect(proxy.addr).await;
        let id = client_id(&mut a).await;
        leave(&mut a).await;
        drop(a);
        reaches(&proxy, refused, (i + 1) as f64).await;
        gone(&mut admin, id).await;
        assert_eq!(
            metric(&proxy, "pool_reuses_total").await,
            reuses,
            "{case}: reused"
        );
        let mut b = Resp::connect(proxy.addr).await;
        assert_ne!(client_id(&mut b).await, id, "{case}");
        // Kept open: its own reuse would blur the next case's count.
        held.push(b);
    }
    // Against that, a client that just leaves is reused.
    reaches(&proxy, "pool_connections", 2.0).await;
    let reuses = metric(&proxy, "pool_reuses_total").await;
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
    drop(c);
    reaches(&proxy, "pool_reuses_total", reuses + 1.0).await;
    assert_eq!(
        metric(&proxy, r#"pool_discards_total{reason="reuse_failed"}"#).await,
        0.0
    );
}

/// `--pool-reuse off`: a client that leaves cleanly still has its
/// connection closed, as before reuse existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reuse_off_no_connection_is_reused() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = pooled(&redis, 2, Some(Switch::Off)).await;
    let mut admin = direct(&redis).await;
    for _ in 0..3 {
        reaches(&proxy, "pool_connections", 2.0).await;
        let mut a = Resp::connect(proxy.addr).await;
        let id = client_id(&mut a).await;
        assert_eq!(text(&a.cmd(&[b"PING"]).await), "+PONG");
        drop(a);
        gone(&mut admin, id).await;
    }
    assert_eq!(metric(&proxy, "pool_reuses_total").await, 0.0);
    for reason in ["reuse_refused", "reuse_failed"] {
        let series = format!("pool_discards_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&proxy, &series).await, 0.0, "{reason}");
    }
    assert_eq!(metric(&proxy, "pool_hits_total").await, 3.0);
}

/// Behind the IAM emulator: the reuse AUTH is an IAM AUTH with the current
/// token (no signing on the way), and a session on the reused connection
/// re-authenticates on that AUTH's schedule: with a 3 s session age it is
/// never cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_iam_connections_reauthenticate_in_time() {
    // Pooled connections live at most half of this (1.3 s) before they age out.
    let (_redis, emulator, proxy) = iam_pool_of_2("2600ms").await;
    reaches(&proxy, "pool_connections", 2.0).await;
    let signed = proxy.auth.as_ref().unwrap().iam_stats().unwrap();
    let iam_auths = r#"auth_attempts_total{method="iam",outcome="success"}"#;
    let before = metric(&proxy, iam_auths).await;

    let mut a = Resp::connect(proxy.addr).await;
    let id = client_id(&mut a).await;
    assert_eq!(
        text(&a.cmd(&[b"ACL", b"WHOAMI"]).await),
        format!("${IAM_USER}")
    );
    let signatures = || signed.signatures.load(std::sync::atomic::Ordering::Relaxed);
    let signed_before = signatures();
    drop(a);
    reaches(&proxy, "pool_reuses_total", 1.0).await;
    assert_eq!(metric(&proxy, iam_auths).await, before + 1.0);
    assert_eq!(signatures(), signed_before, "signed on the reuse path");

    // B takes the reused connection a while after its AUTH: a session that
    // counted its re-auth from its own start (0.8 s late) would re-auth
    // after the server's 3 s cut.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (mut b, _others) = client_on(&proxy, id, 3).await;
    assert_eq!(
        text(&b.cmd(&[b"ACL", b"WHOAMI"]).await),
        format!("${IAM_USER}")
    );
    let reauths = r#"reauthentications_total{outcome="success"}"#;
    let reauths_before = metric(&proxy, reauths).await;
    // Past the server's 3 s cut of the reuse AUTH: only a re-auth on its
    // schedule keeps B.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(text(&b.cmd(&[b"PING"]).await), "+PONG");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        client_id(&mut b).await,
        id,
        "B moved off the reused connection"
    );
    assert_eq!(emulator.stat("sessions_expired_total"), 0);
    assert!(metric(&proxy, reauths).await > reauths_before);
    assert_eq!(
        metric(&proxy, r#"pool_discards_total{reason="reuse_failed"}"#).await,
        0.0
    );
}

/// A reuse whose AUTH the server refuses (the password changed while the
/// client was connected) closes the connection, counts the failed reuse
/// and the failed AUTH, and nothing of it reaches a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_whose_auth_is_refused_is_discarded_and_counted() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = pooled(&redis, 2, None).await;
    reaches(&proxy, "pool_connections", 2.0).await;
    let mut admin = direct(&redis).await;
    let mut a = Resp::connect(proxy.addr).await;
    let id = client_id(&mut a).await;
    // The proxy's password no longer works for new AUTHs.
    assert_eq!(
        text(
            &admin
                .cmd(&[b"ACL", b"SETUSER", b"app", b"resetpass", b">rotated"])
                .await
        ),
        "+OK"
    );
    assert_eq!(text(&a.cmd(&[b"PING"]).await), "+PONG");
    drop(a);
    let failed = r#"pool_discards_total{reason="reuse_failed"}"#;
    reaches(&proxy, failed, 1.0).await;
    assert!(
        metric(
            &proxy,
            r#"auth_attempts_total{method="password",outcome="failure"}"#
        )
        .await
            >= 1.0
    );
    assert_eq!(metric(&proxy, "pool_reuses_total").await, 0.0);
    gone(&mut admin, id).await;
}
