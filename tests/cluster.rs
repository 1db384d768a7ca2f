//! Cluster mode (issue 8): cluster-aware clients reach every node of a real
//! TLS Redis Cluster through the proxy's local listeners.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{text, Proxy, RedisCluster, Resp};
use elasticache_auth_proxy::config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy in cluster mode with the first node as its seed, once its
/// `/startup` says the topology is read.
async fn cluster_proxy(cluster: &RedisCluster) -> Proxy {
    cluster_proxy_with(cluster, |_| {}).await
}

async fn cluster_proxy_with(cluster: &RedisCluster, more: impl FnOnce(&mut config::Args)) -> Proxy {
    let mut args = Proxy::args(&cluster.nodes[0]);
    args.cluster = Some(true);
    more(&mut args);
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = http_get(proxy.admin, "/startup").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/startup: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy
}

async fn http_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(admin).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    (status, body)
}

/// Every port a rendered reply names: after `127.0.0.1:` or `127.0.0.1,`
/// (SLOTS, NODES) and after `port:` / `port,` (SHARDS, RESP3 and RESP2).
fn ports_named(s: &str) -> HashSet<u16> {
    let mut ports = HashSet::new();
    for marker in ["127.0.0.1:", "127.0.0.1,", "port:", "port,"] {
        for (i, _) in s.match_indices(marker) {
            let digits: String = s[i + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(p) = digits.parse() {
                ports.insert(p);
            }
        }
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_replies_name_only_local_listeners() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = cluster_proxy(&cluster).await;
    let upstream: HashSet<u16> = cluster.nodes.iter().map(|n| n.tls_port).collect();
    let mut c = Resp::connect(proxy.addr).await;
    for proto in [&b"2"[..], b"3"] {
        let hello = text(&c.cmd(&[b"HELLO", proto]).await);
        assert!(hello.contains("cluster"), "{hello}");
        for sub in [&b"SLOTS"[..], b"SHARDS", b"NODES"] {
            let reply = text(&c.cmd(&[b"CLUSTER", sub]).await);
            let named = ports_named(&reply);
            assert!(!named.is_empty(), "CLUSTER {sub:?}: {reply}");
            assert!(
                named.is_disjoint(&upstream),
                "CLUSTER {sub:?} names an upstream port: {reply}"
            );
            assert!(!reply.contains("tls-port"), "{reply}");
        }
    }
    // Six nodes, six listeners, each a different port, none the main one.
    let nodes = text(&c.cmd(&[b"CLUSTER", b"NODES"]).await);
    let listeners = ports_named(&nodes);
    assert_eq!(listeners.len(), 6, "{nodes}");
    assert!(listeners.is_disjoint(&upstream), "{nodes}");
    assert!(!listeners.contains(&proxy.addr.port()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_cluster_mode_sets_and_gets_across_all_slots() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = cluster_proxy(&cluster).await;
    let port = proxy.addr.port().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Keys in every primary's slots: redis-cli follows MOVED to the proxy's
    // listeners (it would fail on the upstream TLS ports).
    for i in 0..60 {
        let key = format!("key:{i}");
        assert_eq!(cli(&["SET", &key, &format!("v{i}")]), "OK", "{key}");
    }
    for i in 0..60 {
        let key = format!("key:{i}");
        assert_eq!(cli(&["GET", &key]), format!("v{i}"), "{key}");
    }
    // Direct, the keys really are spread over the three primaries.
    let mut sizes = Vec::new();
    for port in cluster.primaries() {
        let n: u64 = cluster.run(port, &["DBSIZE"]).trim().parse().unwrap();
        sizes.push(n);
    }
    assert_eq!(sizes.iter().sum::<u64>(), 60, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_error_names_a_local_listener_that_serves_the_key() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = cluster_proxy(&cluster).await;
    let mut c = Resp::connect(proxy.addr).await;
    // Some key among these lives on another node than the seed.
    let mut moved = None;
    for i in 0..50 {
        let key = format!("k{i}");
        let reply = text(&c.cmd(&[b"SET", key.as_bytes(), b"x"]).await);
        if let Some(rest) = reply.strip_prefix("-MOVED ") {
            moved = Some((key, rest.split(' ').nth(1).unwrap().to_string()));
            break;
        }
    }
    let (key, addr) = moved.expect("some key is on another node");
    let addr: SocketAddr = addr.parse().expect("MOVED names host:port");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert!(
        cluster.nodes.iter().all(|n| n.tls_port != addr.port()),
        "{addr} is an upstream port"
    );
    let mut there = Resp::connect(addr).await;
    assert_eq!(
        text(&there.cmd(&[b"SET", key.as_bytes(), b"y"]).await),
        "+OK"
    );
    assert_eq!(text(&there.cmd(&[b"GET", key.as_bytes()]).await), "$y");
    assert_eq!(text(&there.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    // In a pipeline, and in place of +QUEUED inside MULTI, too.
    let mut pipeline = common::encode_command(&[b"PING"]);
    pipeline.extend(common::encode_command(&[b"GET", key.as_bytes()]));
    pipeline.extend(common::encode_command(&[b"MULTI"]));
    pipeline.extend(common::encode_command(&[b"GET", key.as_bytes()]));
    pipeline.extend(common::encode_command(&[b"EXEC"]));
    c.send_raw(&pipeline).await;
    assert_eq!(text(&c.read().await), "+PONG");
    let m = text(&c.read().await);
    let slot = m.split(' ').nth(1).unwrap_or_default();
    assert_eq!(m, format!("-MOVED {slot} {addr}"));
    assert_eq!(text(&c.read().await), "+OK", "MULTI");
    let queued = text(&c.read().await);
    assert!(
        queued.starts_with("-MOVED ") && queued.ends_with(&addr.to_string()),
        "{queued}"
    );
    let exec = text(&c.read().await);
    assert!(exec.starts_with("-EXECABORT"), "{exec}");
    let scrape = http_get(proxy.admin, "/metrics").await.1;
    assert!(
        scrape.contains("elasticache_auth_proxy_redirects_rewritten_total{kind=\"moved\"} 3"),
        "{scrape}"
    );
}

/// The value of one series in a scrape (name without the prefix); 0 if absent.
async fn series(proxy: &Proxy, name: &str) -> f64 {
    let scrape = http_get(proxy.admin, "/metrics").await.1;
    let want = format!("elasticache_auth_proxy_{name} ");
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Waits until `series` reaches `want`.
async fn series_becomes(proxy: &Proxy, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = series(proxy, name).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The proxy's listener for upstream node `port`, from CLUSTER NODES
/// through the proxy (each line's `myself` marks the node asked).
async fn listener_of(proxy: &Proxy, cluster: &RedisCluster, port: u16) -> SocketAddr {
    let id = cluster.run(port, &["CLUSTER", "MYID"]).trim().to_string();
    let mut c = Resp::connect(proxy.addr).await;
    let nodes = text(&c.cmd(&[b"CLUSTER", b"NODES"]).await);
    let line = nodes
        .lines()
        .find(|l| l.trim_start_matches('$').starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not in {nodes}"));
    line.split(' ')
        .nth(1)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_gets_a_listener_and_a_removed_one_stops_accepting() {
    let mut cluster = RedisCluster::start(3, 0);
    let proxy = cluster_proxy_with(&cluster, |a| {
        a.cluster_refresh = Some("1s".parse().unwrap());
    })
    .await;
    series_becomes(&proxy, r#"cluster_nodes{role="primary"}"#, 3.0).await;

    // Scale-out: the periodic refresh finds the new node.
    let added = cluster.add_node();
    series_becomes(&proxy, r#"cluster_nodes{role="primary"}"#, 4.0).await;
    let local = listener_of(&proxy, &cluster, added).await;
    let mut c = Resp::connect(local).await;
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    let id = cluster.run(added, &["CLUSTER", "MYID"]).trim().to_string();
    assert_eq!(text(&c.cmd(&[b"CLUSTER", b"MYID"]).await), format!("${id}"));
    drop(c);

    // Scale-in: once the cluster forgets it, its listener stops accepting.
    cluster.del_node(added);
    series_becomes(&proxy, r#"cluster_nodes{role="primary"}"#, 3.0).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(local).await.is_ok() {
        assert!(Instant::now() < deadline, "{local} still accepts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
