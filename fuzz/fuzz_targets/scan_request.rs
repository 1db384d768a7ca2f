//! The request scanner against `redis-protocol`'s decoder, in fuzzer-chosen
//! reads: the cut into reads changes nothing; a canonical multibulk command
//! is one frame with the decoder's arguments (or, with the unauthenticated
//! limits on and exceeded, refused); a multibulk frame the scanner ends
//! whose bytes are canonical decodes the same; an inline command ends at
//! the first line feed.
#![no_main]

use elasticache_auth_proxy::resp::{
    scan::{self, MAX_INLINE},
    Side,
};
use elasticache_auth_proxy_fuzz::{
    reference::{self, Oracle},
    scan_both, Input,
};
use libfuzzer_sys::fuzz_target;

/// Redis's limits before authentication.
const UNAUTH_ARGS: usize = 10;
const UNAUTH_BULK: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let stream = input.stream;
    let got = scan_both(Side::Request, 1 << 20, &input);
    for (i, start) in got.starts().into_iter().enumerate() {
        let scanned = got.frames.get(i).copied();
        let rest = &stream[start..];
        if rest.first() != Some(&b'*') {
            if let Some(n) = scanned {
                // Inline: one line, up to and including its `\n`.
                let nl = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .expect("inline frame has a LF");
                assert_eq!(n, nl + 1, "inline frame at {start} not ended by its LF");
                assert!(n <= MAX_INLINE + 1);
            }
            continue;
        }
        if let (Oracle::Frame(n), Some(args)) = reference::request(rest) {
            let over = args.len() > UNAUTH_ARGS || args.iter().any(|a| a.len() > UNAUTH_BULK);
            if input.unauthenticated && over {
                assert!(
                    scanned.is_none() && got.error.is_some(),
                    "unauthenticated limits not applied at {start}"
                );
                continue;
            }
            assert_eq!(
                scanned,
                Some(n),
                "command of {n} at {start}; scanner error: {:?}",
                got.error
            );
            let frame = &rest[..n];
            let ranges = scan::args(frame);
            let mine: Vec<&[u8]> = ranges.iter().map(|r| &frame[r.clone()]).collect();
            assert_eq!(mine, args.iter().map(Vec::as_slice).collect::<Vec<_>>());
        } else if let Some(n) = scanned {
            let frame = &rest[..n];
            let ranges = scan::args(frame);
            let mine: Vec<&[u8]> = ranges.iter().map(|r| &frame[r.clone()]).collect();
            if !mine.is_empty() && reference::encode_command(&mine) == frame {
                panic!("scanner's canonical command at {start} is not the decoder's");
            }
        }
    }
});
