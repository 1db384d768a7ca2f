//! Cluster mode: the map of upstream nodes to the proxy's local listeners,
//! and the rewriting of the replies that name nodes ([`rewrite`]).
//!
//! Every node the proxy learns of, from a topology read, a relayed topology
//! reply or a redirect, gets a plaintext listener on the listen host before
//! any client is told its address, and keeps it for the life of the
//! process. Sessions accepted there talk to that node. Knows nothing of
//! sessions: the server accepts on the listeners it hands out.

pub mod rewrite;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{config, metrics::Metrics, upstream::Connector};
use rewrite::{Locate, Named, Role};

/// One upstream node and the local listener that stands for it.
pub struct Node {
    /// The endpoint as the cluster announces it: hostname or IP.
    pub host: String,
    pub port: u16,
    /// The proxy's listener for it.
    pub local: SocketAddr,
    /// Connects to this node (TLS verified as [`Connector::for_node`] says).
    pub connector: Connector,
    role: Mutex<Option<Role>>,
    /// Turns true when the node leaves the topology.
    removed: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("upstream", &self.name())
            .field("local", &self.local)
            .finish()
    }
}

impl Node {
    /// `host:port` for logs and the per-node metrics label.
    pub fn name(&self) -> String {
        self.connector.target()
    }

    /// Resolves once the node has left the topology: its listener stops
    /// accepting (its sessions end when the server closes them).
    pub async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }
}

/// A new listener for the server to accept on.
pub struct Listener {
    pub listener: tokio::net::TcpListener,
    pub node: Arc<Node>,
}

/// The node map of one cluster.
pub struct Topology {
    bind_ip: IpAddr,
    /// What clients are told: the listen address, or 127.0.0.1 when the
    /// proxy listens on every interface.
    announce_ip: IpAddr,
    ports: Option<config::PortRange>,
    seed: Connector,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    listeners: mpsc::UnboundedSender<Listener>,
}

#[derive(Default)]
struct Inner {
    by_addr: HashMap<(String, u16), Arc<Node>>,
    by_id: HashMap<String, Arc<Node>>,
    /// The next port of `ports` to try.
    next_port: Option<u16>,
}

/// What a topology reply is.
pub use crate::resp::Topology as Kind;

impl Topology {
    /// A map with no nodes yet; listeners made later arrive on the receiver.
    pub fn new(
        listen: SocketAddr,
        settings: &config::Cluster,
        seed: &Connector,
        metrics: Arc<Metrics>,
    ) -> (Arc<Topology>, mpsc::UnboundedReceiver<Listener>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let announce_ip = if listen.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            listen.ip()
        };
        let topology = Topology {
            bind_ip: listen.ip(),
            announce_ip,
            ports: settings.ports,
            seed: seed.clone(),
            metrics,
            inner: Mutex::new(Inner {
                next_port: settings.ports.map(|r| r.first),
                ..Inner::default()
            }),
            listeners: tx,
        };
        (Arc::new(topology), rx)
    }

    /// The seed endpoint's host: the node a redirect with an empty host
    /// means, for sessions on the main listener.
    pub fn seed_host(&self) -> &str {
        self.seed.host()
    }

    /// Whether upstream connections use TLS (which port of CLUSTER SHARDS
    /// the proxy connects to).
    pub fn tls(&self) -> bool {
        self.seed.is_tls()
    }

    /// The nodes known now.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        let inner = self.lock();
        let mut nodes: Vec<_> = inner.by_addr.values().cloned().collect();
        nodes.sort_by_key(|n| n.local.port());
        nodes
    }

    /// The local listener for `named`, made (bound) first if the node is
    /// new. `None` if no listener can be bound (logged).
    pub fn local(&self, named: &Named<'_>) -> Option<SocketAddr> {
        let mut inner = self.lock();
        let key = (named.host.to_string(), named.port);
        let node = match inner.by_addr.get(&key) {
            Some(node) => node.clone(),
            // A CLUSTER NODES line shows the IP of a node known by hostname.
            None => match named.id.and_then(|id| inner.by_id.get(id)) {
                Some(node) if named.host.parse::<IpAddr>().is_ok() => node.clone(),
                _ => self.add(&mut inner, named)?,
            },
        };
        if let Some(id) = named.id {
            if !inner.by_id.contains_key(id) {
                inner.by_id.insert(id.to_string(), node.clone());
            }
        }
        if let Some(role) = named.role {
            let mut current = node.role.lock().unwrap_or_else(|e| e.into_inner());
            if *current != Some(role) {
                *current = Some(role);
                drop(current);
                self.count_roles(&inner);
            }
        }
        Some(node.local)
    }

    /// A full topology read: learns every node it names, and, for `CLUSTER
    /// SHARDS` (which lists every node the cluster knows, failed ones too),
    /// retires the nodes it no longer names. `CLUSTER SLOTS` leaves out
    /// failed replicas, so it never retires a node.
    pub fn refresh(&self, kind: Kind, reply: &[u8]) -> bool {
        let Some(seen) = self.learn_seen(kind, reply) else {
            return false;
        };
        if kind != Kind::Shards || seen.is_empty() {
            return true;
        }
        let mut inner = self.lock();
        let gone: Vec<(String, u16)> = inner
            .by_addr
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(node) = inner.by_addr.remove(&key) {
                inner.by_id.retain(|_, n| !Arc::ptr_eq(n, &node));
                info!(node = %node.name(), listen = %node.local, "cluster: node left the topology; its listener stops accepting");
                node.removed.send_replace(true);
            }
        }
        self.count_roles(&inner);
        true
    }

    fn learn_seen(&self, kind: Kind, reply: &[u8]) -> Option<Vec<(String, u16)>> {
        let mut seen = Vec::new();
        let mut locate = |named: &Named<'_>| {
            let local = self.local(named);
            if local.is_some() {
                seen.push((named.host.to_string(), named.port));
            }
            local
        };
        match kind {
            // The read goes to the seed.
            Kind::Slots => rewrite::slots(reply, self.seed_host(), &mut locate),
            Kind::Shards => rewrite::shards(reply, self.tls(), self.seed_host(), &mut locate),
            Kind::Nodes => rewrite::nodes(reply, self.seed_host(), &mut locate),
        }?;
        Some(seen)
    }

    /// A [`Locate`] backed by this map.
    pub fn locator(&self) -> impl Locate + '_ {
        move |named: &Named<'_>| self.local(named)
    }

    fn add(&self, inner: &mut Inner, named: &Named<'_>) -> Option<Arc<Node>> {
        let listener = match self.bind(inner) {
            Ok(l) => l,
            Err(e) => {
                warn!(node = %format!("{}:{}", named.host, named.port), error = %e, "cluster: no local listener for a node; its address is passed on unchanged");
                return None;
            }
        };
        let local = SocketAddr::new(self.announce_ip, listener.local_addr().ok()?.port());
        let node = Arc::new(Node {
            host: named.host.to_string(),
            port: named.port,
            local,
            connector: self.seed.for_node(named.host, named.port),
            role: Mutex::new(named.role),
            removed: tokio::sync::watch::Sender::new(false),
        });
        info!(node = %node.name(), role = ?named.role, listen = %local, "cluster: node gets a local listener");
        inner
            .by_addr
            .insert((node.host.clone(), node.port), node.clone());
        self.count_roles(inner);
        // The server is gone only when the proxy shuts down.
        let _ = self.listeners.send(Listener {
            listener,
            node: node.clone(),
        });
        Some(node)
    }

    /// Binds the next port of the range (skipping ports in use), or an
    /// ephemeral one.
    fn bind(&self, inner: &mut Inner) -> std::io::Result<tokio::net::TcpListener> {
        let listen = |port: u16| -> std::io::Result<tokio::net::TcpListener> {
            let std = std::net::TcpListener::bind(SocketAddr::new(self.bind_ip, port))?;
            std.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(std)
        };
        let Some(range) = self.ports else {
            return listen(0);
        };
        while let Some(port) = inner.next_port.filter(|&p| p <= range.last) {
            inner.next_port = port.checked_add(1);
            match listen(port) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                other => return other,
            }
        }
        Err(std::io::Error::other(format!(
            "every port of --cluster-ports {}-{} is taken",
            range.first, range.last
        )))
    }

    fn count_roles(&self, inner: &Inner) {
        let (mut primaries, mut replicas) = (0, 0);
        for node in inner.by_addr.values() {
            match *node.role.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(Role::Replica) => replicas += 1,
                _ => primaries += 1,
            }
        }
        let gauge = &self.metrics.cluster_nodes;
        gauge.with_label_values(&["primary"]).set(primaries);
        gauge.with_label_values(&["replica"]).set(replicas);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
