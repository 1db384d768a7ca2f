//! RESP framing: frame boundaries (`scan`), what a client command is (`command`),
//! what a server reply is (`reply`), and the few frames the proxy writes itself.
//! Knows nothing of sessions, upstreams or authentication.
//!
//! The relay path never decodes frames into owned values: the scanner finds
//! boundaries and the proxy forwards the bytes it read. `redis-protocol` decodes
//! the handful of small frames the proxy must understand (HELLO arguments,
//! pub/sub confirmations, its own AUTH replies) and encodes the frames it makes.

pub mod command;
pub mod inline;
pub mod reply;
pub mod scan;
pub mod tree;

pub use command::{Class, PubSub, ReplyMode, Topology};
pub use scan::{Error, Head, Scanner, Side};

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::{encode::extend_encode, types::BytesFrame};

/// Encodes a command as a RESP2 multibulk of bulk strings, appending to `buf`.
pub fn encode_command<A: AsRef<[u8]>>(buf: &mut BytesMut, args: &[A]) {
    let frame = BytesFrame::Array(
        args.iter()
            .map(|a| BytesFrame::BulkString(Bytes::copy_from_slice(a.as_ref())))
            .collect(),
    );
    // Encoding an array of bulk strings into a growable buffer cannot fail.
    extend_encode(buf, &frame, false).expect("encoding bulk strings is infallible");
}

/// An error reply (`-<message>\r\n`). The message must be a single line.
pub fn error_reply(message: &str) -> Bytes {
    let line: String = message
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let mut buf = BytesMut::with_capacity(line.len() + 3);
    buf.extend_from_slice(b"-");
    buf.extend_from_slice(line.as_bytes());
    buf.extend_from_slice(b"\r\n");
    buf.freeze()
}

/// `+OK\r\n`.
pub const OK: &[u8] = b"+OK\r\n";
