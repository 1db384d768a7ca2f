//! A client the proxy cannot serve (no upstream, over the connection limit)
//! is told why in the place a client library reads it: as the reply to each
//! command it sends, in turn, for a bounded while. Libraries ignore the
//! errors of their handshake commands (`CLIENT SETINFO`, `HELLO`), so an
//! error written at accept time and followed by a close reaches the app as
//! "broken pipe"; answered in turn, the app's first real command carries it.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::resp::{self, inline, Scanner, Side};

/// A partial command longer than this is dropped as it is read.
const KEEP: usize = 4096;

/// Answers every command in `first` and after it with `line`, until the
/// client closes, sends QUIT (`+OK`, then close, as Redis does), sends
/// malformed RESP (Redis's protocol error, then close), or `linger` runs out.
/// Empty commands get no reply, as from Redis.
pub async fn answer_with<C>(
    mut client: C,
    mut buf: BytesMut,
    line: Bytes,
    linger: Duration,
    max_frame: u64,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + linger;
    let mut scanner = Scanner::new(Side::Request, max_frame);
    let mut pos = 0;
    // The command in progress outgrew `KEEP`: its bytes were dropped.
    let mut long = false;
    loop {
        let mut out = BytesMut::new();
        let mut close = false;
        while pos < buf.len() && !close {
            match scanner.advance(&buf[pos..]) {
                Ok((n, true)) => {
                    pos += n;
                    let kind = if long {
                        Kind::Other
                    } else {
                        command_kind(&buf[..pos], scanner.head())
                    };
                    long = false;
                    match kind {
                        Kind::Empty => {}
                        Kind::Quit => {
                            out.extend_from_slice(resp::OK);
                            close = true;
                        }
                        Kind::Other => out.extend_from_slice(&line),
                    }
                    buf.advance(pos);
                    pos = 0;
                }
                Ok((n, false)) => {
                    pos += n;
                    // A long command is answered like any other; what was
                    // scanned of it need not be kept.
                    if pos > KEEP {
                        buf.advance(pos);
                        pos = 0;
                        long = true;
                    }
                }
                Err(e) => {
                    out.extend_from_slice(&resp::error_reply(&format!("ERR {e}")));
                    close = true;
                }
            }
        }
        if !out.is_empty() {
            let wrote = tokio::time::timeout_at(deadline, client.write_all(&out)).await;
            if !matches!(wrote, Ok(Ok(()))) {
                return;
            }
        }
        if close {
            break;
        }
        buf.reserve(KEEP);
        match tokio::time::timeout_at(deadline, client.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            // Closed, failed, or the while is over.
            _ => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
}

enum Kind {
    Empty,
    Quit,
    Other,
}

/// What a complete command is, from its first bytes.
fn command_kind(frame: &[u8], head: resp::Head) -> Kind {
    if head.inline {
        let line = frame.strip_suffix(b"\n").unwrap_or(frame);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        return match inline::split(line) {
            Some(args) if args.is_empty() => Kind::Empty,
            Some(args) if args[0].eq_ignore_ascii_case(b"quit") => Kind::Quit,
            _ => Kind::Other,
        };
    }
    match head.name {
        _ if head.argc == 0 => Kind::Empty,
        Some((off, len))
            if frame
                .get(off..off + len)
                .is_some_and(|n| n.eq_ignore_ascii_case(b"quit")) =>
        {
            Kind::Quit
        }
        _ => Kind::Other,
    }
}
