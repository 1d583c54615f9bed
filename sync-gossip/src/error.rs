//! Errors of the gossip core. Each variant says what happened to state.

use overlay::NodeId;

/// A [`crate::GroupSpec`] or [`crate::GossipConfig`] was refused; no core
/// was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The group has no members.
    #[error("group {0} has no members")]
    EmptyGroup(u32),
    /// The group has more members than [`crate::GROUP_MEMBERS_MAX`].
    #[error("group has {members} members, the limit is {max}")]
    GroupTooLarge {
        /// Members given.
        members: usize,
        /// The limit.
        max: usize,
    },
    /// A node appears twice in the ranked member list.
    #[error("node {0} appears twice in the group")]
    Duplicate(NodeId),
    /// The topology has no group with this index.
    #[error("the topology has no group {0}")]
    NoSuchGroup(u32),
    /// The core's own node is not a member of the group.
    #[error("node {0} is not a member of the group")]
    NotAMember(NodeId),
    /// A timer setting is zero or out of order (`probe_rtt < probe_period`
    /// is required).
    #[error("invalid timer setting: {0}")]
    Timers(&'static str),
}

/// A call on a running core was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// The record's node is not in the group: nothing was stored or sent.
    #[error("node {0} is not a member of this group")]
    NotInGroup(NodeId),
    /// The record's data exceeds [`crate::wire::RECORD_DATA_MAX_BYTES`]:
    /// nothing was stored or sent (send it over the QUIC fallback).
    #[error("record data of {bytes} bytes exceeds {max}")]
    TooLarge {
        /// Size of the data.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The held version is equal or higher: nothing changed.
    #[error("version {offered} is not above the held {held}")]
    Stale {
        /// The version offered.
        offered: u64,
        /// The version held.
        held: u64,
    },
    /// foca refused the broadcast after the record was stored locally: it
    /// is held and served but will only spread by anti-entropy.
    #[error("foca refused the broadcast: {0}")]
    Foca(#[from] foca::Error),
}
