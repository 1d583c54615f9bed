//! Protocol knobs of the tree strategy (per-link timers live in the tree).

use std::time::Duration;

/// Settings of [`crate::TreeCore`] beyond per-link hello and dead timers.
#[derive(Clone, Copy, Debug)]
pub struct TreeConfig {
    /// How long a change waits for others before an update is sent.
    pub coalesce: Duration,
    /// How long an acknowledgement waits for a datagram to ride on.
    pub ack_delay: Duration,
    /// How long an unacknowledged update waits before it is re-sent.
    pub rxmt: Duration,
    /// Most unacknowledged updates in flight per link.
    pub window: usize,
    /// Consecutive digest mismatches on an idle link before a full resync.
    pub mismatch_limit: u8,
    /// Floor for versions this instance publishes (a boot epoch, so a
    /// restarted source of truth never reuses a version).
    pub version_floor: u64,
    /// Seed of the core's own randomness (hello jitter).
    pub seed: u64,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            coalesce: Duration::from_millis(5),
            ack_delay: Duration::from_millis(5),
            rxmt: Duration::from_millis(250),
            window: 64,
            mismatch_limit: 2,
            version_floor: 0,
            seed: 0,
        }
    }
}
