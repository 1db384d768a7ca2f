//! Frame-boundary scanning, side by side with redis-protocol's decoder in the
//! same run: the proxy's per-byte cost on the relay path.
//! `cargo bench --bench scan` (release build; prints medians of 15 runs).

use std::{hint::black_box, time::Instant};

use elasticache_auth_proxy::resp::{Scanner, Side};

fn replies(n: usize, value_len: usize) -> Vec<u8> {
    let value = vec![b'v'; value_len];
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend_from_slice(format!("${value_len}\r\n").as_bytes());
        out.extend_from_slice(&value);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What redis-benchmark's `-t get` sends: `GET key:__rand_int__`.
fn gets(n: usize) -> Vec<u8> {
    b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n".repeat(n)
}

fn scan_all(side: Side, buf: &[u8], read: usize) -> usize {
    let mut sc = Scanner::new(side, 1 << 30);
    let (mut frames, mut pos) = (0, 0);
    // Offer the bytes the way socket reads would: `read` at a time.
    let mut end = 0;
    while end < buf.len() {
        end = (end + read).min(buf.len());
        while pos < end {
            let (n, done) = sc.advance(&buf[pos..end]).expect("valid");
            pos += n;
            frames += usize::from(done);
            if !done {
                break;
            }
        }
    }
    frames
}

fn decode_all(buf: &[u8]) -> usize {
    let (mut frames, mut pos) = (0, 0);
    while let Some((_, n)) =
        redis_protocol::resp2::decode::decode_range(&buf[pos..]).expect("valid")
    {
        pos += n;
        frames += 1;
    }
    frames
}

fn median_mbps(bytes: usize, mut f: impl FnMut() -> usize) -> f64 {
    let mut runs: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            bytes as f64 / t.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    runs.sort_by(|a, b| a.total_cmp(b));
    runs[runs.len() / 2]
}

fn main() {
    for (name, side, n, buf) in [
        ("10k GET commands", Side::Request, 10_000, gets(10_000)),
        (
            "10k small replies",
            Side::Reply,
            10_000,
            replies(10_000, 16),
        ),
        (
            "100 x 64 KiB values",
            Side::Reply,
            100,
            replies(100, 64 * 1024),
        ),
    ] {
        assert_eq!(scan_all(side, &buf, 16 * 1024), n);
        assert_eq!(decode_all(&buf), n);
        let scan = median_mbps(buf.len(), || scan_all(side, &buf, 16 * 1024));
        let decode = median_mbps(buf.len(), || decode_all(&buf));
        println!("{name:>22}: scanner {scan:>9.0} MB/s | redis-protocol decode_range (whole buffer) {decode:>9.0} MB/s");
    }
}
