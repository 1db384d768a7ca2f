//! The warm pool: upstream connections already TCP-connected,
//! TLS-established and authenticated, so a new client takes one at once
//! instead of paying the connect, the handshake and the AUTH on its first
//! command. A background task keeps the pool at its target: full
//! (`--pool-size`) at the start, then as many as the busiest second of the
//! last minute asked for (the accept rate), at least one while clients came
//! in the last ten minutes, at most `--pool-size`.
//!
//! A pooled connection is handed out only if it is sound: the server has
//! not closed it or sent anything (checked without waiting, at the moment
//! it is taken), and it is young enough that a session taking it
//! re-authenticates in time. Anything else is discarded and counted. The
//! session that takes one keeps the time of its AUTH, so re-authentication
//! runs on the AUTH's schedule, not the client's.
//!
//! With reuse on (`--pool-reuse`), a session whose client closed cleanly
//! with nothing owed hands its connection back ([`Pool::give_back`]): the
//! connection is sent `RESET` and a fresh `AUTH`, and goes back only if
//! both replies are exactly right. The session decides "nothing owed"; this
//! module does the exchange, its audit and its counting.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use std::{pin::Pin, task::Poll};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, ReadBuf},
    sync::Notify,
    task::JoinSet,
};
use tracing::{debug, warn};

use super::{
    open::{open, record_attempt},
    Conn, Context,
};
use crate::{
    auth::Method,
    cluster::Node,
    error::{Error, Kind},
    metrics::Metrics,
    upstream::{Connector, Stream},
};

/// The oldest a pooled connection may be, whatever the session age: the
/// server may drop idle connections, and credentials rotate.
const MAX_IDLE: Duration = Duration::from_secs(60);
/// Connections the refill opens at once.
const PARALLEL: usize = 8;
/// After a refill fails, wait this long (doubling to `RETRY_MAX`).
const RETRY_BASE: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// With reuse on, a connection taken less than this long ago may still come
/// back: while some are ready, the refill does not replace it yet. A client
/// that connects per request returns its connection within milliseconds,
/// and a returned connection costs no TCP or TLS handshake.
const RETURN_WAIT: Duration = Duration::from_secs(1);
/// The pool sizes itself to the busiest second in this many.
const DEMAND_SECONDS: usize = 60;
/// While a client asked within this long (or the proxy started within it),
/// the pool keeps at least one connection ready; after that, none: an idle
/// sidecar stops opening (and authenticating) connections nobody takes.
const KEEP_ONE: Duration = Duration::from_secs(600);

/// One ready connection.
pub struct Warm {
    pub stream: Stream,
    pub method: Method,
    /// Bytes the server sent after the AUTH reply (there should be none).
    pub rest: BytesMut,
    /// When its AUTH succeeded.
    pub authed_at: Instant,
}

/// The pool of one upstream endpoint: the configured one, or one cluster
/// node's.
pub struct Pool {
    /// The most connections it holds (`--pool-size`).
    size: usize,
    /// Cluster mode: the node this pool connects to; `None`: the configured
    /// endpoint.
    node: Option<Arc<Node>>,
    /// What this pool last added to the `pool_connections` and
    /// `pool_target` gauges, which sum every pool's (taken out on drop).
    published: [AtomicI64; 2],
    metrics: Arc<Metrics>,
    /// New clients per second, for the target.
    demand: Mutex<Demand>,
    /// Sessions hand their connections back (`--pool-reuse`).
    reuse: bool,
    /// When clients took connections not handed back since, oldest first,
    /// for `RETURN_WAIT` (at most `size`; a return answers the oldest).
    takes: Mutex<VecDeque<Instant>>,
    /// Oldest first: the one taken is the one closest to aging out.
    idle: Mutex<VecDeque<Warm>>,
    /// A connection was taken, discarded or handed back: look again.
    taken: Notify,
}

impl Pool {
    /// The main listener's pool; it starts full.
    pub fn new(size: usize, reuse: bool, metrics: Arc<Metrics>) -> Arc<Pool> {
        Pool::build(size, reuse, None, size, metrics)
    }

    /// A pool like this one for a cluster node's listener. It does not
    /// start full: a cluster client reads the topology, then connects to
    /// the nodes it needs, so each node's pool keeps one ready at first and
    /// sizes itself to that node's clients.
    pub fn for_node(&self, node: Arc<Node>) -> Arc<Pool> {
        Pool::build(self.size, self.reuse, Some(node), 0, self.metrics.clone())
    }

    fn build(
        size: usize,
        reuse: bool,
        node: Option<Arc<Node>>,
        start: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            size,
            node,
            published: [AtomicI64::new(0), AtomicI64::new(0)],
            metrics,
            demand: Mutex::new(Demand::new(Instant::now(), start)),
            reuse,
            takes: Mutex::new(VecDeque::with_capacity(size)),
            idle: Mutex::new(VecDeque::with_capacity(size)),
            taken: Notify::new(),
        })
    }

    /// How long a pooled connection stays usable: well inside the time a
    /// session has before it must re-authenticate.
    fn max_age(ctx: &Context) -> Duration {
        MAX_IDLE.min(ctx.limits.reauth_after / 2)
    }

    /// A sound pooled connection, if there is one; never waits (beyond a
    /// poll of each candidate's socket). Counts the hit or miss.
    pub async fn take(&self, ctx: &Context) -> Option<Warm> {
        let max_age = Pool::max_age(ctx);
        self.demand().record(Instant::now());
        loop {
            let next = self.lock().pop_front();
            let Some(mut warm) = next else {
                ctx.metrics.pool_misses.inc();
                self.publish();
                // The target may have risen (from none after a quiet spell).
                self.taken.notify_one();
                return None;
            };
            let reason = if warm.authed_at.elapsed() >= max_age {
                Some("aged")
            } else {
                unsound(&mut warm.stream).await
            };
            match reason {
                None => {
                    if self.reuse {
                        // Its session may hand it back soon.
                        let mut takes = self.takes();
                        if takes.len() == self.size {
                            takes.pop_front();
                        }
                        takes.push_back(Instant::now());
                    }
                    // Told after the take is on record, so that the refill
                    // counts it as one that may come back.
                    self.taken.notify_one();
                    ctx.metrics.pool_hits.inc();
                    self.publish();
                    return Some(warm);
                }
                Some(reason) => {
                    self.taken.notify_one();
                    debug!(reason, "pooled connection discarded");
                    ctx.metrics.pool_discards.with_label_values(&[reason]).inc();
                }
            }
        }
    }

    /// Keeps the pool full until the task is aborted (at drain): opens
    /// connections as any session would (audited as client `pool`), a few
    /// at a time, retires those that age out, and backs off while the
    /// upstream fails.
    pub async fn refill(self: Arc<Pool>, ctx: Arc<Context>) {
        let conn = Conn {
            id: 0,
            peer: "pool".into(),
            node: self.node.clone(),
            pool: None,
        };
        let mut failures = 0u32;
        loop {
            self.retire_aged(&ctx);
            // The target falls with time alone: the gauge follows it here.
            self.publish();
            let ready = self.lock().len();
            let (awaited, next_expiry) = self.awaited();
            let missing = to_open(self.target(), ready, awaited);
            if missing == 0 {
                // Woken when one is taken or handed back, in time to retire
                // the oldest, or when a return is no longer awaited.
                let wait = Pool::max_age(&ctx).max(Duration::from_millis(100)) / 2;
                let wait = next_expiry.map_or(wait, |left| left.min(wait));
                let _ = tokio::time::timeout(wait, self.taken.notified()).await;
                continue;
            }
            // Up to `PARALLEL` at once: a burst of clients empties the pool
            // faster than one connection at a time could refill it.
            let mut opening = JoinSet::new();
            for _ in 0..missing.min(PARALLEL) {
                let (ctx, conn) = (ctx.clone(), conn.clone());
                opening.spawn(async move {
                    let mut rest = BytesMut::new();
                    let opened = open(&ctx, &conn, &mut rest).await;
                    ctx.health
                        .record_upstream(opened.as_ref().map(|_| ()).map_err(|e| e.kind.as_str()));
                    opened.map(|(stream, method)| Warm {
                        stream,
                        method,
                        rest,
                        authed_at: Instant::now(),
                    })
                });
            }
            let mut failed = None;
            while let Some(done) = opening.join_next().await {
                match done {
                    Ok(Ok(warm)) => {
                        failures = 0;
                        // A connection handed back meanwhile may have
                        // filled the pool: it never holds more than its target.
                        let target = self.target();
                        let spare = {
                            let mut idle = self.lock();
                            if idle.len() < target {
                                idle.push_back(warm);
                                None
                            } else {
                                Some(warm)
                            }
                        };
                        match spare {
                            None => ctx.metrics.pool_refills.inc(),
                            Some(warm) => {
                                debug!("pool already full: closing the connection just opened");
                                close(warm.stream).await;
                            }
                        }
                        self.publish();
                    }
                    Ok(Err(e)) => failed = Some(e),
                    // A panicking open is a bug elsewhere; it is not retried here.
                    Err(_) => {}
                }
            }
            if let Some(e) = failed {
                failures += 1;
                let wait = RETRY_BASE
                    .saturating_mul(1 << failures.saturating_sub(1).min(8))
                    .min(RETRY_MAX);
                warn!(kind = e.kind.as_str(), detail = %e.detail, retry_in = ?wait, "cannot refill the warm pool");
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Whether sessions hand their connections back (`--pool-reuse`).
    pub fn reuses(&self) -> bool {
        self.reuse
    }

    /// With reuse on, how many taken connections may still come back
    /// (taken less than `RETURN_WAIT` ago), and when the next of them stops
    /// being awaited. Forgets the older ones.
    fn awaited(&self) -> (usize, Option<Duration>) {
        let mut takes = self.takes();
        while takes.front().is_some_and(|t| t.elapsed() >= RETURN_WAIT) {
            takes.pop_front();
        }
        let next = takes
            .front()
            .map(|t| RETURN_WAIT.saturating_sub(t.elapsed()));
        (takes.len(), next)
    }

    fn takes(&self) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        self.takes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tail of a session whose client closed cleanly with nothing owed
    /// (the session checked): unless the pool is full or the proxy drains,
    /// sends `RESET` and `AUTH` with the identity a new connection would
    /// get (the policy's first method with one ready; never signs), and
    /// returns the connection to the pool only if both replies are exactly
    /// right. The AUTH is audited and counted like every other (client
    /// `reuse`, the session's id). Anything else closes it, counted as
    /// `pool_discards_total{reason="reuse_failed"}`. Bounded by the AUTH
    /// timeout; abandoned at drain.
    pub async fn give_back(&self, ctx: &Context, conn: &Conn, mut stream: Stream) {
        let mut drain = ctx.drain.clone();
        // Up to the bound, not the target: a returned connection costs no
        // handshake, and one that nobody takes ages out.
        if self.lock().len() >= self.size || *drain.borrow() {
            // Nothing wrong with it; there is just no room (or no time).
            close(stream).await;
            return;
        }
        let conn = Conn {
            id: conn.id,
            peer: "reuse".into(),
            node: self.node.clone(),
            pool: None,
        };
        let m = &ctx.metrics;
        let plan = ctx.auth.plan();
        let mut fallback_reason = plan.iam_in_backoff.then_some("backoff");
        let mut chosen = None;
        for &method in plan.methods {
            // `current` never waits and never signs (invariant 4).
            match ctx.auth.current(method) {
                Ok(identity) => {
                    chosen = Some(identity);
                    break;
                }
                Err(e) => {
                    // Recorded as a new connection's attempt would be.
                    let result = Err(e);
                    record_attempt(
                        ctx,
                        &conn,
                        method,
                        "-",
                        &result,
                        Duration::ZERO,
                        false,
                        false,
                    );
                    if method == Method::Iam {
                        fallback_reason = Some("token_unavailable");
                    }
                }
            }
        }
        let Some(identity) = chosen else {
            self.reuse_failed(ctx, "no identity");
            close(stream).await;
            return;
        };
        let method = identity.method;
        let fallback = method == Method::Password && fallback_reason.is_some();
        if let (true, Some(reason)) = (fallback, fallback_reason) {
            m.auth_fallbacks.with_label_values(&[reason]).inc();
        }
        let started = Instant::now();
        let result = tokio::select! {
            r = self.connector(ctx).reset(&mut stream, &identity) => r,
            Ok(_) = drain.wait_for(|d| *d) => Err(Error::upstream(
                Kind::Closed,
                "abandoned: the proxy is draining",
            )),
        };
        record_attempt(
            ctx,
            &conn,
            method,
            identity.user_name(),
            &result,
            started.elapsed(),
            fallback,
            false,
        );
        // Only the AUTH's own outcome says anything of IAM or the upstream;
        // an unexpected RESET reply or an extra byte says this connection.
        if result.is_ok() || result.as_ref().is_err_and(|e| e.kind == Kind::AuthRejected) {
            if method == Method::Iam {
                ctx.auth.record_iam(result.is_ok());
            }
            ctx.health
                .record_upstream(result.as_ref().map(|_| ()).map_err(|e| e.kind.as_str()));
        }
        if let Err(e) = result {
            self.reuse_failed(ctx, &e.detail);
            close(stream).await;
            return;
        }
        let warm = Warm {
            stream,
            method,
            rest: BytesMut::new(),
            // When the AUTH was sent: the server's window starts no earlier.
            authed_at: started,
        };
        let refused = {
            let mut idle = self.lock();
            if idle.len() >= self.size || *drain.borrow() {
                Some(warm)
            } else {
                idle.push_back(warm);
                None
            }
        };
        if let Some(warm) = refused {
            // Filled meanwhile: this one's AUTH was for nothing, but it is sound.
            close(warm.stream).await;
            return;
        }
        // It answers the oldest take still awaited.
        self.takes().pop_front();
        m.pool_reuses.inc();
        debug!(
            conn = conn.id,
            method = method.as_str(),
            "connection reused: back in the pool"
        );
        self.publish();
        self.taken.notify_one();
    }

    fn reuse_failed(&self, ctx: &Context, detail: &str) {
        debug!(
            detail,
            "connection not reused: RESET and AUTH did not check out"
        );
        ctx.metrics
            .pool_discards
            .with_label_values(&["reuse_failed"])
            .inc();
    }

    /// Drops the connections too old to hand out.
    fn retire_aged(&self, ctx: &Context) {
        let max_age = Pool::max_age(ctx);
        let mut idle = self.lock();
        let before = idle.len();
        idle.retain(|w| w.authed_at.elapsed() < max_age);
        let aged = before - idle.len();
        drop(idle);
        if aged > 0 {
            ctx.metrics
                .pool_discards
                .with_label_values(&["aged"])
                .inc_by(aged as u64);
            self.publish();
        }
    }

    /// Moves the gauges by what changed since this pool last published.
    fn publish(&self) {
        // Under the lock, so that two publishes cannot leave the older
        // reading last.
        let idle = self.lock();
        let now = [idle.len() as i64, self.target() as i64];
        for (i, gauge) in self.gauges().into_iter().enumerate() {
            gauge.add(now[i] - self.published[i].swap(now[i], Ordering::Relaxed));
        }
    }

    fn gauges(&self) -> [&prometheus::IntGauge; 2] {
        [&self.metrics.pool_connections, &self.metrics.pool_target]
    }

    /// Connects to this pool's endpoint.
    fn connector<'a>(&'a self, ctx: &'a Context) -> &'a Connector {
        self.node.as_ref().map_or(&ctx.connector, |n| &n.connector)
    }

    /// How many connections the pool aims to keep ready now.
    fn target(&self) -> usize {
        let now = Instant::now();
        let demand = self.demand();
        target(self.size, demand.peak(now), now - demand.last_ask)
    }

    fn demand(&self) -> std::sync::MutexGuard<'_, Demand> {
        self.demand.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Warm>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size)
            .field("node", &self.node)
            .field("reuse", &self.reuse)
            .finish_non_exhaustive()
    }
}

impl Drop for Pool {
    /// A node's pool goes with its node: what it held leaves the gauges.
    fn drop(&mut self) {
        for (i, gauge) in self.gauges().into_iter().enumerate() {
            gauge.sub(self.published[i].load(Ordering::Relaxed));
        }
    }
}

/// New clients per second over the last `DEMAND_SECONDS`, in a ring of
/// one-second buckets (each stamped with the second it counts, so a bucket
/// left from a minute ago is not read as now).
struct Demand {
    epoch: Instant,
    counts: [u32; DEMAND_SECONDS],
    seconds: [u64; DEMAND_SECONDS],
    /// The last client that asked for a connection (at first, the start).
    last_ask: Instant,
}

impl Demand {
    /// The start counts as a second in which `size` clients asked: an app
    /// opens its own connections as it starts, so the pool starts full and
    /// sizes itself from what follows.
    fn new(now: Instant, size: usize) -> Demand {
        let mut counts = [0; DEMAND_SECONDS];
        // No second is `u64::MAX` seconds after the epoch.
        let mut seconds = [u64::MAX; DEMAND_SECONDS];
        counts[0] = u32::try_from(size).unwrap_or(u32::MAX);
        seconds[0] = 0;
        Demand {
            epoch: now,
            counts,
            seconds,
            last_ask: now,
        }
    }

    fn second(&self, now: Instant) -> u64 {
        (now - self.epoch).as_secs()
    }

    fn record(&mut self, now: Instant) {
        let second = self.second(now);
        let i = (second % DEMAND_SECONDS as u64) as usize;
        if self.seconds[i] != second {
            self.seconds[i] = second;
            self.counts[i] = 0;
        }
        self.counts[i] = self.counts[i].saturating_add(1);
        self.last_ask = now;
    }

    /// The most clients that asked in one second of the last `DEMAND_SECONDS`.
    fn peak(&self, now: Instant) -> usize {
        let second = self.second(now);
        self.seconds
            .iter()
            .zip(self.counts)
            .filter(|&(&s, _)| s <= second && second - s < DEMAND_SECONDS as u64)
            .map(|(_, count)| count as usize)
            .max()
            .unwrap_or(0)
    }
}

/// The pool's target: the busiest recent second's new clients, at least one
/// while a client asked (or the proxy started) within `KEEP_ONE`, at most
/// `size`.
fn target(size: usize, peak: usize, since_last_ask: Duration) -> usize {
    let floor = usize::from(since_last_ask < KEEP_ONE);
    peak.max(floor).min(size)
}

/// How many connections the refill opens now: those missing from `size`
/// with `ready` in the pool, less the `awaited` ones that may still come
/// back; but an empty pool refills at once, since the next client would
/// find nothing.
fn to_open(size: usize, ready: usize, awaited: usize) -> usize {
    let missing = size.saturating_sub(ready);
    if ready == 0 {
        missing
    } else {
        missing.saturating_sub(awaited)
    }
}

/// Closes a connection that does not go back (TLS close_notify, bounded).
async fn close(mut stream: Stream) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// Why an idle pooled connection cannot be handed out, checked without
/// waiting: the server closed it (EOF or an error), or sent bytes nobody
/// asked for (an idle authenticated connection gets none). A TLS record
/// with no application data (a session ticket) leaves it sound. One poll of
/// the read, no timer: a zero timeout would still wait for the timer
/// wheel's next tick (about 1 ms), longer than a fresh local connection.
async fn unsound(stream: &mut Stream) -> Option<&'static str> {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Pending => None,
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Some("closed"),
            Poll::Ready(Ok(())) => Some("unexpected_data"),
            Poll::Ready(Err(_)) => Some("closed"),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{target, to_open, Demand, KEEP_ONE};

    #[test]
    fn the_target_follows_the_busiest_recent_second_within_its_bounds() {
        let s = Duration::from_secs;
        // (size, peak, since the last ask) -> target
        let cases = [
            ((8, 3, s(1)), 3),
            ((8, 20, s(1)), 8),
            // Nobody asked this minute, but within ten: keep one.
            ((8, 0, s(120)), 1),
            ((8, 0, KEEP_ONE - s(1)), 1),
            // Ten quiet minutes: none.
            ((8, 0, KEEP_ONE), 0),
            ((0, 5, s(1)), 0),
            ((1, 5, s(1)), 1),
        ];
        for ((size, peak, since), want) in cases {
            assert_eq!(target(size, peak, since), want, "{size} {peak} {since:?}");
        }
    }

    #[test]
    fn demand_is_the_busiest_second_of_the_last_minute() {
        let t0 = Instant::now();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let mut d = Demand::new(t0, 8);
        // The start counts as a second in which the pool's size asked.
        assert_eq!(d.peak(at(0.5)), 8);
        assert_eq!(d.peak(at(59.9)), 8);
        assert_eq!(d.peak(at(60.0)), 0);
        for _ in 0..3 {
            d.record(at(61.2));
        }
        d.record(at(62.0));
        assert_eq!(d.peak(at(62.5)), 3);
        assert_eq!(d.last_ask, at(62.0));
        // Second 61 leaves the window at 121; second 62's one ask remains.
        assert_eq!(d.peak(at(120.9)), 3);
        assert_eq!(d.peak(at(121.0)), 1);
        // A bucket reused a minute later starts again from zero: second
        // 122 takes second 62's, which held one.
        d.record(at(121.5));
        assert_eq!(d.peak(at(121.6)), 1);
        d.record(at(122.1));
        d.record(at(122.3));
        assert_eq!(d.peak(at(122.4)), 2);
        assert_eq!(d.peak(at(1000.0)), 0);
    }

    #[test]
    fn the_refill_leaves_room_for_connections_that_may_come_back() {
        // (size, ready, awaited) -> opened now
        let cases = [
            ((4, 4, 0), 0),
            ((4, 3, 0), 1),
            ((4, 3, 1), 0),
            ((4, 1, 2), 1),
            ((4, 2, 3), 0),
            // Empty: at once, whatever may come back.
            ((4, 0, 4), 4),
            ((1, 0, 1), 1),
            // Reuse off: nothing is awaited.
            ((8, 5, 0), 3),
        ];
        for ((size, ready, awaited), want) in cases {
            assert_eq!(
                to_open(size, ready, awaited),
                want,
                "{size} {ready} {awaited}"
            );
        }
    }
}
