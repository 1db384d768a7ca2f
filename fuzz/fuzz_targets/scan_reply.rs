//! The reply scanner against `redis-protocol`'s decoder, in fuzzer-chosen
//! reads: the cut into reads changes nothing, and wherever the decoder finds
//! a canonical frame the scanner ends a frame at the same byte (and never
//! ends one where the decoder still needs more).
#![no_main]

use elasticache_auth_proxy::resp::Side;
use elasticache_auth_proxy_fuzz::{
    nesting_bound,
    reference::{self, Oracle},
    scan_both, Input,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let got = scan_both(Side::Reply, 1 << 20, &input);
    if nesting_bound(input.stream) > 512 {
        return;
    }
    for (i, start) in got.starts().into_iter().enumerate() {
        let scanned = got.frames.get(i).copied();
        match reference::reply(&input.stream[start..]) {
            Oracle::Frame(n) => assert_eq!(
                scanned,
                Some(n),
                "decoder frame of {n} at {start}; scanner error: {:?}",
                got.error
            ),
            Oracle::Incomplete => assert_eq!(
                scanned, None,
                "scanner ended a frame at {start} the decoder says is incomplete"
            ),
            Oracle::Other => {}
        }
    }
});
