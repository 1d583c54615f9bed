//! Layercake: the application of a Kraken cluster, as a library that the
//! `layercake` binary, the integration tests, the fuzz targets and the
//! load harness share.
//!
//! Folders by concern (a DAG; nothing imports [`cli`]):
//!
//! - [`sync`]: the one sync stack: from an instance's topology entry to
//!   its running composition (tree core, SWIM groups, flat gossip) and the
//!   one [`sync::App`] trait every application implements.
//! - [`daemon`]: a running instance: the root's and the members'
//!   applications, the control channel, persistence, metrics, the join.
//! - [`api`]: the REST API, its authentication, TLS accept loop and the
//!   dashboard; it reaches the root only through [`daemon::control`].
//! - [`security`]: secret files, API tokens, certificates, TLS settings
//!   (no clap, no axum).
//! - [`modules`]: the engine's modules that touch the world (power; the
//!   network boot servers, not yet wired in).
//! - [`serve`]: `run` and `demo`: one process's threads and tasks.
//! - [`cli`]: the command line (clap) and the `ctl` client.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod api;
pub mod cli;
pub mod daemon;
pub mod modules;
pub mod security;
pub mod serve;
pub mod sync;
