//! Layercake as a library: the parts the binary, the integration tests and
//! the benchmarks share: [`power`] (power control backends) and [`body`]
//! (the REST API's write bodies, also read by the fuzz target).
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod body;
pub mod modules;
pub mod power;
