//! A raw RESP client for byte-precise tests; owns framing, not command semantics.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use redis_protocol::resp3::types::OwnedFrame;
use redis_protocol::{resp2, resp3};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long `read` waits for one frame before failing the test.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `read_closed` waits for the peer to hang up.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection speaking RESP. Plain TCP by default (the proxy's client
/// side); `Resp::over` wraps any stream, e.g. TLS straight to redis.
pub struct Resp<S = TcpStream> {
    stream: S,
    /// Bytes read but not yet decoded; bounded by one reply in practice.
    buf: BytesMut,
}

impl Resp<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Resp {
        let stream = timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr}: timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Resp::over(stream)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Resp<S> {
    pub fn over(stream: S) -> Resp<S> {
        Resp {
            stream,
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// Sends one command as a RESP multibulk of bulk strings.
    pub async fn send(&mut self, args: &[&[u8]]) {
        self.send_raw(&encode_command(args)).await;
    }

    /// Sends bytes as-is: inline commands, partial frames, garbage.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send to peer");
        self.stream.flush().await.expect("flush to peer");
    }

    /// Reads exactly one frame, keeping any following bytes for the next call.
    pub async fn read(&mut self) -> OwnedFrame {
        match timeout(READ_TIMEOUT, self.next_frame()).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => panic!("peer closed before a full frame ({:?})", self.pending()),
            Ok(Err(e)) => panic!("read failed: {e} ({:?})", self.pending()),
            Err(_) => panic!("no frame within {READ_TIMEOUT:?} ({:?})", self.pending()),
        }
    }

    pub async fn cmd(&mut self, args: &[&[u8]]) -> OwnedFrame {
        self.send(args).await;
        self.read().await
    }

    /// True if the peer hangs up (EOF, reset, TLS alert) within
    /// `CLOSE_TIMEOUT`. False on timeout or as soon as any byte is pending;
    /// such bytes stay buffered for `read`.
    pub async fn read_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match timeout(CLOSE_TIMEOUT, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => n == 0,
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }

    /// Every byte the peer sends until it hangs up (EOF, reset, or a TLS
    /// close without close_notify), bytes already buffered included; panics
    /// if it is still open after `CLOSE_TIMEOUT`.
    pub async fn read_until_closed(&mut self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        loop {
            let read = self.stream.read_buf(&mut self.buf);
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(0)) | Ok(Err(_)) => return self.buf.split().to_vec(),
                Ok(Ok(_)) => continue,
                Err(_) => panic!(
                    "peer still open after {CLOSE_TIMEOUT:?} ({:?})",
                    self.pending()
                ),
            }
        }
    }

    /// The underlying stream, e.g. to inspect the TLS session.
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// `Ok(None)` means EOF before a complete frame; `read` reports leftovers.
    async fn next_frame(&mut self) -> std::io::Result<Option<OwnedFrame>> {
        loop {
            if let Some((frame, used)) = decode_one(&self.buf) {
                self.buf.advance(used);
                return Ok(Some(frame));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    fn pending(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// One frame from the head of `buf`, or `None` if it is still incomplete;
/// panics on bytes that are not RESP.
fn decode_one(buf: &[u8]) -> Option<(OwnedFrame, usize)> {
    try_decode(buf).unwrap_or_else(|e| panic!("{e}"))
}

/// One frame from the head of `buf`, `Ok(None)` if it is still incomplete.
/// redis-protocol's RESP3 decoder reads RESP2's null bulk/array (`$-1`,
/// `*-1`) as the start of a streamed aggregate and rejects it, so on error
/// the RESP2 decoder gets a turn; only if both reject the bytes is it an error.
pub fn try_decode(buf: &[u8]) -> Result<Option<(OwnedFrame, usize)>, String> {
    let resp3_err = match resp3::decode::complete::decode(buf) {
        Ok(found) => return Ok(found),
        Err(e) => e,
    };
    match resp2::decode::decode(buf) {
        Ok(found) => Ok(found.map(|(frame, used)| (from_resp2(frame), used))),
        Err(e) => Err(format!(
            "undecodable reply: {resp3_err:?} / {e:?} ({:?})",
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        )),
    }
}

/// Faithful RESP2 -> RESP3 mapping. Unlike `into_resp3` this keeps pubsub
/// messages as the arrays that were on the wire.
fn from_resp2(frame: resp2::types::OwnedFrame) -> OwnedFrame {
    use resp2::types::OwnedFrame as F2;
    let attributes = None;
    match frame {
        F2::SimpleString(data) => OwnedFrame::SimpleString { data, attributes },
        F2::Error(data) => OwnedFrame::SimpleError { data, attributes },
        F2::Integer(data) => OwnedFrame::Number { data, attributes },
        F2::BulkString(data) => OwnedFrame::BlobString { data, attributes },
        F2::Array(items) => {
            let data = items.into_iter().map(from_resp2).collect();
            OwnedFrame::Array { data, attributes }
        }
        F2::Null => OwnedFrame::Null,
    }
}

/// `*<n>\r\n` then `$<len>\r\n<arg>\r\n` per argument.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Compact, stable rendering for assertions: `+OK`, `$value`, `-ERR msg`,
/// `:1`, `_` (null), `[a,b]`, `%{k:v}` (keys sorted), `~{a,b}` (sorted),
/// `>[...]`. Inside aggregates scalars drop their prefix; errors keep `-`.
pub fn text(frame: &OwnedFrame) -> String {
    use OwnedFrame::*;
    match frame {
        SimpleString { .. } => format!("+{}", inner(frame)),
        BlobString { .. } => format!("${}", inner(frame)),
        Number { .. } => format!(":{}", inner(frame)),
        Double { .. } => format!(",{}", inner(frame)),
        Boolean { .. } => format!("#{}", inner(frame)),
        BigNumber { .. } => format!("({}", inner(frame)),
        VerbatimString { .. } => format!("={}", inner(frame)),
        _ => inner(frame),
    }
}

fn inner(frame: &OwnedFrame) -> String {
    use OwnedFrame::*;
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match frame {
        SimpleString { data, .. } | BlobString { data, .. } | BigNumber { data, .. } => lossy(data),
        VerbatimString { data, .. } | ChunkedString(data) => lossy(data),
        SimpleError { data, .. } => format!("-{data}"),
        BlobError { data, .. } => format!("-{}", lossy(data)),
        Number { data, .. } => data.to_string(),
        Double { data, .. } => data.to_string(),
        Boolean { data, .. } => if *data { "t" } else { "f" }.to_string(),
        Null => "_".to_string(),
        Array { data, .. } => format!("[{}]", join(data.iter().map(inner), false)),
        Push { data, .. } => format!(">[{}]", join(data.iter().map(inner), false)),
        // Sets and maps are hash-based here: sort so the rendering is stable.
        Set { data, .. } => format!("~{{{}}}", join(data.iter().map(inner), true)),
        Map { data, .. } => {
            let entries = data
                .iter()
                .map(|(k, v)| format!("{}:{}", inner(k), inner(v)));
            format!("%{{{}}}", join(entries, true))
        }
        Hello { .. } => format!("{frame:?}"),
    }
}

fn join(items: impl Iterator<Item = String>, sorted: bool) -> String {
    let mut items: Vec<String> = items.collect();
    if sorted {
        items.sort();
    }
    items.join(",")
}

/// The elements of an array of blob strings (pub/sub messages, BLPOP).
pub fn blobs(frame: &OwnedFrame) -> Option<Vec<String>> {
    let OwnedFrame::Array { data, .. } = frame else {
        return None;
    };
    data.iter()
        .map(|item| match item {
            OwnedFrame::BlobString { data, .. } => Some(String::from_utf8_lossy(data).into_owned()),
            _ => None,
        })
        .collect()
}
