//! The warm pool (issue 10): with `--pool-size`, a new client takes an
//! upstream connection that is already connected, TLS-established and
//! authenticated. Real TLS redis-server (and the IAM emulator), the real
//! proxy, a relay adding latency where round trips must show.

mod common;

use std::time::{Duration, Instant};

use common::{
    backend_options, text, Emulator, EmulatorOptions, Fault, FaultRelay, Proxy, RedisOptions,
    RedisServer, Resp, IAM_USER,
};

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

/// IAM sessions taken from the pool re-authenticate on the pooled AUTH's
/// schedule: with a 3 s session age none is cut, and pooled connections
/// too old to re-authenticate in time are retired, not handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_iam_sessions_reauthenticate_in_time_and_old_ones_are_retired() {
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
    args.reauth_after = Some("1s".parse().unwrap());
    let creds =
        aws_credential_types::Credentials::new("AKIDTEST", "test-secret-key", None, None, "t");
    let proxy = Proxy::start_with_credentials(args, "unused", creds).await;
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
