//! Protocol knobs of the tree strategy (per-link timers live in the tree).

use std::time::Duration;

/// Settings of [`crate::TreeCore`] beyond per-link hello and dead timers.
#[derive(Clone, Copy, Debug)]
pub struct TreeConfig {
    /// How long a change waits for others before an update is sent.
    pub coalesce: Duration,
    /// How long an acknowledgement waits for a datagram to ride on, in
    /// hello intervals of its link. Above 1, acknowledgements ride on the
    /// next hello and bare acknowledgements are rare (one datagram fewer per
    /// update, which matters most at sub-parents with hundreds of leaves).
    pub ack_delay_hellos: f64,
    /// How long an unacknowledged update waits before it is re-sent, in
    /// hello intervals of its link; must exceed `ack_delay_hellos`.
    pub rxmt_hellos: f64,
    /// Most unacknowledged updates in flight per link.
    pub window: usize,
    /// Consecutive digest mismatches on an idle link before a full resync.
    pub mismatch_limit: u8,
    /// Floor for versions this instance publishes (a boot epoch, so a
    /// restarted source of truth never reuses a version).
    pub version_floor: u64,
    /// Seed of the core's own randomness (hello jitter).
    pub seed: u64,
    /// When the parent is dead, report to the grandparent until it returns
    /// (for groups without a sideways strategy to elect an acting one).
    pub fallback: bool,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            coalesce: Duration::from_millis(5),
            ack_delay_hellos: 1.25,
            rxmt_hellos: 1.5,
            window: 256,
            mismatch_limit: 2,
            version_floor: 0,
            seed: 0,
            fallback: true,
        }
    }
}
