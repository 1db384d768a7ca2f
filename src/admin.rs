//! The admin HTTP server: `/metrics` (Prometheus text), the `/startup`,
//! `/readiness` and `/liveness` probes, and `POST /quitquitquit`; plus
//! [`Health`], the state those probes report, which the server updates.
//!
//! It does not decide when the proxy is started, draining or full (the
//! server does, through [`Health`]), does not shut anything down itself
//! (`/quitquitquit` only notifies whoever awaits the [`Notify`]), and does not
//! own the metrics (it renders the [`Metrics`] it is given).

use std::{
    borrow::Cow,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{watch, Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::metrics::{self, Metrics};

/// Content type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of every other response.
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Health of the proxy as the endpoints report it; shared with the server,
/// which is the only writer.
///
/// Plain atomics with relaxed ordering: each flag is read on its own by a
/// probe, nothing else is published through them, and a probe that sees a
/// change one request late is harmless.
#[derive(Debug, Default)]
pub struct Health {
    /// Listeners are bound and the first identity is ready. Never unset.
    identity_ready: AtomicBool,
    /// What the last upstream authentication (a session's or a probe's)
    /// says about the upstream, and when a probe last ran.
    upstream: Mutex<Upstream>,
    /// Wakes the prober (see [`Health::want_probe`]).
    probe: Notify,
    /// Cluster mode: the topology has not been read yet.
    topology_pending: AtomicBool,
    /// Shutdown began. Never unset.
    draining: AtomicBool,
    /// Live client connections.
    connections: AtomicUsize,
    /// `--max-connections`; 0 = unlimited.
    max_connections: usize,
}

/// The upstream as the last authentication attempt found it.
#[derive(Debug, Default)]
struct Upstream {
    /// Some connection authenticated once: startup is over.
    authenticated_once: bool,
    /// The last outcome: `Err(kind)` names the failure (`error::Kind`).
    last: Option<(Result<(), &'static str>, Instant)>,
    probed_at: Option<Instant>,
}

/// Probes run at most this often, however often the endpoints are asked.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// With no connection in this long, the next readiness check probes.
const PROBE_WHEN_QUIET: Duration = Duration::from_secs(30);

impl Health {
    /// Not started, not draining, no connections; `max_connections` 0 means
    /// unlimited (never at capacity).
    pub fn new(max_connections: usize) -> Health {
        Health {
            max_connections,
            ..Health::default()
        }
    }

    /// Listeners are bound and the first identity is ready: `/startup` turns
    /// 200 and `/readiness` may.
    pub fn set_started(&self) {
        self.identity_ready.store(true, Ordering::Relaxed);
    }

    /// Cluster mode: `/startup` and `/readiness` wait for the first
    /// topology read too.
    pub fn set_topology_pending(&self) {
        self.topology_pending.store(true, Ordering::Relaxed);
    }

    /// The cluster topology was read (its nodes have listeners).
    pub fn set_topology_known(&self) {
        self.topology_pending.store(false, Ordering::Relaxed);
    }

    fn topology_pending(&self) -> bool {
        self.topology_pending.load(Ordering::Relaxed)
    }

    /// Records how an upstream connection's authentication went (a
    /// session's or a probe's): `Err` carries the `error::Kind` name.
    pub fn record_upstream(&self, outcome: Result<(), &'static str>) {
        let mut up = self.upstream.lock().unwrap_or_else(|e| e.into_inner());
        up.authenticated_once |= outcome.is_ok();
        up.last = Some((outcome, Instant::now()));
    }

    /// The kind of the last upstream failure, unless a success came since.
    pub fn upstream_failure(&self) -> Option<&'static str> {
        let up = self.upstream.lock().unwrap_or_else(|e| e.into_inner());
        match up.last {
            Some((Err(kind), _)) => Some(kind),
            _ => None,
        }
    }

    /// Asks for a probe of the upstream when what is known is missing,
    /// failed or old, at most once per [`PROBE_INTERVAL`]. Never waits: the
    /// endpoint answers from what is known now, the probe updates it later.
    pub fn want_probe(&self) {
        if !self.identity_ready.load(Ordering::Relaxed) || self.draining() {
            return;
        }
        let now = Instant::now();
        let mut up = self.upstream.lock().unwrap_or_else(|e| e.into_inner());
        let stale = match up.last {
            Some((Ok(()), at)) => now.duration_since(at) >= PROBE_WHEN_QUIET,
            _ => true,
        };
        let due = up
            .probed_at
            .is_none_or(|at| now.duration_since(at) >= PROBE_INTERVAL);
        if stale && due {
            up.probed_at = Some(now);
            self.probe.notify_one();
        }
    }

    /// Resolves when a probe is wanted (for the server's prober).
    pub async fn probe_wanted(&self) {
        self.probe.notified().await;
    }

    /// Shutdown began: `/readiness` turns 503 for good, so the load balancer
    /// or Kubernetes stops sending before the listeners close.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// A client connection was accepted (and will be served).
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection ended. Saturates at 0 so an unpaired call cannot
    /// wrap the count and leave the proxy "full" forever.
    pub fn connection_closed(&self) {
        let _ = self
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Live client connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Started: the first identity is ready ([`Health::set_started`]) and
    /// an upstream connection has authenticated with it once.
    pub fn started(&self) -> bool {
        self.identity_ready.load(Ordering::Relaxed)
            && !self.topology_pending()
            && self
                .upstream
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .authenticated_once
    }

    /// Whether [`Health::set_draining`] was called.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether live connections reached `max_connections` (never when it is 0).
    pub fn at_capacity(&self) -> bool {
        self.max_connections > 0 && self.connections() >= self.max_connections
    }

    /// Whether the proxy should get new clients: started, not draining, not
    /// at capacity.
    pub fn ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why the proxy is not ready, as `/readiness` says it; `None` if ready.
    /// Draining comes first: a proxy shutting down during startup is going
    /// away, not coming up.
    fn not_ready_reason(&self) -> Option<Cow<'static, str>> {
        if self.draining() {
            Some("draining".into())
        } else if let Some(kind) = self.upstream_failure() {
            Some(format!("upstream failing: {kind}").into())
        } else if !self.started() {
            Some(self.starting())
        } else if self.at_capacity() {
            Some("at max connections".into())
        } else {
            None
        }
    }

    /// Why `/startup` is not 200 yet; `None` once started.
    fn startup_reason(&self) -> Option<Cow<'static, str>> {
        if self.started() {
            None
        } else if let Some(kind) = self.upstream_failure() {
            Some(format!("upstream failing: {kind}").into())
        } else {
            Some(self.starting())
        }
    }

    fn starting(&self) -> Cow<'static, str> {
        if self.topology_pending() {
            "starting: reading the cluster topology".into()
        } else {
            "starting".into()
        }
    }
}

/// What `/startup` and `/readiness` answer from: one route's [`Health`],
/// or every route's when the proxy serves several.
trait Probed {
    /// Why `/startup` is not 200 yet; `None` once started.
    fn startup_reason(&self) -> Option<Cow<'static, str>>;
    /// Why `/readiness` is not 200; `None` when ready.
    fn not_ready_reason(&self) -> Option<Cow<'static, str>>;
}

impl Probed for Health {
    fn startup_reason(&self) -> Option<Cow<'static, str>> {
        Health::startup_reason(self)
    }
    fn not_ready_reason(&self) -> Option<Cow<'static, str>> {
        Health::not_ready_reason(self)
    }
}

/// One route as the admin endpoints see it: its health and its metrics.
#[derive(Clone)]
pub struct Served {
    /// The route's name; `None` when it is the only one.
    pub route: Option<String>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

/// Every route: started (ready) only when each is, and the reason names
/// each route that is not.
impl Probed for [Served] {
    fn startup_reason(&self) -> Option<Cow<'static, str>> {
        every_route(self, Health::startup_reason)
    }
    fn not_ready_reason(&self) -> Option<Cow<'static, str>> {
        every_route(self, Health::not_ready_reason)
    }
}

fn every_route(
    all: &[Served],
    reason: fn(&Health) -> Option<Cow<'static, str>>,
) -> Option<Cow<'static, str>> {
    if let [one] = all {
        return reason(&one.health);
    }
    let not: Vec<String> = all
        .iter()
        .filter_map(|s| {
            let name = s.route.as_deref().unwrap_or("default");
            Some(format!("route `{name}`: {}", reason(&s.health)?))
        })
        .collect();
    (!not.is_empty()).then(|| not.join("; ").into())
}

/// What the handler does beyond sending the routed status and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Nothing: the body is the routed text.
    None,
    /// The body is the rendered metrics, with the Prometheus content type.
    Metrics,
    /// Notify the quit [`Notify`].
    Quit,
}

/// The routing decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    status: StatusCode,
    /// Body text (ignored for [`Action::Metrics`]).
    body: Cow<'static, str>,
    /// The `Allow` header for 405 responses.
    allow: Option<&'static str>,
    action: Action,
}

impl Route {
    fn new(status: StatusCode, body: impl Into<Cow<'static, str>>, action: Action) -> Route {
        Route {
            status,
            body: body.into(),
            allow: None,
            action,
        }
    }

    fn method_not_allowed(allow: &'static str) -> Route {
        Route {
            status: StatusCode::METHOD_NOT_ALLOWED,
            body: "method not allowed".into(),
            allow: Some(allow),
            action: Action::None,
        }
    }
}

/// Decides the response to `method path` from a peer, given the health.
/// Pure, so the whole table is unit-tested; the handler only does I/O.
/// HEAD is routed like GET (hyper sends the headers without the body).
fn route<H: Probed + ?Sized>(
    method: &Method,
    path: &str,
    peer_is_loopback: bool,
    health: &H,
) -> Route {
    const GET_HEAD: &str = "GET, HEAD";
    let get = *method == Method::GET || *method == Method::HEAD;
    let ok = |body: &'static str| Route::new(StatusCode::OK, body, Action::None);
    let unavailable =
        |body: Cow<'static, str>| Route::new(StatusCode::SERVICE_UNAVAILABLE, body, Action::None);
    match path {
        "/metrics" | "/startup" | "/readiness" | "/liveness" if !get => {
            Route::method_not_allowed(GET_HEAD)
        }
        "/metrics" => Route::new(StatusCode::OK, "", Action::Metrics),
        "/startup" => match health.startup_reason() {
            None => ok("ok"),
            Some(reason) => unavailable(reason),
        },
        "/readiness" => match health.not_ready_reason() {
            None => ok("ok"),
            Some(reason) => unavailable(reason),
        },
        // Answering at all is the proof of life.
        "/liveness" => ok("ok"),
        "/quitquitquit" if *method != Method::POST => Route::method_not_allowed("POST"),
        // Anyone who can reach the port could otherwise stop the proxy; only
        // the pod's own containers (or the host) may.
        "/quitquitquit" if !peer_is_loopback => Route::new(
            StatusCode::FORBIDDEN,
            "forbidden: /quitquitquit accepts only loopback peers",
            Action::None,
        ),
        "/quitquitquit" => Route::new(StatusCode::OK, "shutting down", Action::Quit),
        _ => Route::new(StatusCode::NOT_FOUND, "not found", Action::None),
    }
}

/// Whether `addr` is a loopback address, including IPv4-mapped IPv6
/// (`::ffff:127.0.0.1`, what a dual-stack `[::]` listener reports).
fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Bounds on what admin clients can hold.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// A connection must send a complete request head within this, including
    /// the idle wait between keep-alive requests.
    header_read_timeout: Duration,
    /// Request head size; more is answered 431.
    max_header_size: usize,
    /// Admin connections served at once; more are closed on accept.
    max_connections: usize,
    /// A connection is asked to close after this long (finishing its current
    /// response), so a peer that never stops cannot hold it forever.
    max_connection_age: Duration,
    /// How long a connection asked to close may take to finish its response.
    close_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_size: 16 * 1024,
            max_connections: 64,
            max_connection_age: Duration::from_secs(300),
            close_grace: Duration::from_secs(5),
        }
    }
}

/// A bound admin HTTP server, ready to [`run`](Admin::run).
pub struct Admin {
    listener: TcpListener,
    local_addr: SocketAddr,
    limits: Limits,
}

impl Admin {
    /// Binds the admin listener on `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Admin> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Admin {
            listener,
            local_addr,
            limits: Limits::default(),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, asks open
    /// connections to finish their current response and waits up to a short
    /// grace for them. `quit` is notified (`notify_one`, so a request made
    /// before anyone awaits is not lost) by an accepted `POST /quitquitquit`.
    pub async fn run(
        self,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        quit: Arc<Notify>,
        shutdown: impl Future<Output = ()>,
    ) {
        let served = Served {
            route: None,
            health,
            metrics,
        };
        self.run_routes(vec![served], quit, shutdown).await
    }

    /// Like [`Admin::run`] for a proxy serving several routes: `/metrics`
    /// renders every route's metrics, `/startup` and `/readiness` are 200
    /// only when every route is started (ready).
    pub async fn run_routes(
        self,
        served: Vec<Served>,
        quit: Arc<Notify>,
        shutdown: impl Future<Output = ()>,
    ) {
        let Admin {
            listener,
            local_addr,
            limits,
        } = self;
        info!(listen = %local_addr, "admin server ready");
        let state = Arc::new(State { served, quit });
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        // Flipped once at shutdown; every connection task watches it.
        let (closing_tx, closing_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let mut backoff = Duration::from_millis(5);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => {
                        backoff = Duration::from_millis(5);
                        a
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: never fatal.
                        warn!(error = %e, retry_in = ?backoff, "admin accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
                // Reap finished connections so the set stays as small as the live ones.
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                debug!(%peer, "admin connection refused: too many open");
                continue;
            };
            let state = state.clone();
            let closing = closing_rx.clone();
            conns.spawn(
                serve(stream, peer, state, limits, closing, permit)
                    .instrument(info_span!("admin", peer = %peer)),
            );
        }
        drop(listener);
        // No receiver left only means no connection is open.
        let _ = closing_tx.send(true);
        let finished = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(limits.close_grace, finished)
            .await
            .is_err()
        {
            debug!(open = conns.len(), "closing admin connections still open");
        }
        // Dropping the set aborts whatever is left.
        drop(conns);
        info!("admin server stopped");
    }
}

/// What request handlers share.
struct State {
    served: Vec<Served>,
    quit: Arc<Notify>,
}

/// Serves one admin connection until the peer closes it, it errs, it reaches
/// its maximum age, or the server shuts down.
async fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let loopback = is_loopback(peer);
    let service = service_fn(move |req: Request<Incoming>| {
        let res = respond(&req, loopback, &state);
        async move { Ok::<_, Infallible>(res) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_size);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = closing.wait_for(|closing| *closing) => None,
        () = tokio::time::sleep(limits.max_connection_age) => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            // Finish the response in flight (an idle connection closes now).
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.close_grace, conn).await {
                Ok(r) => r,
                Err(_) => {
                    debug!("admin connection did not finish in time; closing");
                    return;
                }
            }
        }
    };
    // Bad requests, header timeouts and resets are the peer's problem, not
    // the proxy's: note them quietly.
    if let Err(e) = result {
        debug!(error = %e, "admin connection ended with an error");
    }
}

/// Builds the response for one request and performs its action.
fn respond(
    req: &Request<Incoming>,
    peer_is_loopback: bool,
    state: &State,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == "/startup" || path == "/readiness" {
        // The answer is what is known now; a probe, if one is due, runs
        // on its own and updates it for the next request.
        for served in &state.served {
            served.health.want_probe();
        }
    }
    let route = route(req.method(), path, peer_is_loopback, &*state.served);
    let (body, content_type) = match route.action {
        Action::Metrics => {
            let all = state.served.iter().map(|s| &*s.metrics);
            (Bytes::from(metrics::render_all(all)), METRICS_CONTENT_TYPE)
        }
        Action::Quit => {
            info!("shutdown requested through /quitquitquit");
            state.quit.notify_one();
            (Bytes::from(route.body.into_owned()), TEXT_CONTENT_TYPE)
        }
        Action::None => (Bytes::from(route.body.into_owned()), TEXT_CONTENT_TYPE),
    };
    if route.status == StatusCode::FORBIDDEN {
        warn!(
            path = req.uri().path(),
            "refused admin request from a non-loopback peer"
        );
    }
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = route.status;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(allow) = route.allow {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A health in each interesting state.
    fn health(started: bool, draining: bool, open: usize, max: usize) -> Health {
        let h = Health::new(max);
        if started {
            h.set_started();
            h.record_upstream(Ok(()));
        }
        if draining {
            h.set_draining();
        }
        for _ in 0..open {
            h.connection_opened();
        }
        h
    }

    #[test]
    fn health_states() {
        // (started, draining, open, max) → (ready, at_capacity)
        let table = [
            ((false, false, 0, 0), (false, false)),
            ((true, false, 0, 0), (true, false)),
            ((true, false, 1000, 0), (true, false)),
            ((true, false, 1, 2), (true, false)),
            ((true, false, 2, 2), (false, true)),
            ((true, false, 3, 2), (false, true)),
            ((true, true, 0, 0), (false, false)),
            ((false, true, 0, 0), (false, false)),
        ];
        for ((started, draining, open, max), (ready, full)) in table {
            let h = health(started, draining, open, max);
            let case = (started, draining, open, max);
            assert_eq!(h.ready(), ready, "ready {case:?}");
            assert_eq!(h.at_capacity(), full, "at_capacity {case:?}");
            assert_eq!(h.started(), started);
            assert_eq!(h.draining(), draining);
        }
    }

    #[test]
    fn the_upstream_decides_startup_and_readiness() {
        let h = Health::new(0);
        h.set_started();
        // The identity alone does not start it: no AUTH has worked yet.
        assert!(!h.started());
        assert_eq!(h.startup_reason().as_deref(), Some("starting"));
        h.record_upstream(Err("auth_rejected"));
        assert_eq!(
            h.startup_reason().as_deref(),
            Some("upstream failing: auth_rejected")
        );
        assert_eq!(
            h.not_ready_reason().as_deref(),
            Some("upstream failing: auth_rejected")
        );
        h.record_upstream(Ok(()));
        assert!(h.started() && h.ready());
        // Started stays started; readiness follows the upstream.
        h.record_upstream(Err("connect"));
        assert!(h.started());
        assert_eq!(
            h.not_ready_reason().as_deref(),
            Some("upstream failing: connect")
        );
        h.record_upstream(Ok(()));
        assert!(h.ready());
    }

    #[test]
    fn probes_are_wanted_at_a_bounded_rate_and_only_when_needed() {
        let h = Health::new(0);
        let wanted = |h: &Health| {
            h.want_probe();
            // `notify_one` stores one permit: take it, if it was given.
            let fut = h.probe_wanted();
            futures_now(fut)
        };
        // No identity yet: nothing to probe with.
        assert!(!wanted(&h));
        h.set_started();
        assert!(wanted(&h), "nothing known yet");
        assert!(!wanted(&h), "again at once: rate-limited");
        h.upstream.lock().unwrap().probed_at = Some(Instant::now() - PROBE_INTERVAL);
        assert!(wanted(&h), "failed or unknown, after the interval");
        h.record_upstream(Ok(()));
        h.upstream.lock().unwrap().probed_at = Some(Instant::now() - PROBE_INTERVAL);
        assert!(!wanted(&h), "a fresh success needs no probe");
        h.set_draining();
        h.record_upstream(Err("connect"));
        h.upstream.lock().unwrap().probed_at = Some(Instant::now() - PROBE_INTERVAL);
        assert!(!wanted(&h), "no probes while draining");
    }

    /// Whether `fut` is ready at its first poll.
    fn futures_now(fut: impl Future<Output = ()>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(fut);
        fut.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn connection_count_saturates_at_zero() {
        let h = Health::new(1);
        h.connection_closed();
        assert_eq!(h.connections(), 0);
        h.connection_opened();
        assert!(h.at_capacity());
        h.connection_closed();
        h.connection_closed();
        assert_eq!(h.connections(), 0);
        assert!(!h.at_capacity());
    }

    #[test]
    fn routes() {
        use Action::{Metrics as M, None as N, Quit as Q};
        const NA: &str = "method not allowed";
        // Whether the peer is on loopback.
        const LO: bool = true;
        const FAR: bool = false;
        let (get, head, post, put) = (Method::GET, Method::HEAD, Method::POST, Method::PUT);
        let new = health(false, false, 0, 0);
        let up = health(true, false, 0, 0);
        let full = health(true, false, 1, 1);
        let drain = health(true, true, 0, 0);
        let forbidden = "forbidden: /quitquitquit accepts only loopback peers";
        // (method, path, peer, health) → (status, body, action); the `Allow`
        // header is checked from the path below.
        let table = [
            (&get, "/metrics", LO, &new, 200, "", M),
            (&head, "/metrics", FAR, &new, 200, "", M),
            (&post, "/metrics", LO, &up, 405, NA, N),
            (&get, "/startup", LO, &new, 503, "starting", N),
            (&get, "/startup", LO, &up, 200, "ok", N),
            (&get, "/startup", LO, &drain, 200, "ok", N),
            (&head, "/startup", LO, &up, 200, "ok", N),
            (&get, "/readiness", LO, &new, 503, "starting", N),
            (&get, "/readiness", LO, &up, 200, "ok", N),
            (&get, "/readiness", LO, &full, 503, "at max connections", N),
            (&get, "/readiness", LO, &drain, 503, "draining", N),
            (&head, "/readiness", LO, &drain, 503, "draining", N),
            (&put, "/readiness", LO, &up, 405, NA, N),
            (&get, "/liveness", LO, &new, 200, "ok", N),
            (&get, "/liveness", FAR, &drain, 200, "ok", N),
            (&post, "/liveness", LO, &up, 405, NA, N),
            (&post, "/quitquitquit", LO, &up, 200, "shutting down", Q),
            (&post, "/quitquitquit", LO, &new, 200, "shutting down", Q),
            (&post, "/quitquitquit", FAR, &up, 403, forbidden, N),
            (&get, "/quitquitquit", LO, &up, 405, NA, N),
            (&head, "/quitquitquit", LO, &up, 405, NA, N),
            // The method is checked before the peer.
            (&get, "/quitquitquit", FAR, &up, 405, NA, N),
            (&get, "/", LO, &up, 404, "not found", N),
            (&get, "/nope", LO, &up, 404, "not found", N),
            (&get, "/metrics/", LO, &up, 404, "not found", N),
            (&post, "/nope", LO, &up, 404, "not found", N),
            (&get, "*", LO, &up, 404, "not found", N),
        ];
        for (method, path, loopback, h, status, body, action) in table {
            let allow = match (status, path) {
                (405, "/quitquitquit") => Some("POST"),
                (405, _) => Some("GET, HEAD"),
                _ => None,
            };
            let want = Route {
                status: StatusCode::from_u16(status).expect("table statuses are valid"),
                body: body.into(),
                allow,
                action,
            };
            let got = route(method, path, loopback, h);
            assert_eq!(got, want, "{method} {path} loopback={loopback}");
        }
    }

    #[test]
    fn several_routes_are_started_and_ready_only_when_each_is() {
        let served = |name: &str, h: Health| Served {
            route: Some(name.into()),
            health: Arc::new(h),
            metrics: Arc::new(Metrics::for_route(Some(name))),
        };
        let get = Method::GET;
        let answer = |all: &[Served], path: &str| {
            let r = route(&get, path, true, all);
            (r.status.as_u16(), r.body.into_owned())
        };
        let up = || health(true, false, 0, 0);
        let both = [served("default", up()), served("reader", up())];
        assert_eq!(answer(&both, "/startup"), (200, "ok".into()));
        assert_eq!(answer(&both, "/readiness"), (200, "ok".into()));
        // The body names the routes that are not, and only those.
        let one_down = [
            served("default", up()),
            served("reader", health(false, false, 0, 0)),
        ];
        assert_eq!(
            answer(&one_down, "/startup"),
            (503, "route `reader`: starting".into())
        );
        let full = [
            served("default", health(true, false, 1, 1)),
            served("reader", health(true, true, 0, 0)),
        ];
        assert_eq!(answer(&full, "/startup"), (200, "ok".into()));
        assert_eq!(
            answer(&full, "/readiness"),
            (
                503,
                "route `default`: at max connections; route `reader`: draining".into()
            )
        );
    }

    #[test]
    fn loopback_peers() {
        let table = [
            ("127.0.0.1:1", true),
            ("127.8.9.10:1", true),
            ("[::1]:1", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("10.0.0.1:1", false),
            ("0.0.0.0:1", false),
            ("[::ffff:10.0.0.1]:1", false),
            ("[fe80::1]:1", false),
        ];
        for (addr, want) in table {
            let addr: SocketAddr = addr.parse().expect("table addresses are valid");
            assert_eq!(is_loopback(addr), want, "{addr}");
        }
    }

    /// Binds with `limits` and runs until the returned sender is dropped or fires.
    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let mut admin = Admin::bind("127.0.0.1:0".parse().expect("valid address"))
            .await
            .expect("bind admin");
        admin.limits = limits;
        let addr = admin.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(admin.run(
            Arc::new(Health::new(0)),
            Arc::new(Metrics::new()),
            Arc::new(Notify::new()),
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, stop)
    }

    /// Reads until the peer closes, within a deadline; returns what was read.
    async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("server closed the connection in time")
            .expect("read");
        buf
    }

    #[tokio::test]
    async fn slow_request_head_is_cut_off() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /liveness HTTP/1.1\r\nHost: a\r\n")
            .await
            .expect("write");
        // The head never completes: the server must close, not wait forever.
        let reply = read_until_closed(&mut s).await;
        assert!(!String::from_utf8_lossy(&reply).contains("200 OK"));
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed() {
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        // Holds the only slot (idle keep-alive connection).
        let mut first = tokio::net::TcpStream::connect(addr).await.expect("connect");
        first
            .write_all(b"GET /liveness HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = first.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let mut second = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(read_until_closed(&mut second).await.is_empty());
    }

    #[tokio::test]
    async fn oversized_request_head_is_refused() {
        let (addr, _stop) = start(Limits::default()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let big = format!(
            "GET /liveness HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        // The server may close before taking it all, and closing with unread
        // bytes may reset the connection before its 431 is read: either way
        // it must not serve the request.
        let _ = s.write_all(big.as_bytes()).await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("server closed the connection in time");
        let reply = String::from_utf8_lossy(&buf);
        assert!(
            read.is_err() || reply.starts_with("HTTP/1.1 431"),
            "{reply}"
        );
        // And it still serves the next client.
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /liveness HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let reply = read_until_closed(&mut s).await;
        assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    }
}
