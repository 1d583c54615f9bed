//! Layercake as a library: the parts the binary, the integration tests and
//! the benchmarks share. Today: [`power`] (power control backends).
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod power;
