//! How a session reads its two sockets: only once a read would not wait,
//! into a buffer taken then, sized by [`Sizing`]. A session waiting for its
//! client or its server holds no read buffer (an idle session none at
//! all); a read that finds nothing after all (a TLS record with no
//! application data, a spurious wakeup) gives its buffer back. Knows
//! nothing of RESP.

use std::{
    future::Future,
    io,
    pin::pin,
    task::{Context, Poll},
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite},
    net::{tcp, unix, TcpStream, UnixStream},
};

use super::{READ_CHUNK, SMALL_CHUNK};
use crate::upstream;

/// A socket that tells when a read would not wait.
pub trait Ready {
    /// `Ready` when a read may return something (bytes, the end, an
    /// error) at once; otherwise `Pending`, woken when that changes.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// A client connection as a session relays it: read on readiness, and
/// split into halves that read and write at once without a lock.
pub trait Client: AsyncRead + AsyncWrite + Ready + Unpin {
    type Read<'a>: AsyncRead + Ready + Unpin
    where
        Self: 'a;
    type Write<'a>: AsyncWrite + Unpin
    where
        Self: 'a;
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>);
}

impl Ready for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl Ready for tcp::ReadHalf<'_> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

impl Client for TcpStream {
    type Read<'a> = tcp::ReadHalf<'a>;
    type Write<'a> = tcp::WriteHalf<'a>;
    fn halves(&mut self) -> (tcp::ReadHalf<'_>, tcp::WriteHalf<'_>) {
        self.split()
    }
}

impl Ready for UnixStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_read_ready(self, cx)
    }
}

impl Ready for unix::ReadHalf<'_> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

impl Client for UnixStream {
    type Read<'a> = unix::ReadHalf<'a>;
    type Write<'a> = unix::WriteHalf<'a>;
    fn halves(&mut self) -> (unix::ReadHalf<'_>, unix::WriteHalf<'_>) {
        self.split()
    }
}

impl Ready for upstream::ReadHalf {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        upstream::ReadHalf::poll_read_ready(self, cx)
    }
}

/// One read of `r` into `buf`, as `read_buf` does it, but with the room
/// made only once `r` is ready, and an empty buffer let go while `r` is
/// not. `Ok(0)`: the end.
pub(super) fn poll_read<R: AsyncRead + Ready + Unpin>(
    cx: &mut Context<'_>,
    r: &mut R,
    buf: &mut BytesMut,
    sizing: &mut Sizing,
) -> Poll<io::Result<usize>> {
    if r.poll_read_ready(cx)?.is_pending() {
        sizing.idle(buf);
        return Poll::Pending;
    }
    sizing.relax(buf);
    let spare = sizing.reserve(buf);
    let poll = pin!(r.read_buf(buf)).poll(cx);
    match poll {
        Poll::Ready(Ok(n)) => {
            sizing.read(n, spare);
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        // Ready, then nothing after all; the read registered the wakeup.
        Poll::Pending => {
            sizing.idle(buf);
            Poll::Pending
        }
    }
}

/// How much one side's next read asks for. Reads start at [`SMALL_CHUNK`]
/// and double, up to [`READ_CHUNK`], while each read fills all the room it
/// was given (the peer has more ready); a read that leaves room means the
/// socket is drained, and the next one starts small again. Once a grown
/// buffer is drained it is let go, so a session that relayed a large value
/// and then idles holds a small buffer, not the largest it ever needed.
/// Small pipelined traffic never grows past the first size.
#[derive(Debug)]
pub(super) struct Sizing {
    /// The room the next read asks for.
    chunk: usize,
    /// The buffer was given more than [`SMALL_CHUNK`] since it was last
    /// let go (or was handed over with unknown capacity).
    pub(super) grown: bool,
}

impl Default for Sizing {
    fn default() -> Self {
        Sizing {
            chunk: SMALL_CHUNK,
            grown: false,
        }
    }
}

impl Sizing {
    /// Makes room for the next read; returns the room there is.
    fn reserve(&mut self, buf: &mut BytesMut) -> usize {
        if buf.capacity() - buf.len() < self.chunk / 4 {
            buf.reserve(self.chunk);
        }
        let spare = buf.capacity() - buf.len();
        if spare > SMALL_CHUNK {
            self.grown = true;
        }
        spare
    }

    /// A read of `n` bytes into `spare` bytes of room.
    fn read(&mut self, n: usize, spare: usize) {
        self.chunk = if n >= spare {
            (self.chunk * 2).min(READ_CHUNK)
        } else {
            SMALL_CHUNK
        };
    }

    /// Lets a grown buffer go once it is empty and the socket was drained:
    /// the next read gets a fresh small one. The old allocation is freed
    /// when the last bytes split from it have been written.
    fn relax(&mut self, buf: &mut BytesMut) {
        if self.grown && self.chunk == SMALL_CHUNK && buf.is_empty() {
            *buf = BytesMut::new();
            self.grown = false;
        }
    }

    /// The socket has nothing to read: an empty buffer is let go, whatever
    /// its size, so a session waiting for its peer holds none. A buffer
    /// holding part of a frame is kept.
    fn idle(&mut self, buf: &mut BytesMut) {
        if buf.is_empty() && buf.capacity() > 0 {
            *buf = BytesMut::new();
            self.grown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One read into `buf` as the relay does it: reserve, `n` bytes arrive
    /// (at most the room there is), recorded; returns whether it filled the room.
    fn read(sizing: &mut Sizing, buf: &mut BytesMut, n: usize) -> bool {
        sizing.relax(buf);
        let spare = sizing.reserve(buf);
        let n = n.min(spare);
        buf.extend_from_slice(&vec![b'x'; n]);
        sizing.read(n, spare);
        n == spare
    }

    #[test]
    fn small_traffic_never_grows_the_buffer() {
        let mut sizing = Sizing::default();
        let mut buf = BytesMut::new();
        for _ in 0..100 {
            // A pipelined batch of small commands, forwarded whole.
            assert!(!read(&mut sizing, &mut buf, 700));
            buf.clear();
        }
        assert!(buf.capacity() <= SMALL_CHUNK, "{}", buf.capacity());
    }

    #[test]
    fn a_large_frame_grows_reads_and_a_drained_buffer_goes_back_to_small() {
        let mut sizing = Sizing::default();
        let mut buf = BytesMut::new();
        // A 1 MiB value arriving faster than it is read: each read fills
        // its room, so the reads grow to READ_CHUNK.
        let mut left = 1024 * 1024;
        let mut largest = 0;
        while left > 0 {
            let before = buf.len();
            read(&mut sizing, &mut buf, left);
            left -= buf.len() - before;
            largest = largest.max(buf.capacity());
            // Streamed on: forwarded as it arrives (the relay splits it off).
            drop(buf.split());
        }
        assert!(largest >= READ_CHUNK, "reads grew to {largest}");
        // The tail of the value left room: the socket is drained. Once the
        // buffer is empty it is let go, and the next read is small again.
        read(&mut sizing, &mut buf, 100);
        drop(buf.split());
        sizing.relax(&mut buf);
        assert!(buf.capacity() <= SMALL_CHUNK, "{}", buf.capacity());
        let spare = sizing.reserve(&mut buf);
        assert!(spare <= SMALL_CHUNK, "{spare}");
        assert!(buf.capacity() <= SMALL_CHUNK, "{}", buf.capacity());
    }

    #[test]
    fn a_buffer_holding_bytes_is_kept() {
        let mut sizing = Sizing::default();
        let mut buf = BytesMut::new();
        for _ in 0..5 {
            read(&mut sizing, &mut buf, usize::MAX);
        }
        let grown = buf.capacity();
        assert!(grown > SMALL_CHUNK);
        // A partial frame stays where it is, in the grown buffer.
        read(&mut sizing, &mut buf, 10);
        sizing.relax(&mut buf);
        assert!(buf.capacity() >= grown && !buf.is_empty());
    }

    /// A session waiting on a socket holds no buffer: one is taken when
    /// bytes arrive and let go once they are consumed and the socket is
    /// drained again; a partial frame keeps its buffer.
    #[tokio::test]
    async fn a_buffer_is_taken_on_readiness_and_let_go_when_drained() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut sizing = Sizing::default();
        let mut buf = BytesMut::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(poll_read(&mut cx, &mut sock, &mut buf, &mut sizing).is_pending());
        assert_eq!(buf.capacity(), 0);
        peer.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let n = std::future::poll_fn(|cx| poll_read(cx, &mut sock, &mut buf, &mut sizing))
            .await
            .unwrap();
        assert_eq!(&buf[..n], b"*1\r\n$4\r\nPING\r\n");
        // Forwarded whole, as the relay does.
        let frame = buf.split().freeze();
        assert!(poll_read(&mut cx, &mut sock, &mut buf, &mut sizing).is_pending());
        assert_eq!(buf.capacity(), 0);
        drop(frame);
        // Part of a frame stays where it is while the rest is awaited.
        peer.write_all(b"*1\r\n$4\r\nPI").await.unwrap();
        std::future::poll_fn(|cx| poll_read(cx, &mut sock, &mut buf, &mut sizing))
            .await
            .unwrap();
        assert!(poll_read(&mut cx, &mut sock, &mut buf, &mut sizing).is_pending());
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPI");
        // The end reads as 0.
        drop(peer);
        let n = std::future::poll_fn(|cx| poll_read(cx, &mut sock, &mut buf, &mut sizing))
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
