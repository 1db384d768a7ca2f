//! One client connection relayed over one authenticated upstream connection
//! (invariant 1). Owns the byte relay, the few commands the proxy answers or
//! rewrites, and the reply ledger; knows nothing of listeners or TLS setup.
//!
//! Bytes are forwarded as read. The scanners find frame boundaries; only the
//! frames the proxy owns are cut out (the client's AUTH, the replies to the
//! proxy's own AUTH) or rewritten (HELLO's AUTH clause, inline commands). A
//! frame larger than [`STREAM_THRESHOLD`] is forwarded piece by piece while
//! it arrives, so a 100 MB value never sits whole in the proxy.

// Also built for the unit tests below, which need a session's context.
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
mod gate;
pub mod ledger;
mod open;
pub mod pool;
mod read;
mod reauth;
pub(crate) use open::is_throttle;
pub mod refuse;
pub use read::{Client, Ready};

use std::{
    collections::VecDeque,
    future::poll_fn,
    io::{self, IoSlice},
    pin::Pin,
    sync::Arc,
    task::{ready, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use crate::{
    auth::{self, Method},
    cluster,
    error::{Error, Kind},
    resp::{self, command, inline, Class, Scanner, Side},
    upstream::{Connector, Stream},
};
use ledger::{Answer, Done, Ledger, Pending, Rewrite, Route};
use open::open;
use read::Sizing;
use reauth::{InFlight, Purpose};

/// A partial frame this large is forwarded as it arrives instead of held.
pub const STREAM_THRESHOLD: usize = 64 * 1024;
/// Stop reading a side while this much is queued for the other.
const HIGH_WATER: usize = 256 * 1024;
/// The largest read per call, reached while reads keep filling the buffer.
const READ_CHUNK: usize = 64 * 1024;
/// The first read, and the read buffer of a session between bursts: small,
/// so an idle session holds little (see [`Sizing`]).
const SMALL_CHUNK: usize = 4 * 1024;
/// Commands the proxy must see whole (AUTH, HELLO, CLIENT) are capped here.
const MAX_HELD_COMMAND: usize = 1024 * 1024;
/// Sent upstream in place of a command the proxy answers itself; see
/// [`Pending::Local`].
const STANDIN: &[u8] = b"*1\r\n$4\r\nPING\r\n";
/// Redis's replies to a client that has not authenticated (with
/// `--client-password-*` set) and to a wrong password.
const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
const NOAUTH_HELLO: &[u8] = b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n";
const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const RESET: &[u8] = b"+RESET\r\n";
/// A closing session gets this long to deliver its last bytes.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long after it grew room a session's queues (the two write queues,
/// the ledger, the in-flight re-auths) keep it: one check a second while
/// busy, and an idle session gives its room back once.
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// What every session shares.
pub struct Context {
    pub connector: Connector,
    pub auth: auth::Provider,
    pub limits: Limits,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Every client must AUTH with this first (`--client-password-*`).
    pub client_password: Option<crate::auth::Secret>,
    /// Turns true when the proxy starts draining.
    pub drain: tokio::sync::watch::Receiver<bool>,
    /// Where each upstream authentication's outcome is recorded for
    /// `/startup` and `/readiness`.
    pub health: Arc<crate::admin::Health>,
    /// Cluster mode's node map; `None` for a single endpoint.
    pub cluster: Option<Arc<cluster::Topology>>,
    /// The route's name for the audit log; `None` with only one route.
    pub route: Option<String>,
    /// The main listener's warm pool of ready upstream connections
    /// (`--pool-size`); `None` when off. Each cluster node listener has its
    /// own, made from this one ([`pool::Pool::for_node`]).
    pub pool: Option<Arc<pool::Pool>>,
}

/// Per-session bounds (invariant 7).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest bulk string or line relayed.
    pub max_frame: u64,
    /// Commands awaiting replies before the proxy stops reading the client.
    pub max_pipeline: usize,
    /// Close a session idle this long with nothing pending (zero: never).
    pub idle_timeout: Duration,
    /// The server's limit on an IAM connection's age since its last AUTH.
    pub max_session_age: Duration,
    /// When an IAM session re-authenticates (plus up to 5% jitter).
    pub reauth_after: Duration,
}

/// Why a session ended (for the log).
#[derive(Debug)]
pub enum End {
    ClientClosed,
    Quit,
    /// The proxy gave up on the upstream; the client was told.
    Upstream(Error),
    /// The client sent malformed RESP; it was told.
    ClientProtocol,
    Idle,
    ClientIo(io::Error),
    /// The client began a TLS handshake on the plaintext listener.
    ClientTls,
    /// The proxy is shutting down and the session had nothing owed.
    Drained,
}

/// Who a session serves, for logs.
#[derive(Clone, Debug)]
pub struct Conn {
    pub id: u64,
    /// The client's address (`unix` for the Unix socket).
    pub peer: String,
    /// Cluster mode: the node whose listener accepted the client; `None`
    /// for the main listener (the configured endpoint).
    pub node: Option<Arc<cluster::Node>>,
    /// The warm pool of the listener that accepted the client, which the
    /// session takes its connection from and may hand it back to.
    pub pool: Option<Arc<pool::Pool>>,
}

impl Conn {
    /// The upstream node for logs; empty for the configured endpoint.
    pub fn node_name(&self) -> String {
        self.node.as_ref().map(|n| n.name()).unwrap_or_default()
    }
}

/// Counts the session in `upstream_connections_active{method}` while it
/// lives; dropped (session end, or a change of method) it uncounts it.
struct Live(prometheus::IntGauge);

impl Live {
    fn new(metrics: &crate::metrics::Metrics, method: Method) -> Live {
        let gauge = metrics
            .upstream_connections_active
            .with_label_values(&[method.as_str()]);
        gauge.inc();
        Live(gauge)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How long a client the proxy cannot serve gets its commands answered with
/// the reason before the proxy closes.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(10);

/// Waits for the client's first bytes, then opens and authenticates the
/// upstream connection and relays until either side closes. A client that
/// closes without sending anything (a TCP probe, a port scan) costs no
/// upstream connection and no AUTH. When the upstream cannot be opened, the
/// client's commands are answered with the reason (see [`refuse`]).
pub async fn run<C: Client>(client: C, ctx: Arc<Context>, conn: Conn) -> End {
    // The setup is a function of its own: its locals (the first read, the
    // pool's answer, the open result) then share the task's space with the
    // relay instead of adding to it, and an idle session's task stays in a
    // smaller allocator class (the session future is 2,080 bytes against
    // 2,784 with them).
    let (mut relay, client, upstream) = match start(client, ctx, conn).await {
        Ok(started) => started,
        Err(end) => return end,
    };
    let end = relay.run(client, upstream).await;
    let kept = relay.kept.take();
    let (ctx, conn) = (relay.ctx.clone(), relay.conn.clone());
    // The session's gauges go now: what follows is the pool's.
    drop(relay);
    if let Some(pool) = conn.pool.as_ref().filter(|p| p.reuses()) {
        match kept {
            // The client has gone and was owed nothing: the tail of the
            // session makes the connection fresh for the next one (boxed:
            // it is larger than anything else the task awaits).
            Some(stream) => Box::pin(pool.give_back(&ctx, &conn, stream)).await,
            // A client that left something owed, or made a protocol error.
            None if matches!(
                end,
                End::ClientClosed | End::ClientProtocol | End::ClientIo(_)
            ) && !*ctx.drain.borrow() =>
            {
                ctx.metrics
                    .pool_discards
                    .with_label_values(&["reuse_refused"])
                    .inc();
            }
            None => {}
        }
    }
    end
}

/// A session up to its relay: the first bytes, the client gate, and an
/// upstream connection (warm from the pool or opened now). A session that
/// ends before it relays returns how.
async fn start<C: Client>(
    mut client: C,
    ctx: Arc<Context>,
    conn: Conn,
) -> Result<(Relay, C, Stream), End> {
    // Taken when the first bytes are there: a client that connects and
    // waits holds no buffer either.
    let mut first = BytesMut::new();
    let mut sizing = Sizing::default();
    let idle = ctx.limits.idle_timeout;
    let mut drain = ctx.drain.clone();
    tokio::select! {
        r = poll_fn(|cx| read::poll_read(cx, &mut client, &mut first, &mut sizing)) => match r {
            Ok(0) => return Err(End::ClientClosed),
            Ok(n) => ctx.metrics.bytes.with_label_values(&["to_upstream"]).inc_by(n as u64),
            Err(e) => return Err(End::ClientIo(e)),
        },
        () = tokio::time::sleep(idle), if !idle.is_zero() => return Err(End::Idle),
        // Nothing owed, nothing sent: a draining proxy just closes.
        Ok(_) = drain.wait_for(|d| *d) => return Err(End::Drained),
    }
    if looks_like_tls(&first) {
        ctx.metrics.client_tls_refused.inc();
        warn!(
            "client spoke TLS; use redis:// (plaintext) to the proxy, which does the TLS upstream"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
        return Err(End::ClientTls);
    }
    // With a client password, only a client that knows it costs an
    // upstream connection (and an IAM authentication).
    let passed = match ctx.client_password {
        Some(_) => match Box::pin(gate::gate(&mut client, &ctx, &conn, &mut first)).await {
            Ok(passed) => Some(passed),
            Err(end) => return Err(end),
        },
        None => None,
    };
    // The rare, large futures here and in `Relay::run` (connect and TLS
    // handshake, gate, refusal, migration, raw pipe) are boxed: an async
    // fn's state is as large as its largest await, and every idle session's
    // task would carry theirs for its whole life (6.5 KB against 2.7 KB).
    let mut pending = BytesMut::new();
    let warm = match &conn.pool {
        Some(pool) => Box::pin(pool.take(&ctx)).await,
        None => None,
    };
    // A fresh connection's AUTH runs at the server after this: its session
    // age counts from here, early rather than late.
    let authed_at = warm.as_ref().map_or(Instant::now(), |w| w.authed_at);
    let opened = match warm {
        Some(w) => {
            debug!(
                conn = conn.id,
                method = w.method.as_str(),
                "took a warm pooled connection"
            );
            pending = w.rest;
            Ok((w.stream, w.method))
        }
        None => Box::pin(open_recorded(&ctx, &conn, &mut pending)).await,
    };
    let (upstream, method) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            ctx.metrics
                .upstream_errors
                .with_label_values(&[e.kind.as_str()])
                .inc();
            warn!(kind = e.kind.as_str(), side = ?e.side, detail = %e.detail, "cannot open upstream connection");
            let line = resp::error_reply(&e.client_line());
            let refusal =
                refuse::answer_with(client, first, line, REFUSAL_LINGER, ctx.limits.max_frame);
            Box::pin(refusal).await;
            return Err(End::Upstream(e));
        }
    };
    let mut relay = Relay::new(ctx, pending, method, conn);
    // Re-authentication keeps the schedule of this connection's AUTH (a
    // pooled one's, from before the client came).
    relay.authed_at = authed_at;
    if passed == Some(gate::Passed::Auth) {
        relay.set_local_authed(true);
    }
    relay.cbuf = first;
    Ok((relay, client, upstream))
}

/// Opens and authenticates one upstream connection as a session would,
/// records the outcome for the health endpoints, then closes it. Its AUTH
/// is a real one: logged (client `probe`) and counted like any other.
pub async fn probe(ctx: &Context) {
    let conn = Conn {
        id: 0,
        peer: "probe".into(),
        node: None,
        pool: None,
    };
    let mut rest = BytesMut::new();
    let opened = open_recorded(ctx, &conn, &mut rest).await;
    ctx.metrics
        .upstream_probes
        .with_label_values(&[if opened.is_ok() { "success" } else { "failure" }])
        .inc();
    match opened {
        Ok((mut stream, _)) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        }
        Err(e) => {
            warn!(kind = e.kind.as_str(), detail = %e.detail, "upstream probe failed");
        }
    }
}

/// How long a topology read waits for its reply.
const TOPOLOGY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the cluster topology through the configured endpoint on a
/// connection of its own, authenticated as sessions are (and logged as
/// client `topology`): `CLUSTER SHARDS`, or `CLUSTER SLOTS` where the
/// server does not know SHARDS (before Redis 7).
pub async fn read_topology(ctx: &Context) -> Result<(cluster::Kind, Bytes), Error> {
    let conn = Conn {
        id: 0,
        peer: "topology".into(),
        node: None,
        pool: None,
    };
    let mut rest = BytesMut::new();
    let (mut stream, _) = open_recorded(ctx, &conn, &mut rest).await?;
    let mut reply = Scanner::new(Side::Reply, ctx.limits.max_frame);
    let mut last = Bytes::new();
    for (kind, command) in [
        (
            cluster::Kind::Shards,
            &b"*2\r\n$7\r\nCLUSTER\r\n$6\r\nSHARDS\r\n"[..],
        ),
        (
            cluster::Kind::Slots,
            b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n",
        ),
    ] {
        let exchange = async {
            stream.write_all(command).await?;
            stream.flush().await?;
            read_reply(&mut stream, &mut reply, &mut rest).await
        };
        last = tokio::time::timeout(TOPOLOGY_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                Error::upstream(
                    Kind::Io,
                    format!("no reply to CLUSTER {kind:?} within {TOPOLOGY_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| Error::upstream(Kind::Io, format!("reading the topology: {e}")))?;
        if !last.starts_with(b"-") {
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
            return Ok((kind, last));
        }
    }
    Err(Error::upstream(
        Kind::Protocol,
        format!(
            "the server refused CLUSTER SHARDS and CLUSTER SLOTS ({}); is cluster mode enabled on the cache?",
            String::from_utf8_lossy(&last[..last.len().min(120)]).trim_end()
        ),
    ))
}

/// Reads one complete reply frame, starting with what `rest` holds.
pub(crate) async fn read_reply<S: AsyncRead + Unpin>(
    stream: &mut S,
    scanner: &mut Scanner,
    rest: &mut BytesMut,
) -> io::Result<Bytes> {
    let mut pos = 0;
    loop {
        if pos < rest.len() {
            let (n, done) = scanner
                .advance(&rest[pos..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
            pos += n;
            if done {
                return Ok(rest.split_to(pos).freeze());
            }
        }
        rest.reserve(READ_CHUNK);
        if stream.read_buf(rest).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The earlier of two deadlines, either of which may be unset.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Lets the room of a queue go if it is empty (see [`TRIM_AFTER`]).
fn let_go<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() {
        *queue = VecDeque::new();
    }
}

/// A TLS record carrying a ClientHello: a handshake record (0x16) of TLS
/// 1.0 to 1.3 (0x03 0x01..0x04 on the wire). No RESP command starts so.
fn looks_like_tls(first: &[u8]) -> bool {
    first.first() == Some(&0x16) && first.get(1).is_none_or(|&b| b == 0x03)
}

/// Bytes queued for one peer, written with vectored writes.
#[derive(Default)]
struct Out {
    queue: VecDeque<Bytes>,
    len: usize,
    /// Written but not yet flushed (TLS buffers records).
    dirty: bool,
}

impl Out {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.queue.push_back(b);
        }
    }

    fn busy(&self) -> bool {
        !self.queue.is_empty() || self.dirty
    }

    /// Lets an empty queue's room go.
    fn trim(&mut self) {
        let_go(&mut self.queue);
    }

    /// Writes what it can, or flushes once everything is written.
    async fn write_to<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_to(cx, w)).await
    }

    /// One write (or flush) of [`Out::write_to`]. The slices live only
    /// while it is polled, on the stack, so a session waiting to write
    /// carries none in its task.
    fn poll_write_to<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        w: &mut W,
    ) -> Poll<io::Result<()>> {
        if self.queue.is_empty() {
            ready!(Pin::new(w).poll_flush(cx))?;
            self.dirty = false;
            return Poll::Ready(Ok(()));
        }
        let mut slices = [IoSlice::new(&[]); 64];
        let mut count = 0;
        for (slot, b) in slices.iter_mut().zip(&self.queue) {
            *slot = IoSlice::new(b);
            count += 1;
        }
        let mut n = ready!(Pin::new(w).poll_write_vectored(cx, &slices[..count]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.len -= n;
        self.dirty = true;
        while n > 0 {
            // `n` never exceeds the queued bytes: a writer reports at most what it was given.
            let front = self.queue.front_mut().expect("written bytes were queued");
            if n >= front.len() {
                n -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The relay state of one session.
struct Relay {
    ctx: Arc<Context>,
    conn: Conn,
    /// When the upstream connection last authenticated.
    authed_at: Instant,
    /// The proxy's own AUTHs awaiting replies, oldest first.
    proxy_auths: VecDeque<InFlight>,
    /// When the next re-authentication is due (IAM sessions only).
    reauth_at: Option<Instant>,
    /// A re-authentication is due: sent at the next safe point.
    reauth_due: bool,
    /// The deadline before the server's cut passed without a safe point.
    reauth_deadline_passed: bool,
    /// When the current (or last) hold of client commands for a re-auth began.
    hold_since: Option<Instant>,
    /// The next re-authentication uses the password (IAM was refused).
    reauth_with_password: bool,
    bytes_up: prometheus::IntCounter,
    bytes_down: prometheus::IntCounter,
    /// How this connection authenticated; RESET and HELLO re-use it.
    /// Changed only through `set_method`, which keeps `live` in step.
    method: Method,
    live: Live,
    ledger: Ledger,
    // Client → upstream. `cbuf[..cstart]` holds complete commands to forward,
    // `cbuf[cstart..cpos]` the scanned part of the command in progress.
    req: Scanner,
    cbuf: BytesMut,
    cstart: usize,
    cpos: usize,
    /// The command in progress is being streamed; its ledger entry is in.
    cstream: bool,
    // Upstream → client, the same shape.
    rep: Scanner,
    ubuf: BytesMut,
    /// How much the next read of each side asks for.
    cread: Sizing,
    uread: Sizing,
    ustart: usize,
    upos: usize,
    uroute: Option<Route>,
    ustream: bool,
    to_up: Out,
    to_client: Out,
    /// Stop reading the client; close once every pending reply is delivered.
    close_when_settled: Option<End>,
    /// Stop reading both sides; close once `to_client` is written.
    closing: Option<End>,
    quit_sent: bool,
    /// Inside MULTI as far as the commands sent so far go (a stand-in would
    /// be queued there, so none is sent).
    send_multi: bool,
    /// No more client commands: the client closed (`ClientClosed`), or the
    /// proxy drains and the session reached a point with nothing owed
    /// (`Drained`). What was read still goes upstream, then the upstream's
    /// write side is shut and the session ends when the server closes, so
    /// the server runs everything it was sent (Redis runs what it has read;
    /// a close before it read would reset the connection).
    finishing: Option<End>,
    /// Once finishing, the upstream's write side was shut down: the
    /// server answers what it read, then closes, as it does for a direct
    /// client that half-closes.
    up_shut: bool,
    /// A SYNC/PSYNC was sent: client bytes wait until its reply shows
    /// whether the connection turns into a replication stream.
    sync_wait: bool,
    /// The SYNC/PSYNC being waited on got a RESP reply (an error).
    sync_answered: bool,
    /// The connection is a replication stream: relayed raw both ways.
    raw: bool,
    /// The proxy is draining: close at the next point with nothing owed.
    draining: bool,
    /// The client has authenticated against the local client password
    /// (always true when none is set).
    local_authed: bool,
    stray_warned: bool,
    /// Why this connection may hold state that RESET does not clear (the
    /// client ran CLIENT SETINFO, NO-EVICT or NO-TOUCH, subscribed, or
    /// replicated): it is never reused. Set when the command is sent,
    /// whatever its reply.
    tainted: Option<&'static str>,
    /// The client closed with nothing owed and the connection may go back
    /// to the warm pool: the upstream is not shut; the relay ends once what
    /// is queued for the client is written (any server byte meanwhile
    /// cancels it).
    keep_upstream: bool,
    /// The upstream connection, whole again, when the relay ended with it
    /// kept for reuse.
    kept: Option<Stream>,
}

impl Relay {
    fn new(ctx: Arc<Context>, upstream_bytes: BytesMut, method: Method, conn: Conn) -> Self {
        let max = ctx.limits.max_frame;
        let upos = 0;
        let bytes_up = ctx.metrics.bytes.with_label_values(&["to_upstream"]);
        let bytes_down = ctx.metrics.bytes.with_label_values(&["to_client"]);
        let live = Live::new(&ctx.metrics, method);
        let local_authed = ctx.client_password.is_none();
        let mut req = Scanner::new(Side::Request, max);
        req.set_unauthenticated(!local_authed);
        Relay {
            ctx,
            conn,
            authed_at: Instant::now(),
            proxy_auths: VecDeque::new(),
            reauth_at: None,
            reauth_due: false,
            reauth_deadline_passed: false,
            hold_since: None,
            reauth_with_password: false,
            bytes_up,
            bytes_down,

            method,
            live,
            ledger: Ledger::new(),
            req,
            cbuf: BytesMut::new(),
            cread: Sizing::default(),
            uread: Sizing::default(),
            cstart: 0,
            cpos: 0,
            cstream: false,
            rep: Scanner::new(Side::Reply, max),
            ubuf: upstream_bytes,
            ustart: 0,
            upos,
            uroute: None,
            ustream: false,
            to_up: Out::default(),
            to_client: Out::default(),
            close_when_settled: None,
            closing: None,
            quit_sent: false,
            send_multi: false,
            finishing: None,
            up_shut: false,
            sync_wait: false,
            sync_answered: false,
            raw: false,
            draining: false,
            local_authed,
            stray_warned: false,
            tainted: None,
            keep_upstream: false,
            kept: None,
        }
    }

    async fn run<C: Client>(&mut self, mut client: C, upstream: Stream) -> End {
        let (mut cr, mut cw) = client.halves();
        let (mut ur, mut uw) = upstream.split();
        let idle = self.ctx.limits.idle_timeout;
        // One timer serves every deadline: the idle timeout, the end of a
        // re-auth hold window, the re-auth itself and the close grace. Each
        // is kept as an instant and the timer is set to the earliest that
        // is armed (a timer is 112 bytes of every idle session's task).
        let timer = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(timer);
        let mut timer_at: Option<Instant> = None;
        let mut idle_at = (!idle.is_zero()).then(|| Instant::now() + idle);
        // Set once the session starts closing: a peer that stops reading
        // cannot hold it open.
        let mut close_at: Option<Instant> = None;
        // Set while a queue holds room: when to let what is empty go.
        let mut trim_at: Option<Instant> = None;
        // Sets `reauth_at` (IAM sessions).
        self.schedule_reauth();
        let mut drain = self.ctx.drain.clone();
        // The relay ended with the connection kept for the warm pool.
        let mut reuse = false;
        if !self.ubuf.is_empty() {
            if let Err(e) = self.on_upstream_bytes() {
                self.fail(e);
            }
        }
        if !self.cbuf.is_empty() {
            self.on_client_bytes();
        }
        let end = loop {
            if self.raw {
                break Box::pin(self.pipe(&mut cr, &mut cw, &mut ur, &mut uw)).await;
            }
            if self.close_when_settled.is_some() && self.ledger.is_empty() && !self.ustream {
                self.closing = self.close_when_settled.take();
            }
            if self.closing.is_none()
                && self.finishing.is_none()
                && self.draining
                && self.settled_with_nothing_owed()
                && self.drain_point_ahead()
            {
                debug!("draining: closing at a point with nothing owed");
                self.finishing = Some(End::Drained);
            }
            if self.closing.is_some() && !self.to_client.busy() {
                break self.closing.take().expect("checked just above");
            }
            if self.keep_upstream && self.closing.is_none() && !self.to_client.busy() {
                // Everything the client was owed is written: the connection
                // is as the client left it, unless something changed since.
                if self.ubuf.is_empty() && self.reuse_refusal().is_none() {
                    reuse = true;
                    break End::ClientClosed;
                }
                self.keep_upstream = false;
            }
            if self.finishing.is_some()
                && !self.up_shut
                && !self.keep_upstream
                && !self.to_up.busy()
                && self.closing.is_none()
            {
                // Let the server see the EOF too; it closes once it has run
                // (and answered) what it read.
                self.up_shut = true;
                let _ = tokio::time::timeout(Duration::from_secs(1), uw.shutdown()).await;
            }
            if close_at.is_none() && (self.closing.is_some() || self.finishing.is_some()) {
                close_at = Some(Instant::now() + CLOSE_GRACE);
            }
            self.try_reauth();
            if self.wants_migration() {
                match Box::pin(self.migrate(&mut ur, &mut uw, &mut cw)).await {
                    Ok(Some((new_r, new_w))) => {
                        let mut old_w = std::mem::replace(&mut uw, new_w);
                        ur = new_r;
                        // Retire the old connection (TLS close_notify, bounded).
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), old_w.shutdown()).await;
                    }
                    Ok(None) => {}
                    Err(end) => break end,
                }
                continue;
            }
            let read_client = self.reads_client();
            let read_up = self.reads_upstream();
            let idle_armed =
                !idle.is_zero() && self.ledger.is_empty() && self.ledger.state().subs.is_empty();
            if trim_at.is_none() && self.has_spare() {
                trim_at = Some(Instant::now() + TRIM_AFTER);
            }
            // The hold window's end only wakes the relay: client commands
            // flow again.
            let mut next = earliest(self.reauth_at, close_at);
            next = earliest(next, trim_at);
            if idle_armed {
                next = earliest(next, idle_at);
            }
            next = earliest(next, self.hold_ends());
            // Only ever moved earlier: a deadline that moved later (the
            // idle timeout after each read) is met by firing early, finding
            // nothing due and setting the timer again.
            if let Some(at) = next.filter(|&at| timer_at.is_none_or(|armed| at < armed)) {
                timer_at = next;
                timer.as_mut().reset(at.into());
            }
            tokio::select! {
                biased;
                r = self.to_client.write_to(&mut cw), if self.to_client.busy() => {
                    if let Err(e) = r {
                        break End::ClientIo(e);
                    }
                }
                r = self.to_up.write_to(&mut uw), if self.to_up.busy() && self.closing.is_none() && !self.up_shut => {
                    if let Err(e) = r {
                        self.fail(Error::upstream(Kind::Io, format!("write: {e}")));
                    } else if self.finishing.is_some() {
                        // The server is still taking commands: not stuck.
                        close_at = Some(Instant::now() + CLOSE_GRACE);
                    }
                }
                r = poll_fn(|cx| read::poll_read(cx, &mut ur, &mut self.ubuf, &mut self.uread)), if read_up => {
                    match r {
                        Ok(0) => self.upstream_closed(),
                        Ok(n) => {
                            self.bytes_down.inc_by(n as u64);
                            // Nothing was asked of the server after the
                            // client left: a byte from it is a doubt.
                            self.keep_upstream = false;
                            if self.finishing.is_some() {
                                // Still delivering owed replies: not stuck.
                                close_at = Some(Instant::now() + CLOSE_GRACE);
                            }
                            if let Err(e) = self.on_upstream_bytes() {
                                self.fail(e);
                            }
                        }
                        // A TCP close without TLS close_notify: still a close.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.upstream_closed(),
                        Err(e) => self.fail(Error::upstream(Kind::Io, format!("read: {e}"))),
                    }
                }
                r = poll_fn(|cx| read::poll_read(cx, &mut cr, &mut self.cbuf, &mut self.cread)), if read_client => {
                    match r {
                        // Like Redis: a client that closes gets no more
                        // replies, but what it sent is still run.
                        Ok(0) => {
                            self.finishing = Some(End::ClientClosed);
                            self.keep_upstream = self.wants_reuse();
                        }
                        Ok(n) => {
                            self.bytes_up.inc_by(n as u64);
                            if !idle.is_zero() {
                                idle_at = Some(Instant::now() + idle);
                            }
                            self.on_client_bytes();
                        }
                        Err(e) => break End::ClientIo(e),
                    }
                }
                () = &mut timer, if timer_at.is_some() => {
                    // A timer never fires before its instant. Every
                    // deadline that passed is acted on (or, for a hold
                    // window, is over) and no longer armed; one that moved
                    // later is set again above.
                    timer_at = None;
                    let now = Instant::now();
                    let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
                    if idle_armed && due(idle_at) {
                        break End::Idle;
                    }
                    if due(self.reauth_at) {
                        self.reauth_timer_fired();
                    }
                    if due(trim_at) {
                        // A queue still in use keeps its room and is
                        // looked at again in a second.
                        trim_at = None;
                        self.trim();
                    }
                    if due(close_at) {
                        break self
                            .closing
                            .take()
                            .or_else(|| self.finishing.take())
                            .unwrap_or(End::ClientClosed);
                    }
                }
                Ok(r) = drain.wait_for(|d| *d), if !self.draining => {
                    drop(r);
                    self.draining = true;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), cw.shutdown()).await;
        if reuse {
            // Both halves come from the one split of the current stream
            // (a migration replaces both), so they join again.
            self.kept = ur.unsplit(uw);
        } else {
            let _ = tokio::time::timeout(Duration::from_secs(1), uw.shutdown()).await;
        }
        end
    }

    /// Whether this session's connection goes back to the warm pool now
    /// that its client closed: its listener's pool reuses, the proxy is not
    /// draining, and nothing is owed or left behind.
    fn wants_reuse(&self) -> bool {
        if !self.conn.pool.as_ref().is_some_and(|p| p.reuses()) || *self.ctx.drain.borrow() {
            return false;
        }
        match self.reuse_refusal() {
            None => true,
            Some(why) => {
                debug!(conn = self.conn.id, why, "connection not reused");
                false
            }
        }
    }

    /// Why the connection cannot be reused as it stands; `None`: the client
    /// left it with nothing owed and in a state RESET fully clears. Any
    /// doubt refuses.
    fn reuse_refusal(&self) -> Option<&'static str> {
        let st = self.ledger.state();
        if let Some(why) = self.tainted {
            Some(why)
        } else if !self.ledger.is_empty() || !self.proxy_auths.is_empty() {
            // A reply outstanding: a pipeline, a blocked command, a re-auth.
            Some("reply_outstanding")
        } else if self.cstream || self.ustream || !self.cbuf.is_empty() || self.to_up.busy() {
            Some("partial_frame")
        } else if self.raw
            || self.sync_wait
            || self.quit_sent
            || self.closing.is_some()
            || self.close_when_settled.is_some()
        {
            Some("closing")
        } else if st.multi || self.send_multi {
            Some("multi")
        } else if st.monitor {
            Some("monitor")
        } else if !st.subs.is_empty() {
            Some("subscribed")
        } else if st.reply != resp::ReplyMode::On {
            Some("reply_off")
        } else {
            None
        }
    }

    /// Whether the relay takes more client commands now. Stopped while the
    /// session closes, finishes, waits on a SYNC or a re-auth safe point,
    /// or has a full queue upstream or a full pipeline (invariant 7).
    fn reads_client(&self) -> bool {
        self.closing.is_none()
            && self.finishing.is_none()
            && self.close_when_settled.is_none()
            && !self.sync_wait
            && (!self.draining || !self.drain_point_ahead())
            && !self.holding_for_reauth()
            && self.to_up.len < HIGH_WATER
            && self.ledger.len() < self.ctx.limits.max_pipeline
    }

    /// Whether the relay takes more server bytes now: not once closing, nor
    /// while the client is slow to take what is queued for it.
    fn reads_upstream(&self) -> bool {
        self.closing.is_none() && self.to_client.len < HIGH_WATER
    }

    /// A queue holds room (see [`TRIM_AFTER`]).
    fn has_spare(&self) -> bool {
        self.to_client.queue.capacity() > 0
            || self.to_up.queue.capacity() > 0
            || self.proxy_auths.capacity() > 0
            || self.ledger.has_spare()
    }

    /// Lets the room of every empty queue go: an idle session holds about
    /// 450 bytes less (measured with heaptrack; `benches/memory.sh`).
    fn trim(&mut self) {
        self.to_client.trim();
        self.to_up.trim();
        let_go(&mut self.proxy_auths);
        self.ledger.trim();
    }

    /// Every reply owed has been delivered or queued, and nothing is half
    /// relayed in either direction.
    fn settled_with_nothing_owed(&self) -> bool {
        self.ledger.is_empty()
            && !self.ustream
            && !self.cstream
            && !self.sync_wait
            && !self.to_up.busy()
    }

    /// Draining closes a session once nothing is owed, unless its state
    /// outlives single commands (MULTI, subscribed, MONITOR): those keep the
    /// drain deadline. No new command is read while this holds.
    fn drain_point_ahead(&self) -> bool {
        let st = self.ledger.state();
        self.cbuf.is_empty() && !self.cstream && !st.multi && !st.monitor && st.subs.is_empty()
    }

    /// A replication stream (after SYNC/PSYNC): what is queued goes out,
    /// then bytes are copied both ways unparsed until both sides close.
    async fn pipe<CR, CW, UR, UW>(
        &mut self,
        cr: &mut CR,
        cw: &mut CW,
        ur: &mut UR,
        uw: &mut UW,
    ) -> End
    where
        CR: AsyncRead + Unpin,
        CW: AsyncWrite + Unpin,
        UR: AsyncRead + Unpin,
        UW: AsyncWrite + Unpin,
    {
        debug!(conn = self.conn.id, "replication stream: relaying raw");
        let (to_client, to_up) = (&mut self.to_client, &mut self.to_up);
        let flushed = tokio::try_join!(
            async {
                while to_client.busy() {
                    to_client.write_to(cw).await?;
                }
                Ok::<_, io::Error>(())
            },
            async {
                while to_up.busy() {
                    to_up.write_to(uw).await?;
                }
                Ok::<_, io::Error>(())
            },
        );
        if let Err(e) = flushed {
            return End::ClientIo(e);
        }
        let mut client = tokio::io::join(cr, cw);
        let mut upstream = tokio::io::join(ur, uw);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                self.bytes_up.inc_by(up);
                self.bytes_down.inc_by(down);
                End::ClientClosed
            }
            Err(e) => End::ClientIo(e),
        }
    }

    // ---- client → upstream ----

    fn on_client_bytes(&mut self) {
        while self.cpos < self.cbuf.len() && self.close_when_settled.is_none() && !self.sync_wait {
            let (n, done) = match self.req.advance(&self.cbuf[self.cpos..]) {
                Ok(step) => step,
                Err(e) => {
                    // Still forward and settle below: the commands before
                    // the bad bytes get their replies first.
                    self.client_protocol_error(e.0);
                    break;
                }
            };
            self.cpos += n;
            if !done {
                self.stream_command();
                break;
            }
            self.on_command();
        }
        self.forward_commands();
        self.settle();
        self.after_sync();
    }

    /// Moves the complete commands scanned so far to the upstream queue.
    fn forward_commands(&mut self) {
        if self.cstart > 0 {
            self.to_up.push(self.cbuf.split_to(self.cstart).freeze());
            self.cpos -= self.cstart;
            self.cstart = 0;
        }
    }

    /// Drops the command in progress (`cbuf[cstart..cpos]`) from the stream.
    fn cut_command(&mut self) {
        self.forward_commands();
        self.cbuf.advance(self.cpos);
        self.cpos = 0;
    }

    /// A command has been scanned completely: `cbuf[cstart..cpos]`.
    fn on_command(&mut self) {
        if self.cstream {
            // Its ledger entry went in when streaming began.
            self.cstream = false;
            self.cstart = self.cpos;
            return;
        }
        let head = self.req.head();
        if head.inline {
            let line = &self.cbuf[self.cstart..self.cpos];
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(args) = inline::split(line) else {
                return self
                    .client_protocol_error("Protocol error: unbalanced quotes in request".into());
            };
            if args.is_empty() {
                return self.empty_command();
            }
            self.cut_command();
            if let Some(name) = args.first() {
                let class = resp::command::classify(name, args.len() as u64);
                if let Some(answer) = self.unauthenticated_answer(class) {
                    return self.answer_locally(answer);
                }
                let args: Vec<Bytes> = args.into_iter().map(Bytes::from).collect();
                self.command_with_args(class, &args, None);
            }
            return;
        }
        let Some((off, len)) = head.name.filter(|_| head.argc > 0) else {
            return self.empty_command();
        };
        let name = &self.cbuf[self.cstart + off..self.cstart + off + len];
        let class = resp::command::classify(name, head.argc);
        if let Some(answer) = self.unauthenticated_answer(class) {
            self.cut_command();
            return self.answer_locally(answer);
        }
        if !class.needs_args() {
            self.cstart = self.cpos;
            return self.forwarded(class);
        }
        self.forward_commands();
        let frame = self.cbuf.split_to(self.cpos).freeze();
        self.cpos = 0;
        let args = multibulk_args(&frame);
        self.command_with_args(class, &args, Some(frame));
    }

    /// The proxy's own answer to a command from a client that has not
    /// authenticated against the local client password. RESET is answered
    /// here too: the upstream connection is already as RESET leaves it (the
    /// client could run nothing since), and each forwarded RESET would cost
    /// an upstream AUTH.
    fn unauthenticated_answer(&self, class: Class) -> Option<Answer> {
        if self.local_authed {
            None
        } else if class == Class::Reset {
            Some(Answer::Line(Bytes::from_static(RESET)))
        } else if !class.allowed_unauthenticated() {
            Some(Answer::Line(Bytes::from_static(NOAUTH)))
        } else {
            None
        }
    }

    /// `*0`, `*-1` or a blank line: Redis runs nothing and answers nothing,
    /// but the command still ends a pending CLIENT REPLY SKIP, so it goes up.
    fn empty_command(&mut self) {
        self.cstart = self.cpos;
        self.ledger.push(Pending::Empty);
    }

    /// Answers a command in its turn without forwarding it. Outside MULTI a
    /// PING stands in for it upstream, so the server's per-command reply
    /// state moves exactly as if it had run the command.
    fn answer_locally(&mut self, answer: Answer) {
        let standin = !self.send_multi;
        if standin {
            self.forward_commands();
            self.to_up.push(Bytes::from_static(STANDIN));
        }
        self.ledger.push(Pending::Local { answer, standin });
    }

    /// A command the proxy needed whole: AUTH, HELLO, CLIENT, or any inline
    /// command. `frame` is the original multibulk when there was one.
    fn command_with_args(&mut self, class: Class, args: &[Bytes], frame: Option<Bytes>) {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
        // What RESET may not clear rules the connection out of reuse,
        // whatever the server answers.
        if class == Class::Client && command::client_sets_info(&refs) {
            self.tainted = Some("client_setinfo");
        }
        if class == Class::Client && command::client_sets_no_evict_or_touch(&refs) {
            self.tainted = Some("client_no_evict");
        }
        if class == Class::Client && command::client_tracks(&refs) {
            self.tainted = Some("client_tracking");
        }
        // CLIENT and SELECT are refined by their arguments (CLIENT's may
        // make it NulInName).
        let class = match class {
            Class::Client => command::classify_client(&refs),
            Class::Cluster => command::classify_cluster(&refs),
            Class::Select => command::classify_select(&refs),
            other => other,
        };
        match class {
            Class::Auth => {
                // Answered here, in its turn; never forwarded (invariant 2).
                let answer = match refs.len() {
                    n @ (2 | 3) if self.ctx.client_password.is_some() => {
                        self.client_auth(refs[n - 1])
                    }
                    2 | 3 => Answer::Auth,
                    n => Answer::Line(auth_arity_error(n)),
                };
                self.answer_locally(answer);
            }
            Class::Hello => match command::hello(&refs) {
                Ok(mut hello) => {
                    if self.ctx.client_password.is_some() {
                        let refused = match hello.auth {
                            Some((_, password)) => match self.client_auth(password) {
                                Answer::Auth => None,
                                wrong => Some(wrong),
                            },
                            None if !self.local_authed => {
                                Some(Answer::Line(Bytes::from_static(NOAUTH_HELLO)))
                            }
                            None => None,
                        };
                        if let Some(answer) = refused {
                            return self.answer_locally(answer);
                        }
                    }
                    // In IAM mode HELLO carries a fresh token, which also
                    // restarts the server's 12-hour window.
                    let identity = match (self.method, hello.proto) {
                        (Method::Iam, Some(_)) => self.ctx.auth.current(Method::Iam).ok(),
                        _ => None,
                    };
                    if let Some(identity) = &identity {
                        let mut auth: Vec<&[u8]> = vec![b"AUTH"];
                        auth.extend(identity.hello_auth());
                        hello.args.splice(2..2, auth);
                    }
                    let mut out = BytesMut::new();
                    resp::encode_command(&mut out, &hello.args);
                    self.to_up.push(out.freeze());
                    self.ledger.push(Pending::Hello { proto: hello.proto });
                }
                Err(msg) => {
                    self.answer_locally(Answer::Line(resp::error_reply(&format!("ERR {msg}"))))
                }
            },
            Class::NulInName => {
                self.answer_locally(Answer::Line(resp::error_reply(command::NUL_IN_NAME)))
            }
            _ => {
                match frame {
                    Some(frame) => self.to_up.push(frame),
                    None => {
                        let mut out = BytesMut::new();
                        resp::encode_command(&mut out, &refs);
                        self.to_up.push(out.freeze());
                    }
                }
                self.forwarded(class);
            }
        }
    }

    /// Records a command whose bytes are (or are about to be) on their way up.
    fn forwarded(&mut self, class: Class) {
        // Redis refuses SYNC inside MULTI with a plain error.
        let class = match class {
            Class::Sync if self.send_multi => Class::Plain,
            other => other,
        };
        self.ledger.push(class.into());
        match class {
            // Another connection may name this one by id (CLIENT TRACKING
            // REDIRECT to a subscriber of `__redis__:invalidate`): once it
            // subscribed, the connection does not outlive its client.
            Class::Sub { unsub: false, .. } => self.tainted = Some("subscribed"),
            Class::Sync => {
                self.sync_wait = true;
                self.tainted = Some("replication");
            }
            Class::Quit => self.quit_sent = true,
            Class::Multi => self.send_multi = true,
            Class::Exec | Class::Discard => self.send_multi = false,
            Class::Reset => {
                self.send_multi = false;
                if self.ctx.client_password.is_some() {
                    // As in Redis: after RESET the client must AUTH again.
                    self.set_local_authed(false);
                }
                self.reauthenticate_after_reset();
            }
            _ => {}
        }
    }

    /// RESET de-authenticates the connection: authenticate it again right
    /// behind the RESET, before any later command, and swallow the reply.
    fn reauthenticate_after_reset(&mut self) {
        match self.ctx.auth.current(self.method) {
            Ok(identity) => {
                // Everything up to and including the RESET goes first.
                self.cstart = self.cpos;
                self.forward_commands();
                self.send_proxy_auth(Purpose::AfterReset, &identity);
            }
            Err(e) => {
                warn!(kind = e.kind.as_str(), detail = %e.detail, "no identity to re-authenticate after RESET")
            }
        }
    }

    /// Checks a client's AUTH (or HELLO AUTH) password against the local
    /// client password, in constant time. The user name is not checked:
    /// upstream every client runs as the proxy's user.
    fn client_auth(&mut self, given: &[u8]) -> Answer {
        if check_client_password(&self.ctx, &self.conn, given) {
            self.set_local_authed(true);
            Answer::Auth
        } else {
            Answer::Line(Bytes::from_static(WRONGPASS))
        }
    }

    fn set_local_authed(&mut self, authed: bool) {
        self.local_authed = authed;
        self.req.set_unauthenticated(!authed);
    }

    /// Starts or continues forwarding a large command that is still arriving.
    fn stream_command(&mut self) {
        let scanned = self.cpos - self.cstart;
        // An unauthenticated client's command is held whole (Redis's limits
        // keep it under 170 KB) so that it can be refused.
        if scanned < STREAM_THRESHOLD || !self.local_authed {
            return;
        }
        if !self.cstream {
            let head = self.req.head();
            let Some((off, len)) = head.name else {
                return;
            };
            let class = if len > 16 {
                Class::Plain
            } else if head.name_done {
                resp::command::classify(
                    &self.cbuf[self.cstart + off..self.cstart + off + len],
                    head.argc,
                )
            } else {
                return;
            };
            // Commands that change what the connection is (or whether it
            // stays one) are acted on once complete, so they are held too.
            if class.needs_args() || class.changes_connection() || head.inline {
                if scanned > MAX_HELD_COMMAND {
                    self.client_protocol_error(format!(
                        "Protocol error: command larger than {MAX_HELD_COMMAND} bytes"
                    ));
                }
                return;
            }
            self.ledger.push(class.into());
            self.cstream = true;
        }
        self.cstart = self.cpos;
        self.forward_commands();
    }

    /// Malformed client input: replies for earlier commands are delivered,
    /// then Redis's protocol error, then the connection closes.
    fn client_protocol_error(&mut self, message: String) {
        debug!(%message, "malformed client input");
        self.forward_commands();
        self.cbuf.clear();
        self.cpos = 0;
        self.ledger.push(Pending::Local {
            answer: Answer::Line(resp::error_reply(&format!("ERR {message}"))),
            standin: false,
        });
        self.close_when_settled = Some(End::ClientProtocol);
    }

    // ---- upstream → client ----

    fn on_upstream_bytes(&mut self) -> Result<(), Error> {
        while self.upos < self.ubuf.len() {
            if self.sync_wait && self.rep.at_boundary() && self.ledger.head_is_sync() {
                match replication_start(&self.ubuf[self.upos..]) {
                    // A replication stream, not RESP, from here on in both
                    // directions.
                    Some(true) => {
                        self.start_raw();
                        return Ok(());
                    }
                    // Too few bytes to tell.
                    None => break,
                    // An error (ElastiCache refuses SYNC), or a push or
                    // monitor line ahead of the reply: RESP as usual.
                    Some(false) => {}
                }
            }
            let (n, done) = self
                .rep
                .advance(&self.ubuf[self.upos..])
                .map_err(|e| Error::upstream(Kind::Protocol, e.0))?;
            self.upos += n;
            if self.uroute.is_none() {
                self.uroute = self.ledger.route(&self.ubuf[self.ustart..]);
            }
            if !done {
                self.stream_reply();
                break;
            }
            // A complete frame always routes; `Stray` is the safe default.
            let route = self.uroute.take().unwrap_or(Route::Stray);
            if route == Route::Reply && self.ledger.head_is_sync() {
                self.sync_answered = true;
            }
            // Cluster mode looks into the few replies that name nodes.
            let rewrite = match self.ctx.cluster {
                Some(_) if route == Route::Reply => {
                    if cluster::rewrite::is_redirect(&self.ubuf[self.ustart..self.upos]) {
                        Some(None)
                    } else {
                        self.ledger.head_rewrite().map(Some)
                    }
                }
                _ => None,
            };
            let outcome = self
                .ledger
                .complete(&self.ubuf[self.ustart..self.upos], route);
            self.ustream = false;
            let rewritten = rewrite.and_then(|what| self.rewritten(what));
            if let Some(bytes) = rewritten {
                // Everything before it goes first; the frame itself is
                // replaced.
                self.forward_replies();
                self.ubuf.advance(self.upos);
                self.upos = 0;
                self.to_client.push(Bytes::from(bytes));
            } else if route.to_client() {
                self.ustart = self.upos;
            } else {
                self.forward_replies();
                self.ubuf.advance(self.upos);
                self.upos = 0;
            }
            if route == Route::Stray && !self.stray_warned {
                self.stray_warned = true;
                warn!("the server sent a reply the proxy did not expect; relaying it");
            }
            if let Some(Done::Emit(answer)) = &outcome {
                self.to_client.push(answer.clone());
            }
            if let Some(Done::ProxyAuth(auth)) = outcome {
                self.proxy_authenticated(auth)?;
            }
            self.settle();
        }
        self.forward_replies();
        self.after_sync();
        Ok(())
    }

    /// Once the SYNC/PSYNC waited on is settled without turning the
    /// connection into a replication stream: after an error the connection
    /// stays RESP and the client's commands flow again. Under CLIENT REPLY
    /// OFF/SKIP it settles unanswered, yet Redis sends the replication
    /// stream regardless (and an error not at all), so the proxy cannot
    /// tell what comes: it relays the rest raw, byte for byte.
    fn after_sync(&mut self) {
        if !self.sync_wait || self.ledger.has_sync() {
            return;
        }
        if std::mem::take(&mut self.sync_answered) {
            self.sync_wait = false;
            self.on_client_bytes();
        } else {
            debug!(
                conn = self.conn.id,
                "SYNC with replies off: relaying raw from here"
            );
            self.start_raw();
        }
    }

    /// Cluster mode: the complete reply `ubuf[ustart..upos]` with every
    /// node address in it replaced by the proxy's listener for the node
    /// (`what`: the head's topology reply or EXEC result, or `None` for a
    /// -MOVED / -ASK error). `None`: nothing to change.
    fn rewritten(&self, what: Option<Rewrite>) -> Option<Vec<u8>> {
        let topology = self.ctx.cluster.as_ref()?;
        let frame = &self.ubuf[self.ustart..self.upos];
        let here = self
            .conn
            .node
            .as_ref()
            .map_or(topology.seed_host(), |n| n.host.as_str());
        let mut locate = topology.locator();
        let counted = |kind: cluster::rewrite::Redirect| {
            self.ctx
                .metrics
                .redirects_rewritten
                .with_label_values(&[kind.as_str()])
                .inc();
        };
        use cluster::rewrite;
        match what {
            None => rewrite::redirect(frame, here, &mut locate).map(|(kind, bytes)| {
                counted(kind);
                bytes
            }),
            Some(Rewrite::Exec) => rewrite::exec(frame, here, &mut locate, counted),
            Some(Rewrite::Topology(resp::Topology::Slots)) => {
                rewrite::slots(frame, here, &mut locate)
            }
            Some(Rewrite::Topology(resp::Topology::Shards)) => {
                rewrite::shards(frame, topology.tls(), here, &mut locate)
            }
            Some(Rewrite::Topology(resp::Topology::Nodes)) => {
                rewrite::nodes(frame, here, &mut locate)
            }
        }
    }

    /// Turns the session into a raw pipe: everything the server sent from
    /// here and everything the client sent after SYNC goes on as it is.
    fn start_raw(&mut self) {
        self.sync_wait = false;
        self.raw = true;
        self.ustart = self.ubuf.len();
        self.upos = self.ustart;
        self.forward_replies();
        self.to_up.push(self.cbuf.split().freeze());
        self.cstart = 0;
        self.cpos = 0;
    }

    fn forward_replies(&mut self) {
        if self.ustart > 0 {
            self.to_client
                .push(self.ubuf.split_to(self.ustart).freeze());
            self.upos -= self.ustart;
            self.ustart = 0;
        }
    }

    /// Starts or continues forwarding a large reply that is still arriving,
    /// when its owner is known and nothing about it needs its content.
    fn stream_reply(&mut self) {
        if self.upos - self.ustart < STREAM_THRESHOLD {
            return;
        }
        let streamable = match self.uroute {
            Some(Route::Unsolicited) => true,
            Some(Route::Reply) | Some(Route::Stray) => self.ledger.head_is_plain(),
            _ => false,
        };
        if streamable {
            self.ustream = true;
            self.ustart = self.upos;
            self.forward_replies();
        }
    }

    /// Delivers the proxy's own replies that are now due, after every server
    /// reply before them.
    fn settle(&mut self) {
        if self.ustream || !self.ledger.wants_settle() {
            return;
        }
        let (ubuf, ustart, upos, to_client) = (
            &mut self.ubuf,
            &mut self.ustart,
            &mut self.upos,
            &mut self.to_client,
        );
        self.ledger.settle(|bytes| {
            if *ustart > 0 {
                to_client.push(ubuf.split_to(*ustart).freeze());
                *upos -= *ustart;
                *ustart = 0;
            }
            to_client.push(Bytes::copy_from_slice(bytes));
        });
    }

    /// Counts (and logs) a close of the current upstream connection that
    /// came at about its session-age limit: ElastiCache closes an IAM
    /// connection there, and seen from here that is a close at that age.
    fn count_if_expired(&self) {
        let limit = self.ctx.limits.max_session_age;
        let slack = (limit / 100).max(Duration::from_secs(1));
        if self.method == Method::Iam && self.authed_at.elapsed() + slack >= limit {
            self.ctx.metrics.session_expirations.inc();
            warn!(
                conn = self.conn.id,
                age_s = self.authed_at.elapsed().as_secs(),
                "the server closed the IAM connection at its session-age limit"
            );
        }
    }

    fn upstream_closed(&mut self) {
        self.count_if_expired();
        if self.quit_sent {
            self.forward_replies();
            self.closing = Some(End::Quit);
        } else if self.finishing.is_some() || !self.ledger.owes_client() {
            // Nothing owed: the client sees the close, as it would direct.
            debug!(conn = self.conn.id, "the server closed the connection");
            self.forward_replies();
            self.closing = Some(self.finishing.take().unwrap_or_else(|| {
                End::Upstream(Error::upstream(
                    Kind::Closed,
                    "the server closed the connection",
                ))
            }));
        } else {
            self.fail(Error::upstream(
                Kind::Closed,
                "the server closed the connection",
            ));
        }
    }

    /// Ends the session because of the upstream: what was relayed is
    /// delivered, then the client is told why.
    fn fail(&mut self, e: Error) {
        warn!(kind = e.kind.as_str(), detail = %e.detail, "closing session");
        self.ctx
            .metrics
            .upstream_errors
            .with_label_values(&[e.kind.as_str()])
            .inc();
        self.forward_replies();
        // An error goes only in place of a reply that is owed, and a
        // half-relayed reply cannot be followed by one.
        if !self.ustream && self.finishing.is_none() && self.ledger.owes_client() {
            self.to_client
                .push(resp::error_reply(e.kind.client_message()));
        }
        self.closing = Some(End::Upstream(e));
    }
}

/// Whether the reply to a SYNC/PSYNC starting `reply` opens a replication
/// stream: `+FULLRESYNC`, `+CONTINUE`, a bulk RDB (`$<len>` or `$EOF:`) or
/// the `\n` keepalives of a forking server. `None`: too few bytes to tell.
fn replication_start(reply: &[u8]) -> Option<bool> {
    match reply.first()? {
        b'$' | b'\n' => Some(true),
        b'+' => {
            for word in [&b"+FULLRESYNC"[..], b"+CONTINUE"] {
                let n = reply.len().min(word.len());
                if reply[..n] == word[..n] {
                    return (n == word.len()).then_some(true);
                }
            }
            Some(false)
        }
        _ => Some(false),
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// The arguments of a complete multibulk command, as slices of `frame`,
/// read as Redis reads them (see [`resp::scan::args`]).
fn multibulk_args(frame: &Bytes) -> Vec<Bytes> {
    resp::scan::args(frame)
        .into_iter()
        .map(|r| frame.slice(r))
        .collect()
}

/// Redis's error for an AUTH with `n` words (name included) other than 2 or 3.
fn auth_arity_error(n: usize) -> Bytes {
    resp::error_reply(if n > 3 {
        "ERR syntax error"
    } else {
        "ERR wrong number of arguments for 'auth' command"
    })
}

/// Opens a session's upstream connection and records the outcome for
/// `/startup` and `/readiness`.
async fn open_recorded(
    ctx: &Context,
    conn: &Conn,
    rest: &mut BytesMut,
) -> Result<(Stream, Method), Error> {
    let opened = open(ctx, conn, rest).await;
    ctx.health
        .record_upstream(opened.as_ref().map(|_| ()).map_err(|e| e.kind.as_str()));
    opened
}

/// Checks a client's password against the local client password in
/// constant time, and counts and logs the outcome (never the password).
fn check_client_password(ctx: &Context, conn: &Conn, given: &[u8]) -> bool {
    let ok = client_password_matches(ctx, given);
    let outcome = if ok { "success" } else { "failure" };
    ctx.metrics.client_auth.with_label_values(&[outcome]).inc();
    if !ok {
        warn!(conn = conn.id, client = %conn.peer, "client AUTH refused: wrong client password");
    }
    ok
}

/// Whether `given` is the local client password (constant time, uncounted).
fn client_password_matches(ctx: &Context, given: &[u8]) -> bool {
    ctx.client_password
        .as_ref()
        .is_some_and(|want| constant_time_eq(given, want.expose().as_bytes()))
}

/// Compares two secrets in time that depends on neither's content nor on
/// where they differ: their SHA-256 digests are compared in full.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle session's task is as large as its future, which is as large
    /// as its largest await: the connect, TLS handshake, gate, refusal,
    /// migration and raw-pipe futures are boxed so that a session does not
    /// carry their state for its whole life.
    #[tokio::test]
    async fn a_session_task_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let ctx = fuzzing::Harness::context("app", "secret");
        let conn = Conn {
            id: 1,
            peer: "test".into(),
            node: None,
            pool: None,
        };
        let session = run(client, ctx, conn);
        let size = std::mem::size_of_val(&session);
        // 6.5 KB in a debug build before the boxing, 2.7 KB after, 2.1 KB
        // with one timer and the setup in a function of its own (2,080
        // bytes in a release build). The task cell adds about 200 bytes
        // (tokio's header and trailer, the span, the spawned block) and is
        // rounded up to 128: up to here it stays in jemalloc's 2,560-byte
        // class, 512 bytes an idle session below the next.
        assert!(size <= 2304, "the session future is {size} bytes");
    }
}
