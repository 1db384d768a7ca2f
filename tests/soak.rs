//! The load soak (issue 12): many concurrent sessions of every stateful kind
//! through the real proxy binary, re-authenticated every 2 s against the
//! emulator's 4 s session age, with the upstream killed and restarted in the
//! middle. Every reply is checked against what that session alone could be
//! owed, and every message and queue item is counted.
//!
//! The kinds, as shares of `SOAK_SESSIONS` (default 600 here, 9,000 in
//! `scripts/soak.sh`): SET/GET pipelines with values unique to the session
//! (most of them), WATCH/MULTI/EXEC and MULTI/INCR/EXEC loops on a key of
//! their own, BLPOP consumers with LPUSH producers on one queue, and RESP2
//! SUBSCRIBE and SSUBSCRIBE subscribers to a numbered stream each.
//!
//! The restart (SIGKILL of the emulator, a new one on the same port) cuts
//! every session, as a cache node's restart does: a client owed a reply gets
//! the proxy's error in its place, an idle one the close. Each reconnects.
//! A cut is expected only on a connection opened before the new emulator was
//! up; any other is an error. What a restart may cost, as it would direct:
//! a message published while a subscriber was reconnecting (it was not
//! subscribed), an item popped by a BLPOP whose reply the kill cut, a write
//! whose reply was cut (done or not; the session reads back which).
//! Duplicates are allowed only at a migration's overlap, and no more than
//! the proxy counted as candidates.

mod common;

use std::{
    collections::HashSet,
    fmt::Display,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::{Buf, BytesMut};
use common::{
    backend_options, blobs, encode_command, text, Emulator, EmulatorOptions, ProxyProcess,
    RedisServer,
};
use redis_protocol::resp3::types::OwnedFrame;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{watch, Semaphore},
    time::{sleep, sleep_until, timeout_at, Instant},
};

/// The proxy's re-authentication age; the emulator's session age is the
/// plan's (4 s unless `SOAK_MAX_AGE_S` says otherwise).
const REAUTH_AFTER: &str = "2s";
/// How long a reply may take on a loaded machine before it counts as lost.
const READ_WAIT: Duration = Duration::from_secs(10);
/// After the run, how long subscribers and consumers may take to catch up.
const DRAIN: Duration = Duration::from_secs(10);
/// Error messages kept (the rest are only counted).
const KEEP_ERRORS: usize = 30;
/// Sessions opening at once during the ramp.
const RAMP_PARALLEL: usize = 200;

/// The run's size, from the environment (`scripts/soak.sh` sets it).
#[derive(Clone, Copy, Debug)]
struct Plan {
    sessions: usize,
    run: Duration,
    /// Seconds between one SET/GET session's pipelines.
    steady_period: Duration,
    /// The emulator's max-session-age, e.g. "4s".
    max_age: &'static str,
}

impl Plan {
    fn from_env() -> Plan {
        let n = |key: &str, default: u64| -> u64 {
            std::env::var(key)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Plan {
            sessions: n("SOAK_SESSIONS", 600) as usize,
            run: Duration::from_secs(n("SOAK_SECONDS", 20)),
            steady_period: Duration::from_millis(n("SOAK_STEADY_PERIOD_MS", 2000)),
            max_age: format!("{}s", n("SOAK_MAX_AGE_S", 4)).leak(),
        }
    }

    fn subscribers(&self) -> usize {
        (self.sessions / 40).max(2)
    }

    fn consumers(&self) -> usize {
        (self.sessions / 30).max(2)
    }

    fn producers(&self) -> usize {
        (self.sessions / 300).max(1)
    }

    fn transactions(&self) -> usize {
        (self.sessions / 20).max(2)
    }

    /// Messages per second per stream: about 4,000 deliveries a second.
    fn publish_every(&self) -> Duration {
        let rate = (4000 / self.subscribers() as u64).clamp(5, 50);
        Duration::from_millis(1000 / rate)
    }

    /// The sessions in the order they are opened: the subscribers first, so
    /// they are in before the streams start.
    fn kinds(&self) -> Vec<Kind> {
        let mut kinds = Vec::with_capacity(self.sessions);
        for _ in 0..self.subscribers() {
            kinds.push(Kind::Subscriber(Stream::Plain));
            kinds.push(Kind::Subscriber(Stream::Sharded));
        }
        kinds.push(Kind::Publisher(Stream::Plain));
        kinds.push(Kind::Publisher(Stream::Sharded));
        kinds.extend((0..self.consumers()).map(|_| Kind::Consumer));
        kinds.extend((0..self.producers()).map(|p| Kind::Producer(p as u32)));
        kinds.extend((0..self.transactions()).map(|_| Kind::Transaction));
        while kinds.len() < self.sessions {
            kinds.push(Kind::Steady);
        }
        kinds
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// SUBSCRIBE / PUBLISH soak:ch
    Plain,
    /// SSUBSCRIBE / SPUBLISH soak:sch
    Sharded,
}

impl Stream {
    fn index(self) -> usize {
        self as usize
    }
    fn channel(self) -> &'static str {
        match self {
            Stream::Plain => "soak:ch",
            Stream::Sharded => "soak:sch",
        }
    }
    fn subscribe(self) -> &'static str {
        match self {
            Stream::Plain => "SUBSCRIBE",
            Stream::Sharded => "SSUBSCRIBE",
        }
    }
    fn publish(self) -> &'static str {
        match self {
            Stream::Plain => "PUBLISH",
            Stream::Sharded => "SPUBLISH",
        }
    }
    fn message(self) -> &'static str {
        match self {
            Stream::Plain => "message",
            Stream::Sharded => "smessage",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Steady,
    Transaction,
    Consumer,
    Producer(u32),
    Subscriber(Stream),
    Publisher(Stream),
}

// ---- what every session shares, and the counts ----

/// One numbered stream's publisher state.
#[derive(Default)]
struct Feed {
    /// The number being published now (set before it is sent).
    sending: AtomicU64,
    /// One past the highest number whose PUBLISH was confirmed.
    confirmed_to: AtomicU64,
    /// Numbers sent whose reply a cut took: delivered or not, not owed.
    unconfirmed: Mutex<HashSet<u64>>,
    done: AtomicBool,
}

/// The queue's book: per producer, each item's state and pop count.
#[derive(Default)]
struct Queue {
    /// 0 unconfirmed, 1 confirmed before the restart was over, 2 after.
    pushed: Vec<Vec<u8>>,
    popped: Vec<Vec<u16>>,
}

#[derive(Default)]
struct Counts {
    replies: AtomicU64,
    misattributed: AtomicU64,
    errors: AtomicU64,
    cuts: AtomicU64,
    reconnects: AtomicU64,
    transactions: AtomicU64,
    blpop_cut: AtomicU64,
    messages_published: AtomicU64,
    deliveries_owed: AtomicU64,
    deliveries_received: AtomicU64,
    /// Messages a subscriber got that no lifetime of it was owed (published
    /// around its SUBSCRIBE, or a PUBLISH whose reply was cut).
    deliveries_extra: AtomicU64,
    duplicates: AtomicU64,
    lost: AtomicU64,
}

struct Soak {
    addr: SocketAddr,
    epoch: Instant,
    plan: Plan,
    /// The kill, and the moment the new emulator listens.
    kill_at: Mutex<Option<Instant>>,
    up_at: Mutex<Option<Instant>>,
    feeds: [Feed; 2],
    producers_done: AtomicU64,
    queue: Mutex<Queue>,
    n: Counts,
    errors: Mutex<Vec<String>>,
}

impl Soak {
    fn stamp(&self) -> String {
        format!("t={:.2}s", self.epoch.elapsed().as_secs_f64())
    }

    fn error(&self, who: usize, msg: impl Display) {
        self.n.errors.fetch_add(1, SeqCst);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < KEEP_ERRORS {
            errors.push(format!("{} session {who}: {msg}", self.stamp()));
        }
    }

    /// A cut is the restart's only if its connection was opened before the
    /// new emulator was up, and the kill has happened.
    fn cut_expected(&self, opened_at: Instant) -> bool {
        let kill = *self.kill_at.lock().unwrap();
        let up = *self.up_at.lock().unwrap();
        kill.is_some() && up.is_none_or(|up| opened_at < up)
    }

    fn restarted(&self) -> bool {
        self.up_at.lock().unwrap().is_some()
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, SeqCst);
}

// ---- one client connection ----

/// Why an exchange did not complete.
enum Broken {
    /// The connection ended (EOF, reset, or the proxy's error in place of a
    /// reply, which the close follows).
    Cut(String),
    /// A reply that is not what this session was owed.
    Wrong(String),
}

struct Link {
    stream: TcpStream,
    buf: BytesMut,
    opened_at: Instant,
}

impl Link {
    async fn open(addr: SocketAddr) -> Result<Link, Broken> {
        let opened_at = Instant::now();
        match tokio::time::timeout(READ_WAIT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true).ok();
                Ok(Link {
                    stream,
                    buf: BytesMut::with_capacity(4096),
                    opened_at,
                })
            }
            Ok(Err(e)) => Err(Broken::Wrong(format!("connect to the proxy: {e}"))),
            Err(_) => Err(Broken::Wrong("connect to the proxy timed out".into())),
        }
    }

    async fn send(&mut self, lines: &[String]) -> Result<(), Broken> {
        let bytes: Vec<u8> = lines
            .iter()
            .flat_map(|l| encode_command(&l.split(' ').map(str::as_bytes).collect::<Vec<_>>()))
            .collect();
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| Broken::Cut(format!("write: {e}")))
    }

    /// The next frame within `wait` (`None` if none came).
    async fn read_within(&mut self, wait: Duration) -> Result<Option<OwnedFrame>, Broken> {
        let until = Instant::now() + wait;
        loop {
            match common::try_decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.advance(used);
                    if let OwnedFrame::SimpleError { data, .. } = &frame {
                        if data.contains("elasticache-auth-proxy") {
                            return Err(Broken::Cut(format!("-{data}")));
                        }
                    }
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(e) => return Err(Broken::Wrong(format!("undecodable reply: {e}"))),
            }
            match timeout_at(until, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(Broken::Cut("closed".into())),
                Ok(Err(e)) => return Err(Broken::Cut(format!("read: {e}"))),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn read(&mut self, what: &str) -> Result<OwnedFrame, Broken> {
        self.read_within(READ_WAIT)
            .await?
            .ok_or_else(|| Broken::Wrong(format!("{what}: no reply within {READ_WAIT:?} (LOST)")))
    }

    /// Reads one reply and compares its rendering; counts it.
    async fn expect(&mut self, soak: &Soak, what: &str, want: &str) -> Result<(), Broken> {
        let got = text(&self.read(what).await?);
        add(&soak.n.replies, 1);
        if got == want {
            Ok(())
        } else {
            Err(Broken::Wrong(format!("{what}: expected {want}, got {got}")))
        }
    }
}

/// A broken exchange: a cut the restart explains is counted and the session
/// reconnects; anything else is an error. Returns whether to go on.
fn broken(soak: &Soak, who: usize, link: &Link, b: Broken) -> bool {
    match b {
        Broken::Cut(_) if soak.cut_expected(link.opened_at) => {
            add(&soak.n.cuts, 1);
            true
        }
        Broken::Cut(why) => {
            soak.error(who, format!("cut outside the restart: {why}"));
            false
        }
        Broken::Wrong(why) => {
            soak.error(who, why);
            false
        }
    }
}

/// A new connection, retried while the upstream is down (each failed first
/// exchange is the restart's cut; `setup` runs the first commands).
async fn reconnect(soak: &Soak) -> Link {
    loop {
        match Link::open(soak.addr).await {
            Ok(link) => {
                add(&soak.n.reconnects, 1);
                return link;
            }
            Err(_) => sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Backoff between reconnects while the upstream is down, spread by session.
fn backoff(who: usize) -> Duration {
    Duration::from_millis(150 + (who as u64 * 37) % 300)
}

/// After a broken exchange: a cut the restart explains gets a new link
/// (after a backoff) and `true`; anything else is reported, `false`.
async fn recover(soak: &Soak, who: usize, link: &mut Link, b: Broken) -> bool {
    if !broken(soak, who, link, b) {
        return false;
    }
    sleep(backoff(who)).await;
    *link = reconnect(soak).await;
    true
}

// ---- the kinds ----

/// Opens and sets up a session; on a ramp cut or failure, reports and gives up.
async fn first_link(soak: &Soak, who: usize) -> Option<Link> {
    match Link::open(soak.addr).await {
        Ok(link) => Some(link),
        Err(Broken::Wrong(e) | Broken::Cut(e)) => {
            soak.error(who, e);
            None
        }
    }
}

/// Pipelined SET + GET of a value only this session writes.
async fn steady(soak: Arc<Soak>, who: usize, mut link: Link, end: Instant) -> Option<Link> {
    let key = format!("soak:s:{who}");
    let mut n = 0u64;
    // Spread the sessions over the period.
    let period = soak.plan.steady_period;
    sleep(period.mul_f64((who % 97) as f64 / 97.0)).await;
    while Instant::now() < end {
        let value = format!("v{who}-{n}");
        let round = async {
            link.send(&[format!("SET {key} {value}"), format!("GET {key}")])
                .await?;
            link.expect(&soak, "SET", "+OK").await?;
            let got = text(&link.read("GET").await?);
            add(&soak.n.replies, 1);
            if got == format!("${value}") {
                return Ok(());
            }
            if got.starts_with("$v") && !got.starts_with(&format!("$v{who}-")) {
                add(&soak.n.misattributed, 1);
                return Err(Broken::Wrong(format!(
                    "GET {key}: got {got}, another session's value (MISATTRIBUTED)"
                )));
            }
            Err(Broken::Wrong(format!(
                "GET {key}: expected ${value}, got {got}"
            )))
        }
        .await;
        n += 1;
        if let Err(b) = round {
            if !recover(&soak, who, &mut link, b).await {
                return None;
            }
            continue;
        }
        sleep(period).await;
    }
    Some(link)
}

/// WATCH/GET/MULTI/SET/EXEC (nobody else writes the key: every EXEC
/// commits), alternating with pipelined MULTI/INCR/INCR/EXEC.
async fn transaction(soak: Arc<Soak>, who: usize, mut link: Link, end: Instant) -> Option<Link> {
    let key = format!("soak:w:{who}");
    // The key's value as last confirmed, and what a cut round would leave.
    let mut value = 0u64;
    let mut cut_round: Option<u64> = None;
    let mut round = 0u64;
    let setup = async {
        link.send(&[format!("SET {key} 0")]).await?;
        link.expect(&soak, "SET", "+OK").await
    }
    .await;
    if let Err(b) = setup {
        broken(&soak, who, &link, b);
        return None;
    }
    sleep(Duration::from_millis((who as u64 * 13) % 500)).await;
    while Instant::now() < end {
        let r = async {
            if let Some(after) = cut_round {
                // Did the cut round commit? Either is fine; nothing else is.
                link.send(&[format!("GET {key}")]).await?;
                let got = text(&link.read("GET after a cut").await?);
                add(&soak.n.replies, 1);
                if got == format!("${after}") {
                    value = after;
                } else if got != format!("${value}") {
                    return Err(Broken::Wrong(format!(
                        "GET {key} after a cut: expected {value} or {after}, got {got}"
                    )));
                }
            }
            if round % 2 == 0 {
                cut_round = Some(value + 1);
                link.send(&[format!("WATCH {key}")]).await?;
                link.expect(&soak, "WATCH", "+OK").await?;
                link.send(&[format!("GET {key}")]).await?;
                link.expect(&soak, "GET", &format!("${value}")).await?;
                link.send(&["MULTI".into(), format!("SET {key} {}", value + 1)])
                    .await?;
                link.expect(&soak, "MULTI", "+OK").await?;
                link.expect(&soak, "SET (queued)", "+QUEUED").await?;
                // Idle inside MULTI, where no re-auth may be injected.
                sleep(Duration::from_millis(30)).await;
                link.send(&["EXEC".into()]).await?;
                link.expect(&soak, "EXEC after WATCH", "[OK]").await?;
                value += 1;
            } else {
                cut_round = Some(value + 2);
                link.send(&[
                    "MULTI".into(),
                    format!("INCR {key}"),
                    format!("INCR {key}"),
                    "EXEC".into(),
                ])
                .await?;
                link.expect(&soak, "MULTI", "+OK").await?;
                link.expect(&soak, "INCR (queued)", "+QUEUED").await?;
                link.expect(&soak, "INCR (queued)", "+QUEUED").await?;
                link.expect(&soak, "EXEC", &format!("[{},{}]", value + 1, value + 2))
                    .await?;
                value += 2;
            }
            cut_round = None;
            add(&soak.n.transactions, 1);
            Ok(())
        }
        .await;
        round += 1;
        if let Err(b) = r {
            if !recover(&soak, who, &mut link, b).await {
                return None;
            }
            continue;
        }
        sleep(Duration::from_millis(500)).await;
    }
    Some(link)
}

/// LPUSH soak:q p<producer>-<n> every 50 ms.
async fn producer(
    soak: Arc<Soak>,
    who: usize,
    p: u32,
    mut link: Link,
    end: Instant,
) -> Option<Link> {
    let mut n = 0usize;
    while Instant::now() < end {
        soak.queue.lock().unwrap().pushed[p as usize].push(0);
        let r = async {
            link.send(&[format!("LPUSH soak:q p{p}-{n}")]).await?;
            let frame = link.read("LPUSH").await?;
            add(&soak.n.replies, 1);
            match frame {
                OwnedFrame::Number { data, .. } if data >= 1 => Ok(()),
                other => Err(Broken::Wrong(format!(
                    "LPUSH: expected a length, got {}",
                    text(&other)
                ))),
            }
        }
        .await;
        match r {
            Ok(()) => {
                let after = if soak.restarted() { 2 } else { 1 };
                soak.queue.lock().unwrap().pushed[p as usize][n] = after;
            }
            Err(b) => {
                n += 1;
                if !recover(&soak, who, &mut link, b).await {
                    return None;
                }
                continue;
            }
        }
        n += 1;
        sleep(Duration::from_millis(50)).await;
    }
    Some(link)
}

/// BLPOP soak:q 1 until the producers are done and the queue is empty.
async fn consumer(soak: Arc<Soak>, who: usize, mut link: Link, end: Instant) -> Option<Link> {
    let producers = soak.plan.producers() as u64;
    loop {
        if Instant::now() > end + DRAIN {
            soak.error(who, "the queue did not drain in time");
            return None;
        }
        let r = async {
            link.send(&["BLPOP soak:q 1".into()]).await?;
            let frame = link.read("BLPOP").await?;
            add(&soak.n.replies, 1);
            if frame == OwnedFrame::Null {
                return Ok(false);
            }
            let item = match blobs(&frame).as_deref() {
                Some([q, item]) if q == "soak:q" => item
                    .strip_prefix('p')
                    .and_then(|s| s.split_once('-'))
                    .and_then(|(p, n)| Some((p.parse::<usize>().ok()?, n.parse::<usize>().ok()?))),
                _ => None,
            };
            let Some((p, n)) = item else {
                return Err(Broken::Wrong(format!(
                    "BLPOP: expected [soak:q,p<i>-<n>] or nil, got {}",
                    text(&frame)
                )));
            };
            let mut q = soak.queue.lock().unwrap();
            let popped = &mut q.popped[p];
            if popped.len() <= n {
                popped.resize(n + 1, 0);
            }
            popped[n] += 1;
            Ok(true)
        }
        .await;
        match r {
            Ok(true) => {}
            Ok(false) => {
                if soak.producers_done.load(SeqCst) == producers {
                    return Some(link);
                }
            }
            Err(b) => {
                if matches!(b, Broken::Cut(_)) {
                    add(&soak.n.blpop_cut, 1);
                }
                if !recover(&soak, who, &mut link, b).await {
                    return None;
                }
            }
        }
    }
}

/// PUBLISH (or SPUBLISH) n every few ms; a number whose reply was cut is
/// skipped, never sent again (that would be a duplicate).
async fn publisher(
    soak: Arc<Soak>,
    who: usize,
    stream: Stream,
    mut link: Link,
    end: Instant,
) -> Option<Link> {
    let feed = &soak.feeds[stream.index()];
    let every = soak.plan.publish_every();
    let mut next = Instant::now();
    let mut n = 0u64;
    while Instant::now() < end {
        feed.sending.store(n, SeqCst);
        let r = async {
            link.send(&[format!("{} {} {n}", stream.publish(), stream.channel())])
                .await?;
            let frame = link.read("PUBLISH").await?;
            add(&soak.n.replies, 1);
            match frame {
                OwnedFrame::Number { .. } => Ok(()),
                other => Err(Broken::Wrong(format!(
                    "{}: expected a count, got {}",
                    stream.publish(),
                    text(&other)
                ))),
            }
        }
        .await;
        match r {
            Ok(()) => {
                feed.confirmed_to.store(n + 1, SeqCst);
                add(&soak.n.messages_published, 1);
            }
            Err(b) => {
                feed.unconfirmed.lock().unwrap().insert(n);
                n += 1;
                if !recover(&soak, who, &mut link, b).await {
                    feed.done.store(true, SeqCst);
                    return None;
                }
                continue;
            }
        }
        n += 1;
        next += every;
        sleep_until(next.max(Instant::now())).await;
    }
    // Published once more, so `sending` moves past the last confirmed one.
    feed.sending.store(n, SeqCst);
    feed.done.store(true, SeqCst);
    Some(link)
}

/// One subscription's lifetime: owed every confirmed message after the one
/// being published when its SUBSCRIBE was confirmed.
struct Lifetime {
    after: u64,
    seen: Vec<bool>,
    max: Option<u64>,
}

impl Lifetime {
    /// Counts what this lifetime was owed up to `upto` (inclusive) and what
    /// of it arrived.
    fn settle(&self, soak: &Soak, who: usize, stream: Stream, upto: Option<u64>) {
        let Some(upto) = upto else { return };
        let feed = &soak.feeds[stream.index()];
        let unconfirmed = feed.unconfirmed.lock().unwrap().clone();
        let (mut owed, mut got, mut missing) = (0u64, 0u64, Vec::new());
        for m in self.after + 1..=upto {
            if unconfirmed.contains(&m) {
                continue;
            }
            owed += 1;
            if self.seen.get(m as usize).copied().unwrap_or(false) {
                got += 1;
            } else {
                missing.push(m);
            }
        }
        add(&soak.n.deliveries_owed, owed);
        add(&soak.n.deliveries_received, got);
        if !missing.is_empty() {
            add(&soak.n.lost, missing.len() as u64);
            soak.error(
                who,
                format!(
                    "{}: {} of {owed} owed messages never arrived (LOST), e.g. {:?}",
                    stream.channel(),
                    missing.len(),
                    &missing[..missing.len().min(8)]
                ),
            );
        }
    }
}

/// SUBSCRIBE (or SSUBSCRIBE) in RESP2 and count the numbered stream.
async fn subscriber(
    soak: Arc<Soak>,
    who: usize,
    stream: Stream,
    mut link: Link,
    end: Instant,
) -> Option<Link> {
    let feed = &soak.feeds[stream.index()];
    let confirm = format!(
        "[{},{},1]",
        stream.subscribe().to_lowercase(),
        stream.channel()
    );
    'lifetimes: loop {
        let subscribed = async {
            link.send(&[format!("{} {}", stream.subscribe(), stream.channel())])
                .await?;
            link.expect(&soak, "SUBSCRIBE", &confirm).await
        }
        .await;
        if let Err(b) = subscribed {
            if !recover(&soak, who, &mut link, b).await {
                return None;
            }
            continue;
        }
        let mut life = Lifetime {
            after: feed.sending.load(SeqCst),
            seen: Vec::new(),
            max: None,
        };
        let mut quiet_since = Instant::now();
        loop {
            let done = feed.done.load(SeqCst);
            let last = feed.confirmed_to.load(SeqCst).checked_sub(1);
            let caught_up = last.is_none_or(|l| l <= life.after || life.max >= Some(l));
            if done && caught_up {
                life.settle(&soak, who, stream, last);
                return Some(link);
            }
            if Instant::now() > end + DRAIN {
                life.settle(&soak, who, stream, last);
                soak.error(who, "the stream did not catch up in time");
                return None;
            }
            let frame = match link.read_within(Duration::from_millis(500)).await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    if !done
                        && quiet_since.elapsed() > Duration::from_secs(5)
                        && !soak.cut_expected(link.opened_at)
                    {
                        soak.error(
                            who,
                            format!("{}: no message for 5 s (STALLED)", stream.channel()),
                        );
                        return None;
                    }
                    continue;
                }
                Err(b) => {
                    life.settle(&soak, who, stream, life.max);
                    if !recover(&soak, who, &mut link, b).await {
                        return None;
                    }
                    continue 'lifetimes;
                }
            };
            quiet_since = Instant::now();
            let n = match blobs(&frame).as_deref() {
                Some([kind, ch, n]) if kind == stream.message() && ch == stream.channel() => {
                    n.parse::<u64>().ok()
                }
                _ => None,
            };
            let Some(n) = n else {
                add(&soak.n.misattributed, 1);
                soak.error(
                    who,
                    format!("not a message of {}: {}", stream.channel(), text(&frame)),
                );
                return None;
            };
            let i = n as usize;
            if life.seen.len() <= i {
                life.seen.resize(i + 1, false);
            }
            if life.seen[i] {
                add(&soak.n.duplicates, 1);
                continue;
            }
            life.seen[i] = true;
            if n <= life.after || feed.unconfirmed.lock().unwrap().contains(&n) {
                add(&soak.n.deliveries_extra, 1);
            }
            match life.max {
                Some(max) if n < max => {
                    soak.error(
                        who,
                        format!("message {n} arrived after {max} (OUT OF ORDER)"),
                    );
                    return None;
                }
                _ => life.max = Some(n),
            }
        }
    }
}

/// How the run paces its sessions: the ramp's slots, the count of those
/// ready, the start (with the end), and the release after the counts.
struct Pace {
    ramp: Arc<Semaphore>,
    ready: Arc<AtomicU64>,
    go: watch::Receiver<Option<Instant>>,
    release: watch::Receiver<bool>,
}

/// A session from its first connection to the end of the run and its final
/// PING. Returns whether it ended in step.
async fn session(soak: Arc<Soak>, who: usize, kind: Kind, pace: Pace, settled: Settled) -> bool {
    let Pace {
        ramp,
        ready,
        mut go,
        mut release,
    } = pace;
    let permit = ramp.acquire_owned().await.expect("the ramp stays open");
    let Some(mut link) = first_link(&soak, who).await else {
        return false;
    };
    // Opens the upstream connection now: the proxy connects on the first
    // command, and the ramp is where that cost belongs.
    let opened = async {
        link.send(&["PING".into()]).await?;
        link.expect(&soak, "PING", "+PONG").await
    }
    .await;
    if let Err(b) = opened {
        broken(&soak, who, &link, b);
        return false;
    }
    drop(permit);
    ready.fetch_add(1, SeqCst);
    let Ok(end) = go
        .wait_for(Option::is_some)
        .await
        .map(|end| end.expect("checked"))
    else {
        return false;
    };
    let link = match kind {
        Kind::Steady => steady(soak.clone(), who, link, end).await,
        Kind::Transaction => transaction(soak.clone(), who, link, end).await,
        Kind::Consumer => consumer(soak.clone(), who, link, end).await,
        Kind::Producer(p) => {
            let link = producer(soak.clone(), who, p, link, end).await;
            soak.producers_done.fetch_add(1, SeqCst);
            link
        }
        Kind::Subscriber(s) => subscriber(soak.clone(), who, s, link, end).await,
        Kind::Publisher(s) => publisher(soak.clone(), who, s, link, end).await,
    };
    let Some(mut link) = link else {
        return false;
    };
    // Still connected and in step at the very end.
    let want = if matches!(kind, Kind::Subscriber(_)) {
        "[pong,]"
    } else {
        "+PONG"
    };
    let last = async {
        link.send(&["PING".into()]).await?;
        loop {
            let frame = link.read("final PING").await?;
            let got = text(&frame);
            // A late duplicate of the stream may still come first.
            if matches!(kind, Kind::Subscriber(_))
                && got.starts_with('[')
                && got.contains("message,")
            {
                continue;
            }
            add(&soak.n.replies, 1);
            return if got == want {
                Ok(())
            } else {
                Err(Broken::Wrong(format!(
                    "final PING: expected {want}, got {got}"
                )))
            };
        }
    }
    .await;
    let in_step = match last {
        Ok(()) => true,
        Err(b) => {
            broken(&soak, who, &link, b);
            false
        }
    };
    // Held open, idle (and re-authenticated like any session) until every
    // session is done: the counts are read before the teardown closes
    // thousands of connections at once.
    drop(settled);
    let _ = release.wait_for(|go| *go).await;
    drop(link);
    in_step
}

/// Counts a session as done when dropped, however it ended.
struct Settled(Arc<AtomicU64>);

impl Drop for Settled {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

// ---- the stack and the run ----

fn proxy_metric(body: &str, series: &str) -> f64 {
    let want = format!("elasticache_auth_proxy_{series}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == want)
        .map_or(0.0, |(_, v)| v.parse().unwrap_or(f64::NAN))
}

async fn scrape(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).await.expect("admin listener");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Adds one emulator life's counters to `total`.
fn tally(total: &mut std::collections::HashMap<String, u64>, emulator: &Emulator) {
    for (k, v) in emulator.stats() {
        *total.entry(k).or_default() += v;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_nothing_is_lost_under_load_reauthentication_and_an_upstream_restart() {
    let plan = Plan::from_env();
    let redis = RedisServer::start(common::RedisOptions {
        extra_args: vec!["--maxclients".into(), "19000".into()],
        ..backend_options()
    });
    let emulator_opts = EmulatorOptions {
        max_session_age: plan.max_age.into(),
        ..Default::default()
    };
    let mut emulator = Emulator::start(&redis, &emulator_opts);
    // The binary, not the library: the descriptors of 9,000 sessions and
    // their upstream connections need a process of their own.
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDTEST".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key".to_string()),
        ("AWS_REGION", common::REGION.to_string()),
    ];
    let extra = [
        "--reauth-after",
        REAUTH_AFTER,
        "--max-session-age",
        plan.max_age,
        "--max-connections",
        "19000",
        "--log-level",
        "warn",
    ];
    let proxy = ProxyProcess::start(&emulator, &redis, &extra, &env);
    let kinds = plan.kinds();
    let soak = Arc::new(Soak {
        addr: proxy.addr,
        epoch: Instant::now(),
        plan,
        kill_at: Mutex::new(None),
        up_at: Mutex::new(None),
        feeds: [Feed::default(), Feed::default()],
        producers_done: AtomicU64::new(0),
        queue: Mutex::new(Queue {
            pushed: vec![Vec::new(); plan.producers()],
            popped: vec![Vec::new(); plan.producers()],
        }),
        n: Counts::default(),
        errors: Mutex::new(Vec::new()),
    });

    // The ramp: every session connected, upstream authenticated, in place.
    let ramp = Arc::new(Semaphore::new(RAMP_PARALLEL));
    let ready = Arc::new(AtomicU64::new(0));
    let (go, go_rx) = watch::channel(None);
    let settled = Arc::new(AtomicU64::new(0));
    let (release, release_rx) = watch::channel(false);
    let tasks: Vec<_> = kinds
        .iter()
        .enumerate()
        .map(|(who, &kind)| {
            tokio::spawn(session(
                soak.clone(),
                who,
                kind,
                Pace {
                    ramp: ramp.clone(),
                    ready: ready.clone(),
                    go: go_rx.clone(),
                    release: release_rx.clone(),
                },
                Settled(settled.clone()),
            ))
        })
        .collect();
    drop((go_rx, release_rx));
    let ramp_started = Instant::now();
    let ramp_deadline = ramp_started + Duration::from_secs(30 + plan.sessions as u64 / 100);
    while ready.load(SeqCst) < kinds.len() as u64 {
        let failed = soak.n.errors.load(SeqCst);
        assert!(
            Instant::now() < ramp_deadline && failed == 0,
            "the ramp: {} of {} sessions ready, {failed} failed: {:?}",
            ready.load(SeqCst),
            kinds.len(),
            soak.errors.lock().unwrap()
        );
        sleep(Duration::from_millis(50)).await;
    }
    let ramp_took = ramp_started.elapsed();
    let body = scrape(proxy.admin).await;
    let open_sessions = proxy_metric(&body, "client_connections_active");

    // The run, with the restart at 40% of it.
    let start = Instant::now();
    let end = start + plan.run;
    go.send(Some(end)).expect("sessions are waiting");
    sleep_until(start + plan.run.mul_f64(0.4)).await;
    let mut emulator_stats = std::collections::HashMap::new();
    tally(&mut emulator_stats, &emulator);
    *soak.kill_at.lock().unwrap() = Some(Instant::now());
    tokio::task::block_in_place(|| emulator.restart(&redis, &emulator_opts));
    *soak.up_at.lock().unwrap() = Some(Instant::now());
    let restart_at = soak.kill_at.lock().unwrap().unwrap() - start;

    // Every session done (the ones in step still open), then the counts.
    while settled.load(SeqCst) < kinds.len() as u64 && Instant::now() < end + DRAIN + READ_WAIT * 2
    {
        sleep(Duration::from_millis(50)).await;
    }
    let ran = start.elapsed();
    tally(&mut emulator_stats, &emulator);
    let body = scrape(proxy.admin).await;
    release.send(true).expect("sessions hold their links");
    let mut in_step = 0u64;
    for task in tasks {
        match timeout_at(Instant::now() + READ_WAIT, task).await {
            Ok(Ok(true)) => in_step += 1,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => soak.error(usize::MAX, format!("session task failed: {e}")),
            Err(_) => soak.error(usize::MAX, "session task hung past the drain"),
        }
    }
    let m = |s: &str| proxy_metric(&body, s);
    let stat = |k: &str| emulator_stats.get(k).copied().unwrap_or(0);

    // The queue's book.
    let (mut confirmed, mut lost_before, mut lost_after, mut doubled, mut popped) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    {
        let q = soak.queue.lock().unwrap();
        for (pushed, pops) in q.pushed.iter().zip(&q.popped) {
            for (i, &state) in pushed.iter().enumerate() {
                let got = pops.get(i).copied().unwrap_or(0);
                popped += got as u64;
                if got > 1 {
                    doubled += 1;
                }
                match (state, got) {
                    (0, _) => {}
                    (1, 0) => lost_before += 1,
                    (2, 0) => lost_after += 1,
                    _ => {}
                }
                if state != 0 {
                    confirmed += 1;
                }
            }
        }
    }
    let left_in_queue = {
        let mut c = common::Resp::connect(redis.plain_addr().expect("a plain port")).await;
        c.cmd(&[b"AUTH", b"app", b"app-secret-pw"]).await;
        text(&c.cmd(&[b"LLEN", b"soak:q"]).await)
    };
    let n = |c: &AtomicU64| c.load(SeqCst);
    let reauths = m(r#"reauthentications_total{outcome="success"}"#);
    let migrations = m(r#"session_migrations_total{outcome="success"}"#);
    let overlap = m("migration_overlap_messages_total");

    println!(
        "\n=== load soak: {} sessions ({} SET/GET, {} WATCH/MULTI, {} BLPOP, {} LPUSH, \
         {} SUBSCRIBE + {} SSUBSCRIBE, 2 publishers), ramp {:.1}s, run {:?} (done after {:.1}s), \
         upstream killed and restarted at {:.1}s; max-session-age {}, re-auth after {REAUTH_AFTER} ===",
        kinds.len(),
        kinds.iter().filter(|k| **k == Kind::Steady).count(),
        plan.transactions(),
        plan.consumers(),
        plan.producers(),
        plan.subscribers(),
        plan.subscribers(),
        ramp_took.as_secs_f64(),
        plan.run,
        ran.as_secs_f64(),
        restart_at.as_secs_f64(),
        plan.max_age,
    );
    println!(
        "sessions open after the ramp: {open_sessions}; in step at the end: {in_step} \
         (open then: {} client, {} upstream connections)",
        m("client_connections_active"),
        m(r#"upstream_connections_active{method="iam"}"#)
    );
    println!(
        "replies checked: {}; misattributed: {}; errors: {}",
        n(&soak.n.replies),
        n(&soak.n.misattributed),
        n(&soak.n.errors)
    );
    println!(
        "restart: {} cuts, {} reconnects; transactions committed: {}",
        n(&soak.n.cuts),
        n(&soak.n.reconnects),
        n(&soak.n.transactions)
    );
    println!(
        "re-authentications: {reauths} (failed {}), subscriber migrations: {migrations} (failed {}), \
         session expirations: proxy {} emulator {}",
        m(r#"reauthentications_total{outcome="failure"}"#),
        m(r#"session_migrations_total{outcome="failure"}"#),
        m("iam_session_expirations_total"),
        stat("sessions_expired_total"),
    );
    println!(
        "emulator: IAM AUTHs verified {}, refused {}",
        stat("iam_auth_success_total"),
        stat("iam_auth_failure_total")
    );
    println!(
        "pub/sub: published {} messages; deliveries owed {}, received {} (equal), \
         extra {}, duplicates {} (overlap candidates {overlap}), lost {}",
        n(&soak.n.messages_published),
        n(&soak.n.deliveries_owed),
        n(&soak.n.deliveries_received),
        n(&soak.n.deliveries_extra),
        n(&soak.n.duplicates),
        n(&soak.n.lost),
    );
    println!(
        "queue: {confirmed} items pushed and confirmed, {popped} popped, {doubled} popped twice, \
         {lost_after} confirmed after the restart never popped, {lost_before} of those before it \
         never popped (at most the {} BLPOPs the kill cut), left in the queue {left_in_queue}",
        n(&soak.n.blpop_cut)
    );
    for e in soak.errors.lock().unwrap().iter() {
        println!("  ! {e}");
    }

    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    check(
        open_sessions == kinds.len() as f64,
        format!("{open_sessions} sessions open after the ramp"),
    );
    check(
        n(&soak.n.errors) == 0,
        format!("{} errors", n(&soak.n.errors)),
    );
    check(
        in_step == kinds.len() as u64,
        format!("{in_step} of {} sessions in step at the end", kinds.len()),
    );
    check(
        n(&soak.n.misattributed) == 0,
        "misattributed replies".into(),
    );
    // No connection leaked: exactly the sessions in step were still open.
    check(
        m("client_connections_active") == in_step as f64,
        format!(
            "{} client connections open at the end for {in_step} sessions in step",
            m("client_connections_active")
        ),
    );
    check(n(&soak.n.lost) == 0, "lost messages".into());
    check(
        n(&soak.n.deliveries_owed) == n(&soak.n.deliveries_received),
        "deliveries owed != received".into(),
    );
    check(
        n(&soak.n.deliveries_owed) > 0 && n(&soak.n.messages_published) > 0,
        "no messages at all".into(),
    );
    check(
        n(&soak.n.duplicates) as f64 <= overlap,
        format!(
            "{} duplicates, more than the {overlap} overlap candidates",
            n(&soak.n.duplicates)
        ),
    );
    check(doubled == 0, format!("{doubled} queue items popped twice"));
    check(
        lost_after == 0,
        format!("{lost_after} queue items lost after the restart"),
    );
    check(
        lost_before <= n(&soak.n.blpop_cut),
        format!("{lost_before} queue items lost, more than the BLPOPs cut"),
    );
    check(
        left_in_queue == ":0",
        format!("{left_in_queue} items left in the queue"),
    );
    check(n(&soak.n.cuts) > 0, "the restart cut nothing".into());
    // The server's count: the proxy's own (a close at about the age
    // limit) also takes in the restart's closes of sessions near it.
    check(
        stat("sessions_expired_total") == 0,
        format!(
            "the emulator cut {} IAM sessions at their age limit",
            stat("sessions_expired_total")
        ),
    );
    check(
        m(r#"reauthentications_total{outcome="failure"}"#) == 0.0,
        "re-authentications failed".into(),
    );
    // Every session outlives several session ages: each re-authenticated
    // (or, subscribed, migrated) at least once per 2 s it ran.
    let due = kinds.len() as f64 * (plan.run.as_secs_f64() / 2.0 - 2.0).max(1.0) * 0.5;
    check(
        reauths + migrations >= due,
        format!("only {reauths} re-authentications and {migrations} migrations; expected {due:.0}"),
    );
    check(
        stat("iam_auth_failure_total") == 0,
        "the emulator refused IAM AUTHs".into(),
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    drop(proxy);
}
