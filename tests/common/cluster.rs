//! A real Redis Cluster over TLS: redis-server processes with
//! `cluster-enabled yes` and `tls-cluster yes`, joined by
//! `redis-cli --cluster create`. Owns the processes and readiness only.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Certs, RedisOptions, RedisServer};

const PASSWORD: &str = "app-secret-pw";
const CLUSTER_READY: Duration = Duration::from_secs(30);

/// A running cluster. Node 0.. are the processes; which are primaries is
/// the cluster's business (after `create`, the first `primaries`).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    pub certs: Arc<Certs>,
    /// How many primaries the cluster has when settled.
    primaries: usize,
}

impl RedisCluster {
    /// `primaries` primaries with `replicas` replicas each, user `app`,
    /// `default` off, nodes announced by IP (127.0.0.1).
    pub fn start(primaries: usize, replicas: usize) -> RedisCluster {
        let certs = Arc::new(Certs::mint());
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| RedisServer::start_with_certs(node_options(&certs), certs.clone()))
            .collect();
        let cluster = RedisCluster {
            nodes,
            certs,
            primaries,
        };
        let mut create = cluster.cli();
        create.args(["--cluster", "create"]);
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.tls_port));
        }
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = create.output().expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok();
        cluster
    }

    /// Starts one more node and adds it as an empty primary (no slots);
    /// returns its TLS port once every node knows it.
    pub fn add_node(&mut self) -> u16 {
        let node = RedisServer::start_with_certs(node_options(&self.certs), self.certs.clone());
        let port = node.tls_port;
        let out = self
            .cli()
            .args(["--cluster", "add-node"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(format!("127.0.0.1:{}", self.nodes[0].tls_port))
            .output()
            .expect("redis-cli --cluster add-node");
        assert!(
            out.status.success(),
            "add-node: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.nodes.push(node);
        self.primaries += 1;
        self.wait_ok();
        port
    }

    /// Removes the slotless node on `port` from the cluster (every node
    /// forgets it; redis-cli shuts it down).
    pub fn del_node(&mut self, port: u16) {
        let id = self.run(port, &["CLUSTER", "MYID"]).trim().to_string();
        let out = self
            .cli()
            .args(["--cluster", "del-node"])
            .arg(format!("127.0.0.1:{}", self.nodes[0].tls_port))
            .arg(&id)
            .output()
            .expect("redis-cli --cluster del-node");
        assert!(
            out.status.success(),
            "del-node: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.nodes.retain(|n| n.tls_port != port);
        self.primaries -= 1;
        self.wait_ok();
    }

    /// `redis-cli` with TLS and the `app` user, for the first node.
    pub fn cli(&self) -> Command {
        self.cli_for(self.nodes[0].tls_port)
    }

    /// `redis-cli` with TLS and the `app` user, against `port`.
    pub fn cli_for(&self, port: u16) -> Command {
        let mut c = Command::new("redis-cli");
        c.args(["--tls", "--cacert"])
            .arg(&self.certs.ca)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["--user", "app", "--pass", PASSWORD, "--no-auth-warning"]);
        c
    }

    /// Runs one command on node `port` and returns its output.
    pub fn run(&self, port: u16, args: &[&str]) -> String {
        let out = self.cli_for(port).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits until every node reports `cluster_state:ok`, all 16384 slots
    /// served, every node known and the primaries settled.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + CLUSTER_READY;
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        loop {
            let ok = self.nodes.iter().all(|n| {
                let info = self.run(n.tls_port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains(&known)
            }) && self.primaries_seen_by_all() == Some(self.primaries);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not ok in {CLUSTER_READY:?}: {}",
                self.run(self.nodes[0].tls_port, &["CLUSTER", "INFO"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many primaries every node sees, if they agree.
    fn primaries_seen_by_all(&self) -> Option<usize> {
        let seen: Vec<usize> = self
            .nodes
            .iter()
            .map(|n| self.primaries_seen_by(n.tls_port).len())
            .collect();
        seen.iter().all(|&c| c == seen[0]).then_some(seen[0])
    }

    /// The TLS ports of the nodes that are primaries now.
    pub fn primaries(&self) -> Vec<u16> {
        self.primaries_seen_by(self.nodes[0].tls_port)
    }

    fn primaries_seen_by(&self, port: u16) -> Vec<u16> {
        let nodes = self.run(port, &["CLUSTER", "NODES"]);
        nodes
            .lines()
            .filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("master")))
            .filter_map(|l| {
                let addr = l.split(' ').nth(1)?;
                addr.split(['@', ','])
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }
}

/// One node: TLS only, the cluster bus over TLS too (the nodes' client
/// certificate, which allows client auth, for the bus and replication).
fn node_options(certs: &Certs) -> RedisOptions {
    let path = |p: &std::path::Path| p.display().to_string();
    let extra = [
        ("--cluster-enabled", "yes".to_string()),
        ("--tls-cluster", "yes".into()),
        ("--tls-replication", "yes".into()),
        ("--tls-client-cert-file", path(&certs.client_cert)),
        ("--tls-client-key-file", path(&certs.client_key)),
        ("--cluster-node-timeout", "2000".into()),
        ("--masteruser", "app".into()),
        ("--masterauth", PASSWORD.into()),
    ];
    RedisOptions {
        extra_args: extra
            .into_iter()
            .flat_map(|(k, v)| [k.to_string(), v])
            .collect(),
        ..RedisOptions::default()
    }
}
