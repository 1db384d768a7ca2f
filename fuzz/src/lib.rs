//! Shared pieces of the fuzz targets: how an input is cut into reads, a
//! driver that feeds the proxy's scanner as the session does, and the
//! independent references each target compares the proxy with.
//!
//! Input layout for the scanner targets (so seeds are plain RESP after one
//! byte): byte 0's low nibble `k` is how many read sizes follow, bit 4 sets
//! the request scanner's unauthenticated limits; bytes `1..=k` are read
//! sizes, used in turn (0 means 1); the rest is the byte stream.

use elasticache_auth_proxy::resp::{Head, Scanner, Side};

pub mod reference;

/// A fuzz input split into its options, read sizes and stream.
pub struct Input<'a> {
    pub unauthenticated: bool,
    pub reads: Vec<usize>,
    pub stream: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (&head, rest) = data.split_first()?;
        let k = usize::from(head & 0x0f).min(rest.len());
        let reads = rest[..k].iter().map(|&n| usize::from(n).max(1)).collect();
        Some(Input {
            unauthenticated: head & 0x10 != 0,
            reads,
            stream: &rest[k..],
        })
    }

    /// Where each read ends, in stream offsets (the last ends the stream).
    pub fn read_ends(&self) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut at = 0;
        let mut sizes = self.reads.iter().cycle();
        while at < self.stream.len() {
            at = (at + sizes.next().copied().unwrap_or(self.stream.len())).min(self.stream.len());
            ends.push(at);
        }
        ends
    }
}

/// What a scanner made of a stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Lengths of the frames completed, in order.
    pub frames: Vec<usize>,
    /// The scanner's [`Head`] after each frame (what the session reads).
    pub heads: Vec<Head>,
    /// The error that stopped the scan, if any.
    pub error: Option<String>,
}

impl Scanned {
    /// Offsets where each frame starts, and where the stream stopped.
    pub fn starts(&self) -> Vec<usize> {
        let mut at = 0;
        let mut out = vec![0];
        for n in &self.frames {
            at += n;
            out.push(at);
        }
        out
    }
}

/// Feeds `stream` to a fresh scanner read by read, re-offering unconsumed
/// bytes with the next read as the session does. `fast`: with the
/// scanner's one-pass fast path for whole frames (as the proxy runs it).
pub fn scan(
    side: Side,
    max: u64,
    unauth: bool,
    fast: bool,
    stream: &[u8],
    ends: &[usize],
) -> Scanned {
    let mut sc = Scanner::new(side, max);
    sc.set_unauthenticated(unauth);
    sc.set_fast_path(fast);
    let (mut frames, mut heads, mut start, mut pos) = (Vec::new(), Vec::new(), 0, 0);
    for &end in ends {
        while pos < end {
            match sc.advance(&stream[pos..end]) {
                Ok((n, done)) => {
                    assert!(n <= end - pos, "consumed more than it was offered");
                    pos += n;
                    if done {
                        assert!(pos > start, "an empty frame completed");
                        frames.push(pos - start);
                        heads.push(sc.head());
                        start = pos;
                        assert!(sc.at_boundary());
                    } else if n == 0 {
                        break;
                    }
                }
                Err(e) => {
                    return Scanned {
                        frames,
                        heads,
                        error: Some(e.0),
                    }
                }
            }
        }
        // A frame in progress is counted, never more than what was read.
        assert_eq!(sc.frame_len(), pos - start);
    }
    Scanned {
        frames,
        heads,
        error: None,
    }
}

/// Runs the scanner over one input both in the fuzzer's reads and in one
/// read, and checks the cut into reads changes nothing, and that the
/// state machine alone (fast path off) makes the same of the whole stream.
pub fn scan_both(side: Side, max: u64, input: &Input) -> Scanned {
    let chunked = scan(
        side,
        max,
        input.unauthenticated,
        true,
        input.stream,
        &input.read_ends(),
    );
    let whole = scan(
        side,
        max,
        input.unauthenticated,
        true,
        input.stream,
        &[input.stream.len()],
    );
    assert_eq!(chunked, whole, "the cut into reads changed the frames");
    let slow = scan(
        side,
        max,
        input.unauthenticated,
        false,
        input.stream,
        &[input.stream.len()],
    );
    assert_eq!(whole, slow, "the fast path changed the frames");
    chunked
}

/// How deep a decoder could be asked to recurse on `buf`: bounds the oracle,
/// whose recursive descent would overflow the stack long before the
/// scanner's own (heap) limit.
pub fn nesting_bound(buf: &[u8]) -> usize {
    buf.iter()
        .filter(|b| matches!(b, b'*' | b'%' | b'~' | b'>' | b'|'))
        .count()
}
