//! Owns one client connection after its TLS handshake: relays bytes both ways
//! between the client and its own backend connection, runs the client's
//! commands through the [`Filter`], answers the filter's IAM questions
//! ([`Session`] as its [`Gate`]) and closes IAM sessions at max-session-age.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Config;
use crate::filter::{Filter, Gate, Notice, Rewrite, THROTTLED_MESSAGE};
use crate::stats::Stats;
use crate::throttle::Bucket;
use crate::verify::{self, Reject};

/// Bytes read from the client per read call.
const READ_SIZE: usize = 16 * 1024;
/// How long a close_notify to the client may take when the emulator hangs up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    pub cfg: Config,
    pub stats: Arc<Stats>,
    /// One bucket for the whole emulator, like a per-cache limit.
    pub bucket: Mutex<Bucket>,
}

impl Shared {
    pub fn new(cfg: Config) -> Shared {
        let bucket = Mutex::new(Bucket::new(cfg.iam_auth_rate, Instant::now().into_std()));
        Shared {
            cfg,
            stats: Arc::default(),
            bucket,
        }
    }
}

/// How a relayed connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The client or the backend closed or failed.
    Closed,
    /// max-session-age passed since the last successful IAM AUTH.
    Expired,
}

/// Relays until either side closes or the IAM session expires, then closes both.
pub async fn run<C, B>(client: C, backend: B, shared: &Shared) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut backend_rd, mut backend_wr) = tokio::io::split(backend);
    // When the current identity came from IAM: the moment it expires.
    let (deadline_tx, deadline_rx) = watch::channel(None);
    // Throttling stand-ins forwarded whose replies are not yet replaced.
    let stand_ins = AtomicUsize::new(0);
    let mut session = Session {
        shared,
        deadline: &deadline_tx,
        stand_ins: &stand_ins,
    };

    let up = async {
        upstream(&mut client_rd, &mut backend_wr, &mut session).await;
        // Client EOF or error: the backend sees EOF too and closes, which ends `down`.
        let _ = backend_wr.shutdown().await;
        std::future::pending::<()>().await;
    };
    let reply = shared.cfg.throttle_reply.frame();
    let down = downstream(&mut backend_rd, &mut client_wr, &stand_ins, reply);
    let end = tokio::select! {
        () = up => End::Closed,
        _ = down => End::Closed,
        () = expiry(deadline_rx) => End::Expired,
    };
    if end == End::Expired {
        Stats::inc(&shared.stats.sessions_expired_total);
        tracing::info!("closing the connection: max-session-age passed since the last IAM AUTH");
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, client_wr.shutdown()).await;
    end
}

/// Client → backend through the filter, until EOF or an error.
async fn upstream<R, W>(client: &mut R, backend: &mut W, session: &mut Session<'_>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut filter = Filter::default();
    let mut input = BytesMut::with_capacity(READ_SIZE);
    let mut out = BytesMut::with_capacity(READ_SIZE);
    loop {
        input.reserve(READ_SIZE);
        match client.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        filter.feed(&mut input, &mut out, session);
        if backend.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}

/// Backend → client until EOF or an error, flushing after every read so TLS
/// records go out without waiting for a full buffer. While throttling
/// stand-ins are outstanding, the backend's reply to each (the HELLO syntax
/// error naming [`THROTTLED_MESSAGE`], a frame no other command produces) is
/// replaced by ElastiCache's `reply`; only then is the stream searched, and
/// only bytes that could begin a stand-in are held back.
async fn downstream<R, W>(backend: &mut R, client: &mut W, stand_ins: &AtomicUsize, reply: &[u8])
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let stand_in = format!("-ERR Syntax error in HELLO option '{THROTTLED_MESSAGE}'\r\n");
    let stand_in = stand_in.as_bytes();
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out = BytesMut::with_capacity(READ_SIZE);
    loop {
        buf.reserve(READ_SIZE);
        let eof = !matches!(backend.read_buf(&mut buf).await, Ok(n) if n > 0);
        let mut pos = 0;
        while stand_ins.load(Ordering::Relaxed) > 0 {
            let Some(at) = memchr::memmem::find(&buf[pos..], stand_in) else {
                break;
            };
            out.extend_from_slice(&buf[pos..pos + at]);
            out.extend_from_slice(reply);
            pos += at + stand_in.len();
            stand_ins.fetch_sub(1, Ordering::Relaxed);
        }
        let rest = &buf[pos..];
        let hold = if eof || stand_ins.load(Ordering::Relaxed) == 0 {
            0
        } else {
            (1..stand_in.len().min(rest.len() + 1))
                .rev()
                .find(|&n| rest.ends_with(&stand_in[..n]))
                .unwrap_or(0)
        };
        out.extend_from_slice(&rest[..rest.len() - hold]);
        let _ = buf.split_to(buf.len() - hold);
        if client.write_all(&out).await.is_err() || client.flush().await.is_err() || eof {
            return;
        }
        out.clear();
    }
}

/// Resolves once the deadline passes; a new deadline (re-auth) or none
/// (RESET, password AUTH) replaces the old one.
async fn expiry(mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        match deadline {
            None => {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    changed = rx.changed() => if changed.is_err() {
                        return std::future::pending().await;
                    },
                }
            }
        }
    }
}

/// One connection's answers to the filter: throttle, verify, count, log.
struct Session<'a> {
    shared: &'a Shared,
    deadline: &'a watch::Sender<Option<Instant>>,
    /// Throttling stand-ins sent to the backend, for [`downstream`].
    stand_ins: &'a AtomicUsize,
}

impl Gate for Session<'_> {
    fn is_iam_user(&self, user: &[u8]) -> bool {
        self.shared
            .cfg
            .iam_users
            .iter()
            .any(|u| u.as_bytes() == user)
    }

    fn iam_auth(&mut self, user: &[u8], token: &[u8]) -> Rewrite {
        let (cfg, stats) = (&self.shared.cfg, &self.shared.stats);
        // Only configured (UTF-8) names get here.
        let user = String::from_utf8_lossy(user);
        let admitted = self
            .shared
            .bucket
            .lock()
            // A panic elsewhere cannot leave the bucket inconsistent.
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(Instant::now().into_std());
        if !admitted {
            Stats::inc(&stats.iam_auth_throttled_total);
            tracing::info!(%user, "IAM AUTH throttled (iam-auth-rate)");
            self.stand_ins.fetch_add(1, Ordering::Relaxed);
            return Rewrite::Throttled;
        }
        let verdict = std::str::from_utf8(token)
            .map_err(|_| Reject::Malformed)
            .and_then(|token| verify::verify(token, &user, SystemTime::now(), &cfg.verify));
        match verdict {
            Ok(index) => {
                Stats::inc(&stats.iam_auth_success_total);
                self.deadline
                    .send_replace(Some(Instant::now() + cfg.max_session_age));
                // Which credential signed, by position: key ids stay out of logs.
                tracing::debug!(%user, credential = index.0, "IAM AUTH accepted");
                Rewrite::Password(cfg.backend_password.expose().as_bytes().to_vec())
            }
            Err(reject) => {
                stats.failure(reject);
                tracing::info!(%user, reason = reject.reason(), "IAM AUTH refused: {reject}");
                Rewrite::Password(wrong_password(cfg.backend_password.expose()))
            }
        }
    }

    fn notice(&mut self, notice: Notice) {
        let stats = &self.shared.stats;
        match notice {
            Notice::IamAuthInMulti => {
                Stats::inc(&stats.iam_auth_in_multi_total);
                tracing::info!("IAM AUTH inside MULTI refused");
            }
            Notice::PasswordAuth => {
                Stats::inc(&stats.password_auth_total);
                // Assumed to succeed: the identity no longer comes from IAM.
                self.deadline.send_replace(None);
            }
            Notice::Reset => {
                self.deadline.send_replace(None);
            }
        }
    }
}

/// A fresh random password that is not the backend's, so the backend
/// answers exactly its own (ElastiCache's) WRONGPASS line.
fn wrong_password(backend: &str) -> Vec<u8> {
    let (a, b) = (RandomState::new(), RandomState::new());
    let n = a.hash_one(SystemTime::now());
    let password = format!("emulator-refused-{n:016x}{:016x}", b.hash_one(n));
    if password == backend {
        // Astronomically unlikely, but a collision would admit the client.
        return format!("{password}!").into_bytes();
    }
    password.into_bytes()
}
