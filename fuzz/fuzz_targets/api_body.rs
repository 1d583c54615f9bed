//! Fuzz target: the REST API's write bodies (`layercake/src/api/body.rs`,
//! included by path so the target does not build the whole daemon). Must
//! never panic: every body parses or is refused with a message, and so do
//! its values.
#![no_main]

#[path = "../../layercake/src/api/body.rs"]
#[allow(dead_code)]
mod body;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = body::parse_json::<body::WriteBody>(data) {
        let _ = b.values.pairs();
    }
    if let Ok(b) = body::parse_json::<body::OneBody>(data) {
        let _ = b.values.pairs();
    }
});
