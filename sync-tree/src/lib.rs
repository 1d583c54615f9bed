//! The tree strategy: OSPF-style state sync between parents and children.
//!
//! - [`TreeCore`]: one instance's protocol core (sans-io; implements
//!   [`overlay::strategy::Strategy`]).
//! - [`TreeConfig`]: the protocol's knobs other than per-link timers
//!   (coalescing delay, retransmission, window).
//! - `link`: per-neighbour state (down, init, full), what the neighbour is
//!   known to hold, what is dirty, what is in flight.
//!
//! The protocol, per link between a parent and a child:
//!
//! 1. Both sides send a hello every `hello` (with jitter). It says whether
//!    the sender hears the receiver (`seen`: down -> init -> full, like
//!    OSPF's two-way check), acknowledges updates, and carries a digest of
//!    what the sender holds that came from the receiver.
//! 2. Cfg flows down only (records of nodes in the child's subtree), Dsc up
//!    only (records of the sender's subtree); anything else is ignored.
//! 3. A change marks the record dirty on the links it must travel and arms
//!    a flush after `coalesce`; the flush packs dirty records into `Update`
//!    datagrams of at most [`overlay::strategy::MAX_FRAME_BYTES`] (deltas,
//!    triggered updates). Updates are acknowledged, on the next datagram
//!    going the other way (usually a hello), and re-sent if unacknowledged
//!    after 1.5 hellos; at most `window` are in flight per link.
//! 4. A sub-parent re-packs its children's Dsc into its own updates to its
//!    parent, so the root's traffic grows with sub-parents, not nodes.
//! 5. When a peer's digest of what it holds from us differs from ours on an
//!    idle link twice in a row (it lost state, e.g. restarted), everything
//!    is re-sent; records we own are re-stamped with a new version.
//! 6. Failover: [`TreeCore::set_acting`] (from the sideways strategy) or a
//!    hello carrying a newer, legitimate claim (a member of a hybrid group,
//!    heard by a member or the group's parent, epoch bounded: see
//!    [`TreeCore`]) makes a member fill the place of its group's
//!    sub-parent; links are re-derived from the effective routes
//!    (`routes`), and new adjacencies resync as in step 1.
//! 7. A child silent for `dead` is down: [`overlay::strategy::Event::PeerDown`]
//!    lets the application mark it failed upward. Leaves keep sending hellos
//!    to a dead parent and rejoin by themselves.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod core;
mod link;
mod routes;

pub use config::TreeConfig;
pub use core::{CLAIM_EPOCH_AHEAD_MAX, HELLO_GRID_SLOTS, TreeCore, TreeStats};
pub use link::NeighborState;

#[cfg(test)]
mod tests;
