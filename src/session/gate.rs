//! With a local client password set, a new client is answered by the proxy
//! alone until it authenticates: no upstream connection is opened and no
//! AUTH (no IAM authentication) is spent upstream for a client that does not
//! know the password. Before that, clients get what Redis gives an
//! unauthenticated connection: NOAUTH for commands, WRONGPASS for a wrong
//! password, `+RESET`, `+OK` to QUIT, and Redis's limits on command size.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    auth_arity_error, check_client_password, client_password_matches, multibulk_args, Conn,
    Context, End, NOAUTH, NOAUTH_HELLO, RESET, WRONGPASS,
};
use crate::resp::{self, command, inline, Class, Scanner, Side};

/// How the client passed the gate.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Passed {
    /// An AUTH with the right password; its `+OK` has been sent.
    Auth,
    /// A HELLO carrying the right password starts the bytes left over: the
    /// session runs it (the server answers HELLO), checking it again.
    Hello,
}

/// What the gate does with one complete command.
enum Step {
    Reply(Bytes),
    /// An empty command: Redis answers nothing.
    Silent,
    Quit,
    Passed(Passed),
    /// Malformed input: the error, then close.
    Protocol(Bytes),
}

/// Answers `client` until it authenticates. On success `buf` holds what the
/// client sent after the AUTH (or from the HELLO on). Otherwise the session
/// is over: the client closed, quit, idled out, sent malformed RESP, or the
/// proxy is draining.
pub(super) async fn gate<C>(
    client: &mut C,
    ctx: &Context,
    conn: &Conn,
    buf: &mut BytesMut,
) -> Result<Passed, End>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut scanner = Scanner::new(Side::Request, ctx.limits.max_frame);
    scanner.set_unauthenticated(true);
    let idle = ctx.limits.idle_timeout;
    let stall = if idle.is_zero() {
        Duration::MAX / 4
    } else {
        idle
    };
    let mut drain = ctx.drain.clone();
    let mut pos = 0;
    loop {
        let mut out = BytesMut::new();
        let mut outcome = None;
        while pos < buf.len() && outcome.is_none() {
            let step = match scanner.advance(&buf[pos..]) {
                Ok((n, false)) => {
                    pos += n;
                    continue;
                }
                Ok((n, true)) => {
                    let frame = buf.split_to(pos + n).freeze();
                    pos = 0;
                    let step = answer(ctx, conn, &frame, scanner.head());
                    if matches!(step, Step::Passed(Passed::Hello)) {
                        // The session runs the HELLO itself.
                        let mut rest = BytesMut::from(&frame[..]);
                        rest.extend_from_slice(buf);
                        *buf = rest;
                    }
                    step
                }
                Err(e) => Step::Protocol(resp::error_reply(&format!("ERR {e}"))),
            };
            match step {
                Step::Reply(bytes) => out.extend_from_slice(&bytes),
                Step::Silent => {}
                Step::Quit => {
                    out.extend_from_slice(resp::OK);
                    outcome = Some(Err(End::Quit));
                }
                Step::Passed(passed) => {
                    if passed == Passed::Auth {
                        out.extend_from_slice(resp::OK);
                    }
                    outcome = Some(Ok(passed));
                }
                Step::Protocol(bytes) => {
                    out.extend_from_slice(&bytes);
                    outcome = Some(Err(End::ClientProtocol));
                }
            }
        }
        if !out.is_empty() {
            match tokio::time::timeout(stall, client.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(End::ClientIo(e)),
                Err(_) => return Err(End::Idle),
            }
        }
        if let Some(outcome) = outcome {
            if outcome.is_err() {
                let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
            }
            return outcome;
        }
        buf.reserve(4096);
        tokio::select! {
            r = client.read_buf(buf) => match r {
                Ok(0) => return Err(End::ClientClosed),
                Ok(n) => ctx.metrics.bytes.with_label_values(&["to_upstream"]).inc_by(n as u64),
                Err(e) => return Err(End::ClientIo(e)),
            },
            () = tokio::time::sleep(stall) => return Err(End::Idle),
            // Nothing owed: a draining proxy just closes.
            Ok(_) = drain.wait_for(|d| *d) => return Err(End::Drained),
        }
    }
}

/// The gate's answer to one complete command (`frame`).
fn answer(ctx: &Context, conn: &Conn, frame: &Bytes, head: resp::Head) -> Step {
    let args: Vec<Bytes> = if head.inline {
        let line = frame.strip_suffix(b"\n").unwrap_or(frame);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match inline::split(line) {
            Some(args) => args.into_iter().map(Bytes::from).collect(),
            None => {
                return Step::Protocol(resp::error_reply(
                    "ERR Protocol error: unbalanced quotes in request",
                ))
            }
        }
    } else {
        multibulk_args(frame)
    };
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
    let Some(name) = refs.first() else {
        return Step::Silent;
    };
    let fixed = |line: &'static [u8]| Step::Reply(Bytes::from_static(line));
    match command::classify(name, refs.len() as u64) {
        Class::Quit => Step::Quit,
        Class::Reset => fixed(RESET),
        Class::Auth => match refs.len() {
            n @ (2 | 3) => {
                if check_client_password(ctx, conn, refs[n - 1]) {
                    Step::Passed(Passed::Auth)
                } else {
                    fixed(WRONGPASS)
                }
            }
            n => Step::Reply(auth_arity_error(n)),
        },
        Class::Hello => match command::hello(&refs) {
            // Counted once, when the session checks it again.
            Ok(hello) => match hello.auth {
                Some((_, password)) if client_password_matches(ctx, password) => {
                    Step::Passed(Passed::Hello)
                }
                Some((_, password)) => {
                    check_client_password(ctx, conn, password);
                    fixed(WRONGPASS)
                }
                None => fixed(NOAUTH_HELLO),
            },
            Err(msg) => Step::Reply(resp::error_reply(&format!("ERR {msg}"))),
        },
        _ => fixed(NOAUTH),
    }
}
