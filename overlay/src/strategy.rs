//! The sans-io interface between sync cores and their drivers.
//!
//! - [`Instance`]: what a driver (the simulator or the UDP driver) needs from
//!   one overlay member: feed it frames and timeouts with the current time,
//!   then drain [`Instance::poll_transmit`] and re-arm
//!   [`Instance::poll_timeout`]. Poll order after every `handle_*`: first
//!   `poll_transmit` until `None`, then `poll_timeout`.
//! - [`Strategy`]: what the application (layercake, loadtest) needs on top:
//!   publish a record it is the source of truth for, read held records, and
//!   drain [`Event`]s (records delivered, peers up and down).
//!
//! A core never reads a clock, sleeps, or touches a socket: `now` is an
//! input, so the same core runs on virtual time in the simulator.

use bytes::Bytes;
use proto::overlay::Frame;
use std::time::Duration;

use crate::record::{Key, Kind, NodeId, Record};

/// A point in time, as an offset from the driver's epoch (virtual in the
/// simulator; `CLOCK_MONOTONIC` in the UDP driver, shared by processes).
pub type Time = Duration;

/// Largest datagram on the wire, envelope included (one MTU with headroom).
pub const MAX_DATAGRAM_BYTES: usize = 1400;

/// Largest encoded [`Frame`] that fits a datagram after the envelope.
pub const MAX_FRAME_BYTES: usize =
    MAX_DATAGRAM_BYTES - crate::envelope::HEADER_BYTES - crate::envelope::TAG_BYTES;

/// A frame a core wants sent to a peer.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    /// The destination instance.
    pub to: NodeId,
    /// The payload; the driver seals it into an envelope.
    pub frame: Frame,
}

/// One overlay member, as its driver sees it.
pub trait Instance {
    /// This member's id.
    fn id(&self) -> NodeId;
    /// An authenticated, decoded frame from `from`.
    fn handle_frame(&mut self, now: Time, from: NodeId, frame: Frame);
    /// The deadline returned by [`Instance::poll_timeout`] has passed.
    fn handle_timeout(&mut self, now: Time);
    /// The next frame to send, if any.
    #[must_use]
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// When [`Instance::handle_timeout`] should next be called.
    #[must_use]
    fn poll_timeout(&mut self) -> Option<Time>;
}

/// Something the application should know about.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A record newer than the held one arrived from the network.
    Delivered(Record),
    /// A neighbour became reachable in both directions.
    PeerUp(NodeId),
    /// A neighbour missed its dead interval.
    PeerDown(NodeId),
}

/// A sync strategy: an [`Instance`] plus the application-facing side.
pub trait Strategy: Instance {
    /// Publishes a new version of a record this instance is the source of
    /// truth for (its own Dsc; any Cfg on the root). Returns the version.
    ///
    /// Versions never wrap: when the record's versions are exhausted (the
    /// held one is within 2 of `u64::MAX`) nothing changes, the core counts
    /// the refusal, and the held version is returned.
    fn publish(&mut self, now: Time, node: NodeId, kind: Kind, data: Bytes) -> u64;
    /// Marks a lost child's Dsc as failed with `data` (its last Dsc with the
    /// failure written in), at the odd version just above the held one;
    /// nothing changes if it is already marked or no version is left.
    fn mark_failed(&mut self, now: Time, node: NodeId, data: Bytes);
    /// The held record for `key`.
    fn get(&self, key: Key) -> Option<Record>;
    /// The next application event, if any.
    #[must_use]
    fn poll_event(&mut self) -> Option<Event>;
}
