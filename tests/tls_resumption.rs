//! TLS session resumption upstream, as an operator sees it in
//! `upstream_tls_handshakes_total{kind}`: the proxy's first connection to a
//! server is a full handshake, later ones resume its session from a ticket;
//! a different server behind the same name never resumes it, and its
//! certificate is still checked. Client → proxy (in process) → real
//! redis-server over TLS.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use common::{http_get, text, Proxy, RedisOptions, RedisServer, Resp};
use elasticache_auth_proxy::metrics::PREFIX;
use tokio::net::TcpListener;

/// One series (named without the prefix) now; it must exist, since every
/// series read here is pre-initialised.
async fn series(proxy: &Proxy, name: &str) -> f64 {
    let (status, body) = http_get(proxy.admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let want = format!("{PREFIX}_{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&want))
        .unwrap_or_else(|| panic!("no {want} in\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// `(full, resumed)` upstream TLS handshakes so far.
async fn counts(proxy: &Proxy) -> (f64, f64) {
    (
        series(proxy, r#"upstream_tls_handshakes_total{kind="full"}"#).await,
        series(proxy, r#"upstream_tls_handshakes_total{kind="resumed"}"#).await,
    )
}

/// A client session through the proxy that opens its upstream connection
/// (the proxy connects on the first command), reads a reply and writes a
/// key: what a user would notice if a resumed connection were broken.
async fn session(proxy: SocketAddr, key: &str) -> Resp {
    let mut c = Resp::connect(proxy).await;
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
    assert_eq!(text(&c.cmd(&[b"SET", key.as_bytes(), b"v"]).await), "+OK");
    assert_eq!(text(&c.cmd(&[b"GET", key.as_bytes()]).await), "$v");
    c
}

#[tokio::test]
async fn the_first_connection_is_a_full_handshake_and_later_ones_resume() {
    let redis = RedisServer::start(RedisOptions::default());
    // The pool off: the first client's connection is the first handshake.
    let proxy = Proxy::start_with(Proxy::no_pool(Proxy::args(&redis)), "app-secret-pw").await;
    assert_eq!(counts(&proxy).await, (0.0, 0.0), "pre-initialised at 0");

    // The first session's AUTH reply brings the server's session tickets
    // with it, so they are stored before the next connection starts.
    let first = session(proxy.addr, "k1").await;
    assert_eq!(counts(&proxy).await, (1.0, 0.0));
    let second = session(proxy.addr, "k2").await;
    assert_eq!(counts(&proxy).await, (1.0, 1.0));
    drop((first, second));
    // Each resumed handshake brings fresh tickets: resumption keeps going
    // after the first session's tickets are used up.
    for i in 0..5 {
        session(proxy.addr, &format!("later{i}")).await;
    }
    assert_eq!(counts(&proxy).await, (1.0, 6.0));
}

/// A TCP relay whose upstream can be switched: connections accepted after
/// [`Switch::to`] go to the new address. It stands for a failover or a DNS
/// change: another server answering at the same name. It forwards
/// connections in groups of `together`: none reaches the server before the
/// whole group has connected, so a burst of handshakes really is one.
struct Switch {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Switch {
    async fn start(target: SocketAddr, together: usize) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let group = Arc::new(tokio::sync::Barrier::new(together));
        let task = tokio::spawn({
            let target = target.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let to = *target.lock().unwrap();
                    let group = group.clone();
                    tokio::spawn(async move {
                        group.wait().await;
                        if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        });
        Switch { addr, target, task }
    }

    fn to(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxy's settings for reaching `redis` as `localhost` through
/// `switch`, the warm pool off: each client's connection is a handshake of
/// its own, and the tests count them.
fn through(switch: &Switch, redis: &RedisServer) -> elasticache_auth_proxy::config::Args {
    elasticache_auth_proxy::config::Args {
        upstream: Some(format!("localhost:{}", switch.addr.port()).parse().unwrap()),
        ..Proxy::no_pool(Proxy::args(redis))
    }
}

#[tokio::test]
async fn another_server_behind_the_same_name_never_resumes_and_is_still_verified() {
    // Two servers with certificates from different CAs, both for
    // `localhost`; the proxy trusts both CAs, and reaches whichever one the
    // relay points at as `localhost`.
    let (a, b) = (
        RedisServer::start(RedisOptions::default()),
        RedisServer::start(RedisOptions::default()),
    );
    let untrusted = RedisServer::start(RedisOptions::default());
    let switch = Switch::start(a.tls_addr(), 1).await;
    let bundle = tempfile::NamedTempFile::new().unwrap();
    let pem = |s: &RedisServer| std::fs::read_to_string(&s.certs.ca).unwrap();
    std::fs::write(bundle.path(), pem(&a) + &pem(&b)).unwrap();
    let args = elasticache_auth_proxy::config::Args {
        tls_ca_file: Some(bundle.path().to_path_buf()),
        ..through(&switch, &a)
    };
    let proxy = Proxy::start_with(args, "app-secret-pw").await;

    // A's session is cached for `localhost`, with fresh tickets.
    session(proxy.addr, "on-a").await;
    session(proxy.addr, "on-a").await;
    assert_eq!(counts(&proxy).await, (1.0, 1.0));

    // B cannot resume A's session: a full handshake, B's certificate
    // checked, and the client really is on B (A's key is not there).
    switch.to(b.tls_addr());
    let mut on_b = session(proxy.addr, "on-b").await;
    assert_eq!(counts(&proxy).await, (2.0, 1.0));
    assert_eq!(text(&on_b.cmd(&[b"EXISTS", b"on-a"]).await), ":0");

    // A server whose certificate the proxy does not trust is refused, even
    // with sessions for `localhost` in the cache: no handshake completes.
    switch.to(untrusted.tls_addr());
    let mut refused = Resp::connect(proxy.addr).await;
    let reply = text(&refused.cmd(&[b"PING"]).await);
    assert!(
        reply.contains("TLS handshake with the upstream server failed"),
        "{reply}"
    );
    assert_eq!(
        series(&proxy, r#"upstream_errors_total{kind="tls_handshake"}"#).await,
        1.0
    );
    assert_eq!(counts(&proxy).await, (2.0, 1.0));
}

#[tokio::test]
async fn a_burst_of_new_connections_resumes_once_an_earlier_burst_left_tickets() {
    const BURST: usize = 24;
    let redis = RedisServer::start(RedisOptions::default());
    let switch = Switch::start(redis.tls_addr(), BURST).await;
    let proxy = Proxy::start_with(through(&switch, &redis), "app-secret-pw").await;
    async fn burst(proxy: &Proxy) {
        let mut sessions = tokio::task::JoinSet::new();
        for i in 0..BURST {
            let addr = proxy.addr;
            sessions.spawn(async move { session(addr, &format!("k{i}")).await });
        }
        sessions.join_all().await;
    }
    // Nothing to resume yet: every handshake of the first burst is full,
    // and each leaves the server's tickets (OpenSSL sends two).
    burst(&proxy).await;
    assert_eq!(counts(&proxy).await, (BURST as f64, 0.0));
    // So the next burst, as large, resumes every connection. rustls's
    // default cache keeps 8 tickets a server, and resumed at most 8.
    burst(&proxy).await;
    assert_eq!(counts(&proxy).await, (BURST as f64, BURST as f64));
}
