//! A real Redis Cluster over TLS: redis-server processes with
//! `cluster-enabled yes` and `tls-cluster yes`, joined by
//! `redis-cli --cluster create`. Owns the processes and readiness only.
//!
//! Three ways to announce the nodes, as ElastiCache does: by IP, by
//! hostname, or (IAM) each through its own emulator port, so that every
//! node checks tokens.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{backend_options, Certs, Emulator, EmulatorOptions, RedisOptions, RedisServer};

const PASSWORD: &str = "app-secret-pw";
const CLUSTER_READY: Duration = Duration::from_secs(30);

/// How the nodes tell clients where they are.
#[derive(Clone, Debug)]
pub enum Announce {
    /// By IP: 127.0.0.1 and the node's TLS port.
    Ip,
    /// By hostname: `localhost` (`cluster-announce-hostname`,
    /// `cluster-preferred-endpoint-type hostname`).
    Hostname,
    /// By IP, with each node's TLS port that of its own IAM emulator
    /// (`cluster-announce-tls-port`): clients only reach a node through a
    /// token check. Replication and `redis-cli` pass with the password.
    Iam(EmulatorOptions),
}

/// A running cluster. Node 0.. are the processes; which are primaries is
/// the cluster's business (after `create`, the first `primaries`).
pub struct RedisCluster {
    /// `Announce::Iam`: node i's emulator, the address clients are told.
    /// Dropped (killed) before the nodes, so none logs a refused backend.
    pub emulators: Vec<Emulator>,
    pub nodes: Vec<RedisServer>,
    pub certs: Arc<Certs>,
    /// How many primaries the cluster has when settled.
    primaries: usize,
}

impl RedisCluster {
    /// `primaries` primaries with `replicas` replicas each, user `app`,
    /// `default` off, nodes announced by IP (127.0.0.1).
    pub fn start(primaries: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_announcing(primaries, replicas, Announce::Ip)
    }

    /// As `start`, with the nodes announced as `announce` says.
    pub fn start_announcing(primaries: usize, replicas: usize, announce: Announce) -> RedisCluster {
        let certs = Arc::new(Certs::mint());
        let mut options = node_options(&certs);
        match &announce {
            Announce::Ip => {}
            Announce::Hostname => options.extra_args.extend(
                [
                    "--cluster-announce-hostname",
                    "localhost",
                    "--cluster-preferred-endpoint-type",
                    "hostname",
                ]
                .map(String::from),
            ),
            Announce::Iam(_) => {
                let backend = backend_options();
                options.users = backend.users;
                options.plain_port = backend.plain_port;
            }
        }
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| RedisServer::start_with_certs(options.clone(), certs.clone()))
            .collect();
        let emulators = match &announce {
            Announce::Iam(opts) => nodes.iter().map(|n| Emulator::start(n, opts)).collect(),
            _ => Vec::new(),
        };
        let cluster = RedisCluster {
            emulators,
            nodes,
            certs,
            primaries,
        };
        // The emulator reaches its node in plaintext, and a node tells a
        // plaintext client its plaintext port: announce both as the
        // emulator's. The bus keeps the real TLS port + 10000.
        for (node, emulator) in cluster.nodes.iter().zip(&cluster.emulators) {
            let port = emulator.addr.port().to_string();
            for key in ["cluster-announce-tls-port", "cluster-announce-port"] {
                let set = cluster.run(node.tls_port, &["CONFIG", "SET", key, &port]);
                assert_eq!(set.trim(), "OK", "CONFIG SET {key}: {set}");
            }
        }
        if primaries == 1 && replicas == 0 {
            // One node owning every slot, as a serverless cache presents
            // itself (`--cluster create` wants three primaries).
            let add = cluster.run(
                cluster.nodes[0].tls_port,
                &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"],
            );
            assert_eq!(add.trim(), "OK", "ADDSLOTSRANGE: {add}");
            cluster.wait_ok();
            return cluster;
        }
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
        assert!(self.emulators.is_empty(), "add_node announces by IP");
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
