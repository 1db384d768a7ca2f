//! Keeping an IAM session authenticated past the server's session-age
//! limit (invariant 3): in place at a safe point, or by moving the session
//! to a fresh connection (make before break) when no safe point can come.
//! Also the proxy's own AUTH after RESET, which shares the bookkeeping.

use std::{
    io,
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn};

/// The longest new client commands wait at a time for a safe point.
const HOLD: Duration = Duration::from_secs(1);

use super::{
    ledger::{Pending, ProxyAuth},
    open::{open, record_attempt},
    reserve, End, Live, Relay, HIGH_WATER,
};
use crate::{
    auth::{self, Method},
    error::{Error, Kind},
    resp::{self, reply, ReplyMode, Scanner, Side},
    upstream,
};

/// Why the proxy sent an AUTH of its own on a live session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    /// RESET de-authenticated the connection.
    AfterReset,
    /// The session nears the server's session-age limit.
    Refresh,
}

/// A proxy AUTH whose reply is still to come (in ledger order).
#[derive(Debug)]
pub(super) struct InFlight {
    purpose: Purpose,
    method: Method,
    user: String,
    sent: Instant,
}

impl Relay {
    /// The connection now authenticates with `method`; its gauge follows.
    fn set_method(&mut self, method: Method) {
        if method != self.method {
            self.method = method;
            self.live = Live::new(&self.ctx.metrics, method);
        }
    }

    /// Queues the proxy's own AUTH; its reply is consumed (ledger order).
    pub(super) fn send_proxy_auth(&mut self, purpose: Purpose, identity: &auth::Identity) {
        let mut out = BytesMut::new();
        resp::encode_command(&mut out, &identity.auth_command());
        self.to_up.push(out.freeze());
        self.ledger.push(Pending::ProxyAuth);
        self.proxy_auths.push_back(InFlight {
            purpose,
            method: identity.method,
            user: identity.user_name().to_string(),
            sent: Instant::now(),
        });
    }

    /// Schedules the next re-authentication of an IAM session.
    pub(super) fn schedule_reauth(&mut self) {
        self.reauth_due = false;
        self.reauth_deadline_passed = false;
        self.reauth_at = (self.method == Method::Iam).then(|| {
            let after = self.ctx.limits.reauth_after;
            // Up to 5% later, so a fleet's sessions do not all re-auth at once.
            self.authed_at + after + after.mul_f64(0.05 * auth::refresher::jitter())
        });
    }

    /// The re-auth timer fired. The first time, a re-auth becomes due and
    /// the timer is re-armed for the deadline, shortly before the server's
    /// cut (1/48 of the session age, at least 1 s); the second time, a
    /// session that found no safe point by then may move to a fresh
    /// connection.
    pub(super) fn reauth_timer_fired(&mut self) {
        self.reauth_at = None;
        if self.reauth_due {
            self.reauth_deadline_passed = true;
            return;
        }
        self.reauth_due = true;
        let age = self.ctx.limits.max_session_age;
        let deadline = self.authed_at + age.saturating_sub((age / 48).max(Duration::from_secs(1)));
        if deadline > Instant::now() {
            self.reauth_at = Some(deadline);
        } else {
            self.reauth_deadline_passed = true;
        }
    }

    /// Whether new client commands wait: a re-auth is due and only the
    /// outstanding replies stand between the session and a safe point. (In
    /// MULTI, or with replies off, the client must go on to get there.)
    /// Bounded: at most `HOLD` at a time, then `HOLD` of free flow (a
    /// blocking command may keep replies outstanding for long).
    pub(super) fn holding_for_reauth(&self) -> bool {
        self.reauth_due
            && self.ledger.state().quiet()
            && self.hold_since.is_some_and(|t| t.elapsed() < HOLD)
    }

    /// When the current hold window ends, if one is open (to wake the relay).
    pub(super) fn hold_ends(&self) -> Option<Instant> {
        self.hold_since
            .map(|t| t + HOLD)
            .filter(|_| self.holding_for_reauth())
    }

    /// Opens a hold window when a re-auth is due and the last window (if
    /// any) ended at least `HOLD` ago.
    fn update_hold(&mut self) {
        if !self.reauth_due {
            self.hold_since = None;
        } else if self.ledger.state().quiet()
            && self.hold_since.is_none_or(|t| t.elapsed() >= 2 * HOLD)
        {
            self.hold_since = Some(Instant::now());
        }
    }

    /// Sends the due re-authentication if this is a safe point (invariant 3):
    /// no reply outstanding, no command half-sent, a quiet state.
    pub(super) fn try_reauth(&mut self) {
        self.update_hold();
        if !self.reauth_due
            || !self.ledger.is_empty()
            || !self.ledger.state().quiet()
            || self.cstream
            || self.ustream
            || self.closing.is_some()
            || self.close_when_settled.is_some()
            || self.finishing.is_some()
            || self.sync_wait
            || self.raw
        {
            return;
        }
        let fallback = self.ctx.auth.mode() == crate::config::AuthMode::IamWithPasswordFallback;
        let identity = if self.reauth_with_password {
            self.ctx.auth.current(Method::Password)
        } else {
            match self.ctx.auth.current(Method::Iam) {
                Err(e) if fallback => {
                    debug!(detail = %e.detail, "no IAM token to re-authenticate; using the password");
                    self.ctx.auth.current(Method::Password)
                }
                other => other,
            }
        };
        match identity {
            Ok(identity) => {
                // Commands still in the buffer go after the AUTH.
                self.send_proxy_auth(Purpose::Refresh, &identity);
                self.reauth_due = false;
                // The ledger must expect the AUTH's reply before it comes.
                self.settle();
            }
            Err(e) => {
                warn!(conn = self.conn.id, kind = e.kind.as_str(), detail = %e.detail, "cannot re-authenticate: no identity; retrying");
                self.retry_reauth();
            }
        }
    }

    /// Whether the due re-authentication needs a fresh connection: a RESP2
    /// subscriber or a MONITOR session never reaches a safe point.
    pub(super) fn wants_migration(&self) -> bool {
        let st = self.ledger.state();
        // Near the deadline a session with replies off moves too: its
        // replies never come back on to make a safe point.
        let stuck = self.reauth_deadline_passed && st.reply == ReplyMode::Off;
        self.reauth_due
            && (st.monitor || (st.proto == 2 && !st.subs.is_empty()) || stuck)
            && !st.multi
            && self.ledger.is_empty()
            && !self.cstream
            && !self.ustream
            && self.to_up.queue.is_empty()
            && self.closing.is_none()
            && self.close_when_settled.is_none()
            && self.finishing.is_none()
            && !self.raw
    }

    /// Moves the session to a fresh authenticated connection, make before
    /// break: the new connection subscribes (or starts MONITOR) while the old
    /// one keeps relaying; then the old one unsubscribes, its last messages
    /// are relayed, and the client switches over. No message published
    /// during the switch is lost; one published in the overlap may arrive
    /// twice (counted). Client commands wait meanwhile. `Ok(None)`: the old
    /// connection stays (the new one failed; retried later).
    pub(super) async fn migrate<W: AsyncWrite + Unpin>(
        &mut self,
        ur: &mut upstream::ReadHalf,
        uw: &mut upstream::WriteHalf,
        cw: &mut W,
    ) -> Result<Option<(upstream::ReadHalf, upstream::WriteHalf)>, End> {
        self.reauth_due = false;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now()
            + self.ctx.limits.max_session_age.min(Duration::from_secs(30));
        let st = self.ledger.state().clone();
        let mut old_open = true;

        // 1. A new authenticated connection, while the old one relays.
        let (ctx, conn) = (self.ctx.clone(), self.conn.clone());
        let opening = async move {
            let mut rest = BytesMut::new();
            open(&ctx, &conn, &mut rest)
                .await
                .map(|(s, m)| (s, m, rest))
        };
        tokio::pin!(opening);
        // When the new connection's AUTH was answered: the server ran it
        // just before, so its session age counts from about here.
        let opened_at;
        let (stream, method, mut nbuf) = loop {
            tokio::select! {
                r = &mut opening => match r {
                    Ok(opened) => {
                        opened_at = Instant::now();
                        break opened;
                    }
                    Err(e) => return Ok(self.migration_failed(&e.detail)),
                },
                r = self.to_client.write_to(cw), if self.to_client.busy() => r.map_err(End::ClientIo)?,
                r = ur.read_buf(&mut self.ubuf), if old_open && self.to_client.len < HIGH_WATER => {
                    old_open = self.old_read(r);
                    if !old_open {
                        return Ok(self.old_gone_mid_move());
                    }
                }
            }
        };
        let (mut nr, mut nw) = stream.split();

        // 2. Restore what the session had, swallowing the confirmations and
        // holding messages that arrive before the switch.
        let mut restore = BytesMut::new();
        let mut expect = 0usize;
        if st.proto == 3 {
            resp::encode_command(&mut restore, &[&b"HELLO"[..], b"3"]);
            expect += 1;
        }
        if st.db != 0 {
            let db = st.db.to_string();
            resp::encode_command(&mut restore, &[&b"SELECT"[..], db.as_bytes()]);
            expect += 1;
        }
        if st.monitor {
            resp::encode_command(&mut restore, &[&b"MONITOR"[..]]);
            expect += 1;
        } else {
            for (kind, set) in [
                (resp::PubSub::Channel, &st.subs.channels),
                (resp::PubSub::Pattern, &st.subs.patterns),
                (resp::PubSub::Shard, &st.subs.shard),
            ] {
                if !set.is_empty() {
                    let mut args: Vec<&[u8]> = vec![kind.command()];
                    args.extend(set.iter().map(|c| c.as_ref()));
                    resp::encode_command(&mut restore, &args);
                    expect += set.len();
                }
            }
        }
        if st.reply == ReplyMode::Off {
            // Last, and unanswered: from here the server sends no replies.
            resp::encode_command(&mut restore, &[&b"CLIENT"[..], b"REPLY", b"OFF"]);
        }
        if let Err(e) = nw.write_all(&restore).await.and(nw.flush().await) {
            return Ok(self.migration_failed(&format!("restore write: {e}")));
        }
        let mut nscan = Scanner::new(Side::Reply, self.ctx.limits.max_frame);
        let mut npos = 0;
        let mut held: Vec<Bytes> = Vec::new();
        let mut seen = 0;
        loop {
            // Frames already in the new connection's buffer.
            loop {
                let (n, done) = match nscan.advance(&nbuf[npos..]) {
                    Ok(step) => step,
                    Err(e) => return Ok(self.migration_failed(&e.0)),
                };
                npos += n;
                if !done {
                    break;
                }
                let frame = nbuf.split_to(npos).freeze();
                npos = 0;
                if seen < expect {
                    if reply::is_error(&frame) {
                        return Ok(self.migration_failed(&String::from_utf8_lossy(&frame)));
                    }
                    // Replies to the restore commands, in order: HELLO's map,
                    // SELECT's and MONITOR's +OK, subscribe confirmations.
                    // Messages, pushes and MONITOR lines are the client's.
                    let word = reply::first_string(&frame).flatten();
                    let message = word.is_some_and(reply::is_message_word)
                        || reply::is_monitor_line(&frame)
                        || (reply::is_push(&frame)
                            && !word.is_some_and(|w| {
                                matches!(w, b"subscribe" | b"psubscribe" | b"ssubscribe")
                            }));
                    if !message {
                        seen += 1;
                        continue;
                    }
                }
                held.push(frame);
            }
            if seen == expect {
                break;
            }
            reserve(&mut nbuf);
            tokio::select! {
                r = nr.read_buf(&mut nbuf) => match r {
                    Ok(n) if n > 0 => {}
                    Ok(_) => return Ok(self.migration_failed("the new connection closed")),
                    Err(e) => return Ok(self.migration_failed(&e.to_string())),
                },
                r = self.to_client.write_to(cw), if self.to_client.busy() => r.map_err(End::ClientIo)?,
                r = ur.read_buf(&mut self.ubuf), if old_open && self.to_client.len < HIGH_WATER => {
                    old_open = self.old_read(r);
                    if !old_open {
                        return Ok(self.old_gone_mid_move());
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Ok(self.migration_failed("timed out restoring subscriptions"));
                }
            }
        }

        // 3. Retire the old connection's subscriptions, relaying its last
        // messages and swallowing the confirmations. Without subscriptions
        // (replies off), a barrier instead: once PING is answered, every
        // command sent there has run, so none can be overtaken by a later
        // one on the new connection.
        if old_open && !st.monitor {
            let mut unsub = BytesMut::new();
            let mut expect_old = 0usize;
            let barrier = st.subs.is_empty();
            if barrier {
                resp::encode_command(&mut unsub, &[&b"CLIENT"[..], b"REPLY", b"ON"]);
                resp::encode_command(&mut unsub, &[&b"PING"[..]]);
                expect_old = 2;
            }
            for (kind, set) in [
                (resp::PubSub::Channel, &st.subs.channels),
                (resp::PubSub::Pattern, &st.subs.patterns),
                (resp::PubSub::Shard, &st.subs.shard),
            ] {
                if !set.is_empty() {
                    resp::encode_command(&mut unsub, &[kind.word(true)]);
                    expect_old += set.len();
                }
            }
            if uw.write_all(&unsub).await.and(uw.flush().await).is_ok() {
                while expect_old > 0 {
                    match self.old_frames(&mut expect_old, barrier) {
                        Ok(()) if expect_old == 0 => break,
                        Ok(()) => {}
                        Err(_) => break,
                    }
                    reserve(&mut self.ubuf);
                    tokio::select! {
                        r = ur.read_buf(&mut self.ubuf) => match r {
                            Ok(n) if n > 0 => {}
                            _ => break,
                        },
                        r = self.to_client.write_to(cw), if self.to_client.busy() => r.map_err(End::ClientIo)?,
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
        }

        // 3b. Bound the overlap. A message published after the new
        // connection subscribed and before the old one's UNSUBSCRIBE ran came
        // on both. The new connection's answer to a PING sent now comes after
        // every such message (the UNSUBSCRIBE ran before its confirmation was
        // read above, and the PING runs after that), so the messages before
        // it are the candidates: held, counted, and the PONG swallowed.
        if !st.monitor && !st.subs.is_empty() {
            let pong: &[u8] = if st.proto == 3 {
                b"+PONG\r\n"
            } else {
                b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
            };
            let mut ping = BytesMut::new();
            resp::encode_command(&mut ping, &[&b"PING"[..]]);
            let mut failed = nw
                .write_all(&ping)
                .await
                .and(nw.flush().await)
                .err()
                .map(|e| format!("overlap PING write: {e}"));
            'pong: while failed.is_none() {
                loop {
                    let (n, done) = match nscan.advance(&nbuf[npos..]) {
                        Ok(step) => step,
                        Err(e) => {
                            failed = Some(e.0);
                            break 'pong;
                        }
                    };
                    npos += n;
                    if !done {
                        break;
                    }
                    let frame = nbuf.split_to(npos).freeze();
                    npos = 0;
                    if frame[..] == *pong {
                        break 'pong;
                    }
                    held.push(frame);
                }
                reserve(&mut nbuf);
                tokio::select! {
                    r = nr.read_buf(&mut nbuf) => match r {
                        Ok(n) if n > 0 => {}
                        Ok(_) => failed = Some("the new connection closed".into()),
                        Err(e) => failed = Some(e.to_string()),
                    },
                    r = self.to_client.write_to(cw), if self.to_client.busy() => r.map_err(End::ClientIo)?,
                    () = tokio::time::sleep_until(deadline) => {
                        failed = Some("no answer to the overlap PING in time".into());
                    }
                }
            }
            if let Some(why) = failed {
                // The old connection no longer carries the subscriptions and
                // the new one cannot be trusted to (or would relay our PONG
                // later): deliver what came, then close, as a server that
                // drops a subscriber does. Nothing is owed in this mode.
                self.forward_replies();
                for frame in held {
                    self.to_client.push(frame);
                }
                warn!(
                    conn = self.conn.id,
                    reason = why,
                    "the session's fresh connection failed while it was being moved; closing"
                );
                self.ctx
                    .metrics
                    .migrations
                    .with_label_values(&["failure"])
                    .inc();
                self.closing = Some(End::Upstream(Error::upstream(Kind::Closed, why)));
                return Ok(None);
            }
        }

        // 4. Switch: the new connection's held messages go out after the
        // old one's, and the relay reads the new connection from here on.
        self.forward_replies();
        self.ctx
            .metrics
            .migration_overlap_messages
            .inc_by(held.len() as u64);
        for frame in held {
            self.to_client.push(frame);
        }
        self.rep = nscan;
        self.ubuf = nbuf;
        // Grown while restoring subscriptions, perhaps: let it go once drained.
        self.uread.grown = true;
        self.ustart = 0;
        self.upos = npos;
        self.uroute = None;
        // Not the switch: restoring and retiring the subscriptions may take
        // seconds on a loaded server, all of it already on the new clock.
        self.authed_at = opened_at;
        self.set_method(method);
        self.schedule_reauth();
        self.ctx
            .metrics
            .migrations
            .with_label_values(&["success"])
            .inc();
        info!(
            conn = self.conn.id,
            took_ms = started.elapsed().as_millis() as u64,
            monitor = st.monitor,
            subscriptions = expect,
            "session moved to a fresh authenticated connection"
        );
        Ok(Some((nr, nw)))
    }

    /// Bytes read from the old connection during a migration, before its
    /// retirement: relayed as usual. Returns whether it is still open.
    fn old_read(&mut self, r: io::Result<usize>) -> bool {
        match r {
            Ok(n) if n > 0 => {
                self.bytes_down.inc_by(n as u64);
                if let Err(e) = self.on_upstream_bytes() {
                    warn!(conn = self.conn.id, detail = %e.detail, "old connection failed during migration");
                    return false;
                }
                true
            }
            _ => {
                // Too late: the server cut the old connection before the
                // move was done (what was published meanwhile is gone).
                self.count_if_expired();
                false
            }
        }
    }

    /// Complete frames from the retiring connection: unsubscribe
    /// confirmations (or, for a `barrier`, the replies to CLIENT REPLY ON
    /// and PING) are swallowed, counting down `expect`; messages relayed.
    fn old_frames(&mut self, expect: &mut usize, barrier: bool) -> Result<(), resp::Error> {
        while self.upos < self.ubuf.len() {
            let (n, done) = self.rep.advance(&self.ubuf[self.upos..])?;
            self.upos += n;
            if !done {
                break;
            }
            let frame = &self.ubuf[self.ustart..self.upos];
            let word = reply::first_string(frame).flatten();
            let ours = if barrier {
                !reply::is_push(frame)
            } else {
                word.is_some_and(|w| {
                    matches!(w, b"unsubscribe" | b"punsubscribe" | b"sunsubscribe")
                })
            };
            if *expect > 0 && ours {
                *expect -= 1;
                self.forward_replies();
                self.ubuf.advance(self.upos);
                self.upos = 0;
            } else {
                self.ustart = self.upos;
            }
        }
        self.forward_replies();
        Ok(())
    }

    /// The old connection closed before the new one carried the session's
    /// subscriptions (or MONITOR): what was published in between is gone,
    /// so the move must not hide it. The session ends as it would have
    /// with no move under way, with the close (nothing is owed in this
    /// mode), after what the old connection delivered.
    fn old_gone_mid_move(&mut self) -> Option<(upstream::ReadHalf, upstream::WriteHalf)> {
        warn!(
            conn = self.conn.id,
            "the server closed the connection while the session was being moved; closing"
        );
        self.ctx
            .metrics
            .migrations
            .with_label_values(&["failure"])
            .inc();
        self.forward_replies();
        self.closing = Some(End::Upstream(Error::upstream(
            Kind::Closed,
            "the server closed the connection",
        )));
        None
    }

    /// A migration could not complete: keep the old connection, try again
    /// later (the server closes it at its age limit otherwise).
    fn migration_failed(&mut self, why: &str) -> Option<(upstream::ReadHalf, upstream::WriteHalf)> {
        warn!(
            conn = self.conn.id,
            reason = why,
            "could not move the session to a fresh connection"
        );
        self.ctx
            .metrics
            .migrations
            .with_label_values(&["failure"])
            .inc();
        self.retry_reauth();
        None
    }

    /// After a failed re-authentication: try again halfway to the cut-off,
    /// while there is time; then the server will close the session.
    fn retry_reauth(&mut self) {
        self.reauth_due = false;
        let deadline = self.authed_at + self.ctx.limits.max_session_age;
        let left = deadline.saturating_duration_since(Instant::now());
        if left > Duration::from_secs(1) {
            self.reauth_at = Some(Instant::now() + left / 2);
        } else {
            self.reauth_at = None;
            warn!(
                conn = self.conn.id,
                "re-authentication failed; the server will close this session at its age limit"
            );
        }
    }

    /// The reply to one of the proxy's own AUTHs came: log and count it,
    /// then act on it. A refused AUTH after RESET ends the session (the
    /// connection is no longer authenticated); a refused re-authentication
    /// does not (the connection keeps its identity until the server's cut).
    pub(super) fn proxy_authenticated(&mut self, auth: ProxyAuth) -> Result<(), Error> {
        let Some(sent) = self.proxy_auths.pop_front() else {
            return Ok(());
        };
        let took = sent.sent.elapsed();
        let result = match &auth {
            ProxyAuth::Ok => Ok(took),
            ProxyAuth::Rejected(reason) => Err(Error::upstream(Kind::AuthRejected, reason.clone())),
        };
        let outcome = if result.is_ok() { "success" } else { "failure" };
        self.ctx.metrics.reauths.with_label_values(&[outcome]).inc();
        let fallback = sent.method != self.method;
        record_attempt(
            &self.ctx,
            &self.conn,
            sent.method,
            &sent.user,
            &result,
            took,
            fallback,
            true,
        );
        match (result, sent.purpose) {
            (Ok(_), _) => {
                // A successful AUTH restarts the server's session-age window
                // when the server runs it, after it was sent: counting from
                // the send errs early, never late, however slow the reply.
                self.authed_at = sent.sent;
                self.set_method(sent.method);
                self.reauth_with_password = false;
                self.schedule_reauth();
                Ok(())
            }
            (Err(e), Purpose::AfterReset) => Err(e),
            (Err(_), Purpose::Refresh) => {
                let fallback_mode =
                    self.ctx.auth.mode() == crate::config::AuthMode::IamWithPasswordFallback;
                if sent.method == Method::Iam && fallback_mode {
                    self.ctx
                        .metrics
                        .auth_fallbacks
                        .with_label_values(&["rejected"])
                        .inc();
                    self.reauth_with_password = true;
                    self.reauth_due = true;
                } else {
                    self.retry_reauth();
                }
                Ok(())
            }
        }
    }
}
