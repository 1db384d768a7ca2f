//! The warm pool: upstream connections already TCP-connected,
//! TLS-established and authenticated, so a new client takes one at once
//! instead of paying the connect, the handshake and the AUTH on its first
//! command. A background task keeps `--pool-size` of them.
//!
//! A pooled connection is handed out only if it is sound: the server has
//! not closed it or sent anything (checked without waiting, at the moment
//! it is taken), and it is young enough that a session taking it
//! re-authenticates in time. Anything else is discarded and counted. The
//! session that takes one keeps the time of its AUTH, so re-authentication
//! runs on the AUTH's schedule, not the client's.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
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

use super::{open::open, Conn, Context};
use crate::{auth::Method, upstream::Stream};

/// The oldest a pooled connection may be, whatever the session age: the
/// server may drop idle connections, and credentials rotate.
const MAX_IDLE: Duration = Duration::from_secs(60);
/// Connections the refill opens at once.
const PARALLEL: usize = 8;
/// After a refill fails, wait this long (doubling to `RETRY_MAX`).
const RETRY_BASE: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// One ready connection.
pub struct Warm {
    pub stream: Stream,
    pub method: Method,
    /// Bytes the server sent after the AUTH reply (there should be none).
    pub rest: BytesMut,
    /// When its AUTH succeeded.
    pub authed_at: Instant,
}

/// The pool of one upstream endpoint.
pub struct Pool {
    size: usize,
    /// Oldest first: the one taken is the one closest to aging out.
    idle: Mutex<VecDeque<Warm>>,
    /// A connection was taken (or discarded): refill.
    taken: Notify,
}

impl Pool {
    pub fn new(size: usize) -> Arc<Pool> {
        Arc::new(Pool {
            size,
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
        loop {
            let next = self.lock().pop_front();
            let Some(mut warm) = next else {
                ctx.metrics.pool_misses.inc();
                self.publish(ctx);
                return None;
            };
            self.taken.notify_one();
            let reason = if warm.authed_at.elapsed() >= max_age {
                Some("aged")
            } else {
                unsound(&mut warm.stream).await
            };
            match reason {
                None => {
                    ctx.metrics.pool_hits.inc();
                    self.publish(ctx);
                    return Some(warm);
                }
                Some(reason) => {
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
            node: None,
        };
        let mut failures = 0u32;
        loop {
            self.retire_aged(&ctx);
            if self.lock().len() >= self.size {
                // Woken when one is taken, or in time to retire the oldest.
                let wait = Pool::max_age(&ctx).max(Duration::from_millis(100));
                let _ = tokio::time::timeout(wait / 2, self.taken.notified()).await;
                continue;
            }
            // Up to `PARALLEL` at once: a burst of clients empties the pool
            // faster than one connection at a time could refill it.
            let missing = self.size - self.lock().len();
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
                        ctx.metrics.pool_refills.inc();
                        self.lock().push_back(warm);
                        self.publish(&ctx);
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
            self.publish(ctx);
        }
    }

    fn publish(&self, ctx: &Context) {
        ctx.metrics.pool_connections.set(self.lock().len() as i64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Warm>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
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
