//! Fuzz target: the datagram envelope (header checks, opening, replay
//! window) on arbitrary bytes. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay::envelope::{ClusterKey, KeyRing, Opener, peek_header};

fuzz_target!(|data: &[u8]| {
    let keys = KeyRing::single(1, &ClusterKey::from_seed(1));
    let _ = peek_header(data);
    let mut o = Opener::new(2).with_senders(1 << 16);
    // Twice: the second open exercises the replay window and cipher cache.
    let first = o.open(&keys, data);
    let second = o.open(&keys, data);
    assert!(first.is_err() || second.is_err(), "a datagram opened twice");
});
