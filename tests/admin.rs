//! The admin HTTP server over real TCP: probes follow `Health`, `/metrics`
//! renders the registry, `/quitquitquit` notifies, bad requests get 4xx and
//! never take the server down, and shutdown stops it promptly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use elasticache_auth_proxy::admin::{Admin, Health};
use elasticache_auth_proxy::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

/// Deadline for anything that should happen within milliseconds.
const DEADLINE: Duration = Duration::from_secs(5);

/// An admin server running in-process on a free port; stopped on drop.
struct Harness {
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    quit: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Harness {
    async fn start(max_connections: usize) -> Harness {
        let admin = Admin::bind("127.0.0.1:0".parse().expect("valid address"))
            .await
            .expect("bind admin");
        let addr = admin.local_addr();
        let health = Arc::new(Health::new(max_connections));
        let metrics = Arc::new(Metrics::new());
        let quit = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let task =
            tokio::spawn(
                admin.run(health.clone(), metrics.clone(), quit.clone(), async move {
                    // Fires on send or when the harness drops the sender.
                    let _ = stopped.await;
                }),
            );
        Harness {
            addr,
            health,
            metrics,
            quit,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `method path` with `Connection: close`.
    async fn request(&self, method: &str, path: &str) -> Reply {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        Reply::parse(&exchange(self.addr, req.as_bytes()).await)
    }

    async fn get(&self, path: &str) -> Reply {
        self.request("GET", path).await
    }

    /// Stops the server and waits for `run` to return.
    async fn shutdown(mut self) {
        let _ = self.stop.take().expect("not yet stopped").send(());
        let task = self.task.take().expect("not yet stopped");
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("run returned in time after shutdown")
            .expect("run did not panic");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Sends `bytes` on a fresh connection and reads until the server closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write request");
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("server closed the connection in time")
        .expect("read response");
    buf
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn parse(raw: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of head in {text:?}"));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .map(|l| {
                let (k, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header {l:?}"));
                (k.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        Reply {
            status,
            headers,
            body: body.to_string(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Status and body, for compact asserts.
    fn pair(&self) -> (u16, &str) {
        (self.status, self.body.as_str())
    }
}

#[tokio::test]
async fn startup_and_readiness_wait_for_started() {
    let admin = Harness::start(0).await;
    assert_eq!(admin.get("/startup").await.pair(), (503, "starting"));
    assert_eq!(admin.get("/readiness").await.pair(), (503, "starting"));
    assert_eq!(admin.get("/liveness").await.pair(), (200, "ok"));
    admin.health.set_started();
    // The identity alone is not enough: an upstream AUTH must have worked.
    assert_eq!(admin.get("/startup").await.pair(), (503, "starting"));
    admin.health.record_upstream(Err("connect"));
    assert_eq!(
        admin.get("/readiness").await.pair(),
        (503, "upstream failing: connect")
    );
    admin.health.record_upstream(Ok(()));
    assert_eq!(admin.get("/startup").await.pair(), (200, "ok"));
    assert_eq!(admin.get("/readiness").await.pair(), (200, "ok"));
    let reply = admin.get("/readiness").await;
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    admin.shutdown().await;
}

#[tokio::test]
async fn readiness_is_503_at_max_connections() {
    let admin = Harness::start(2).await;
    admin.health.set_started();
    admin.health.record_upstream(Ok(()));
    admin.health.connection_opened();
    assert_eq!(admin.get("/readiness").await.pair(), (200, "ok"));
    admin.health.connection_opened();
    assert_eq!(
        admin.get("/readiness").await.pair(),
        (503, "at max connections")
    );
    // Full is not dead, nor un-started.
    assert_eq!(admin.get("/liveness").await.pair(), (200, "ok"));
    assert_eq!(admin.get("/startup").await.pair(), (200, "ok"));
    admin.health.connection_closed();
    assert_eq!(admin.get("/readiness").await.pair(), (200, "ok"));
    admin.shutdown().await;
}

#[tokio::test]
async fn draining_is_not_ready_but_live() {
    let admin = Harness::start(0).await;
    admin.health.set_started();
    admin.health.record_upstream(Ok(()));
    admin.health.set_draining();
    assert_eq!(admin.get("/readiness").await.pair(), (503, "draining"));
    assert_eq!(admin.get("/liveness").await.pair(), (200, "ok"));
    assert_eq!(admin.get("/startup").await.pair(), (200, "ok"));
    admin.shutdown().await;
}

#[tokio::test]
async fn metrics_renders_the_registry() {
    let admin = Harness::start(0).await;
    admin.metrics.client_connections.inc();
    let reply = admin.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        reply
            .body
            .lines()
            .any(|l| l == "elasticache_auth_proxy_client_connections_total 1"),
        "{}",
        reply.body
    );
    admin.shutdown().await;
}

#[tokio::test]
async fn head_works_wherever_get_does() {
    let admin = Harness::start(0).await;
    admin.health.set_started();
    admin.health.record_upstream(Ok(()));
    let get = admin.get("/metrics").await;
    let head = admin.request("HEAD", "/metrics").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "", "HEAD has no body");
    assert_eq!(head.header("content-type"), get.header("content-type"));
    assert_eq!(admin.request("HEAD", "/readiness").await.pair(), (200, ""));
    assert_eq!(admin.request("HEAD", "/liveness").await.pair(), (200, ""));
    assert_eq!(admin.request("HEAD", "/startup").await.pair(), (200, ""));
    assert_eq!(admin.request("HEAD", "/nope").await.status, 404);
    admin.shutdown().await;
}

#[tokio::test]
async fn quitquitquit_from_loopback_notifies() {
    let admin = Harness::start(0).await;
    let reply = admin.request("POST", "/quitquitquit").await;
    assert_eq!(reply.pair(), (200, "shutting down"));
    // notify_one stores the permit, so awaiting after the request still fires.
    tokio::time::timeout(DEADLINE, admin.quit.notified())
        .await
        .expect("quit was notified");
    // The admin server itself keeps serving until its shutdown completes.
    assert_eq!(admin.get("/liveness").await.pair(), (200, "ok"));
    admin.shutdown().await;
}

#[tokio::test]
async fn quitquitquit_wants_post() {
    let admin = Harness::start(0).await;
    let reply = admin.get("/quitquitquit").await;
    assert_eq!(reply.pair(), (405, "method not allowed"));
    assert_eq!(reply.header("allow"), Some("POST"));
    // And a refused GET does not notify.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), admin.quit.notified())
            .await
            .is_err(),
        "GET /quitquitquit must not notify"
    );
    admin.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let admin = Harness::start(0).await;
    assert_eq!(admin.get("/nope").await.pair(), (404, "not found"));
    assert_eq!(admin.get("/").await.pair(), (404, "not found"));
    // The query string does not change the route.
    assert_eq!(admin.get("/liveness?verbose=1").await.pair(), (200, "ok"));
    for path in ["/metrics", "/startup", "/readiness", "/liveness"] {
        let reply = admin.request("POST", path).await;
        assert_eq!(reply.pair(), (405, "method not allowed"), "POST {path}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "POST {path}");
    }
    admin.shutdown().await;
}

#[tokio::test]
async fn garbage_does_not_take_the_server_down() {
    let admin = Harness::start(0).await;
    let garbage: &[&[u8]] = &[
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /liveness HTTP/9.9\r\n\r\n",
        b"GET /liveness HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /liveness\r\n\r\n",
        b"GET /li\x00veness HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /quitquitquit HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n",
    ];
    for bytes in garbage {
        let raw = exchange(admin.addr, bytes).await;
        let text = String::from_utf8_lossy(&raw);
        // Either a 4xx/5xx answer or a plain close; never a success.
        assert!(
            raw.is_empty() || text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 5"),
            "{bytes:?} got {text:?}"
        );
        assert_eq!(admin.get("/liveness").await.pair(), (200, "ok"));
    }
    // A peer that connects and leaves without a word is fine too.
    drop(TcpStream::connect(admin.addr).await.expect("connect"));
    assert_eq!(admin.get("/liveness").await.pair(), (200, "ok"));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), admin.quit.notified())
            .await
            .is_err(),
        "a malformed quit request must not notify"
    );
    admin.shutdown().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests() {
    let admin = Harness::start(0).await;
    let raw = exchange(
        admin.addr,
        b"GET /liveness HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&raw);
    let (first, second) = text
        .split_once("\r\n\r\nok")
        .unwrap_or_else(|| panic!("{text:?}"));
    assert!(first.starts_with("HTTP/1.1 200"), "{text:?}");
    assert_eq!(Reply::parse(second.as_bytes()).pair(), (404, "not found"));
    admin.shutdown().await;
}

#[tokio::test]
async fn shutdown_returns_with_an_idle_connection_open() {
    let admin = Harness::start(0).await;
    // An idle keep-alive connection after one request, and one that never
    // sent anything: neither may hold shutdown up.
    let mut idle = TcpStream::connect(admin.addr).await.expect("connect");
    idle.write_all(b"GET /liveness HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(DEADLINE, idle.read(&mut buf))
        .await
        .expect("reply in time")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let silent = TcpStream::connect(admin.addr).await.expect("connect");
    let addr = admin.addr;
    admin.shutdown().await;
    // Both were closed and the listener is gone.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "idle connection closed at shutdown");
    drop(silent);
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}
