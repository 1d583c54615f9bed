//! A running instance of the cluster.
//!
//! - [`cluster`]: the loaded topology and its derived tables.
//! - [`model`]: the module set (graph, registry) and the URLs it reads.
//! - [`root`]: the root's application (Cfg source of truth, Dsc holder).
//! - [`member`]: every other instance's application (relay, node, BMCs).
//! - [`control`]: the channel the API reaches the root through.
//! - [`world`]: the instances of one process and the metrics sampler.
//! - [`persist`]: the root's redb store; [`keyring`]: the keyring in it.
//! - [`join`]: the QUIC mutual-TLS join and keyring polling.
//! - [`bmc`]: the power driver task of an instance that drives BMCs.
//! - [`agent`]: a node's local agent (the busy socket) on its engine.
//! - [`images`]: a node's image host and a parent's image server.
//! - [`boot`]: the boot servers of such an instance, wired to its BMC host.
//! - [`metrics`]: the Prometheus metrics; [`sys`]: process limits, signals.
//! - [`view`]: the copy of every node's state the API reads off the
//!   overlay's thread.

pub mod agent;
pub mod bmc;
pub mod boot;
pub mod cluster;
pub mod control;
pub mod images;
pub mod join;
pub mod keyring;
pub mod member;
pub mod metrics;
pub mod model;
pub mod persist;
pub mod root;
pub mod sys;
pub mod view;
pub mod world;
