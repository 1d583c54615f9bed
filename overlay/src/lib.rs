//! The state-sync subsystem (the overlay).
//!
//! Everything a sync strategy needs except the strategy itself:
//!
//! - [`record`]: the unit of replication, `(node, Cfg|Dsc, version, bytes)`,
//!   a highest-version-wins [`record::Store`] and the digest used in hellos.
//! - [`strategy`]: the sans-io [`strategy::Instance`] interface that every
//!   protocol core implements (`handle_*(.., now)` in, `poll_*` out).
//! - [`tree`]: the static shape of the cluster (parents, children, subtrees,
//!   per-link timers) shared by all cores of one process.
//! - [`envelope`]: the datagram codec: versioned header, key id, sender,
//!   sender and receiver boots and sequence, sealed with AES-256-GCM under a
//!   key per sender boot, with freshness (a datagram must echo the
//!   receiver's boot), a replay window and drop counters by reason.
//! - [`sim`]: a deterministic discrete-event simulator (virtual clock,
//!   latency, loss, duplication, reordering, crashes, partitions).
//! - [`udp`]: the real UDP driver (tokio + socket2) that runs the same cores
//!   on real sockets.
//! - [`quic`]: the QUIC driver (quinn, mutual TLS with a cluster CA made by
//!   rcgen) that runs them over QUIC connections.
//! - [`rng`]: the small seeded PRNG every random choice goes through.
//!
//! **Architecture invariant:** the overlay knows nothing of the engine; it
//! moves opaque record bytes. Cores never read a clock or touch a socket.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod dual;
pub mod envelope;
pub mod quic;
pub mod record;
pub mod rng;
pub mod sim;
pub mod strategy;
pub mod tree;
pub mod udp;

pub use record::{Key, Kind, NodeId, Record, Store};
pub use strategy::{Instance, Time, Transmit};
