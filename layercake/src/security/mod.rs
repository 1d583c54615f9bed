//! Security primitives of the application, free of clap and axum:
//!
//! - [`secrets`]: private files (0600), random hex.
//! - [`tokens`]: API token roles and the root's token table.
//! - [`certs`]: the cluster CA and instance certificates.
//! - [`tls`]: the API's TLS and token settings, checked at start-up.

pub mod certs;
pub mod secrets;
pub mod tls;
pub mod tokens;
