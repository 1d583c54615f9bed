//! Fuzz target: the topology parser. Must never panic; whatever parses
//! must write back (`to_yaml`) to text that parses to the same topology.
#![no_main]

use libfuzzer_sys::fuzz_target;
use topo::Topology;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = Topology::parse(text, "fuzz.yaml") else {
        return;
    };
    let yaml = t.to_yaml();
    let back = Topology::parse(&yaml, "round-trip.yaml").expect("to_yaml output parses");
    assert_eq!(back, t, "round trip changed the topology:\n{yaml}");
});
