//! Listeners (TCP and an optional Unix socket), the accept loop, the
//! connection limit and graceful drain. Knows sessions only as tasks to spawn.

use std::{
    future::Future,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, UnixListener},
    sync::mpsc,
    task::JoinSet,
};
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::{
    admin::Health,
    auth, cluster, config,
    metrics::Metrics,
    resp::error_reply,
    session::{self, Context, Limits},
    upstream::{self, Connector},
};

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Unix socket {path}: {reason}")]
    Unix { path: String, reason: String },
    #[error(transparent)]
    Tls(#[from] upstream::SetupError),
    #[error(transparent)]
    Auth(#[from] auth::SetupError),
}

impl StartError {
    /// Whether the configuration is at fault (a TLS file, the server name,
    /// no AWS region): fixing a setting fixes it, so the binary exits 64
    /// (EX_USAGE). A listener that cannot bind is the host's state instead.
    pub fn is_config(&self) -> bool {
        match self {
            StartError::Tls(_) | StartError::Auth(_) => true,
            StartError::Listen { .. } | StartError::Unix { .. } => false,
        }
    }
}

/// How long a connection waits for the first IAM token after startup.
const COLD_START: Duration = Duration::from_secs(15);

/// Commands a client may pipeline before the proxy stops reading it.
pub(crate) const MAX_PIPELINE: usize = 64 * 1024;

/// A bound proxy, ready to serve.
pub struct Server {
    ctx: Arc<Context>,
    tcp: TcpListener,
    unix: Option<(UnixListener, PathBuf)>,
    max_connections: usize,
    drain_timeout: Duration,
    health: Arc<Health>,
    drain: tokio::sync::watch::Sender<bool>,
    /// Cluster mode: the listeners the topology makes for new nodes, and
    /// how often it is re-read.
    cluster: Option<(mpsc::UnboundedReceiver<cluster::Listener>, Duration)>,
}

impl Server {
    /// Builds the upstream connector and the auth provider (the AWS SDK's
    /// default credential chain in IAM modes) and binds the listeners.
    pub async fn bind(cfg: &config::Config) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::for_route(cfg.route.as_deref()));
        let auth = auth::Provider::new(&cfg.auth, COLD_START, metrics).await?;
        Server::bind_with(cfg, auth).await
    }

    /// Like [`Server::bind`] with a ready auth provider (for embedding, and
    /// for tests that bring their own credentials).
    pub async fn bind_with(
        cfg: &config::Config,
        auth: auth::Provider,
    ) -> Result<Server, StartError> {
        let metrics = auth.metrics.clone();
        let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
        let health = Arc::new(Health::new(cfg.max_connections));
        let connector = Connector::new(cfg)?;
        let (topology, cluster) = match &cfg.cluster {
            Some(settings) => {
                health.set_topology_pending();
                let (topology, listeners) =
                    cluster::Topology::new(cfg.listen, settings, &connector, metrics.clone());
                (Some(topology), Some((listeners, settings.refresh)))
            }
            None => (None, None),
        };
        let pool = (cfg.pool_size > 0)
            .then(|| session::pool::Pool::new(cfg.pool_size, cfg.pool_reuse, metrics.clone()));
        let ctx = Arc::new(Context {
            connector,
            auth,
            limits: Limits {
                max_frame: cfg.max_frame_size,
                max_pipeline: MAX_PIPELINE,
                idle_timeout: cfg.idle_timeout,
                max_session_age: cfg.max_session_age,
                reauth_after: cfg.reauth_after,
            },
            metrics,
            client_password: cfg.client_password.clone(),
            drain: drain_rx,
            health: health.clone(),
            cluster: topology,
            route: cfg.route.clone(),
            pool,
        });
        let tcp = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: cfg.listen.to_string(),
                source,
            })?;
        let unix = match &cfg.unix_socket {
            Some(path) => Some((bind_unix(path, cfg.unix_socket_mode)?, path.clone())),
            None => None,
        };
        Ok(Server {
            ctx,
            tcp,
            unix,
            max_connections: cfg.max_connections,
            drain_timeout: cfg.drain_timeout,
            health,
            drain: drain_tx,
            cluster,
        })
    }

    /// What `/startup` and `/readiness` report.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The metrics `/metrics` renders.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// The bound TCP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has a local address.
        self.tcp
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Accepts clients until `shutdown` completes, then drains: see
    /// [`Server::run_until`]; nothing ends the drain early.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.run_until(shutdown, std::future::pending).await
    }

    /// Accepts clients until `shutdown` completes, then stops accepting and
    /// drains: each session closes at its next point with nothing owed;
    /// subscribers, MONITOR, MULTI and blocked commands get until the drain
    /// timeout. The future `force()` makes, started once the drain begins
    /// (a second SIGTERM/SIGINT), closes every session at once.
    pub async fn run_until<F: Future<Output = ()>>(
        self,
        shutdown: impl Future<Output = ()>,
        force: impl FnOnce() -> F,
    ) {
        let Server {
            ctx,
            tcp,
            unix,
            max_connections,
            drain_timeout,
            health,
            drain,
            cluster,
        } = self;
        let lingering = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Started once the first identity is known (the first IAM token).
        let warm = {
            let (ctx, health) = (ctx.clone(), health.clone());
            tokio::spawn(async move {
                ctx.auth.wait_ready().await;
                health.set_started();
            })
        };
        // Probes the upstream when the health endpoints need to know, at a
        // bounded rate (see `Health::want_probe`); they never wait for it.
        let prober = {
            let (ctx, health) = (ctx.clone(), health.clone());
            tokio::spawn(async move {
                loop {
                    health.probe_wanted().await;
                    session::probe(&ctx).await;
                }
            })
        };
        // The warm pool fills once the first identity is ready.
        let pool = ctx.pool.clone().map(|pool| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                ctx.auth.wait_ready().await;
                pool.refill(ctx.clone()).await;
            })
        });
        // Cluster mode: node listeners hand their clients to the loop below.
        let (node_tx, mut node_rx) = mpsc::channel::<NodeClient>(64);
        let mut node_listeners = JoinSet::new();
        let (mut new_listeners, maintainer) = match cluster {
            Some((listeners, refresh)) => {
                let (ctx, health) = (ctx.clone(), health.clone());
                let task = tokio::spawn(maintain_topology(ctx, health, refresh));
                (Some(listeners), Some(task))
            }
            None => (None, None),
        };
        let metrics = ctx.metrics.clone();
        info!(
            listen = %tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            unix_socket = unix.as_ref().map(|(_, p)| p.display().to_string()),
            upstream = %ctx.connector.target(),
            route = ctx.route.as_deref(),
            "elasticache-auth-proxy ready"
        );
        let mut sessions = JoinSet::new();
        let ids = AtomicU64::new(1);
        let mut backoff = Duration::from_millis(5);
        let mut accept_failures = AcceptFailures::default();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                r = tcp.accept() => r.map(|(s, peer)| {
                    // Commands are small and latency-bound on this side too.
                    let _ = s.set_nodelay(true);
                    (Client::Tcp(s), peer.to_string(), None)
                }),
                r = accept_unix(&unix) => r.map(|s| (Client::Unix(s), "unix".to_string(), None)),
                Some(c) = node_rx.recv() => Ok((Client::Tcp(c.stream), c.peer, Some((c.node, c.pool)))),
                Some(new) = next_listener(&mut new_listeners) => {
                    node_listeners.spawn(accept_node(new, ctx.clone(), node_tx.clone()));
                    continue;
                }
                // Reap finished sessions so the set stays as small as the live ones.
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            };
            let (client, peer, node) = match accepted {
                Ok(c) => {
                    accept_failures.accepted();
                    backoff = Duration::from_millis(5);
                    c
                }
                Err(e) => {
                    // Out of file descriptors and the like: never fatal.
                    accept_failures.failed(&e, backoff);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let span = info_span!("session", id, peer = %peer, route = ctx.route.as_deref());
            metrics.client_connections.inc();
            if health.at_capacity() {
                metrics.client_connections_refused.inc();
                let lingering = Linger::enter(&lingering);
                let max_frame = ctx.limits.max_frame;
                sessions.spawn(
                    async move {
                        warn!(max_connections, "refusing client: max connections reached");
                        let msg = format!(
                            "ERR elasticache-auth-proxy: max connections ({max_connections}) reached; try again later"
                        );
                        client.refuse(error_reply(&msg), lingering, max_frame).await;
                    }
                    .instrument(span),
                );
                continue;
            }
            let guard = Active::new(&health, &metrics);
            let ctx = ctx.clone();
            let node_guard = node.as_ref().map(|(n, _)| {
                let gauge = metrics
                    .cluster_node_sessions
                    .with_label_values(&[&n.name()]);
                gauge.inc();
                NodeSession(gauge)
            });
            let (node, pool) = match node {
                Some((node, pool)) => (Some(node), pool),
                None => (None, ctx.pool.clone()),
            };
            let conn = session::Conn {
                id,
                peer,
                node,
                pool,
            };
            sessions.spawn(
                async move {
                    let _node_guard = node_guard;
                    debug!("client connected");
                    let end = match client {
                        Client::Tcp(s) => session::run(s, ctx, conn).await,
                        Client::Unix(s) => session::run(s, ctx, conn).await,
                    };
                    debug!(?end, "session ended");
                    drop(guard);
                }
                .instrument(span),
            );
        }
        // Readiness turns 503 first, then the listeners close.
        health.set_draining();
        let _ = drain.send(true);
        warm.abort();
        prober.abort();
        if let Some(task) = &pool {
            task.abort();
        }
        if let Some(task) = maintainer {
            task.abort();
        }
        node_listeners.abort_all();
        drop(tcp);
        if let Some((listener, path)) = unix {
            drop(listener);
            let _ = std::fs::remove_file(path);
        }
        let open = health.connections();
        info!(
            open_sessions = open,
            ?drain_timeout,
            "draining: no longer accepting clients"
        );
        let force = force();
        let drained = {
            let drained = async { while sessions.join_next().await.is_some() {} };
            tokio::select! {
                r = tokio::time::timeout(drain_timeout, drained) => Some(r.is_ok()),
                () = force => None,
            }
        };
        match drained {
            Some(true) => info!("drained"),
            Some(false) => {
                warn!(
                    open_sessions = health.connections(),
                    "drain timeout reached; closing remaining sessions"
                );
                sessions.shutdown().await;
            }
            None => {
                warn!(
                    open_sessions = health.connections(),
                    "second shutdown signal: closing remaining sessions now"
                );
                sessions.shutdown().await;
            }
        }
    }
}

/// Accept failures this soon after accepting resumed continue the episode
/// already logged.
const ACCEPT_QUIET: Duration = Duration::from_secs(10);

/// Failed accepts (EMFILE and the like), logged as one line when they
/// start and one when accepting resumes, also while it flaps (each client
/// that closes frees one descriptor, taken by the next accept).
#[derive(Default)]
struct AcceptFailures {
    /// Failed in a row.
    count: u64,
    /// This episode's start was logged.
    warned: bool,
    /// When accepting last resumed.
    resumed: Option<Instant>,
}

impl AcceptFailures {
    fn failed(&mut self, e: &std::io::Error, retry_in: Duration) {
        let flapping = self.resumed.is_some_and(|t| t.elapsed() < ACCEPT_QUIET);
        if self.count == 0 && !flapping {
            warn!(error = %e, "cannot accept clients: {}", accept_hint(e));
            self.warned = true;
        } else {
            debug!(error = %e, ?retry_in, "accept failed again");
        }
        self.count += 1;
    }

    fn accepted(&mut self) {
        if self.count == 0 {
            return;
        }
        if self.warned {
            info!(failed_accepts = self.count, "accepting clients again");
            self.warned = false;
        }
        self.count = 0;
        self.resumed = Some(Instant::now());
    }
}

/// What a failed accept means for clients, and what to do about it.
fn accept_hint(e: &std::io::Error) -> &'static str {
    // EMFILE, ENFILE (Linux errno values).
    match e.raw_os_error() {
        Some(24) | Some(23) => "out of file descriptors; new clients wait in the listen backlog until connections close (raise the limit: ulimit -n, systemd LimitNOFILE, or the container's nofile ulimit)",
        _ => "retrying with backoff; new clients wait in the listen backlog",
    }
}

/// Cluster mode: reads the topology through the configured endpoint at
/// start (`/startup` waits for it) and then every `refresh`, giving every
/// node it names a listener. A failed read is logged, counted and retried
/// sooner; the map keeps what it knew.
async fn maintain_topology(ctx: Arc<Context>, health: Arc<Health>, refresh: Duration) {
    let Some(topology) = ctx.cluster.clone() else {
        return;
    };
    ctx.auth.wait_ready().await;
    let mut retry = Duration::from_millis(200);
    loop {
        let outcome = match session::read_topology(&ctx).await {
            Ok((kind, reply)) if topology.refresh(kind, &reply) => Ok(kind),
            Ok((kind, _)) => Err(format!("a CLUSTER {kind:?} reply the proxy cannot read")),
            Err(e) => Err(format!("{}: {}", e.kind.as_str(), e.detail)),
        };
        let label = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        ctx.metrics
            .topology_refreshes
            .with_label_values(&[label])
            .inc();
        let wait = match outcome {
            Ok(kind) => {
                let nodes = topology.nodes();
                if !health.started() || health.upstream_failure().is_some() {
                    info!(nodes = nodes.len(), via = ?kind, "cluster topology read");
                } else {
                    debug!(nodes = nodes.len(), via = ?kind, "cluster topology read");
                }
                health.set_topology_known();
                retry = Duration::from_millis(200);
                refresh
            }
            Err(reason) => {
                warn!(%reason, retry_in = ?retry, "cannot read the cluster topology");
                let wait = retry;
                retry = (retry * 2).min(refresh);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn next_listener(
    listeners: &mut Option<mpsc::UnboundedReceiver<cluster::Listener>>,
) -> Option<cluster::Listener> {
    match listeners {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Accepts on one node's listener, handing each client to the accept loop
/// (which applies the connection limit and starts the session).
async fn accept_node(new: cluster::Listener, ctx: Arc<Context>, to_loop: mpsc::Sender<NodeClient>) {
    let cluster::Listener { listener, node } = new;
    // The node's own warm pool, filled while its listener lives (and
    // dropped, with what it holds, when the node leaves or the proxy drains).
    let pool = ctx.pool.as_ref().map(|p| p.for_node(node.clone()));
    let refill = {
        let pool = pool.clone();
        async move {
            match pool {
                Some(pool) => {
                    ctx.auth.wait_ready().await;
                    pool.refill(ctx).await;
                }
                None => std::future::pending().await,
            }
        }
    };
    tokio::pin!(refill);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = node.removed() => return,
            () = &mut refill => return,
        };
        match accepted {
            Ok((s, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = s.set_nodelay(true);
                let client = NodeClient {
                    stream: s,
                    peer: peer.to_string(),
                    node: node.clone(),
                    pool: pool.clone(),
                };
                if to_loop.send(client).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!(node = %node.name(), error = %e, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A client accepted by a cluster node's listener, on its way to the
/// accept loop.
struct NodeClient {
    stream: tokio::net::TcpStream,
    peer: String,
    node: Arc<cluster::Node>,
    /// The node listener's warm pool.
    pool: Option<Arc<session::pool::Pool>>,
}

/// Counts a session in its node's `cluster_node_sessions` while it lives.
struct NodeSession(prometheus::IntGauge);

impl Drop for NodeSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A client connection of either listener.
enum Client {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// How long an over-limit client's commands are answered with the refusal.
const CAPACITY_LINGER: Duration = Duration::from_secs(2);
/// At most this many over-limit clients are answered in turn at once; the
/// rest get the line at once and a close, so a flood holds few descriptors.
const MAX_LINGERING: usize = 256;

impl Client {
    /// Tells an over-limit client why: in turn, as the reply to each command
    /// (see [`session::refuse`]), or at once when too many already linger.
    async fn refuse(self, msg: Bytes, linger: Option<Linger>, max_frame: u64) {
        match (self, linger) {
            (Client::Tcp(s), Some(_guard)) => {
                session::refuse::answer_with(s, BytesMut::new(), msg, CAPACITY_LINGER, max_frame)
                    .await
            }
            (Client::Unix(s), Some(_guard)) => {
                session::refuse::answer_with(s, BytesMut::new(), msg, CAPACITY_LINGER, max_frame)
                    .await
            }
            (Client::Tcp(s), None) => write_and_close(s, &msg).await,
            (Client::Unix(s), None) => write_and_close(s, &msg).await,
        }
    }
}

async fn write_and_close<S: tokio::io::AsyncWrite + Unpin>(mut s: S, msg: &[u8]) {
    let write = async {
        let _ = s.write_all(msg).await;
        let _ = s.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Counts an over-limit client being answered in turn.
struct Linger(Arc<std::sync::atomic::AtomicUsize>);

impl Linger {
    fn enter(count: &Arc<std::sync::atomic::AtomicUsize>) -> Option<Linger> {
        let before = count.fetch_add(1, Ordering::Relaxed);
        let guard = Linger(count.clone());
        (before < MAX_LINGERING).then_some(guard)
    }
}

impl Drop for Linger {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a live session; uncounts it on drop, however the session ends.
struct Active(Arc<Health>, prometheus::IntGauge);

impl Active {
    fn new(health: &Arc<Health>, metrics: &Metrics) -> Self {
        health.connection_opened();
        metrics.client_connections_active.inc();
        Active(health.clone(), metrics.client_connections_active.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.connection_closed();
        self.1.dec();
    }
}

async fn accept_unix(
    unix: &Option<(UnixListener, PathBuf)>,
) -> std::io::Result<tokio::net::UnixStream> {
    match unix {
        Some((listener, _)) => listener.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Binds a Unix socket, replacing a stale socket file but never a live one.
fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, StartError> {
    let err = |reason: String| StartError::Unix {
        path: path.display().to_string(),
        reason,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err("another process is listening there".into()));
        }
        std::fs::remove_file(path)
            .map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err(format!("cannot set mode {mode:o}: {e}")))?;
    Ok(listener)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}
