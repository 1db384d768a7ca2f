//! Cluster mode (issue 8): cluster-aware clients reach every node of a real
//! TLS Redis Cluster through the proxy's local listeners.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use common::{text, Announce, EmulatorOptions, Proxy, RedisCluster, Resp, IAM_USER};
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
    started(Proxy::start_with(args, "app-secret-pw").await).await
}

/// A proxy in IAM mode for a cluster announced through emulators
/// (`Announce::Iam`), seeded with the first node's emulator.
async fn iam_cluster_proxy(cluster: &RedisCluster, more: impl FnOnce(&mut config::Args)) -> Proxy {
    let mut args = Proxy::iam_args(&cluster.nodes[0], cluster.emulators[0].addr.port());
    args.cluster = Some(true);
    more(&mut args);
    let creds = Credentials::new("AKIDTEST", "test-secret-key", None, None, "test");
    started(Proxy::start_with_credentials(args, "unused", creds).await).await
}

/// `proxy`, once its `/startup` says the topology is read.
async fn started(proxy: Proxy) -> Proxy {
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
    topology_names_only_local_listeners(&cluster, &proxy, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_cluster_mode_sets_and_gets_across_all_slots() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = cluster_proxy(&cluster).await;
    redis_cli_sets_and_gets_across_all_slots(&cluster, &proxy);
}

/// Nodes that announce a hostname (`localhost` here, a name under the
/// cache's domain on ElastiCache): each is dialled and verified by that
/// name, and clients are told only local listeners, hostname fields too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_announced_by_hostname_are_reached_by_name_and_named_locally() {
    let cluster = RedisCluster::start_announcing(3, 1, Announce::Hostname);
    let direct = cluster.run(cluster.nodes[0].tls_port, &["CLUSTER", "SLOTS"]);
    assert!(
        direct.contains("localhost"),
        "the nodes announce a hostname: {direct}"
    );
    let proxy = cluster_proxy(&cluster).await;
    topology_names_only_local_listeners(&cluster, &proxy, 6).await;
    let mut c = Resp::connect(proxy.addr).await;
    for sub in [&b"SLOTS"[..], b"SHARDS", b"NODES"] {
        let reply = text(&c.cmd(&[b"CLUSTER", sub]).await);
        assert!(
            !reply.contains("localhost"),
            "CLUSTER {sub:?} names a node's hostname: {reply}"
        );
    }
    redis_cli_sets_and_gets_across_all_slots(&cluster, &proxy);
}

/// `CLUSTER SLOTS`, `SHARDS` and `NODES`, in RESP2 and RESP3, name only
/// the proxy's listeners: `nodes` of them, none the main one.
async fn topology_names_only_local_listeners(cluster: &RedisCluster, proxy: &Proxy, nodes: usize) {
    let upstream: HashSet<u16> = cluster
        .nodes
        .iter()
        .map(|n| n.tls_port)
        .chain(cluster.emulators.iter().map(|e| e.addr.port()))
        .collect();
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
    let all = text(&c.cmd(&[b"CLUSTER", b"NODES"]).await);
    let listeners = ports_named(&all);
    assert_eq!(listeners.len(), nodes, "{all}");
    assert!(listeners.is_disjoint(&upstream), "{all}");
    assert!(!listeners.contains(&proxy.addr.port()));
}

/// `redis-cli -c` through the proxy sets and gets keys in every primary's
/// slots: it follows MOVED to the proxy's listeners (it would fail on the
/// upstream TLS ports).
fn redis_cli_sets_and_gets_across_all_slots(cluster: &RedisCluster, proxy: &Proxy) {
    let port = proxy.addr.port().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for i in 0..60 {
        let key = format!("key:{i}");
        assert_eq!(cli(&["SET", &key, &format!("v{i}")]), "OK", "{key}");
    }
    for i in 0..60 {
        let key = format!("key:{i}");
        assert_eq!(cli(&["GET", &key]), format!("v{i}"), "{key}");
    }
    // Direct, the keys really are spread over the primaries.
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

/// What one load thread did: how many keys it wrote (all acknowledged) and
/// every error its client saw.
struct Load {
    written: u64,
    errors: Vec<String>,
}

/// A `redis` crate cluster client, seeded with the proxy's main listener,
/// writing `{tag}:<thread>:<n>` = `n` and reading each back, until `stop`.
/// It follows MOVED and ASK itself, through the listeners the proxy names.
fn cluster_load(
    seed: SocketAddr,
    tag: &str,
    thread: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Load> {
    let tag = tag.to_string();
    std::thread::spawn(move || {
        let client = redis::cluster::ClusterClient::new(vec![format!("redis://{seed}")])
            .expect("cluster client");
        let mut conn = client.get_connection().expect("cluster connection");
        let mut load = Load {
            written: 0,
            errors: Vec::new(),
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let key = format!("{{{tag}}}:{thread}:{}", load.written);
            let set: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&key)
                .arg(load.written)
                .query(&mut conn);
            if let Err(e) = set {
                load.errors.push(format!("SET {key}: {e}"));
                continue;
            }
            let got: redis::RedisResult<u64> = redis::cmd("GET").arg(&key).query(&mut conn);
            match got {
                Ok(v) if v == load.written => load.written += 1,
                other => load.errors.push(format!("GET {key}: {other:?}")),
            }
        }
        load
    })
}

/// The TLS port of the primary that serves `slot`, from `CLUSTER SLOTS`
/// as redis-cli prints it: each range's start and end, then the primary's
/// ip and port on the lines after.
fn owner_of(cluster: &RedisCluster, slot: &str) -> u16 {
    let slots = cluster.run(cluster.nodes[0].tls_port, &["CLUSTER", "SLOTS"]);
    let lines: Vec<&str> = slots.lines().map(str::trim).collect();
    let s: u64 = slot.parse().unwrap();
    lines
        .windows(4)
        .find_map(|w| {
            let (a, b) = (w[0].parse::<u64>().ok()?, w[1].parse::<u64>().ok()?);
            (a <= s && s <= b && w[2] == "127.0.0.1").then(|| w[3].parse::<u16>().ok())?
        })
        .expect("slot owner")
}

/// The slot of `key`.
fn slot_of(cluster: &RedisCluster, key: &str) -> String {
    cluster
        .run(cluster.nodes[0].tls_port, &["CLUSTER", "KEYSLOT", key])
        .trim()
        .to_string()
}

/// The id of the node on TLS port `port`.
fn node_id(cluster: &RedisCluster, port: u16) -> String {
    cluster.run(port, &["CLUSTER", "MYID"]).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_under_load_loses_nothing_and_shows_no_error() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = cluster_proxy(&cluster).await;
    let tag = "migrating";
    let slot = slot_of(&cluster, tag);
    let source = owner_of(&cluster, &slot);
    let target = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != source)
        .expect("another primary");
    let (source_id, target_id) = (node_id(&cluster, source), node_id(&cluster, target));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|t| cluster_load(proxy.addr, tag, t, stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Migrate the slot by hand, the way `redis-cli --cluster reshard` does,
    // but slowly: while it is half moved, new keys are answered with ASK.
    let ok = |port: u16, args: &[&str]| {
        let out = cluster.run(port, args);
        assert!(
            out.trim() == "OK" || out.trim() == "NOKEY",
            "{args:?}: {out}"
        );
    };
    ok(
        target,
        &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id],
    );
    ok(
        source,
        &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id],
    );
    let moving_until = Instant::now() + Duration::from_millis(1500);
    loop {
        let keys = cluster.run(source, &["CLUSTER", "GETKEYSINSLOT", &slot, "50"]);
        let keys: Vec<&str> = keys
            .lines()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() && Instant::now() >= moving_until {
            break;
        }
        if !keys.is_empty() {
            let port = target.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000"];
            args.extend(["AUTH2", "app", "app-secret-pw", "KEYS"]);
            args.extend(keys.iter().copied());
            ok(source, &args);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for port in cluster.primaries() {
        ok(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
    }
    // The load carries on against the new owner (clients still aiming at
    // the old one get MOVED).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let loads: Vec<Load> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let errors: Vec<&String> = loads.iter().flat_map(|l| &l.errors).collect();
    assert!(errors.is_empty(), "client errors: {errors:?}");
    let written: u64 = loads.iter().map(|l| l.written).sum();
    assert!(written > 100, "the load ran: {written} writes");
    // Nothing lost: every acknowledged write is on the new owner.
    let there: u64 = cluster
        .run(target, &["CLUSTER", "COUNTKEYSINSLOT", &slot])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(there, written, "keys in slot {slot} on the new owner");
    assert_eq!(
        cluster
            .run(source, &["CLUSTER", "COUNTKEYSINSLOT", &slot])
            .trim(),
        "0"
    );
    for (t, load) in loads.iter().enumerate() {
        let last = format!("{{{tag}}}:{t}:{}", load.written - 1);
        assert_eq!(
            cluster.run(target, &["GET", &last]).trim(),
            (load.written - 1).to_string()
        );
    }
    // Both redirects happened, and were rewritten to local listeners.
    let ask = series(&proxy, r#"redirects_rewritten_total{kind="ask"}"#).await;
    let moved = series(&proxy, r#"redirects_rewritten_total{kind="moved"}"#).await;
    eprintln!("slot {slot}: {written} writes, {ask} ASK and {moved} MOVED rewritten");
    assert!(ask > 0.0 && moved > 0.0, "ask {ask}, moved {moved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_load_loses_nothing_and_shows_no_error() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = cluster_proxy(&cluster).await;
    let tag = "failing-over";
    let slot = slot_of(&cluster, tag);
    let primary = owner_of(&cluster, &slot);
    let replica = replica_of(&cluster, primary);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|t| cluster_load(proxy.addr, tag, t, stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A manual failover: the primary pauses writes until its replica has
    // caught up, then the replica takes over and the old primary answers
    // MOVED.
    assert_eq!(cluster.run(replica, &["CLUSTER", "FAILOVER"]).trim(), "OK");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster.primaries().contains(&replica) {
        assert!(Instant::now() < deadline, "{replica} did not take over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = || -> u64 {
        cluster
            .run(replica, &["CLUSTER", "COUNTKEYSINSLOT", &slot])
            .trim()
            .parse()
            .unwrap()
    };
    let at_takeover = count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let loads: Vec<Load> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let errors: Vec<&String> = loads.iter().flat_map(|l| &l.errors).collect();
    assert!(errors.is_empty(), "client errors: {errors:?}");
    let written: u64 = loads.iter().map(|l| l.written).sum();
    // Nothing lost: the new primary holds every acknowledged write, and
    // writes went on after it took over.
    assert_eq!(count(), written, "keys in slot {slot} on the new primary");
    assert!(
        written > at_takeover + 100,
        "{written} writes, {at_takeover} at the takeover"
    );
    let moved = series(&proxy, r#"redirects_rewritten_total{kind="moved"}"#).await;
    eprintln!("failover: {written} writes ({at_takeover} before), {moved} MOVED rewritten");
    assert!(
        moved > 0.0,
        "the old primary's MOVED reached the clients rewritten"
    );
}

/// The TLS port of a replica of the primary on `primary`.
fn replica_of(cluster: &RedisCluster, primary: u16) -> u16 {
    let replicas = cluster.run(
        primary,
        &["CLUSTER", "REPLICAS", &node_id(cluster, primary)],
    );
    replicas
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.split(['@', ',']).next()?.rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("a replica in {replicas}"))
}

/// The slot of `key`, its primary's port, and the proxy's listeners for
/// that primary and for its replica.
async fn slot_listeners(
    cluster: &RedisCluster,
    proxy: &Proxy,
    key: &str,
) -> (String, u16, SocketAddr, SocketAddr) {
    let slot = slot_of(cluster, key);
    let primary = owner_of(cluster, &slot);
    let replica = replica_of(cluster, primary);
    let p = listener_of(proxy, cluster, primary).await;
    let r = listener_of(proxy, cluster, replica).await;
    (slot, primary, p, r)
}

/// Every node listener has a warm pool of its own: a new client of a node
/// takes a connection to that node already authenticated, and one whose
/// client left goes back after RESET + AUTH, which clears READONLY (with
/// the rest of its state) for the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listeners_pool_serves_its_clients_and_reuse_clears_readonly() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = cluster_proxy(&cluster).await;
    let (slot, _, p, r) = slot_listeners(&cluster, &proxy, "node").await;
    let mut c = Resp::connect(p).await;
    assert_eq!(text(&c.cmd(&[b"SET", b"{node}:n", b"1"]).await), "+OK");
    assert_eq!(text(&c.cmd(&[b"WAIT", b"1", b"5000"]).await), ":1");
    // The seed's pool starts full (8); each of the 6 nodes' keeps one.
    series_becomes(&proxy, "pool_connections", 14.0).await;

    let (hits, reuses) = (
        series(&proxy, "pool_hits_total").await,
        series(&proxy, "pool_reuses_total").await,
    );
    let mut a = Resp::connect(r).await;
    let id = text(&a.cmd(&[b"CLIENT", b"ID"]).await);
    assert_eq!(text(&a.cmd(&[b"READONLY"]).await), "+OK");
    assert_eq!(text(&a.cmd(&[b"GET", b"{node}:n"]).await), "$1");
    let info = text(&a.cmd(&[b"CLIENT", b"INFO"]).await);
    assert!(info.contains(" flags=r "), "{info}");
    assert_eq!(series(&proxy, "pool_hits_total").await, hits + 1.0);
    drop(a);
    series_becomes(&proxy, "pool_reuses_total", reuses + 1.0).await;

    // Two new clients empty the replica's pool: one gets the connection
    // back, fresh.
    let (mut b, mut d) = (Resp::connect(r).await, Resp::connect(r).await);
    let ids = [
        text(&b.cmd(&[b"CLIENT", b"ID"]).await),
        text(&d.cmd(&[b"CLIENT", b"ID"]).await),
    ];
    let again = match ids.iter().position(|i| *i == id) {
        Some(0) => &mut b,
        Some(_) => &mut d,
        None => panic!("{id} not reused: {ids:?}"),
    };
    let info = text(&again.cmd(&[b"CLIENT", b"INFO"]).await);
    assert!(
        info.contains(" flags=N "),
        "READONLY survived the reuse: {info}"
    );
    assert_eq!(
        text(&again.cmd(&[b"GET", b"{node}:n"]).await),
        format!("-MOVED {slot} {p}")
    );
    assert_eq!(text(&again.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    assert_eq!(series(&proxy, "pool_hits_total").await, hits + 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_listeners_serve_readonly_replicas_multi_and_sharded_pubsub_as_direct() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = cluster_proxy(&cluster).await;
    let (slot, primary, p, r) = slot_listeners(&cluster, &proxy, "node").await;

    // MULTI on one slot, on its primary's listener.
    let mut c = Resp::connect(p).await;
    assert_eq!(text(&c.cmd(&[b"MULTI"]).await), "+OK");
    assert_eq!(text(&c.cmd(&[b"SET", b"{node}:n", b"1"]).await), "+QUEUED");
    assert_eq!(text(&c.cmd(&[b"INCR", b"{node}:n"]).await), "+QUEUED");
    assert_eq!(text(&c.cmd(&[b"EXEC"]).await), "[OK,2]");
    assert_eq!(text(&c.cmd(&[b"WAIT", b"1", b"5000"]).await), ":1");

    // A replica redirects reads to its primary (the listener, rewritten)
    // until READONLY, then serves them.
    let mut ro = Resp::connect(r).await;
    assert_eq!(
        text(&ro.cmd(&[b"GET", b"{node}:n"]).await),
        format!("-MOVED {slot} {p}")
    );
    assert_eq!(text(&ro.cmd(&[b"READONLY"]).await), "+OK");
    assert_eq!(text(&ro.cmd(&[b"GET", b"{node}:n"]).await), "$2");
    assert_eq!(
        text(&ro.cmd(&[b"ROLE"]).await).split(',').next(),
        Some("[slave")
    );

    // SSUBSCRIBE on the owning node gets the shard's messages; on another
    // node it is redirected there.
    let other = *cluster.primaries().iter().find(|&&x| x != primary).unwrap();
    let mut elsewhere = Resp::connect(listener_of(&proxy, &cluster, other).await).await;
    assert_eq!(
        text(&elsewhere.cmd(&[b"SSUBSCRIBE", b"{node}:ch"]).await),
        format!("-MOVED {slot} {p}")
    );
    let mut sub = Resp::connect(p).await;
    assert_eq!(
        text(&sub.cmd(&[b"SSUBSCRIBE", b"{node}:ch"]).await),
        "[ssubscribe,{node}:ch,1]"
    );
    assert_eq!(
        text(&c.cmd(&[b"SPUBLISH", b"{node}:ch", b"hello"]).await),
        ":1"
    );
    assert_eq!(text(&sub.read().await), "[smessage,{node}:ch,hello]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_cluster_mode_runs_through_the_proxy_without_errors() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = cluster_proxy(&cluster).await;
    let port = proxy.addr.port().to_string();
    let mut bench = Command::new("redis-benchmark");
    bench.args(["--cluster", "-p", &port, "-t", "set,get", "-n", "3000"]);
    bench.args(["-c", "6", "-r", "10000", "--csv"]);
    let out = tokio::task::spawn_blocking(move || {
        common::run_bounded(&mut bench, "redis-benchmark", Duration::from_secs(120))
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.to_lowercase().contains("error"), "{stdout}{stderr}");
    for test in ["\"SET\"", "\"GET\""] {
        assert!(stdout.contains(test), "{test} missing: {stdout}{stderr}");
    }
    // It found the three primaries through the proxy (their listeners),
    // and the writes were spread over them.
    assert!(
        stdout.contains("Cluster has 3 master nodes") || stderr.contains("3 master"),
        "{stdout}{stderr}"
    );
    for p in cluster.primaries() {
        let n: u64 = cluster.run(p, &["DBSIZE"]).trim().parse().unwrap();
        assert!(n > 0, "primary {p} got no keys");
    }
}

/// IAM mode: every node checks tokens (each behind its own emulator), and
/// the one token signed for the cache authenticates every node's session.
/// Through every node's listener `ACL WHOAMI` is the IAM user, and with a
/// short session age every node's session re-authenticates in place: no
/// session outlives its age, none is cut; a sharded subscriber is moved to
/// a fresh connection on its node and misses no message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_mode_every_node_listener_is_the_iam_user_and_reauthenticates() {
    let emulator = EmulatorOptions {
        max_session_age: "4s".into(),
        ..EmulatorOptions::default()
    };
    let cluster = RedisCluster::start_announcing(3, 1, Announce::Iam(emulator));
    let proxy = iam_cluster_proxy(&cluster, |a| {
        a.max_session_age = Some("4s".parse().unwrap());
        a.reauth_after = Some("1s".parse().unwrap());
    })
    .await;
    topology_names_only_local_listeners(&cluster, &proxy, 6).await;
    let mut c = Resp::connect(proxy.addr).await;
    let listeners = ports_named(&text(&c.cmd(&[b"CLUSTER", b"NODES"]).await));
    let mut sessions = Vec::new();
    for port in &listeners {
        let mut s = Resp::connect(SocketAddr::from(([127, 0, 0, 1], *port))).await;
        assert_eq!(
            text(&s.cmd(&[b"ACL", b"WHOAMI"]).await),
            format!("${IAM_USER}"),
            "listener {port}"
        );
        sessions.push((port, s));
    }
    // A RESP2 sharded subscriber on the channel's owner, as a cluster
    // client finds it (following the MOVED), cannot send AUTH: the proxy
    // moves it to a fresh connection on the same node instead.
    let (mut sub, mut publisher) = sharded_subscriber(proxy.addr, "{iam}:ch").await;
    // Past the session age, every node's session still answers as the
    // IAM user: it re-authenticated instead of being cut.
    let until = Instant::now() + Duration::from_secs(6);
    let mut published = 0;
    let mut received = Vec::new();
    while Instant::now() < until {
        for (port, s) in &mut sessions {
            assert_eq!(
                text(&s.cmd(&[b"ACL", b"WHOAMI"]).await),
                format!("${IAM_USER}"),
                "listener {port}"
            );
        }
        let n = published.to_string();
        let at = text(
            &publisher
                .cmd(&[b"SPUBLISH", b"{iam}:ch", n.as_bytes()])
                .await,
        );
        // While the subscriber moves (make-before-break), the server counts
        // both of its connections, and a message may come twice.
        assert!(
            at == ":1" || at == ":2",
            "message {n} reaches the subscriber: {at}"
        );
        published += 1;
        let want = format!("[smessage,{{iam}}:ch,{n}]");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), sub.read()).await;
            let message = text(&message.expect("the subscriber gets each message"));
            received.push(message.clone());
            if message == want {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let want: Vec<String> = (0..published)
        .map(|n| format!("[smessage,{{iam}}:ch,{n}]"))
        .collect();
    // Every message once, in order; a repeat only of the one before, and
    // no more repeats than the proxy counted as overlap candidates.
    let mut once = received.clone();
    once.dedup();
    assert_eq!(once, want, "{received:?}");
    let repeats = (received.len() - once.len()) as f64;
    assert!(repeats <= series(&proxy, "migration_overlap_messages_total").await);
    assert!(series(&proxy, r#"session_migrations_total{outcome="success"}"#).await >= 1.0);
    for (i, emulator) in cluster.emulators.iter().enumerate() {
        assert_eq!(emulator.stat("sessions_expired_total"), 0, "node {i}");
        assert_eq!(emulator.stat("iam_auth_failure_total"), 0, "node {i}");
        // Its session's first AUTH and at least three re-authentications.
        let ok = emulator.stat("iam_auth_success_total");
        assert!(ok >= 4, "node {i}: {ok} IAM AUTHs");
    }
    assert!(series(&proxy, r#"reauthentications_total{outcome="success"}"#).await >= 18.0);
    redis_cli_sets_and_gets_across_all_slots(&cluster, &proxy);
}

/// A RESP2 `SSUBSCRIBE` to `channel` on the node that owns it, found as a
/// cluster client finds it: through the seed, following its `-MOVED`.
/// Returns the subscriber and a second connection to the same listener.
async fn sharded_subscriber(seed: SocketAddr, channel: &str) -> (Resp, Resp) {
    let mut at = seed;
    for _ in 0..2 {
        let mut sub = Resp::connect(at).await;
        let reply = text(&sub.cmd(&[b"SSUBSCRIBE", channel.as_bytes()]).await);
        if reply == format!("[ssubscribe,{channel},1]") {
            return (sub, Resp::connect(at).await);
        }
        let moved = reply.strip_prefix("-MOVED ").expect("subscribed or moved");
        at = moved.split(' ').nth(1).unwrap().parse().unwrap();
    }
    panic!("SSUBSCRIBE {channel} did not settle on a node");
}

/// ElastiCache Serverless presents one endpoint as a cluster whose single
/// (virtual) node owns every slot. With `--serverless --cluster`, a
/// cluster client works through the proxy, `SELECT` is the server's to
/// refuse, and without `--cluster` a plain client keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serverless_cluster_mode_serves_cluster_clients_and_plain_ones() {
    let emulator = EmulatorOptions {
        serverless: true,
        ..EmulatorOptions::default()
    };
    let cache = RedisCluster::start_announcing(1, 0, Announce::Iam(emulator));
    let proxy = iam_cluster_proxy(&cache, |a| a.serverless = Some(true)).await;
    topology_names_only_local_listeners(&cache, &proxy, 1).await;
    let mut c = Resp::connect(proxy.addr).await;
    let slots = text(&c.cmd(&[b"CLUSTER", b"SLOTS"]).await);
    assert!(slots.starts_with("[[0,16383,[127.0.0.1,"), "{slots}");
    assert_eq!(
        text(&c.cmd(&[b"ACL", b"WHOAMI"]).await),
        format!("${IAM_USER}")
    );
    let select = text(&c.cmd(&[b"SELECT", b"1"]).await);
    assert!(
        select.contains("SELECT is not allowed in cluster mode"),
        "{select}"
    );

    let seed = proxy.addr;
    let load = tokio::task::spawn_blocking(move || {
        let client = redis::cluster::ClusterClient::new(vec![format!("redis://{seed}")]).unwrap();
        let mut conn = client.get_connection().expect("cluster connection");
        for i in 0..200 {
            let () = redis::cmd("SET")
                .arg(format!("sl:{i}"))
                .arg(i)
                .query(&mut conn)
                .unwrap();
        }
        (0..200)
            .map(|i| {
                redis::cmd("GET")
                    .arg(format!("sl:{i}"))
                    .query(&mut conn)
                    .unwrap()
            })
            .collect::<Vec<u64>>()
    });
    assert_eq!(load.await.unwrap(), (0..200).collect::<Vec<u64>>());

    // Not cluster-aware: the same endpoint without --cluster.
    let mut args = Proxy::iam_args(&cache.nodes[0], cache.emulators[0].addr.port());
    args.serverless = Some(true);
    let creds = Credentials::new("AKIDTEST", "test-secret-key", None, None, "test");
    let plain = Proxy::start_with_credentials(args, "unused", creds).await;
    let mut p = Resp::connect(plain.addr).await;
    assert_eq!(text(&p.cmd(&[b"GET", b"sl:7"]).await), "$7");
    assert_eq!(
        text(&p.cmd(&[b"ACL", b"WHOAMI"]).await),
        format!("${IAM_USER}")
    );
    assert_eq!(cache.emulators[0].stat("iam_auth_failure_total"), 0);
}

/// Until the topology is read the proxy is neither started nor ready: a
/// cluster-aware client would be told nothing usable. Here the upstream is
/// a cache with cluster mode disabled, so the read keeps failing (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_and_readiness_wait_for_the_topology() {
    let redis = common::RedisServer::start(common::RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.cluster = Some(true);
    let proxy = Proxy::start_with(args, "app-secret-pw").await;
    let failures = r#"topology_refreshes_total{outcome="failure"}"#;
    let deadline = Instant::now() + Duration::from_secs(15);
    while series(&proxy, failures).await < 1.0 {
        assert!(Instant::now() < deadline, "no failed topology read counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in ["/startup", "/readiness"] {
        let (status, body) = http_get(proxy.admin, path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("cluster topology"), "{path}: {body}");
    }
    assert_eq!(
        series(&proxy, r#"topology_refreshes_total{outcome="success"}"#).await,
        0.0
    );
}
