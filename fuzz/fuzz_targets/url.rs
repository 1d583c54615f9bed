//! Fuzz target: the engine's URL language. Must never panic; whatever
//! parses must print back to text that parses to the same URL.
#![no_main]

use engine::url::Url;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(u) = text.parse::<Url>() else {
        return;
    };
    let printed = u.to_string();
    let back: Url = printed.parse().expect("a printed URL parses");
    assert_eq!(back, u, "`{text}` printed as `{printed}`");
});
