//! The reply ledger (invariant 2): who owns each reply the server still owes,
//! and the connection state those replies change. Pure, no I/O: the session
//! feeds it frames and acts on its answers.
//!
//! Every pending command is evaluated when it reaches the head of the queue,
//! that is, in the server's own order, after the replies before it have been
//! seen. So the reply mode, protocol and subscriptions it is judged by are
//! exactly the ones the server judged it by.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

use crate::resp::{self, reply, Class, PubSub, ReplyMode, Topology};

/// A reply the server (or the proxy) owes, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    /// A relayed client command the proxy tracks only by its reply.
    Plain,
    /// A relayed HELLO; switches protocol on success.
    Hello {
        proto: Option<u8>,
    },
    ClientReply(ReplyMode),
    /// `SELECT <db>`; switches the database on success.
    Select(u32),
    Reset,
    Sub {
        kind: PubSub,
        unsub: bool,
        channels: u64,
    },
    Monitor,
    Multi,
    Exec,
    Discard,
    Quit,
    /// SYNC or PSYNC: a non-error reply turns the connection into a
    /// replication stream.
    Sync,
    /// A command the proxy answers itself, in its turn (never forwarded).
    /// With `standin`, a PING went upstream in its place so that the
    /// server's per-command state (a pending CLIENT REPLY SKIP) moves as it
    /// would have; the PING's reply is consumed and replaced by the answer.
    Local {
        answer: Answer,
        standin: bool,
    },
    /// An empty command (`\r\n`, `*0`): no reply, but Redis still ends a
    /// pending CLIENT REPLY SKIP on it.
    Empty,
    /// The proxy's own AUTH: its reply is consumed, never shown to the client.
    ProxyAuth,
    /// A CLUSTER subcommand whose reply names nodes: held whole, so that
    /// cluster mode can rewrite it.
    Topology(Topology),
}

impl From<Class> for Pending {
    fn from(class: Class) -> Self {
        match class {
            // NulInName is answered locally, never relayed.
            Class::Plain | Class::Client | Class::Select | Class::Cluster | Class::NulInName => {
                Pending::Plain
            }
            Class::Topology(kind) => Pending::Topology(kind),
            Class::SelectDb(db) => Pending::Select(db),
            Class::Auth => Pending::Local {
                answer: Answer::Auth,
                standin: false,
            },
            Class::Hello => Pending::Hello { proto: None },
            Class::ClientReply(mode) => Pending::ClientReply(mode),
            Class::Reset => Pending::Reset,
            Class::Sub {
                kind,
                unsub,
                channels,
            } => Pending::Sub {
                kind,
                unsub,
                channels,
            },
            Class::Monitor => Pending::Monitor,
            Class::Multi => Pending::Multi,
            Class::Exec => Pending::Exec,
            Class::Discard => Pending::Discard,
            Class::Quit => Pending::Quit,
            Class::Sync => Pending::Sync,
        }
    }
}

/// What the proxy answers for a command it does not forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The client's AUTH: `+OK`, or the error Redis would give in that state.
    Auth,
    /// A fixed reply line (an error, or `+RESET`).
    Line(Bytes),
}

/// Redis's refusal of AUTH to a RESP2 subscriber.
const AUTH_WHILE_SUBSCRIBED: &[u8] = b"-ERR Can't execute 'auth': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n";
/// The proxy cannot queue an AUTH it answers itself.
const AUTH_IN_MULTI: &[u8] = b"-ERR elasticache-auth-proxy: AUTH inside MULTI is not supported; the proxy authenticates the connection itself\r\n";

/// Subscriptions per kind, as confirmed by the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subs {
    pub channels: HashSet<Bytes>,
    pub patterns: HashSet<Bytes>,
    pub shard: HashSet<Bytes>,
}

impl Subs {
    pub fn of(&mut self, kind: PubSub) -> &mut HashSet<Bytes> {
        match kind {
            PubSub::Channel => &mut self.channels,
            PubSub::Pattern => &mut self.patterns,
            PubSub::Shard => &mut self.shard,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty() && self.shard.is_empty()
    }
}

/// The connection state the server keeps and the proxy must mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// 2 or 3, switched by a successful HELLO.
    pub proto: u8,
    /// CLIENT REPLY mode; `Skip` means "the next command's reply is dropped".
    pub reply: ReplyMode,
    pub multi: bool,
    pub monitor: bool,
    pub subs: Subs,
    /// The selected database.
    pub db: u32,
}

impl Default for State {
    fn default() -> Self {
        State {
            proto: 2,
            reply: ReplyMode::On,
            multi: false,
            monitor: false,
            subs: Subs::default(),
            db: 0,
        }
    }
}

/// How many server replies the head entry waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    One,
    /// Nothing from the server: the proxy's answer goes out now.
    Emit(Bytes),
    /// One server reply (a stand-in's), replaced by these bytes.
    Replace(Bytes),
    /// Pub/sub confirmations: `left` more, or until the set is empty when
    /// `all` (an UNSUBSCRIBE with no arguments). An error ends it at once.
    Confirm {
        kind: PubSub,
        unsub: bool,
        left: u64,
        all: bool,
    },
}

impl State {
    /// Whether a proxy AUTH could be sent once no reply is outstanding: not
    /// in MULTI (IAM AUTH is refused there), replies on (its reply must come
    /// back), not in MONITOR, not a RESP2 subscriber (AUTH is refused there).
    pub fn quiet(&self) -> bool {
        !self.multi
            && self.reply == ReplyMode::On
            && !self.monitor
            && (self.proto != 2 || self.subs.is_empty())
    }

    /// Decides how the server answers `p`, applying CLIENT REPLY effects.
    /// `None`: the server sends nothing for it.
    fn activate(&mut self, p: &Pending) -> Option<Expect> {
        // Inside MULTI every command but these is queued: one +QUEUED (or an
        // error) now, its effects only at EXEC.
        let queued = self.multi
            && !matches!(
                p,
                Pending::Exec | Pending::Discard | Pending::Multi | Pending::Reset | Pending::Quit
            );
        // A RESP2 subscriber may only (un)subscribe, PING, QUIT and RESET:
        // anything else is refused with an error and changes nothing.
        let subscribed2 = self.proto == 2 && !self.subs.is_empty();
        let refused = subscribed2 && matches!(p, Pending::ClientReply(_));
        if !queued && !refused {
            match p {
                Pending::ClientReply(ReplyMode::On) => {
                    self.reply = ReplyMode::On;
                    return Some(Expect::One);
                }
                Pending::ClientReply(ReplyMode::Off) => {
                    self.reply = ReplyMode::Off;
                    return None;
                }
                Pending::ClientReply(ReplyMode::Skip) => {
                    if self.reply != ReplyMode::Off {
                        self.reply = ReplyMode::Skip;
                    }
                    return None;
                }
                // RESET turns OFF back on before it answers, but a pending
                // SKIP still swallows its reply (seen on Redis 7.0).
                Pending::Reset if self.reply == ReplyMode::Off => return Some(Expect::One),
                // The proxy only sends its AUTH with replies on.
                Pending::ProxyAuth => return Some(Expect::One),
                // Redis ends a pending SKIP even on an empty command.
                Pending::Empty => {
                    if self.reply == ReplyMode::Skip {
                        self.reply = ReplyMode::On;
                    }
                    return None;
                }
                _ => {}
            }
        }
        if *p == Pending::Empty {
            return None;
        }
        let suppressed = match self.reply {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.reply = ReplyMode::On;
                true
            }
        };
        match p {
            // Confirmations are pushes: the server sends them even with
            // replies off or skipped.
            &Pending::Sub {
                kind,
                unsub,
                channels,
            } if !queued && (unsub || channels > 0) => Some(Expect::Confirm {
                kind,
                unsub,
                left: channels,
                all: channels == 0,
            }),
            _ if suppressed => None,
            Pending::Local { answer, standin } => {
                let bytes = match answer {
                    Answer::Auth if self.multi => Bytes::from_static(AUTH_IN_MULTI),
                    Answer::Auth if subscribed2 => Bytes::from_static(AUTH_WHILE_SUBSCRIBED),
                    Answer::Auth => Bytes::from_static(resp::OK),
                    Answer::Line(e) => e.clone(),
                };
                Some(if *standin {
                    Expect::Replace(bytes)
                } else {
                    Expect::Emit(bytes)
                })
            }
            _ => Some(Expect::One),
        }
    }

    /// Applies the effect of `p` given its reply (`None`: no reply was sent,
    /// so success is assumed, as the server gives no other sign).
    fn apply(&mut self, p: &Pending, reply: Option<&[u8]>) {
        let ok = reply.is_none_or(|r| !reply::is_error(r));
        if self.multi
            && !matches!(
                p,
                Pending::Exec | Pending::Discard | Pending::Multi | Pending::Reset
            )
        {
            return;
        }
        match p {
            Pending::Hello { proto: Some(v) } if ok => self.proto = *v,
            Pending::Reset => *self = State::default(),
            Pending::Monitor if ok => self.monitor = true,
            Pending::Select(db) if ok => self.db = *db,
            Pending::Multi if ok => self.multi = true,
            Pending::Exec | Pending::Discard => self.multi = false,
            _ => {}
        }
    }
}

/// A reply that cluster mode looks into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewrite {
    Topology(Topology),
    Exec,
}

/// Who gets a frame from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The reply to the client command at the head of the ledger.
    Reply,
    /// A pub/sub confirmation counted against the head entry (shown to the client).
    Confirm,
    /// Not a reply: a pub/sub message, a push, a MONITOR line.
    Unsolicited,
    /// The reply to the proxy's own AUTH: consumed.
    Proxy,
    /// A stand-in's reply: consumed, and the proxy's answer goes out instead.
    Replace,
    /// Nothing was expected: the ledger and the server disagree.
    Stray,
}

impl Route {
    /// Whether the frame's bytes go to the client.
    pub fn to_client(self) -> bool {
        !matches!(self, Route::Proxy | Route::Replace)
    }
}

/// What the session must do after a frame the proxy consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// The proxy's own AUTH was answered.
    ProxyAuth(ProxyAuth),
    /// Send these bytes to the client in the consumed frame's place.
    Emit(Bytes),
}

/// The outcome of the proxy's own AUTH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyAuth {
    Ok,
    /// The server's error line (it carries no secret: the server never echoes
    /// credentials).
    Rejected(String),
}

/// The reply ledger of one session.
///
/// Plain commands, nearly all of the traffic, are counted rather than
/// stored one by one: a run of them is one queue entry, and once the head
/// is a plain command owed its reply, every plain command right behind it
/// is owed one too and changes nothing, so they wait as a count on the
/// head (`more`) and each reply only counts down.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Entries not yet at the head, in send order, with how many times
    /// each repeats (more than once only for `Pending::Plain`).
    queue: VecDeque<(Pending, u32)>,
    head: Option<(Pending, Expect)>,
    /// Further plain commands that are each owed one reply after the
    /// head's; non-zero only while the head is `(Plain, One)`.
    more: u32,
    /// Every entry: the queue's repeats, the head and `more`.
    len: usize,
    state: State,
    /// Tests: every plain command its own entry, as the reference the
    /// counted form is checked against.
    #[cfg(test)]
    one_by_one: bool,
}

impl Ledger {
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Records a command (or a local reply) in send order.
    pub fn push(&mut self, p: Pending) {
        self.len += 1;
        if p == Pending::Plain && self.counts_plain() {
            if self.queue.is_empty() && self.plain_head() {
                self.more += 1;
                return;
            }
            if let Some((Pending::Plain, n)) = self.queue.back_mut() {
                *n += 1;
                return;
            }
        }
        self.queue.push_back((p, 1));
    }

    /// The head is a plain command owed one reply. Replies were on when it
    /// was activated (under OFF or SKIP it would be owed none), and nothing
    /// changes the state while it waits, so a plain command right behind it
    /// is owed exactly one reply too and changes nothing either.
    fn plain_head(&self) -> bool {
        self.counts_plain() && matches!(self.head, Some((Pending::Plain, Expect::One)))
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    #[cfg(not(test))]
    fn counts_plain(&self) -> bool {
        true
    }

    #[cfg(test)]
    fn counts_plain(&self) -> bool {
        !self.one_by_one
    }

    /// Entries not yet settled (bounded by the session's pipeline limit).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue holds room it is not using.
    pub fn has_spare(&self) -> bool {
        self.queue.capacity() > 0
    }

    /// Lets an empty queue's room go (an idle session then holds none).
    pub fn trim(&mut self) {
        super::let_go(&mut self.queue);
    }

    /// True while the head entry is a plain command: its reply needs no look
    /// inside, so it may be forwarded while still arriving.
    pub fn head_is_plain(&self) -> bool {
        matches!(self.head, Some((Pending::Plain, _)))
    }

    /// The topology reply (or EXEC result) at the head, for cluster mode's
    /// rewriting.
    pub fn head_rewrite(&self) -> Option<Rewrite> {
        match self.head {
            Some((Pending::Topology(kind), _)) => Some(Rewrite::Topology(kind)),
            Some((Pending::Exec, _)) => Some(Rewrite::Exec),
            _ => None,
        }
    }

    /// True while the reply at the head is the one to a SYNC/PSYNC.
    pub fn head_is_sync(&self) -> bool {
        matches!(self.head, Some((Pending::Sync, _)))
    }

    /// Whether a SYNC/PSYNC has not been answered (or settled unanswered,
    /// under CLIENT REPLY OFF/SKIP) yet.
    pub fn has_sync(&self) -> bool {
        self.head_is_sync() || self.queue.iter().any(|(p, _)| *p == Pending::Sync)
    }

    /// Whether the client is still owed a reply from the server: some
    /// entry, judged in order in the state it will meet, expects one. The
    /// proxy's own AUTHs and replies the client switched off are not owed.
    pub fn owes_client(&self) -> bool {
        if let Some((p, _)) = &self.head {
            if *p != Pending::ProxyAuth {
                return true;
            }
        }
        let mut state = self.state.clone();
        self.queue.iter().any(|(p, n)| {
            // A repeat after the second meets the state the second left:
            // a plain command changes at most a pending SKIP.
            (0..(*n).min(2)).any(|_| {
                let expect = state.activate(p);
                state.apply(p, None);
                *p != Pending::ProxyAuth && expect.is_some()
            })
        })
    }

    /// Whether `settle` has anything to do.
    pub fn wants_settle(&self) -> bool {
        self.head.is_none() && !self.queue.is_empty()
    }

    /// Settles every entry at the head that needs nothing from the server,
    /// handing locally made replies to `emit` in their turn. Call after each
    /// push and each completed frame.
    pub fn settle(&mut self, mut emit: impl FnMut(&[u8])) {
        while self.head.is_none() {
            let Some((front, n)) = self.queue.front_mut() else {
                return;
            };
            let p = if *n > 1 {
                *n -= 1;
                front.clone()
            } else {
                self.queue.pop_front().expect("the front was just seen").0
            };
            match self.state.activate(&p) {
                None => {
                    self.len -= 1;
                    self.state.apply(&p, None);
                }
                Some(Expect::Emit(bytes)) => {
                    self.len -= 1;
                    emit(&bytes);
                }
                Some(expect) => self.head = Some((p, expect)),
            }
        }
        // The plain commands right behind a plain head join its count.
        if self.plain_head() {
            if let Some(&(Pending::Plain, n)) = self.queue.front() {
                self.queue.pop_front();
                self.more += n;
            }
        }
    }

    /// The head entry is done: the next plain command of its count takes
    /// its place, or the head is empty.
    fn next_head(&mut self) -> Option<(Pending, Expect)> {
        self.len -= 1;
        if self.more > 0 {
            self.more -= 1;
            return None;
        }
        self.head.take()
    }

    /// Routes the frame starting `frame` (possibly incomplete). `None`: more
    /// bytes are needed to tell.
    pub fn route(&self, frame: &[u8]) -> Option<Route> {
        let confirm = match self.head {
            Some((_, Expect::Confirm { kind, unsub, .. })) => Some(kind.word(unsub)),
            _ => None,
        };
        match frame.first()? {
            b'>' => {
                if let Some(word) = confirm {
                    if reply::first_string(frame)? == Some(word) {
                        return Some(Route::Confirm);
                    }
                }
                return Some(Route::Unsolicited);
            }
            b'+' if self.state.monitor => {
                memchr::memchr(b'\n', frame)?;
                if reply::is_monitor_line(frame) {
                    return Some(Route::Unsolicited);
                }
            }
            b'*' if self.state.proto == 2 && (confirm.is_some() || !self.state.subs.is_empty()) => {
                let first = reply::first_string(frame)?;
                if confirm.is_some() && first == confirm {
                    return Some(Route::Confirm);
                }
                if !self.state.subs.is_empty() && first.is_some_and(reply::is_message_word) {
                    return Some(Route::Unsolicited);
                }
            }
            _ => {}
        }
        Some(match self.head {
            None => Route::Stray,
            Some((Pending::ProxyAuth, _)) => Route::Proxy,
            Some((_, Expect::Replace(_))) => Route::Replace,
            Some(_) => Route::Reply,
        })
    }

    /// Records a complete frame the way `route` routed it, and says what the
    /// session must do for a frame the proxy consumed.
    pub fn complete(&mut self, frame: &[u8], route: Route) -> Option<Done> {
        match route {
            Route::Unsolicited | Route::Stray => None,
            Route::Confirm => {
                let head = self.head.take()?;
                self.len -= 1;
                let (
                    p,
                    Expect::Confirm {
                        kind,
                        unsub,
                        left,
                        all,
                    },
                ) = head
                else {
                    return None;
                };
                let c = reply::confirmation(frame);
                let channel = c.and_then(|c| c.channel);
                let set = self.state.subs.of(kind);
                match &channel {
                    Some(ch) if unsub => {
                        set.remove(ch);
                    }
                    Some(ch) => {
                        set.insert(ch.clone());
                    }
                    None => {}
                }
                let done = if all {
                    channel.is_none() || set.is_empty()
                } else {
                    left <= 1
                };
                if !done {
                    self.len += 1;
                    let left = left.saturating_sub(1);
                    self.head = Some((
                        p,
                        Expect::Confirm {
                            kind,
                            unsub,
                            left,
                            all,
                        },
                    ));
                }
                None
            }
            Route::Replace => {
                let (_, expect) = self.head.take()?;
                self.len -= 1;
                match expect {
                    Expect::Replace(bytes) => Some(Done::Emit(bytes)),
                    _ => None,
                }
            }
            Route::Reply | Route::Proxy => {
                self.head.as_ref()?;
                // A counted plain command: its reply changes nothing.
                let (p, _) = self.next_head()?;
                self.state.apply(&p, Some(frame));
                (p == Pending::ProxyAuth).then(|| {
                    Done::ProxyAuth(if frame.starts_with(b"+OK") {
                        ProxyAuth::Ok
                    } else {
                        let text = String::from_utf8_lossy(frame);
                        ProxyAuth::Rejected(text.trim_start_matches(['-', '!']).trim_end().into())
                    })
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a ledger through a script of pushes and server frames and
    /// returns what the client would see, in order.
    fn run(pushes_and_frames: &[Step]) -> (Vec<String>, Ledger) {
        let mut l = Ledger::new();
        let mut seen = Vec::new();
        for step in pushes_and_frames {
            match step {
                Step::Push(p) => l.push(p.clone()),
                Step::Frame(f) => {
                    let route = l.route(f).expect("complete frame routes");
                    let out = l.complete(f, route);
                    if route.to_client() {
                        seen.push(format!(
                            "{route:?} {}",
                            String::from_utf8_lossy(f).trim_end()
                        ));
                    } else {
                        seen.push(format!("proxy {out:?}"));
                    }
                }
            }
            l.settle(|b| seen.push(format!("local {}", String::from_utf8_lossy(b).trim_end())));
        }
        (seen, l)
    }

    #[derive(Clone)]
    enum Step {
        Push(Pending),
        Frame(&'static [u8]),
    }
    use Step::{Frame as F, Push as P};

    fn local_auth() -> Pending {
        Pending::Local {
            answer: Answer::Auth,
            standin: false,
        }
    }

    fn standin_auth() -> Pending {
        Pending::Local {
            answer: Answer::Auth,
            standin: true,
        }
    }

    fn sub(kind: PubSub, unsub: bool, channels: u64) -> Pending {
        Pending::Sub {
            kind,
            unsub,
            channels,
        }
    }

    #[test]
    fn local_auth_keeps_its_place_in_a_pipeline() {
        let (seen, l) = run(&[
            P(Pending::Plain),
            P(local_auth()),
            P(Pending::Plain),
            F(b"+OK\r\n"),
            F(b"$1\r\nv\r\n"),
        ]);
        assert_eq!(seen, ["Reply +OK", "local +OK", "Reply $1\r\nv"]);
        assert!(l.is_empty());
    }

    #[test]
    fn client_reply_off_skip_on() {
        let (seen, l) = run(&[
            P(Pending::ClientReply(ReplyMode::Off)),
            P(Pending::Plain),
            P(local_auth()),
            P(Pending::ClientReply(ReplyMode::On)),
            F(b"+OK\r\n"),
            P(Pending::ClientReply(ReplyMode::Skip)),
            P(Pending::Plain),
            P(Pending::Plain),
            F(b":2\r\n"),
        ]);
        // OFF: neither the relayed command nor the local AUTH answer;
        // ON answers; SKIP drops exactly the next reply.
        assert_eq!(seen, ["Reply +OK", "Reply :2"]);
        assert_eq!(l.state().reply, ReplyMode::On);
        assert!(l.is_empty());
    }

    #[test]
    fn resp2_subscriber_messages_and_confirmations() {
        let (seen, l) = run(&[
            P(sub(PubSub::Channel, false, 2)),
            F(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
            F(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"),
            F(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"),
            P(Pending::Plain),
            F(b"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nyo\r\n"),
            F(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
            P(sub(PubSub::Channel, true, 0)),
            F(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"),
            F(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"),
            P(Pending::Plain),
            F(b"*3\r\n$7\r\nmessage\r\n$1\r\nz\r\n$1\r\nx\r\n"),
        ]);
        let routes: Vec<&str> = seen.iter().map(|s| s.split(' ').next().unwrap()).collect();
        assert_eq!(
            routes,
            [
                "Confirm",
                "Unsolicited",
                "Confirm",
                "Unsolicited",
                "Reply",
                "Confirm",
                "Confirm",
                "Reply"
            ]
        );
        assert!(l.state().subs.is_empty());
        assert!(l.is_empty());
    }

    #[test]
    fn unsubscribe_all_when_nothing_is_subscribed_and_errors() {
        let (seen, l) = run(&[
            P(sub(PubSub::Pattern, true, 0)),
            F(b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n"),
            P(sub(PubSub::Shard, false, 2)),
            F(b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"),
            P(sub(PubSub::Channel, false, 0)),
            F(b"-ERR wrong number of arguments for 'subscribe' command\r\n"),
        ]);
        assert_eq!(seen.len(), 3);
        assert!(seen[0].starts_with("Confirm"));
        assert!(seen[1].starts_with("Reply -CROSSSLOT"));
        assert!(l.is_empty());
    }

    #[test]
    fn resp3_pushes_never_take_a_reply_slot() {
        let (seen, l) = run(&[
            P(Pending::Hello { proto: Some(3) }),
            F(b"%1\r\n+proto\r\n:3\r\n"),
            P(sub(PubSub::Channel, false, 1)),
            P(Pending::Plain),
            F(b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
            F(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"),
            // In RESP3 a subscribed client may run any command; an array
            // starting with "message" is then an ordinary reply.
            F(b"*2\r\n$7\r\nmessage\r\n$1\r\nx\r\n"),
        ]);
        let routes: Vec<&str> = seen.iter().map(|s| s.split(' ').next().unwrap()).collect();
        assert_eq!(routes, ["Reply", "Confirm", "Unsolicited", "Reply"]);
        assert_eq!(l.state().proto, 3);
        assert!(l.is_empty());
    }

    #[test]
    fn reset_then_proxy_auth_is_consumed_and_state_cleared() {
        let (seen, l) = run(&[
            P(Pending::Hello { proto: Some(3) }),
            F(b"%0\r\n"),
            P(Pending::Monitor),
            F(b"+OK\r\n"),
            P(Pending::Reset),
            P(Pending::ProxyAuth),
            F(b"+1700000000.000001 [0 127.0.0.1:1] \"get\" \"k\"\r\n"),
            F(b"+RESET\r\n"),
            F(b"+OK\r\n"),
        ]);
        assert_eq!(
            seen,
            [
                "Reply %0",
                "Reply +OK",
                "Unsolicited +1700000000.000001 [0 127.0.0.1:1] \"get\" \"k\"",
                "Reply +RESET",
                "proxy Some(ProxyAuth(Ok))"
            ]
        );
        assert_eq!(*l.state(), State::default());
    }

    #[test]
    fn proxy_auth_rejection_is_reported() {
        let (seen, _) = run(&[
            P(Pending::ProxyAuth),
            F(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
        ]);
        assert_eq!(
            seen,
            ["proxy Some(ProxyAuth(Rejected(\"WRONGPASS invalid username-password pair or user is disabled.\")))"]
        );
    }

    #[test]
    fn multi_queues_and_exec_ends_it() {
        let (seen, l) = run(&[
            P(Pending::Multi),
            F(b"+OK\r\n"),
            P(Pending::ClientReply(ReplyMode::Off)),
            F(b"+QUEUED\r\n"),
            P(local_auth()),
            P(Pending::Exec),
            F(b"*1\r\n+OK\r\n"),
        ]);
        assert_eq!(seen.len(), 4);
        assert!(seen[2].starts_with("local -ERR elasticache-auth-proxy: AUTH inside MULTI"));
        assert!(!l.state().multi);
        assert_eq!(l.state().reply, ReplyMode::On);
    }

    /// Each case is what redis-server 7.0.15 was seen to do on the wire.
    #[test]
    fn reply_suppression_matches_redis() {
        let cases: &[(&str, Vec<Step>, &[&str])] = &[
            (
                "SKIP swallows RESET's reply, which still resets",
                vec![
                    P(Pending::ClientReply(ReplyMode::Skip)),
                    P(Pending::Reset),
                    P(Pending::Plain),
                    F(b"+PONG\r\n"),
                ],
                &["Reply +PONG"],
            ),
            (
                "OFF does not silence RESET",
                vec![
                    P(Pending::ClientReply(ReplyMode::Off)),
                    P(Pending::Reset),
                    F(b"+RESET\r\n"),
                    P(Pending::Plain),
                    F(b"+PONG\r\n"),
                ],
                &["Reply +RESET", "Reply +PONG"],
            ),
            (
                "confirmations come with replies off; CLIENT REPLY ON is refused while subscribed",
                vec![
                    P(Pending::ClientReply(ReplyMode::Off)),
                    P(sub(PubSub::Channel, false, 1)),
                    F(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
                    P(Pending::ClientReply(ReplyMode::On)),
                    P(sub(PubSub::Channel, true, 0)),
                    F(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"),
                    P(Pending::Plain),
                ],
                &[
                    "Confirm *3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1",
                    "Confirm *3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0",
                ],
            ),
            (
                "a stand-in takes a pending SKIP, as the AUTH would have",
                vec![
                    P(Pending::ClientReply(ReplyMode::Skip)),
                    P(standin_auth()),
                    P(Pending::Plain),
                    F(b":1\r\n"),
                ],
                &["Reply :1"],
            ),
            (
                "a stand-in's reply is replaced by the proxy's answer",
                vec![P(Pending::Plain), P(standin_auth()), F(b"+OK\r\n"), F(b"+PONG\r\n")],
                &["Reply +OK", "proxy Some(Emit(b\"+OK\\r\\n\"))"],
            ),
            (
                "an empty command ends a pending SKIP",
                vec![
                    P(Pending::ClientReply(ReplyMode::Skip)),
                    P(Pending::Empty),
                    P(Pending::Plain),
                    F(b"+PONG\r\n"),
                ],
                &["Reply +PONG"],
            ),
            (
                "AUTH is refused while a RESP2 client is subscribed",
                vec![
                    P(sub(PubSub::Channel, false, 1)),
                    F(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
                    P(standin_auth()),
                    F(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
                ],
                &[
                    "Confirm *3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1",
                    "proxy Some(Emit(b\"-ERR Can't execute 'auth': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\\r\\n\"))",
                ],
            ),
        ];
        for (name, steps, want) in cases {
            let (seen, l) = run(steps);
            assert_eq!(seen, *want, "{name}");
            assert!(l.is_empty(), "{name}: ledger drained");
        }
    }

    /// Where an in-place re-authentication may happen (invariant 3), state
    /// by state; the session also needs no reply outstanding.
    #[test]
    fn safe_points_as_a_table_of_states() {
        let subscribed = || {
            let mut s = Subs::default();
            s.channels.insert(Bytes::from_static(b"ch"));
            s
        };
        let cases: Vec<(&str, State, bool)> = vec![
            ("fresh RESP2 connection", State::default(), true),
            (
                "inside MULTI",
                State {
                    multi: true,
                    ..State::default()
                },
                false,
            ),
            (
                "CLIENT REPLY OFF",
                State {
                    reply: ReplyMode::Off,
                    ..State::default()
                },
                false,
            ),
            (
                "CLIENT REPLY SKIP pending",
                State {
                    reply: ReplyMode::Skip,
                    ..State::default()
                },
                false,
            ),
            (
                "MONITOR",
                State {
                    monitor: true,
                    ..State::default()
                },
                false,
            ),
            (
                "RESP3 MONITOR",
                State {
                    monitor: true,
                    proto: 3,
                    ..State::default()
                },
                false,
            ),
            (
                "RESP2 subscriber",
                State {
                    subs: subscribed(),
                    ..State::default()
                },
                false,
            ),
            // RESP3 subscribers may run any command, AUTH included.
            (
                "RESP3 subscriber",
                State {
                    subs: subscribed(),
                    proto: 3,
                    ..State::default()
                },
                true,
            ),
            (
                "RESP3",
                State {
                    proto: 3,
                    ..State::default()
                },
                true,
            ),
        ];
        for (name, state, quiet) in cases {
            assert_eq!(state.quiet(), quiet, "{name}");
        }
    }

    #[test]
    fn state_follows_replies_exactly() {
        // MULTI ends with EXEC even when EXEC fails, and with DISCARD.
        let (_, l) = run(&[
            P(Pending::Multi),
            F(b"+OK\r\n"),
            P(Pending::Plain),
            F(b"-ERR unknown command\r\n"),
            P(Pending::Exec),
            F(b"-EXECABORT Transaction discarded because of previous errors.\r\n"),
        ]);
        assert!(!l.state().multi);
        let (_, l) = run(&[
            P(Pending::Multi),
            F(b"+OK\r\n"),
            P(Pending::Discard),
            F(b"+OK\r\n"),
        ]);
        assert!(!l.state().multi);
        // A refused HELLO 3 leaves RESP2; a refused MONITOR is not MONITOR.
        let (_, l) = run(&[
            P(Pending::Hello { proto: Some(3) }),
            F(b"-NOPROTO unsupported protocol version\r\n"),
            P(Pending::Monitor),
            F(b"-NOPERM this user has no permissions\r\n"),
        ]);
        assert_eq!((l.state().proto, l.state().monitor), (2, false));
        // Subscriptions are counted per kind, as confirmed.
        let (_, l) = run(&[
            P(sub(PubSub::Channel, false, 2)),
            F(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
            F(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"),
            P(sub(PubSub::Pattern, false, 1)),
            F(b"*3\r\n$10\r\npsubscribe\r\n$2\r\nc*\r\n:3\r\n"),
            P(sub(PubSub::Channel, true, 1)),
            F(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n"),
        ]);
        let subs = &l.state().subs;
        assert_eq!(
            (subs.channels.len(), subs.patterns.len(), subs.shard.len()),
            (1, 1, 0)
        );
        assert!(!l.state().quiet());
    }

    /// The counted form of plain commands against one entry per command,
    /// on random scripts of every kind of entry and of server frame: the
    /// same routes, the same frames and local replies to the client, the
    /// same state, length and owed replies after every step.
    #[test]
    fn counted_plain_commands_match_one_entry_each() {
        let pendings = [
            Pending::Plain,
            Pending::Plain,
            Pending::Plain,
            Pending::Plain,
            Pending::Hello { proto: Some(3) },
            Pending::ClientReply(ReplyMode::Off),
            Pending::ClientReply(ReplyMode::On),
            Pending::ClientReply(ReplyMode::Skip),
            Pending::Select(2),
            Pending::Reset,
            sub(PubSub::Channel, false, 2),
            sub(PubSub::Channel, true, 0),
            Pending::Multi,
            Pending::Exec,
            Pending::Discard,
            Pending::Sync,
            local_auth(),
            standin_auth(),
            Pending::Empty,
            Pending::ProxyAuth,
        ];
        let frames: [&[u8]; 8] = [
            b"+OK\r\n",
            b":1\r\n",
            b"-ERR no\r\n",
            b"+QUEUED\r\n",
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nm\r\n",
            b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nm\r\n",
        ];
        // xorshift: the same scripts on every run.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut counted_somewhere = false;
        for script in 0..2000 {
            let mut counted = Ledger::new();
            let mut reference = Ledger {
                one_by_one: true,
                ..Ledger::new()
            };
            for step in 0..60 {
                let mut seen = [Vec::new(), Vec::new()];
                let push = next(3) > 0;
                let (p, f) = (
                    pendings[next(pendings.len())].clone(),
                    frames[next(frames.len())],
                );
                for (l, seen) in [&mut counted, &mut reference].into_iter().zip(&mut seen) {
                    if push {
                        l.push(p.clone());
                    } else {
                        let route = l.route(f).expect("a whole frame routes");
                        let done = l.complete(f, route);
                        seen.push(format!("{route:?} {done:?}"));
                    }
                    l.settle(|b| seen.push(String::from_utf8_lossy(b).into_owned()));
                }
                counted_somewhere |= counted.more > 0;
                let at = format!("script {script} step {step}");
                assert_eq!(seen[0], seen[1], "{at}");
                assert_eq!(counted.state(), reference.state(), "{at}");
                assert_eq!(counted.len(), reference.len(), "{at}");
                assert_eq!(counted.owes_client(), reference.owes_client(), "{at}");
                assert_eq!(counted.has_sync(), reference.has_sync(), "{at}");
                assert_eq!(counted.head_is_plain(), reference.head_is_plain(), "{at}");
                assert_eq!(counted.wants_settle(), reference.wants_settle(), "{at}");
            }
        }
        assert!(counted_somewhere, "no script counted plain commands");
    }

    #[test]
    fn routing_waits_for_enough_bytes() {
        let mut l = Ledger::new();
        l.push(sub(PubSub::Channel, false, 1));
        l.settle(|_| {});
        assert_eq!(l.route(b"*3\r\n$9\r\nsubs"), None);
        assert_eq!(l.route(b"*3\r\n$9\r\nsubscribe\r\n"), Some(Route::Confirm));
        assert_eq!(l.route(b""), None);
        let empty = Ledger::new();
        assert_eq!(empty.route(b"+OK\r\n"), Some(Route::Stray));
    }
}
