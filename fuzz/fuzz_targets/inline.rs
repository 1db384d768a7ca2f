//! The inline-command splitter against a statement-by-statement rendering
//! of Redis's `sdssplitargs`, on any line.
#![no_main]

use elasticache_auth_proxy::resp::inline;
use elasticache_auth_proxy_fuzz::reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    assert_eq!(
        inline::split(line),
        reference::sdssplitargs(line),
        "split differs from sdssplitargs on {:?}",
        String::from_utf8_lossy(line)
    );
});
