//! Fuzz target: the datagram envelope (header checks, opening, replay
//! window) on arbitrary bytes. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay::envelope::{Boot, ClusterKey, KeyRing, Opener, peek_header};

fuzz_target!(|data: &[u8]| {
    let keys = KeyRing::single(1, &ClusterKey::from_seed(1));
    let _ = peek_header(data);
    // Boot 2: the seeds echo it, so some count as fresh.
    let mut o = Opener::new(2, Boot::from_random(2)).with_senders(1 << 16);
    // Three times: the first may only introduce the sender's boot; the
    // others exercise the replay window, boots and the cipher cache.
    let first = o.open(&keys, data);
    let second = o.open(&keys, data);
    let third = o.open(&keys, data);
    let opened = [&first, &second, &third].iter().filter(|r| r.is_ok()).count();
    assert!(opened <= 1, "a datagram opened twice");
    while o.poll_reply().is_some() {}
});
