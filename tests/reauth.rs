//! Transparent IAM re-authentication (DESIGN invariants 2 and 3) under load.
//!
//! The emulator closes every IAM connection 4 s after its last successful IAM
//! AUTH; the proxy re-authenticates after 2 s. Every client here outlives
//! that many times over, so it only keeps working if the proxy re-sends AUTH
//! at safe points (or, for RESP2 subscribers and MONITOR, moves the session
//! to a fresh connection) without the client ever seeing it.
//!
//! Clients never panic mid-run: each records what it saw, stamped with the
//! time since the test started, and stops at its first broken exchange, so
//! one failure still yields the whole report. The test asserts at the end.

mod common;

use std::{
    fmt::Display,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

use aws_credential_types::Credentials;
use bytes::{Buf, BytesMut};
use common::{
    backend_options, blobs, encode_command, text, Emulator, EmulatorOptions, Proxy, RedisServer,
    IAM_USER,
};
use redis_protocol::resp3::types::OwnedFrame;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, watch},
    time::{sleep, sleep_until, timeout, timeout_at, Instant, MissedTickBehavior},
};

/// How long the soak's clients run.
const RUN: Duration = Duration::from_secs(32);
/// After `RUN`, how long the consumer and subscribers may take to catch up.
const DRAIN: Duration = Duration::from_secs(4);
/// The emulator's (and proxy's) max-session-age, and the proxy's re-auth age.
const MAX_AGE: &str = "4s";
const REAUTH_AFTER: Duration = Duration::from_secs(2);
/// How long a client waits for a reply before calling it lost.
const READ_WAIT: Duration = Duration::from_secs(5);
/// Error messages kept per client (the rest are only counted).
const KEEP_ERRORS: usize = 12;
/// Window in which the MONITOR client must see at least one line.
const MONITOR_WINDOW: Duration = Duration::from_secs(4);

// ---- the stack: redis ← emulator ← proxy ----

struct Stack {
    proxy: Proxy,
    emulator: Emulator,
    _redis: RedisServer,
}

impl Stack {
    /// The emulator cuts IAM sessions `max_age` after their last AUTH; the
    /// proxy knows that limit and re-authenticates after `reauth_after`.
    async fn start(max_age: &str, reauth_after: &str) -> Stack {
        let redis = RedisServer::start(backend_options());
        let emulator = Emulator::start(
            &redis,
            &EmulatorOptions {
                max_session_age: max_age.into(),
                ..Default::default()
            },
        );
        let mut args = Proxy::iam_args(&redis, emulator.addr.port());
        args.reauth_after = Some(reauth_after.parse().unwrap());
        args.max_session_age = Some(max_age.parse().unwrap());
        let creds = Credentials::new("AKIDTEST", "test-secret-key", None, None, "test");
        let proxy = Proxy::start_with_credentials(args, "unused", creds).await;
        Stack {
            proxy,
            emulator,
            _redis: redis,
        }
    }

    /// One proxy metric (name without the common prefix, labels included).
    async fn metric(&self, series: &str) -> f64 {
        Scrape::take(self.proxy.admin).await.n(series)
    }

    fn reauths_ok_series() -> &'static str {
        r#"reauthentications_total{outcome="success"}"#
    }
}

/// One scrape of the proxy's `/metrics`.
struct Scrape(String);

impl Scrape {
    async fn take(admin: SocketAddr) -> Scrape {
        let exchange = async {
            let mut s = TcpStream::connect(admin).await?;
            let req = "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
            s.write_all(req.as_bytes()).await?;
            let mut raw = String::new();
            s.read_to_string(&mut raw).await?;
            Ok::<_, std::io::Error>(raw)
        };
        let raw = timeout(READ_WAIT, exchange)
            .await
            .expect("/metrics answers in time")
            .expect("/metrics over HTTP");
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "/metrics: {head}");
        Scrape(body.to_string())
    }

    /// The value of one exact series; 0 when absent (a label set not used yet).
    fn n(&self, series: &str) -> f64 {
        let want = format!("elasticache_auth_proxy_{series}");
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(name, _)| *name == want)
            .map_or(0.0, |(_, v)| v.parse().expect("a number"))
    }
}

/// Polls the proxy until `series` reaches `at_least`; returns the last value.
async fn metric_reaches(stack: &Stack, series: &str, at_least: f64, within: Duration) -> f64 {
    let until = Instant::now() + within;
    loop {
        let v = stack.metric(series).await;
        if v >= at_least || Instant::now() >= until {
            return v;
        }
        sleep(Duration::from_millis(20)).await;
    }
}

// ---- a client that reports instead of panicking ----

/// What broke, and whether the connection is gone.
#[derive(Debug)]
struct Fail {
    disconnect: bool,
    msg: String,
}

fn stamp(epoch: Instant) -> String {
    format!("t={:.2}s", epoch.elapsed().as_secs_f64())
}

/// Marks the proxy's own error lines, the one thing a client must never see.
fn proxy_tag(got: &str) -> &'static str {
    if got.contains("elasticache-auth-proxy") {
        " [PROXY ERROR]"
    } else {
        ""
    }
}

/// A command line split on spaces.
fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ').map(str::as_bytes).collect()
}

/// One plain-TCP RESP connection to the proxy.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// Failure messages are stamped relative to this.
    epoch: Instant,
}

impl Conn {
    async fn open(addr: SocketAddr, epoch: Instant) -> Result<Conn, Fail> {
        match timeout(READ_WAIT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true).ok();
                Ok(Conn {
                    stream,
                    buf: BytesMut::with_capacity(16 * 1024),
                    epoch,
                })
            }
            Ok(Err(e)) => Err(Fail {
                disconnect: true,
                msg: format!("{}: connect: {e}", stamp(epoch)),
            }),
            Err(_) => Err(Fail {
                disconnect: true,
                msg: format!("{}: connect timed out", stamp(epoch)),
            }),
        }
    }

    fn wrong(&self, msg: impl Display) -> Fail {
        Fail {
            disconnect: false,
            msg: format!("{}: {msg}", stamp(self.epoch)),
        }
    }

    fn closed(&self, msg: impl Display) -> Fail {
        Fail {
            disconnect: true,
            msg: format!("{}: DISCONNECTED: {msg}", stamp(self.epoch)),
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        match self.stream.write_all(bytes).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.closed(format!("write failed: {e}"))),
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), Fail> {
        self.send_raw(&encode_command(&words(line))).await
    }

    /// The next frame, or `None` if none arrives within `wait`.
    async fn read_within(&mut self, wait: Duration) -> Result<Option<OwnedFrame>, Fail> {
        let until = Instant::now() + wait;
        loop {
            match common::try_decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.advance(used);
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(e) => return Err(self.wrong(e)),
            }
            // read_buf is cancel-safe: a timeout loses no bytes.
            match timeout_at(until, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => {
                    let rest = String::from_utf8_lossy(&self.buf).into_owned();
                    return Err(self.closed(format!("the proxy closed the connection {rest:?}")));
                }
                Ok(Err(e)) => return Err(self.closed(format!("read failed: {e}"))),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next frame; none within `READ_WAIT` is a failure.
    async fn read(&mut self, what: &str) -> Result<OwnedFrame, Fail> {
        match self.read_within(READ_WAIT).await? {
            Some(frame) => Ok(frame),
            None => Err(self.wrong(format!("{what}: no reply within {READ_WAIT:?}"))),
        }
    }

    /// Reads one frame and compares its rendering.
    async fn expect(&mut self, what: &str, want: &str) -> Result<(), Fail> {
        let got = text(&self.read(what).await?);
        if got == want {
            Ok(())
        } else {
            Err(self.wrong(format!(
                "{what}: expected {want}, got {got}{}",
                proxy_tag(&got)
            )))
        }
    }

    /// Sends `line` and expects `want` back.
    async fn run(&mut self, line: &str, want: &str) -> Result<(), Fail> {
        self.send(line).await?;
        self.expect(line, want).await
    }

    /// After a wrong reply: does the proxy hang up within a second?
    async fn closes_soon(&mut self) -> bool {
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            match self.read_within(until - Instant::now()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return false,
                Err(f) => return f.disconnect,
            }
        }
    }
}

// ---- per-client reports ----

struct Report {
    name: &'static str,
    /// In first-use order.
    counts: Vec<(&'static str, u64)>,
    duplicates: u64,
    disconnects: u64,
    errors: Vec<String>,
    error_count: u64,
}

impl Report {
    fn new(name: &'static str) -> Report {
        Report {
            name,
            counts: Vec::new(),
            duplicates: 0,
            disconnects: 0,
            errors: Vec::new(),
            error_count: 0,
        }
    }

    fn add(&mut self, key: &'static str, n: u64) {
        match self.counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v += n,
            None => self.counts.push((key, n)),
        }
    }

    fn get(&self, key: &str) -> u64 {
        self.counts
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(0, |(_, v)| *v)
    }

    fn error(&mut self, msg: String) {
        self.error_count += 1;
        if self.errors.len() < KEEP_ERRORS {
            self.errors.push(msg);
        }
    }

    fn fail(&mut self, f: Fail) {
        if f.disconnect {
            self.disconnects += 1;
        }
        self.error(f.msg);
    }

    fn counts_line(&self) -> String {
        self.counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

// ---- the soak's clients ----

/// Handed from producers to consumers.
#[derive(Default)]
struct Feeds {
    /// LPUSHes confirmed (items 0..pushed).
    pushed: AtomicU64,
    producer_done: AtomicBool,
    /// PUBLISHes confirmed (messages 0..published).
    published: AtomicU64,
    publisher_done: AtomicBool,
    /// Subscribers whose subscription is confirmed.
    subscribed: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pipeline,
    Multi,
    Watch,
    BlpopConsumer,
    LpushProducer,
    Subscriber,
    PatternSubscriber,
    Publisher,
    Tracking,
    TrackedSetter,
    ReplyToggler,
    Resetter,
    Monitor,
}

impl Kind {
    const ALL: [Kind; 13] = [
        Kind::Pipeline,
        Kind::Multi,
        Kind::Watch,
        Kind::BlpopConsumer,
        Kind::LpushProducer,
        Kind::Subscriber,
        Kind::PatternSubscriber,
        Kind::Publisher,
        Kind::Tracking,
        Kind::TrackedSetter,
        Kind::ReplyToggler,
        Kind::Resetter,
        Kind::Monitor,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Pipeline => "pipeline SET/GET",
            Kind::Multi => "MULTI/INCR/EXEC",
            Kind::Watch => "WATCH/MULTI/EXEC",
            Kind::BlpopConsumer => "BLPOP consumer",
            Kind::LpushProducer => "LPUSH producer",
            Kind::Subscriber => "SUBSCRIBE (RESP2)",
            Kind::PatternSubscriber => "PSUBSCRIBE (RESP2)",
            Kind::Publisher => "PUBLISH",
            Kind::Tracking => "RESP3 tracking",
            Kind::TrackedSetter => "tracked-key SET",
            Kind::ReplyToggler => "CLIENT REPLY",
            Kind::Resetter => "RESET",
            Kind::Monitor => "MONITOR",
        }
    }
}

#[derive(Clone)]
struct Ctx {
    addr: SocketAddr,
    epoch: Instant,
    ready: mpsc::UnboundedSender<()>,
    /// The run's end, once every client is connected.
    go: watch::Receiver<Option<Instant>>,
    feeds: Arc<Feeds>,
}

/// Connects, waits for the common start, runs one client until the end.
async fn drive(kind: Kind, mut ctx: Ctx) -> Report {
    let mut r = Report::new(kind.name());
    let conn = Conn::open(ctx.addr, ctx.epoch).await;
    let _ = ctx.ready.send(());
    let end = match ctx.go.wait_for(Option::is_some).await {
        Ok(end) => end.expect("checked"),
        Err(_) => {
            r.error("the run never started".into());
            return r;
        }
    };
    let mut c = match conn {
        Ok(c) => c,
        Err(f) => {
            r.fail(f);
            return r;
        }
    };
    let feeds = ctx.feeds.clone();
    let result = match kind {
        Kind::Pipeline => pipeline(&mut c, &mut r, end).await,
        Kind::Multi => multi(&mut c, &mut r, end).await,
        Kind::Watch => watch_loop(&mut c, &mut r, end).await,
        Kind::BlpopConsumer => consumer(&mut c, &mut r, end, &feeds).await,
        Kind::LpushProducer => producer(&mut c, &mut r, end, &feeds).await,
        Kind::Subscriber => subscriber(&mut c, &mut r, end, &feeds, false).await,
        Kind::PatternSubscriber => subscriber(&mut c, &mut r, end, &feeds, true).await,
        Kind::Publisher => publisher(&mut c, &mut r, end, &feeds).await,
        Kind::Tracking => tracking(&mut c, &mut r, end).await,
        Kind::TrackedSetter => tracked_setter(&mut c, &mut r, end).await,
        Kind::ReplyToggler => reply_toggler(&mut c, &mut r, end).await,
        Kind::Resetter => resetter(&mut c, &mut r, end).await,
        Kind::Monitor => monitor(&mut c, &mut r, end).await,
    };
    match kind {
        Kind::LpushProducer => feeds.producer_done.store(true, SeqCst),
        Kind::Publisher => feeds.publisher_done.store(true, SeqCst),
        _ => {}
    }
    // Still connected and in step at the very end (MONITOR is checked by
    // its per-window line counts instead).
    let result = match result {
        Ok(()) if kind != Kind::Monitor => still_there(&mut c, kind).await,
        other => other,
    };
    if let Err(f) = result {
        let disconnect = f.disconnect;
        r.fail(f);
        if !disconnect && c.closes_soon().await {
            r.disconnects += 1;
            r.error(format!(
                "{}: DISCONNECTED right after that",
                stamp(ctx.epoch)
            ));
        }
    }
    r
}

/// A final PING: `+PONG`, or `[pong,]` in RESP2 subscribed mode. Stream
/// messages (late duplicates) and tracking pushes may come first.
async fn still_there(c: &mut Conn, kind: Kind) -> Result<(), Fail> {
    let subscribed = matches!(kind, Kind::Subscriber | Kind::PatternSubscriber);
    let want = if subscribed { "[pong,]" } else { "+PONG" };
    c.send("PING").await?;
    loop {
        let frame = c.read("final PING").await?;
        let got = text(&frame);
        let skip = match kind {
            Kind::Tracking => matches!(frame, OwnedFrame::Push { .. }),
            _ if subscribed => got.starts_with("[message,") || got.starts_with("[pmessage,"),
            _ => false,
        };
        if skip {
            continue;
        }
        if got == want {
            return Ok(());
        }
        return Err(c.wrong(format!(
            "final PING: expected {want}, got {got}{}",
            proxy_tag(&got)
        )));
    }
}

/// (1) Pipelined batches of SET+GET with unique values, every value checked.
async fn pipeline(c: &mut Conn, r: &mut Report, end: Instant) -> Result<(), Fail> {
    const SIZES: [usize; 5] = [50, 1, 25, 50, 7];
    let mut batch = 0u64;
    while Instant::now() < end {
        let n = SIZES[batch as usize % SIZES.len()];
        let mut bytes = Vec::new();
        let mut values = Vec::with_capacity(n);
        for j in 0..n {
            let key = format!("reauth:pipe:{j}");
            let value = format!("b{batch}-{j}");
            bytes.extend(encode_command(&[b"SET", key.as_bytes(), value.as_bytes()]));
            bytes.extend(encode_command(&[b"GET", key.as_bytes()]));
            values.push(value);
        }
        c.send_raw(&bytes).await?;
        for (j, value) in values.iter().enumerate() {
            c.expect(&format!("batch {batch}: SET reauth:pipe:{j}"), "+OK")
                .await?;
            c.expect(
                &format!("batch {batch}: GET reauth:pipe:{j}"),
                &format!("${value}"),
            )
            .await?;
        }
        r.add("batches", 1);
        r.add("commands", 2 * n as u64);
        batch += 1;
        sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// (2a) MULTI, INCR, INCR, EXEC: pipelined, or step by step with the
/// connection idle inside MULTI (where a re-auth must not be injected).
async fn multi(c: &mut Conn, r: &mut Report, end: Instant) -> Result<(), Fail> {
    c.run("SET reauth:m 0", "+OK").await?;
    let mut n = 0u64;
    let mut i = 0u64;
    while Instant::now() < end {
        let exec = format!("[{},{}]", n + 1, n + 2);
        if i % 2 == 0 {
            let bytes: Vec<u8> = ["MULTI", "INCR reauth:m", "INCR reauth:m", "EXEC"]
                .iter()
                .flat_map(|l| encode_command(&words(l)))
                .collect();
            c.send_raw(&bytes).await?;
            c.expect("MULTI (pipelined)", "+OK").await?;
            c.expect("INCR (pipelined)", "+QUEUED").await?;
            c.expect("INCR (pipelined)", "+QUEUED").await?;
            c.expect("EXEC (pipelined)", &exec).await?;
        } else {
            c.run("MULTI", "+OK").await?;
            sleep(Duration::from_millis(40)).await;
            c.run("INCR reauth:m", "+QUEUED").await?;
            sleep(Duration::from_millis(40)).await;
            c.run("INCR reauth:m", "+QUEUED").await?;
            sleep(Duration::from_millis(20)).await;
            c.run("EXEC", &exec).await?;
        }
        n += 2;
        i += 1;
        r.add("transactions", 1);
        sleep(Duration::from_millis(5)).await;
    }
    c.run("GET reauth:m", &format!("${n}")).await
}

/// (2b) WATCH k, GET k, MULTI, SET k v+1, EXEC: nobody else writes k, so
/// every EXEC must commit.
async fn watch_loop(c: &mut Conn, r: &mut Report, end: Instant) -> Result<(), Fail> {
    c.run("SET reauth:w 0", "+OK").await?;
    let mut n = 0u64;
    while Instant::now() < end {
        let pause = n % 2 == 1;
        c.run("WATCH reauth:w", "+OK").await?;
        if pause {
            sleep(Duration::from_millis(30)).await;
        }
        c.run("GET reauth:w", &format!("${n}")).await?;
        c.run("MULTI", "+OK").await?;
        c.run(&format!("SET reauth:w {}", n + 1), "+QUEUED").await?;
        if pause {
            sleep(Duration::from_millis(30)).await;
        }
        c.send("EXEC").await?;
        let got = text(&c.read("EXEC").await?);
        if got == "_" {
            return Err(c.wrong(format!(
                "EXEC after WATCH aborted (nil) in round {n}: the watched key looked modified"
            )));
        }
        if got != "[OK]" {
            return Err(c.wrong(format!(
                "EXEC after WATCH: expected [OK], got {got}{}",
                proxy_tag(&got)
            )));
        }
        n += 1;
        r.add("transactions", 1);
        sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// (3a) BLPOP q 1 in a loop; at the end every pushed item arrived exactly once.
async fn consumer(c: &mut Conn, r: &mut Report, end: Instant, feeds: &Feeds) -> Result<(), Fail> {
    let mut got: Vec<u32> = Vec::new();
    let mut extra = 0u64;
    let mut distinct = 0u64;
    let result = async {
        loop {
            let done = feeds.producer_done.load(SeqCst);
            if done && distinct >= feeds.pushed.load(SeqCst) {
                return Ok(());
            }
            if Instant::now() > end + DRAIN {
                return Err(c.wrong("the queue did not drain in time"));
            }
            c.send("BLPOP reauth:q 1").await?;
            let frame = c.read("BLPOP reauth:q 1").await?;
            if frame == OwnedFrame::Null {
                r.add("empty", 1);
                continue;
            }
            let item = match blobs(&frame).as_deref() {
                Some([q, item]) if q == "reauth:q" => item.parse::<usize>().ok(),
                _ => None,
            };
            let Some(item) = item else {
                let got = text(&frame);
                return Err(c.wrong(format!(
                    "BLPOP: expected [reauth:q,<n>] or nil, got {got}{}",
                    proxy_tag(&got)
                )));
            };
            if got.len() <= item {
                got.resize(item + 1, 0);
            }
            got[item] += 1;
            if got[item] == 1 {
                distinct += 1;
            }
            r.add("items", 1);
        }
    }
    .await;
    let pushed = feeds.pushed.load(SeqCst) as usize;
    let missing: Vec<usize> = (0..pushed)
        .filter(|&i| got.get(i).copied().unwrap_or(0) == 0)
        .collect();
    let doubled: Vec<usize> = (0..got.len()).filter(|&i| got[i] > 1).collect();
    extra += got.iter().skip(pushed).filter(|&&n| n > 0).count() as u64;
    r.add("pushed", pushed as u64);
    r.add("unconfirmed_extra", extra);
    r.duplicates = doubled.len() as u64;
    if !missing.is_empty() {
        r.error(format!(
            "{} of {pushed} items never popped (LOST), e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    if !doubled.is_empty() {
        r.error(format!(
            "{} items popped more than once (DUPLICATED), e.g. {:?}",
            doubled.len(),
            &doubled[..doubled.len().min(10)]
        ));
    }
    result
}

/// (3b) LPUSH q n every ~5 ms.
async fn producer(c: &mut Conn, r: &mut Report, end: Instant, feeds: &Feeds) -> Result<(), Fail> {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            return Ok(());
        }
        c.send(&format!("LPUSH reauth:q {n}")).await?;
        let frame = c.read("LPUSH").await?;
        if !matches!(frame, OwnedFrame::Number { data, .. } if data >= 1) {
            let got = text(&frame);
            return Err(c.wrong(format!(
                "LPUSH reauth:q {n}: expected a length, got {got}{}",
                proxy_tag(&got)
            )));
        }
        n += 1;
        feeds.pushed.store(n, SeqCst);
        r.add("pushed", 1);
    }
}

/// Which messages of a numbered stream arrived.
#[derive(Default)]
struct Sequence {
    seen: Vec<bool>,
    max: Option<u64>,
    duplicates: u64,
}

impl Sequence {
    /// Records message `n`: a repeat is a duplicate (allowed, counted); a
    /// gap or an older message arriving late is an error.
    fn see(&mut self, n: u64) -> Result<(), String> {
        let i = n as usize;
        if self.seen.len() <= i {
            self.seen.resize(i + 1, false);
        }
        if self.seen[i] {
            self.duplicates += 1;
            return Ok(());
        }
        self.seen[i] = true;
        match self.max {
            Some(max) if n < max => Err(format!("message {n} arrived after {max} (OUT OF ORDER)")),
            Some(max) if n > max + 1 => {
                self.max = Some(n);
                Err(format!(
                    "message {n} followed {max}: {} in between MISSING",
                    n - max - 1
                ))
            }
            None if n > 0 => {
                self.max = Some(n);
                Err(format!("first message was {n}, not 0"))
            }
            _ => {
                self.max = Some(n);
                Ok(())
            }
        }
    }

    fn missing(&self, total: u64) -> Vec<u64> {
        (0..total)
            .filter(|&i| !self.seen.get(i as usize).copied().unwrap_or(false))
            .collect()
    }
}

/// (4a/b) A RESP2 (pattern) subscriber to the numbered publish stream.
async fn subscriber(
    c: &mut Conn,
    r: &mut Report,
    end: Instant,
    feeds: &Feeds,
    pattern: bool,
) -> Result<(), Fail> {
    if pattern {
        c.run("PSUBSCRIBE reauth:ch*", "[psubscribe,reauth:ch*,1]")
            .await?;
    } else {
        c.run("SUBSCRIBE reauth:ch", "[subscribe,reauth:ch,1]")
            .await?;
    }
    feeds.subscribed.fetch_add(1, SeqCst);
    let mut seq = Sequence::default();
    let mut last = Instant::now();
    let mut stalled = false;
    let result = async {
        loop {
            let published = feeds.published.load(SeqCst);
            if feeds.publisher_done.load(SeqCst) && seq.max.map_or(0, |m| m + 1) >= published {
                return Ok(());
            }
            if Instant::now() > end + DRAIN {
                return Err(c.wrong(format!(
                    "stream not caught up by the end: last {:?} of {published}",
                    seq.max
                )));
            }
            let Some(frame) = c.read_within(Duration::from_millis(500)).await? else {
                if !stalled && last.elapsed() > Duration::from_secs(3) {
                    stalled = true;
                    r.error(c.wrong("no message for 3 s (STALLED)").msg);
                }
                continue;
            };
            let n = match (pattern, blobs(&frame).as_deref()) {
                (false, Some([kind, ch, n])) if kind == "message" && ch == "reauth:ch" => {
                    n.parse::<u64>().ok()
                }
                (true, Some([kind, pat, ch, n]))
                    if kind == "pmessage" && pat == "reauth:ch*" && ch == "reauth:ch" =>
                {
                    n.parse::<u64>().ok()
                }
                _ => None,
            };
            let Some(n) = n else {
                let got = text(&frame);
                r.error(
                    c.wrong(format!(
                        "not a message of the stream: {got}{}",
                        proxy_tag(&got)
                    ))
                    .msg,
                );
                continue;
            };
            last = Instant::now();
            stalled = false;
            r.add("messages", 1);
            if let Err(e) = seq.see(n) {
                r.error(c.wrong(e).msg);
            }
        }
    }
    .await;
    let published = feeds.published.load(SeqCst);
    let missing = seq.missing(published);
    r.duplicates = seq.duplicates;
    if !missing.is_empty() {
        r.error(format!(
            "{} of {published} messages never arrived (LOST), e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    result
}

/// (4c) PUBLISH ch n every ~5 ms once both subscribers are in.
async fn publisher(c: &mut Conn, r: &mut Report, end: Instant, feeds: &Feeds) -> Result<(), Fail> {
    let wait_until = Instant::now() + Duration::from_secs(3);
    while feeds.subscribed.load(SeqCst) < 2 {
        if Instant::now() > wait_until {
            r.error(c.wrong("the subscribers never confirmed").msg);
            break;
        }
        sleep(Duration::from_millis(2)).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            return Ok(());
        }
        c.send(&format!("PUBLISH reauth:ch {n}")).await?;
        let frame = c.read("PUBLISH").await?;
        let OwnedFrame::Number { data, .. } = frame else {
            let got = text(&frame);
            return Err(c.wrong(format!(
                "PUBLISH reauth:ch {n}: expected a count, got {got}{}",
                proxy_tag(&got)
            )));
        };
        // Both subscribers, plus a third or fourth while one is migrating.
        if data < 2 {
            if r.get("reached_fewer_than_2") == 0 {
                r.add(
                    "first_short_publish_ms",
                    c.epoch.elapsed().as_millis() as u64,
                );
            }
            r.add("reached_fewer_than_2", 1);
        }
        n += 1;
        feeds.published.store(n, SeqCst);
        r.add("published", 1);
    }
}

/// (5a) RESP3 with CLIENT TRACKING ON: GETs a key another client keeps
/// setting; invalidation pushes arrive in between, replies still line up.
async fn tracking(c: &mut Conn, r: &mut Report, end: Instant) -> Result<(), Fail> {
    c.send("HELLO 3").await?;
    let hello = text(&c.read("HELLO 3").await?);
    if !hello.contains("proto:3") {
        return Err(c.wrong(format!("HELLO 3: got {hello}{}", proxy_tag(&hello))));
    }
    c.run("CLIENT TRACKING ON", "+OK").await?;
    let mut last = 0u64;
    let mut i = 0u64;
    let result = async {
        while Instant::now() < end {
            let ping = i % 10 == 9;
            let line = if ping { "PING" } else { "GET reauth:tk" };
            c.send(line).await?;
            // Pushes may come before the reply; they are not replies.
            let reply = loop {
                let frame = c.read(line).await?;
                if let OwnedFrame::Push { .. } = frame {
                    let got = text(&frame);
                    if got != ">[invalidate,[reauth:tk]]" {
                        return Err(c.wrong(format!("unexpected push {got}")));
                    }
                    r.add("invalidations", 1);
                    continue;
                }
                break frame;
            };
            let got = text(&reply);
            let ok = if ping {
                got == "+PONG"
            } else if reply == OwnedFrame::Null {
                last == 0
            } else {
                match got.strip_prefix("$t").and_then(|n| n.parse::<u64>().ok()) {
                    Some(n) if n >= last => {
                        last = n;
                        true
                    }
                    _ => false,
                }
            };
            if !ok {
                return Err(c.wrong(format!(
                    "{line}: got {got}{} (last value t{last})",
                    proxy_tag(&got)
                )));
            }
            r.add(if ping { "pings" } else { "gets" }, 1);
            i += 1;
            sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
    .await;
    if result.is_ok() && r.get("invalidations") == 0 {
        r.error(c.wrong("no invalidation push during the whole run").msg);
    }
    result
}

/// (5b) Keeps setting the tracked key.
async fn tracked_setter(c: &mut Conn, r: &mut Report, end: Instant) -> Result<(), Fail> {
    let mut n = 1u64;
    while Instant::now() < end {
        c.run(&format!("SET reauth:tk t{n}"), "+OK").await?;
        n += 1;
        r.add("sets", 1);
        sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// (6) CLIENT REPLY OFF / SET / CLIENT REPLY ON / GET, and the SKIP variant,
/// sometimes with the connection left quiet while replies are off.
async fn reply_toggler(c: &mut Conn, r: &mut Report, end: Instant) -> Result<(), Fail> {
    let mut i = 0u64;
    while Instant::now() < end {
        let pause = i % 4 < 2;
        let quiet = || async move {
            if pause {
                sleep(Duration::from_millis(40)).await;
            }
        };
        if i % 2 == 0 {
            c.send("CLIENT REPLY OFF").await?;
            quiet().await;
            c.send(&format!("SET reauth:r v{i}")).await?;
            quiet().await;
            c.run("CLIENT REPLY ON", "+OK").await?;
            c.run("GET reauth:r", &format!("$v{i}")).await?;
            r.add("off_on", 1);
        } else {
            c.send("CLIENT REPLY SKIP").await?;
            quiet().await;
            c.send(&format!("SET reauth:r2 s{i}")).await?;
            quiet().await;
            c.run("GET reauth:r2", &format!("$s{i}")).await?;
            r.add("skip", 1);
        }
        i += 1;
        sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// (7) SET/GET, with a RESET now and then: still the IAM user afterwards.
async fn resetter(c: &mut Conn, r: &mut Report, end: Instant) -> Result<(), Fail> {
    // Irregular, some shorter and some longer than the re-auth age.
    const GAPS_MS: [u64; 4] = [700, 2500, 1300, 3100];
    let mut next = Instant::now() + Duration::from_millis(GAPS_MS[0]);
    let mut i = 0u64;
    while Instant::now() < end {
        c.run(&format!("SET reauth:rs v{i}"), "+OK").await?;
        c.run("GET reauth:rs", &format!("$v{i}")).await?;
        r.add("set_get", 1);
        if Instant::now() >= next {
            c.run("RESET", "+RESET").await?;
            c.run("ACL WHOAMI", &format!("${IAM_USER}")).await?;
            let resets = r.get("resets");
            r.add("resets", 1);
            next = Instant::now() + Duration::from_millis(GAPS_MS[(resets as usize + 1) % 4]);
        }
        i += 1;
        sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// (8) MONITOR: lines keep coming, at least one in every 4 s window.
async fn monitor(c: &mut Conn, r: &mut Report, end: Instant) -> Result<(), Fail> {
    let start = end - RUN;
    c.run("MONITOR", "+OK").await?;
    let windows = RUN.as_secs().div_ceil(MONITOR_WINDOW.as_secs()) as usize;
    let mut seen = vec![0u64; windows];
    let result = async {
        while Instant::now() < end {
            let Some(frame) = c.read_within(end - Instant::now()).await? else {
                continue;
            };
            let line = matches!(&frame, OwnedFrame::SimpleString { data, .. }
                if data.first().is_some_and(u8::is_ascii_digit));
            if !line {
                let got = text(&frame);
                r.error(
                    c.wrong(format!("not a monitor line: {got}{}", proxy_tag(&got)))
                        .msg,
                );
                continue;
            }
            let w = ((Instant::now() - start).as_secs() / MONITOR_WINDOW.as_secs()) as usize;
            seen[w.min(windows - 1)] += 1;
            r.add("lines", 1);
        }
        Ok(())
    }
    .await;
    for (w, &n) in seen.iter().enumerate() {
        if n == 0 {
            r.error(format!(
                "no monitor line in window {}–{} s of the run",
                w as u64 * MONITOR_WINDOW.as_secs(),
                (w as u64 + 1) * MONITOR_WINDOW.as_secs()
            ));
        }
    }
    r.add(
        "empty_windows",
        seen.iter().filter(|&&n| n == 0).count() as u64,
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_every_kind_of_session_survives_repeated_reauthentication() {
    let stack = Stack::start(MAX_AGE, "2s").await;
    let epoch = Instant::now();
    let (ready, mut readies) = mpsc::unbounded_channel();
    let (go, go_rx) = watch::channel(None);
    let ctx = Ctx {
        addr: stack.proxy.addr,
        epoch,
        ready,
        go: go_rx,
        feeds: Arc::new(Feeds::default()),
    };
    let tasks: Vec<_> = Kind::ALL
        .iter()
        .map(|&kind| tokio::spawn(drive(kind, ctx.clone())))
        .collect();
    drop(ctx);
    for _ in 0..Kind::ALL.len() {
        timeout(Duration::from_secs(10), readies.recv())
            .await
            .expect("every client connects")
            .expect("ready");
    }
    let start = Instant::now();
    let end = start + RUN;
    go.send(Some(end)).expect("clients are listening");

    let mut reports = Vec::new();
    for (kind, task) in Kind::ALL.iter().zip(tasks) {
        match timeout_at(end + DRAIN + Duration::from_secs(8), task).await {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(e)) => {
                let mut r = Report::new(kind.name());
                r.error(format!("client task failed: {e}"));
                reports.push(r);
            }
            Err(_) => {
                let mut r = Report::new(kind.name());
                r.error("client task hung past the drain".into());
                reports.push(r);
            }
        }
    }
    let ran = start.elapsed();

    let scrape = Scrape::take(stack.proxy.admin).await;
    let reauth_ok = scrape.n(Stack::reauths_ok_series());
    let reauth_failed = scrape.n(r#"reauthentications_total{outcome="failure"}"#);
    let expirations = scrape.n("iam_session_expirations_total");
    let stats = stack.emulator.stats();
    let stat = |k: &str| stats.get(k).copied().unwrap_or(0);
    let resets = reports
        .iter()
        .find(|r| r.name == Kind::Resetter.name())
        .map_or(0, |r| r.get("resets"));
    let clients = Kind::ALL.len() as u64;
    let due = (RUN.as_secs_f64() / REAUTH_AFTER.as_secs_f64()) * clients as f64 * 0.5;

    println!(
        "\n=== re-auth soak: {clients} clients for {RUN:?} (all done after {:.1}s), \
         max-session-age {MAX_AGE}, re-auth after {REAUTH_AFTER:?} ===",
        ran.as_secs_f64()
    );
    println!(
        "{:<20} {:>5} {:>5} {:>6}  counts",
        "client", "dup", "disc", "errors"
    );
    for r in &reports {
        println!(
            "{:<20} {:>5} {:>5} {:>6}  {}",
            r.name,
            r.duplicates,
            r.disconnects,
            r.error_count,
            r.counts_line()
        );
        for e in &r.errors {
            println!("    ! {e}");
        }
    }
    println!(
        "proxy: reauthentications success={reauth_ok} failure={reauth_failed} \
         (RESETs {resets}; timed re-auths needed > {due:.0}), iam_session_expirations={expirations}"
    );
    println!(
        "emulator: iam_auth_success={} iam_auth_failure={} sessions_expired={} \
         iam_auth_in_multi={} connections={}",
        stat("iam_auth_success_total"),
        stat("iam_auth_failure_total"),
        stat("sessions_expired_total"),
        stat("iam_auth_in_multi_total"),
        stat("connections_total"),
    );

    let mut problems = Vec::new();
    for r in &reports {
        if r.error_count > 0 || r.disconnects > 0 {
            problems.push(format!(
                "{}: {} errors, {} disconnects; first: {}",
                r.name,
                r.error_count,
                r.disconnects,
                r.errors.first().map_or("-", String::as_str)
            ));
        }
    }
    if stat("sessions_expired_total") != 0 {
        problems.push(format!(
            "the emulator cut {} sessions at max-session-age",
            stat("sessions_expired_total")
        ));
    }
    if expirations != 0.0 {
        problems.push(format!(
            "the proxy counted {expirations} session expirations"
        ));
    }
    if reauth_failed != 0.0 {
        problems.push(format!("{reauth_failed} re-authentications failed"));
    }
    if reauth_ok - (resets as f64) <= due {
        problems.push(format!(
            "only {reauth_ok} successful re-authentications ({resets} of them after RESET); \
             expected more than {due:.0} timed ones"
        ));
    }
    // Each client's first AUTH plus every re-auth went through the emulator.
    if (stat("iam_auth_success_total") as f64) < clients as f64 + reauth_ok {
        problems.push(format!(
            "the emulator verified only {} IAM AUTHs for {clients} connections + {reauth_ok} re-auths",
            stat("iam_auth_success_total")
        ));
    }
    if stat("iam_auth_failure_total") != 0 || stat("iam_auth_in_multi_total") != 0 {
        problems.push("the emulator refused IAM AUTHs".into());
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

// ---- focused cases ----

/// (a) An idle connection outlives two max-session-ages and still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_survives_two_session_ages() {
    let stack = Stack::start(MAX_AGE, "2s").await;
    let epoch = Instant::now();
    let mut c = must(Conn::open(stack.proxy.addr, epoch).await);
    must(c.run("ACL WHOAMI", &format!("${IAM_USER}")).await);
    // Nothing at all may arrive while idle: no error line, no close.
    match c.read_within(Duration::from_secs(9)).await {
        Ok(None) => {}
        Ok(Some(frame)) => panic!("{}: idle client got {}", stamp(epoch), text(&frame)),
        Err(f) => panic!("{}", f.msg),
    }
    must(c.run("PING", "+PONG").await);
    must(c.run("ACL WHOAMI", &format!("${IAM_USER}")).await);
    assert_eq!(stack.emulator.stat("sessions_expired_total"), 0);
    assert_eq!(stack.metric("iam_session_expirations_total").await, 0.0);
    let reauths = stack.metric(Stack::reauths_ok_series()).await;
    assert!(reauths >= 3.0, "only {reauths} re-auths in 9 s");
    assert!(stack.emulator.stat("iam_auth_success_total") > reauths as u64);
}

/// (b) A BLPOP sent just before a re-auth is due blocks the safe point; the
/// session is neither cut nor disturbed, and the item pushed at 5 s arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_command_delays_the_reauth_without_losing_the_session() {
    let stack = Stack::start("8s", "2s").await;
    let epoch = Instant::now();
    let mut c = must(Conn::open(stack.proxy.addr, epoch).await);
    must(c.run("ACL WHOAMI", &format!("${IAM_USER}")).await);
    sleep_until(epoch + Duration::from_millis(1850)).await;
    must(c.send("BLPOP reauth:bq 6").await);
    let addr = stack.proxy.addr;
    let pusher = tokio::spawn(async move {
        sleep_until(epoch + Duration::from_secs(5)).await;
        let mut p = must(Conn::open(addr, epoch).await);
        must(p.run("RPUSH reauth:bq item", ":1").await);
    });
    let got = match c.read_within(Duration::from_secs(8)).await {
        Ok(Some(frame)) => text(&frame),
        Ok(None) => panic!("{}: BLPOP never returned", stamp(epoch)),
        Err(f) => panic!("{}", f.msg),
    };
    let at = epoch.elapsed();
    pusher.await.expect("pusher");
    assert_eq!(got, "[reauth:bq,item]", "BLPOP reply at {at:?}");
    assert!(
        at >= Duration::from_millis(4900) && at < Duration::from_millis(6500),
        "BLPOP returned at {at:?}, expected right after the push at 5 s"
    );
    must(c.run("PING", "+PONG").await);
    // The overdue re-auth happens at the safe point right after the BLPOP.
    let reauths = metric_reaches(
        &stack,
        Stack::reauths_ok_series(),
        1.0,
        Duration::from_secs(2),
    )
    .await;
    assert!(reauths >= 1.0, "no re-auth after the BLPOP returned");
    must(c.run("ACL WHOAMI", &format!("${IAM_USER}")).await);
    assert_eq!(stack.emulator.stat("sessions_expired_total"), 0);
    assert_eq!(stack.metric("iam_session_expirations_total").await, 0.0);
}

/// (c) A RESP2 subscriber idle for 9 s still gets a message published then,
/// and afterwards is an ordinary IAM connection again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_resp2_subscriber_still_receives_after_two_session_ages() {
    let stack = Stack::start(MAX_AGE, "2s").await;
    let epoch = Instant::now();
    let mut sub = must(Conn::open(stack.proxy.addr, epoch).await);
    must(
        sub.run("SUBSCRIBE reauth:idle", "[subscribe,reauth:idle,1]")
            .await,
    );
    match sub.read_within(Duration::from_secs(9)).await {
        Ok(None) => {}
        Ok(Some(frame)) => panic!("{}: idle subscriber got {}", stamp(epoch), text(&frame)),
        Err(f) => panic!("{}", f.msg),
    }
    let mut publ = must(Conn::open(stack.proxy.addr, epoch).await);
    must(publ.send("PUBLISH reauth:idle hello").await);
    let receivers = text(&must(publ.read("PUBLISH").await));
    match sub.read_within(Duration::from_secs(3)).await {
        Ok(Some(frame)) => assert_eq!(
            text(&frame),
            "[message,reauth:idle,hello]",
            "{}: (PUBLISH reached {receivers})",
            stamp(epoch)
        ),
        Ok(None) => panic!(
            "{}: the message never arrived (PUBLISH reached {receivers})",
            stamp(epoch)
        ),
        Err(f) => panic!("{} (PUBLISH reached {receivers})", f.msg),
    }
    // Leave subscribed mode; a duplicate (mid-migration) is tolerated.
    must(sub.send("UNSUBSCRIBE reauth:idle").await);
    loop {
        let got = text(&must(sub.read("UNSUBSCRIBE").await));
        if got == "[message,reauth:idle,hello]" {
            println!("duplicate message tolerated");
            continue;
        }
        assert_eq!(got, "[unsubscribe,reauth:idle,0]");
        break;
    }
    must(sub.run("PING", "+PONG").await);
    must(sub.run("ACL WHOAMI", &format!("${IAM_USER}")).await);
    assert_eq!(stack.emulator.stat("sessions_expired_total"), 0);
    assert_eq!(stack.metric("iam_session_expirations_total").await, 0.0);
}

/// (d) A client inside MULTI when the re-auth falls due: EXEC commits
/// exactly the queued commands, then the session re-authenticates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_open_when_reauth_is_due_commits_correctly() {
    let stack = Stack::start(MAX_AGE, "2s").await;
    let epoch = Instant::now();
    let mut c = must(Conn::open(stack.proxy.addr, epoch).await);
    must(c.run("SET reauth:mk 1", "+OK").await);
    sleep_until(epoch + Duration::from_millis(1500)).await;
    must(c.run("MULTI", "+OK").await);
    must(c.run("INCR reauth:mk", "+QUEUED").await);
    // The re-auth falls due at 2–2.1 s, inside the transaction.
    sleep_until(epoch + Duration::from_millis(3000)).await;
    must(c.run("INCR reauth:mk", "+QUEUED").await);
    must(c.run("EXEC", "[2,3]").await);
    must(c.run("GET reauth:mk", "$3").await);
    // Overdue since inside MULTI: due now, and needed before the 4 s cut.
    let before_cut =
        (epoch + Duration::from_millis(3900)).saturating_duration_since(Instant::now());
    let reauths = metric_reaches(&stack, Stack::reauths_ok_series(), 1.0, before_cut).await;
    assert!(
        reauths >= 1.0,
        "{}: no re-auth between EXEC and the 4 s cut",
        stamp(epoch)
    );
    // Past the first session's age: still the same, working session.
    sleep_until(epoch + Duration::from_secs(5)).await;
    must(c.run("PING", "+PONG").await);
    must(c.run("ACL WHOAMI", &format!("${IAM_USER}")).await);
    assert_eq!(stack.emulator.stat("sessions_expired_total"), 0);
    assert_eq!(stack.emulator.stat("iam_auth_in_multi_total"), 0);
}

/// Unwraps a focused test's step, failing with what the client saw and when.
#[track_caller]
fn must<T>(r: Result<T, Fail>) -> T {
    match r {
        Ok(v) => v,
        Err(f) => panic!("{}", f.msg),
    }
}

/// A client that turns replies off never gives the proxy a safe point, so
/// near the deadline its session moves to a fresh connection with the same
/// database and replies still off. Writes sent with replies off are never
/// overtaken across the switch, and nothing is answered that should not be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_off_session_moves_before_the_cut_keeping_its_database() {
    let stack = Stack::start(MAX_AGE, "2s").await;
    let mut c = common::Resp::connect(stack.proxy.addr).await;
    assert_eq!(common::text(&c.cmd(&[b"SELECT", b"3"]).await), "+OK");
    c.send(&[b"CLIENT", b"REPLY", b"OFF"]).await;
    // Writes with replies off across two session ages (0.3 s apart).
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(9) {
        n += 1;
        c.send(&[b"SET", b"off-counter", n.to_string().as_bytes()])
            .await;
        sleep(Duration::from_millis(300)).await;
    }
    // Replies on again: the last write is there, in database 3.
    assert_eq!(
        common::text(&c.cmd(&[b"CLIENT", b"REPLY", b"ON"]).await),
        "+OK"
    );
    assert_eq!(
        common::text(&c.cmd(&[b"GET", b"off-counter"]).await),
        format!("${n}")
    );
    let info = common::text(&c.cmd(&[b"CLIENT", b"INFO"]).await);
    assert!(info.contains(" db=3 "), "{info}");
    assert_eq!(stack.emulator.stat("sessions_expired_total"), 0);
    let moved = stack
        .metric("session_migrations_total{outcome=\"success\"}")
        .await;
    let reauths = stack
        .metric("reauthentications_total{outcome=\"success\"}")
        .await;
    let failed = stack
        .metric("session_migrations_total{outcome=\"failure\"}")
        .await;
    let iam_ok = stack.emulator.stat("iam_auth_success_total");
    assert!(
        moved >= 2.0,
        "moved {moved} times in 9 s with a 4 s session age (failed {failed}, in-place {reauths}, emulator IAM ok {iam_ok})"
    );
}
