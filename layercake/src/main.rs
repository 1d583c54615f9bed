//! The `layercake` binary.
fn main() {}
