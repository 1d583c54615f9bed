//! Per-neighbour state of the tree strategy.
//!
//! A [`Link`] is one parent or child: the neighbour state machine, the
//! hello schedule, what the neighbour is known to hold (`known`, from
//! acknowledgements), what must still be sent (`dirty`, a de-duplicated
//! queue), the updates in flight, and acknowledgements owed.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use overlay::tree::LinkTimers;
use overlay::{Key, NodeId, Time};

use crate::config::TreeConfig;

/// How far the two-way check with a neighbour has come (as in OSPF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighborState {
    /// Nothing heard within the dead interval.
    Down,
    /// We hear the neighbour; it does not (yet) say it hears us.
    Init,
    /// Both directions work; updates flow.
    Full,
}

/// Whether the neighbour is our parent or one of our children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// The neighbour is our parent: we send Dsc, receive Cfg.
    ToParent,
    /// The neighbour is our child: we send Cfg, receive Dsc.
    ToChild,
}

/// Cached digests of a link: `(stamp, digest, count)` for the records that
/// flow in and out, where a stamp is the store's `changes` and the routes'
/// `generation` at the time (see `TreeCore::digest_in`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DigestCache {
    pub inward: Option<((u64, u64), u64, u32)>,
    pub outward: Option<((u64, u64), u64, u32)>,
}

/// One update awaiting acknowledgement.
pub(crate) struct InFlight {
    pub seq: u64,
    pub sent_at: Time,
    pub items: Vec<(Key, u64)>,
}

/// One neighbour.
pub(crate) struct Link {
    pub peer: NodeId,
    pub dir: Dir,
    pub timers: LinkTimers,
    pub state: NeighborState,
    pub last_rx: Option<Time>,
    pub next_hello: Time,
    pub hello_now: bool,
    /// The next hello was moved one interval later because an update went
    /// to the peer (see `TreeCore::defer_hello`); cleared by the next hello.
    pub hello_deferred: bool,
    /// The next hello answers the parent's (see `TreeCore::answer_parent`).
    pub answering: bool,
    /// When the last hello went on this link.
    pub last_hello: Option<Time>,
    /// Digests over what flows in and out on this link, with the store's
    /// `changes` and the routes' `generation` they were computed at.
    pub digests: DigestCache,
    pub known: HashMap<Key, u64>,
    pub dirty: VecDeque<Key>,
    pub dirty_set: HashSet<Key>,
    pub flush_at: Option<Time>,
    pub inflight: VecDeque<InFlight>,
    pub acks: Vec<u64>,
    pub ack_at: Option<Time>,
    pub mismatches: u8,
    pub scheduled: Option<Time>,
    /// Version hints for the peer (`Hello.stale`): node -> version held
    /// above what the peer sent; at most `HINTS_PER_LINK_MAX`.
    pub hints: HashMap<NodeId, u64>,
}

impl Link {
    /// A link in state down whose first hello goes at `first_hello`.
    pub fn new(peer: NodeId, dir: Dir, timers: LinkTimers, first_hello: Time) -> Link {
        Link {
            peer,
            dir,
            timers,
            state: NeighborState::Down,
            last_rx: None,
            next_hello: first_hello,
            hello_now: false,
            hello_deferred: false,
            answering: false,
            last_hello: None,
            digests: DigestCache::default(),
            known: HashMap::default(),
            dirty: VecDeque::new(),
            dirty_set: HashSet::default(),
            flush_at: None,
            inflight: VecDeque::new(),
            acks: Vec::new(),
            ack_at: None,
            mismatches: 0,
            scheduled: None,
            hints: HashMap::default(),
        }
    }

    /// Queues `key` to be sent; arms a flush `coalesce` from now.
    pub fn mark_dirty(&mut self, key: Key, now: Time, coalesce: Time) {
        if self.dirty_set.insert(key) {
            self.dirty.push_back(key);
        }
        if self.flush_at.is_none() {
            self.flush_at = Some(now + coalesce);
        }
    }

    /// No update waiting to be sent or acknowledged.
    pub fn idle(&self) -> bool {
        self.dirty.is_empty() && self.inflight.is_empty()
    }

    /// Whether a flush may run now (state and window permitting).
    pub fn can_flush(&self, cfg: &TreeConfig) -> bool {
        self.state == NeighborState::Full
            && !self.dirty.is_empty()
            && self.inflight.len() < cfg.window
    }

    /// When this link next needs service.
    pub fn deadline(&self, cfg: &TreeConfig) -> Time {
        let mut d = if self.hello_now {
            Time::ZERO
        } else {
            self.next_hello
        };
        if self.state != NeighborState::Down
            && let Some(rx) = self.last_rx
        {
            d = d.min(rx + self.timers.dead);
        }
        if self.can_flush(cfg)
            && let Some(f) = self.flush_at
        {
            d = d.min(f);
        }
        if !self.acks.is_empty()
            && let Some(a) = self.ack_at
        {
            d = d.min(a);
        }
        if let Some(f) = self.inflight.front() {
            d = d.min(f.sent_at + self.rxmt(cfg));
        }
        d
    }

    /// How long an update on this link waits for its acknowledgement.
    pub fn rxmt(&self, cfg: &TreeConfig) -> Time {
        self.timers.hello.mul_f64(cfg.rxmt_hellos)
    }

    /// How long an acknowledgement on this link waits for a ride.
    pub fn ack_delay(&self, cfg: &TreeConfig) -> Time {
        self.timers.hello.mul_f64(cfg.ack_delay_hellos)
    }

    /// Records an acknowledgement; returns the acknowledged items.
    pub fn take_acked(&mut self, seq: u64) -> Option<Vec<(Key, u64)>> {
        let i = self.inflight.iter().position(|f| f.seq == seq)?;
        self.inflight.remove(i).map(|f| f.items)
    }
}
