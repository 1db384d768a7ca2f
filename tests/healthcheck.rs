//! `elasticache-auth-proxy healthcheck`, the real binary, against a real
//! proxy's admin port: exit 0 and a 200 line once the proxy has started,
//! exit 1 saying why while it cannot start or when nothing listens, and a
//! usage error for a URL it cannot fetch.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Proxy, RedisOptions, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_elasticache-auth-proxy");
const DEADLINE: Duration = Duration::from_secs(10);
const EX_USAGE: i32 = 64;

/// Runs `healthcheck` with `args` off the runtime's threads (it blocks).
async fn healthcheck(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().arg("healthcheck").args(&args);
        common::run_bounded(&mut cmd, &format!("healthcheck {args:?}"), DEADLINE)
    })
    .await
    .expect("healthcheck task")
}

fn url(admin: SocketAddr, path: &str) -> Vec<String> {
    vec!["--url".into(), format!("http://{admin}{path}")]
}

/// What the one printed line says, from whichever stream it went to.
fn line(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    text.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_zero_once_the_proxy_has_started() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    // As a container runtime does: retry until healthy, within a deadline.
    // The first request to /startup starts the probe that makes it 200.
    let deadline = Instant::now() + DEADLINE;
    let out = loop {
        let out = healthcheck(url(proxy.admin, "/startup")).await;
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(out.status.code(), Some(0), "{}", line(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.trim_end(),
        format!("healthcheck: http://{}/startup: 200 ok", proxy.admin)
    );
    // Every endpoint the examples probe answers the same way.
    for path in ["/readiness", "/liveness"] {
        let out = healthcheck(url(proxy.admin, path)).await;
        assert_eq!(out.status.code(), Some(0), "{path}: {}", line(&out));
    }
    let out = healthcheck(url(proxy.admin, "/no-such-endpoint")).await;
    assert_eq!(out.status.code(), Some(1), "{}", line(&out));
    assert!(line(&out).ends_with(": 404 not found"), "{}", line(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_one_with_the_reason_while_the_upstream_is_down() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    // Nothing listens there: the proxy never authenticates.
    args.upstream = Some(
        format!("localhost:{}", common::free_port())
            .parse()
            .unwrap(),
    );
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let out = healthcheck(url(proxy.admin, "/startup")).await;
    assert_eq!(out.status.code(), Some(1), "{}", line(&out));
    assert!(out.stdout.is_empty(), "failures go to stderr");
    let said = line(&out);
    assert!(
        said.starts_with(&format!(
            "healthcheck: http://{}/startup: 503 ",
            proxy.admin
        )),
        "{said}"
    );
    assert!(
        said.contains("starting") || said.contains("upstream failing"),
        "{said}"
    );
    // The process serves, so liveness still passes.
    let out = healthcheck(url(proxy.admin, "/liveness")).await;
    assert_eq!(out.status.code(), Some(0), "{}", line(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_one_when_nothing_listens() {
    let port = common::free_port();
    let started = Instant::now();
    let out = healthcheck(vec![
        "--url".into(),
        format!("http://127.0.0.1:{port}/startup"),
        "--timeout".into(),
        "1s".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", line(&out));
    assert!(line(&out).contains("cannot connect"), "{}", line(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_one_at_the_timeout_when_the_peer_never_answers() {
    // Accepts (the kernel's backlog does) and never writes a byte.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("local_addr");
    let started = Instant::now();
    let mut args = url(addr, "/startup");
    args.extend(["--timeout".into(), "300ms".into()]);
    let out = healthcheck(args).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", line(&out));
    assert!(line(&out).contains("timed out"), "{}", line(&out));
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_url_is_a_usage_error() {
    let out = healthcheck(vec![
        "--url".into(),
        "https://127.0.0.1:9090/startup".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(EX_USAGE));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only http://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
