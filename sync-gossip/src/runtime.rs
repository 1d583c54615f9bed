//! foca's boundary: where its outputs go.
//!
//! - [`Timers`]: foca's timer events on a list ordered by deadline (then by
//!   submission). foca stamps most events with a token and ignores those
//!   whose token is stale (after an identity change, say), so the list
//!   never needs cancelling: a stale event fires and is dropped by foca.
//! - [`Queues`]: the core's outputs: frames to send, timers, and foca's
//!   notifications (drained by the core right after each call into foca).
//! - [`Outbox`]: the [`foca::Runtime`] handed to foca for one call, with the
//!   current time: `send_to` becomes a [`Transmit`] with `Frame::Gossip`,
//!   `submit_after` a deadline `now + after`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use foca::{Notification, OwnedNotification, Timer};
use overlay::{NodeId, Time, Transmit};
use proto::overlay::{Frame, Gossip, frame::Body};

use crate::config::GROUP_MEMBERS_MAX;
use crate::identity::MemberId;
use crate::wire;

/// Most pending foca timers: one probe, one indirect probe, three periodic
/// tasks, and at most a few suspicions per member.
pub const TIMERS_MAX: usize = 4 * GROUP_MEMBERS_MAX + 16;

/// Most frames waiting for `poll_transmit`.
pub const TRANSMITS_MAX: usize = 4096;

/// Most foca notifications from one call (one per member and a few more).
pub const NOTES_MAX: usize = 2 * GROUP_MEMBERS_MAX + 16;

struct Due {
    at: Time,
    seq: u64,
    timer: Timer<MemberId>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// foca's pending timer events, earliest first.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Due>,
    seq: u64,
    /// Events refused because [`TIMERS_MAX`] were pending.
    pub dropped: u64,
}

impl Timers {
    /// Schedules `timer` at `at`; refused (and counted) when full.
    pub fn push(&mut self, at: Time, timer: Timer<MemberId>) {
        if self.heap.len() >= TIMERS_MAX {
            self.dropped += 1;
            return;
        }
        self.seq += 1;
        self.heap.push(Due {
            at,
            seq: self.seq,
            timer,
        });
    }

    /// The earliest deadline.
    pub fn next_at(&self) -> Option<Time> {
        self.heap.peek().map(|d| d.at)
    }

    /// The earliest event due at `now`, removed.
    pub fn pop_due(&mut self, now: Time) -> Option<Timer<MemberId>> {
        if self.heap.peek()?.at > now {
            return None;
        }
        self.heap.pop().map(|d| d.timer)
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// The core's output queues.
#[derive(Default)]
pub struct Queues {
    /// foca's timers.
    pub timers: Timers,
    /// Frames to send.
    pub transmits: VecDeque<Transmit>,
    /// foca's notifications from the current call.
    pub notes: Vec<OwnedNotification<MemberId>>,
    /// Frames refused because [`TRANSMITS_MAX`] were waiting.
    pub transmits_dropped: u64,
    /// Notifications refused because [`NOTES_MAX`] were waiting.
    pub notes_dropped: u64,
}

impl Queues {
    /// Queues a `Frame::Gossip` for `to`; refused (and counted) when full.
    pub fn send(&mut self, to: NodeId, group: u32, payload: Vec<u8>) {
        if self.transmits.len() >= TRANSMITS_MAX {
            self.transmits_dropped += 1;
            return;
        }
        let frame = Frame {
            body: Some(Body::Gossip(Gossip { group, payload })),
        };
        self.transmits.push_back(Transmit { to, frame });
    }
}

/// The [`foca::Runtime`] of one call into foca.
pub struct Outbox<'a> {
    /// Where outputs go.
    pub queues: &'a mut Queues,
    /// The time of the call.
    pub now: Time,
    /// The group, for the frames.
    pub group: u32,
}

impl foca::Runtime<MemberId> for Outbox<'_> {
    fn notify(&mut self, n: Notification<'_, MemberId>) {
        if self.queues.notes.len() >= NOTES_MAX {
            self.queues.notes_dropped += 1;
            return;
        }
        self.queues.notes.push(n.to_owned());
    }

    fn send_to(&mut self, to: MemberId, data: &[u8]) {
        self.queues
            .send(to.node, self.group, wire::foca_payload(data));
    }

    fn submit_after(&mut self, event: Timer<MemberId>, after: std::time::Duration) {
        self.queues.timers.push(self.now + after, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_fire_in_deadline_then_submission_order() {
        let mut t = Timers::default();
        let s = Duration::from_secs;
        t.push(s(2), Timer::ProbeRandomMember(1));
        t.push(s(1), Timer::PeriodicGossip(2));
        t.push(s(1), Timer::PeriodicAnnounce(3));
        assert_eq!(t.next_at(), Some(s(1)));
        assert_eq!(t.pop_due(s(1)), Some(Timer::PeriodicGossip(2)));
        assert_eq!(t.pop_due(s(1)), Some(Timer::PeriodicAnnounce(3)));
        assert_eq!(t.pop_due(s(1)), None);
        assert_eq!(t.pop_due(s(5)), Some(Timer::ProbeRandomMember(1)));
        assert!(t.is_empty());
    }
}
