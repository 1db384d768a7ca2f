//! The relay against a real TLS redis-server: identity, pipelines, the
//! commands the proxy answers or rewrites.

mod common;

use common::{text, Proxy, RedisOptions, RedisServer, Resp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_is_the_password_user_and_default_stays_off() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    // The real redis-cli, as an app would use it.
    let out = common::redis_cli(&["-p", &proxy.addr.port().to_string(), "ACL", "WHOAMI"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_of_a_thousand_commands_keeps_order_and_values() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut c = Resp::connect(proxy.addr).await;
    let mut batch = Vec::new();
    for i in 0..1000 {
        let (k, v) = (format!("k{i}"), format!("value-{i}-\r\n\0binary"));
        batch.extend(common::encode_command(&[
            b"SET",
            k.as_bytes(),
            v.as_bytes(),
        ]));
        batch.extend(common::encode_command(&[b"GET", k.as_bytes()]));
    }
    c.send_raw(&batch).await;
    for i in 0..1000 {
        assert_eq!(text(&c.read().await), "+OK", "SET #{i}");
        assert_eq!(
            text(&c.read().await),
            format!("$value-{i}-\r\n\0binary"),
            "GET #{i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_is_answered_locally_in_its_turn() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut c = Resp::connect(proxy.addr).await;
    let mut batch = common::encode_command(&[b"SET", b"a", b"1"]);
    batch.extend(common::encode_command(&[b"AUTH", b"legacy-password"]));
    batch.extend(common::encode_command(&[b"AUTH", b"someone", b"else"]));
    batch.extend(common::encode_command(&[b"GET", b"a"]));
    batch.extend(common::encode_command(&[b"AUTH"]));
    c.send_raw(&batch).await;
    assert_eq!(text(&c.read().await), "+OK");
    assert_eq!(text(&c.read().await), "+OK");
    assert_eq!(text(&c.read().await), "+OK");
    assert_eq!(text(&c.read().await), "$1");
    assert_eq!(
        text(&c.read().await),
        "-ERR wrong number of arguments for 'auth' command"
    );
    // Still the proxy's identity.
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_the_proxy_acts_on_are_read_as_redis_reads_them() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut c = Resp::connect(proxy.addr).await;
    // Redis skips the two bytes after each argument unread, so these are a
    // HELLO 2 and an AUTH to it; the proxy must see them so too (it used to
    // forward an empty `*0` for the HELLO, leaving its reply owed forever).
    c.send_raw(b"*2\r\n$5\r\nHELLOxx$1\r\n2xx*2\r\n$4\r\nAUTHxx$2\r\npwxx*1\r\n$4\r\nPING\r\n")
        .await;
    assert!(text(&c.read().await).contains("proto"), "HELLO's reply");
    assert_eq!(text(&c.read().await), "+OK", "AUTH, answered locally");
    assert_eq!(text(&c.read().await), "+PONG");
    // A name with a NUL byte can run as the command before the NUL on
    // Redis (its lookup compares C strings): refused, never forwarded.
    let reply = text(&c.cmd(&[b"AUTH\0x", b"default", b"pw"]).await);
    assert!(
        reply.starts_with("-ERR elasticache-auth-proxy: refused a command name with a NUL"),
        "{reply}"
    );
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
}

/// A session's read buffers grow for a large value and are let go once it
/// has passed (src/session/mod.rs, `Sizing`): the values come back whole and
/// exact, the session keeps working after it idles, and a second large value
/// and a pipeline of them grow the buffers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_then_idle_then_small_commands_keep_working() {
    use redis_protocol::resp3::types::OwnedFrame;
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut c = Resp::connect(proxy.addr).await;
    // 1 MiB that is not one repeated byte, with CRLFs inside.
    let big: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let bulk = |frame: OwnedFrame| match frame {
        OwnedFrame::BlobString { data, .. } => data,
        other => panic!("expected a bulk string, got {}", text(&other)),
    };
    assert_eq!(text(&c.cmd(&[b"SET", b"big", &big]).await), "+OK");
    assert!(bulk(c.cmd(&[b"GET", b"big"]).await) == big, "GET big");
    // Idle at the read point, with the grown buffers drained.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
    assert_eq!(text(&c.cmd(&[b"SET", b"small", b"v"]).await), "+OK");
    assert_eq!(text(&c.cmd(&[b"GET", b"small"]).await), "$v");
    // Three large replies pipelined with small ones between them.
    let mut batch = Vec::new();
    for _ in 0..3 {
        batch.extend(common::encode_command(&[b"GET", b"big"]));
        batch.extend(common::encode_command(&[b"GET", b"small"]));
    }
    c.send_raw(&batch).await;
    for i in 0..3 {
        assert!(bulk(c.read().await) == big, "GET big #{i}");
        assert_eq!(text(&c.read().await), "$v", "GET small #{i}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(text(&c.cmd(&[b"DBSIZE"]).await), ":2");
}

/// `--idle-timeout` closes a session that has sent nothing for that long
/// and is owed nothing, as redis-server's `timeout` does: each command
/// pushes the deadline back, and a client blocked on the reply it is owed,
/// or subscribed, is not idle. (The relay keeps every deadline on one
/// timer; this is the one a client sees.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_only_quiet_sessions_that_are_owed_nothing() {
    use std::time::{Duration, Instant};
    let redis = RedisServer::start(RedisOptions::default());
    let args = elasticache_auth_proxy::config::Args {
        idle_timeout: Some("1s".parse().unwrap()),
        ..Proxy::args(&redis)
    };
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let mut idle = Resp::connect(proxy.addr).await;
    let mut busy = Resp::connect(proxy.addr).await;
    let mut blocked = Resp::connect(proxy.addr).await;
    let mut subscriber = Resp::connect(proxy.addr).await;
    assert_eq!(text(&idle.cmd(&[b"PING"]).await), "+PONG");
    blocked.send(&[b"BLPOP", b"idle:list", b"0"]).await;
    assert_eq!(
        text(&subscriber.cmd(&[b"SUBSCRIBE", b"idle:ch"]).await),
        "[subscribe,idle:ch,1]"
    );
    let start = Instant::now();
    // A command every 300 ms for 2.4 s: never idle for a second.
    while start.elapsed() < Duration::from_millis(2400) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(text(&busy.cmd(&[b"PING"]).await), "+PONG");
    }
    assert!(idle.read_closed().await, "the idle session is still open");
    // The blocked and the subscribed sessions were kept: both still get
    // what is sent to them.
    assert_eq!(text(&busy.cmd(&[b"LPUSH", b"idle:list", b"v"]).await), ":1");
    assert_eq!(text(&blocked.read().await), "[idle:list,v]");
    assert_eq!(text(&busy.cmd(&[b"PUBLISH", b"idle:ch", b"m"]).await), ":1");
    assert_eq!(text(&subscriber.read().await), "[message,idle:ch,m]");
    // Once the busy client stops, it is closed in its turn.
    let quiet = Instant::now();
    assert!(busy.read_closed().await, "the busy session never closed");
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(3),
        "closed {after:?} after its last command"
    );
}
