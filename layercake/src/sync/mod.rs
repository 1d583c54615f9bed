//! The one sync stack: from an instance's topology entry to its running
//! sync composition, and the one trait every application implements on
//! top of it. `layercake` (root, relays, nodes) and `loadtest` (the probe
//! and the fault campaign) build instances only through here, so what the
//! harness measures is what ships.
//!
//! - [`Spec`]: built once per cluster from the flattened topology. Per
//!   level it reads `sync.strategy`: `tree` (hellos; an orphan falls back
//!   to its grandparent), `hybrid` (the tree plus one SWIM group per
//!   sub-parent with its standby and members, electing an acting
//!   sub-parent) or `gossip` (the flat baseline: the whole cluster as one
//!   SWIM group; only when every level says so). [`Spec::stack`] makes
//!   one instance's [`Stack`]; [`Spec::path_policy`] its transport choice
//!   per peer (`transport: quic` pins a link to QUIC; the UDP->QUIC
//!   fallback of `overlay::dual` everywhere else).
//! - [`Stack`]: the cores of one instance (a `TreeCore` and the
//!   `GossipCore`s of its groups, or one `FlatGossip`) and the questions an
//!   application asks them: [`Stack::is_child`] ("is this node in my
//!   care"), [`Stack::is_failure_mark`], [`Stack::acting_for`],
//!   [`Stack::publish`], [`Stack::get`].
//! - [`App`]: what an application does with [`StackEvent`]s (records,
//!   children up and down, taking over or handing back a group) and its
//!   own timers. The root, the member relay/node and the loadtest probe
//!   implement it; none of them names a strategy's core type.
//! - [`Node`]: a [`Stack`] and an [`App`] as one `overlay::Instance`, which
//!   the simulator and the real drivers (UDP, QUIC, dual) run.
//! - [`frame_kind`]: what a frame carries, named for traffic accounting
//!   (`overlay::sim::Sim::classify_with`).
//!
//! **Invariant:** nothing here reads a clock or touches a socket; `now`
//! comes from the driver (virtual in the simulator).

mod app;
mod spec;
mod stack;

pub use app::{App, Node, StackEvent};
pub use spec::{GroupPlan, Spec, SpecError, quic_addr};
pub use stack::{Stack, StackStats};

use proto::overlay::{Frame, frame::Body};

/// Names what `f` carries, for traffic accounting (the simulator's bytes
/// by kind): tree frames by body, gossip payloads by what they carry
/// (SWIM messages, summaries, digests, pushes, watch pings, claims).
pub fn frame_kind(f: &Frame) -> &'static str {
    match &f.body {
        Some(Body::Hello(_)) => "tree hello",
        Some(Body::Update(_)) => "tree update",
        Some(Body::Ack(_)) => "tree ack",
        Some(Body::Gossip(g)) => sync_gossip::wire::payload_kind(&g.payload),
        None => "empty",
    }
}

#[cfg(test)]
mod tests;
