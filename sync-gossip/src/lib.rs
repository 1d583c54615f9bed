//! Sideways gossip among the members of one group (a rack and its
//! sub-parent): SWIM failure detection with `foca`, replication of the
//! group's records to its holders (the acting member and its likely
//! successors; every member in flat mode), and the acting sub-parent
//! election.
//!
//! - [`GossipCore`]: one member's core for one group, sans-io like every
//!   protocol core here: `handle_frame(now, ..)`, `handle_timeout(now)`,
//!   `publish(now, ..)` in; `poll_transmit`, `poll_event`, `poll_timeout`
//!   out. It implements [`overlay::Instance`], so the overlay's simulator
//!   and UDP driver run it as is.
//! - [`GossipEvent`]: `MemberUp`, `MemberDown`, `Delivered(Record)`,
//!   `ActingChanged { acting, epoch }`.
//! - [`GroupSpec`] (members in rank order, from the topology) and
//!   [`GossipConfig`] (incarnation, seed, `retake`, foca timers).
//! - [`election`]: the acting rule as pure functions.
//! - [`FlatGossip`]: the flat `gossip` strategy (the whole cluster as one
//!   group, records as epidemic broadcasts) as an [`overlay::Strategy`].
//! - [`harness`]: an N-member group on [`overlay::sim::Sim`] with the
//!   checkers the tests use (agreement on one acting member, replicas).
//! - Inner modules: [`identity`] (foca identity with incarnation),
//!   [`wire`] (payload layouts and foca's codec), [`replica`] (records,
//!   digest, followed claim; foca's broadcast handler), [`runtime`] (foca's
//!   runtime: timers, frames, notifications), [`rng`].
//!
//! Every frame is a `Frame::Gossip { group, payload }` whose payload is a
//! foca packet, an anti-entropy summary or digest, a push of records, a
//! member's own version, a down hint, a watch ping or a claim (see
//! [`wire`]). The design, the settings and the bounds are in
//! `docs/gossip.md`.
//!
//! **Invariant:** nothing here reads a clock, touches a socket or draws
//! ambient randomness; one seed replays a run.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
mod core;
pub mod election;
pub mod error;
pub mod flat;
pub mod harness;
pub mod identity;
pub mod replica;
pub mod rng;
pub mod runtime;
pub mod wire;

pub use crate::core::{
    EVENTS_MAX, GossipCore, GossipEvent, GossipStats, HOLDERS, OUTGOING_MAX, PUSH_FRAMES_MAX,
    SEEDS_RANDOM,
};
pub use config::{FLAT_MEMBERS_MAX, GROUP_MEMBERS_MAX, GossipConfig, GroupSpec, Mode};
pub use election::Acting;
pub use error::{ConfigError, GossipError};
pub use flat::FlatGossip;
pub use identity::MemberId;

#[cfg(test)]
mod tests;
