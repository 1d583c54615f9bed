//! A deterministic discrete-event simulator for overlay instances.
//!
//! - [`Sim`] holds every [`Instance`] of a run, a virtual clock and one
//!   event queue ordered by `(time, insertion order)`. Datagrams are really
//!   encoded and sealed (the same [`crate::envelope`] code as on the wire),
//!   then delayed, lost, duplicated or reordered by the seeded [`Rng`].
//! - [`SimConfig`]: latency (a fixed per-link part and a random per-datagram
//!   part, which reorders), loss, duplication, the seed.
//! - Faults: [`Sim::crash`] and [`Sim::restart`] (a new boot: the
//!   envelope's random boot bits come from the seed),
//!   [`Sim::set_partition`] (traffic between sides is dropped),
//!   [`Sim::set_network`] (loss, duplication and jitter changed mid-run).
//!
//! One seed and one sequence of calls replay a run exactly: nothing here
//! reads a clock, iterates a hash map, or draws from ambient randomness.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use proto::overlay::Frame;

use crate::envelope::{Boot, ClusterKey, DropReason, Held, KeyRing, Opener, Sealer};
use crate::record::NodeId;
use crate::rng::{Rng, splitmix64};
use crate::strategy::{Instance, Time};

/// Most datagrams [`Sim::capture`] keeps between two calls.
pub const CAPTURED_MAX: usize = 4096;

/// How the simulated network behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every random choice of the run.
    pub seed: u64,
    /// Smallest one-way latency.
    pub latency: Duration,
    /// Fixed extra latency of a link, drawn once per link in `[0, spread)`.
    pub link_spread: Duration,
    /// Random extra latency per datagram in `[0, jitter)`: reorders.
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            latency: Duration::from_micros(100),
            link_spread: Duration::from_micros(200),
            jitter: Duration::from_micros(300),
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// Traffic counters of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimStats {
    /// Datagrams sent (before loss).
    pub datagrams: u64,
    /// Bytes sent (before loss), envelope included.
    pub bytes: u64,
    /// Largest datagram sent.
    pub max_datagram_bytes: usize,
    /// Datagrams lost by the loss setting or a partition, or sent to a
    /// crashed instance.
    pub lost: u64,
    /// Datagrams rejected by the receiving envelope (the freshness
    /// handshake aside).
    pub rejected: u64,
    /// Datagrams dropped as unfresh: a new link's first datagrams before
    /// the two boots are known to each other (held and re-sent).
    pub handshakes: u64,
    /// Datagrams and bytes sent (before loss) by kind, when a classifier
    /// is set ([`Sim::classify_with`]): where the traffic goes.
    pub by_kind: BTreeMap<&'static str, KindCount>,
}

/// Traffic of one kind of datagram (see [`SimStats::by_kind`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindCount {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Bytes sent, envelope included.
    pub bytes: u64,
}

/// Names the kind of a frame for [`SimStats::by_kind`].
pub type Classifier = fn(&Frame) -> &'static str;

/// Kind of the envelope's session datagrams (freshness handshake).
pub const KIND_SESSION: &str = "envelope session";
/// Kind of frames re-sent once a new peer's boot is known.
pub const KIND_RESENT: &str = "envelope re-send";

enum What {
    Datagram {
        from: NodeId,
        to: NodeId,
        bytes: Vec<u8>,
    },
    Wake {
        node: NodeId,
    },
}

struct Event {
    at: Time,
    order: u64,
    what: What,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.order == o.order
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest.
        (o.at, o.order).cmp(&(self.at, self.order))
    }
}

struct Slot<I> {
    inst: Option<I>,
    armed: Option<Time>,
    sealer: Sealer,
    opener: Opener,
    /// Frames sent before the peer's boot was known (re-sent once it is).
    held: Held,
    rx_datagrams: u64,
    /// Boots this slot has had (numbers the next one).
    boots: u64,
}

/// The envelope boot of `id`'s `n`-th start, from the run's seed (the
/// drivers draw it from the operating system instead).
fn sim_boot(seed: u64, id: NodeId, n: u64) -> Boot {
    Boot::from_random(splitmix64(
        splitmix64(seed ^ 0x626f_6f74) ^ (u64::from(id) << 32) ^ n,
    ))
}

/// The simulator: instances, virtual clock, event queue.
pub struct Sim<I: Instance> {
    now: Time,
    order: u64,
    queue: BinaryHeap<Event>,
    slots: Vec<Slot<I>>,
    rng: Rng,
    cfg: SimConfig,
    keys: KeyRing,
    side: Option<Vec<u8>>,
    buf: Vec<u8>,
    capture: Option<(NodeId, NodeId)>,
    captured: Vec<Vec<u8>>,
    classify: Option<Classifier>,
    /// Traffic counters.
    pub stats: SimStats,
}

impl<I: Instance> Sim<I> {
    /// A simulator over `instances`, where instance `i` must have id `i`.
    pub fn new(cfg: SimConfig, instances: Vec<I>) -> Sim<I> {
        let seed = cfg.seed;
        let slots = instances
            .into_iter()
            .enumerate()
            .map(|(i, inst)| {
                assert_eq!(inst.id() as usize, i, "instance ids are dense");
                let boot = sim_boot(seed, i as NodeId, 0);
                Slot {
                    inst: Some(inst),
                    armed: None,
                    sealer: Sealer::new(i as NodeId, boot),
                    opener: Opener::new(i as NodeId, boot),
                    held: Held::default(),
                    rx_datagrams: 0,
                    boots: 1,
                }
            })
            .collect();
        let keys = KeyRing::single(1, &ClusterKey::from_seed(cfg.seed));
        let mut sim = Sim {
            now: Duration::ZERO,
            order: 0,
            queue: BinaryHeap::new(),
            slots,
            rng: Rng::new(cfg.seed),
            cfg,
            keys,
            side: None,
            buf: Vec::with_capacity(2048),
            capture: None,
            captured: Vec::new(),
            classify: None,
            stats: SimStats::default(),
        };
        for id in 0..sim.slots.len() as NodeId {
            sim.drain(id);
        }
        sim
    }

    /// The virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Number of instances (crashed ones included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when there are no instances.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The instance `id`, unless crashed.
    pub fn get(&self, id: NodeId) -> Option<&I> {
        self.slots[id as usize].inst.as_ref()
    }

    /// Datagrams delivered to `id` so far.
    pub fn rx_datagrams(&self, id: NodeId) -> u64 {
        self.slots[id as usize].rx_datagrams
    }

    /// Envelope drops at `id` so far.
    pub fn drops(&self, id: NodeId) -> &crate::envelope::DropCounters {
        &self.slots[id as usize].opener.drops
    }

    /// Runs `f` on instance `id` at the current time, then sends what it
    /// produced and re-arms its timer. `None` if it is crashed.
    pub fn with<R>(&mut self, id: NodeId, f: impl FnOnce(&mut I, Time) -> R) -> Option<R> {
        let now = self.now;
        let r = f(self.slots[id as usize].inst.as_mut()?, now);
        self.drain(id);
        Some(r)
    }

    /// Crashes `id`: it loses all state; datagrams to it are lost.
    pub fn crash(&mut self, id: NodeId) {
        let s = &mut self.slots[id as usize];
        s.inst = None;
        s.armed = None;
    }

    /// Restarts `id` with a fresh instance and a new envelope boot (its
    /// replay windows are lost, as a real restart loses them).
    pub fn restart(&mut self, id: NodeId, inst: I) {
        assert_eq!(inst.id(), id);
        let seed = self.cfg.seed;
        let s = &mut self.slots[id as usize];
        let boot = sim_boot(seed, id, s.boots);
        s.boots += 1;
        s.inst = Some(inst);
        s.armed = None;
        s.sealer = Sealer::new(id, boot);
        s.opener = Opener::new(id, boot);
        s.held = Held::default();
        self.drain(id);
    }

    /// Hands `to` a datagram as if it came from the network (a replayed
    /// capture, a forgery): opened, delivered or dropped and counted like
    /// any other.
    pub fn inject(&mut self, to: NodeId, bytes: &[u8]) {
        let from = crate::envelope::peek_header(bytes).map_or(0, |h| h.sender);
        self.deliver(from, to, bytes);
    }

    /// Starts capturing what `from` sends to `to` (for replay tests);
    /// returns what was captured since the last call.
    pub fn capture(&mut self, link: Option<(NodeId, NodeId)>) -> Vec<Vec<u8>> {
        self.capture = link;
        std::mem::take(&mut self.captured)
    }

    /// Counts every datagram sent from now on by the kind `f` names
    /// ([`SimStats::by_kind`]); session datagrams and re-sent frames count
    /// as [`KIND_SESSION`] and [`KIND_RESENT`].
    pub fn classify_with(&mut self, f: Classifier) {
        self.classify = Some(f);
    }

    /// Changes the network's loss, duplication and per-datagram jitter from
    /// now on (fault campaigns); datagrams already in flight keep their fate.
    pub fn set_network(&mut self, loss: f64, duplicate: f64, jitter: Duration) {
        assert!((0.0..1.0).contains(&loss), "loss is a probability below 1");
        assert!(
            (0.0..1.0).contains(&duplicate),
            "duplicate is a probability below 1"
        );
        self.cfg.loss = loss;
        self.cfg.duplicate = duplicate;
        self.cfg.jitter = jitter;
    }

    /// Cuts the network: datagrams between instances on different sides
    /// are lost. `None` heals it.
    pub fn set_partition(&mut self, side: Option<Vec<u8>>) {
        if let Some(s) = &side {
            assert_eq!(s.len(), self.slots.len(), "one side per instance");
        }
        self.side = side;
    }

    /// Runs every event up to and including `until`; the clock ends there.
    pub fn run_until(&mut self, until: Time) {
        while self.queue.peek().is_some_and(|e| e.at <= until) {
            let e = self.queue.pop().expect("peeked");
            self.now = e.at;
            self.dispatch(e.what);
        }
        self.now = self.now.max(until);
    }

    /// Runs until `done` holds (checked every `step`) or `limit` passes.
    /// Returns whether `done` held.
    pub fn run_while(
        &mut self,
        step: Duration,
        limit: Time,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool {
        while self.now < limit {
            if done(self) {
                return true;
            }
            let next = (self.now + step).min(limit);
            self.run_until(next);
        }
        done(self)
    }

    fn dispatch(&mut self, what: What) {
        match what {
            What::Wake { node } => {
                let s = &mut self.slots[node as usize];
                if s.armed != Some(self.now) {
                    return;
                }
                s.armed = None;
                let now = self.now;
                if let Some(inst) = s.inst.as_mut() {
                    inst.handle_timeout(now);
                    self.drain(node);
                }
            }
            What::Datagram { from, to, bytes } => self.deliver(from, to, &bytes),
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, bytes: &[u8]) {
        let now = self.now;
        let s = &mut self.slots[to as usize];
        let Some(inst) = s.inst.as_mut() else {
            self.stats.lost += 1;
            return;
        };
        match s.opener.open(&self.keys, bytes) {
            Ok((opened, _)) if opened.session => {
                s.rx_datagrams += 1;
                self.resend_held(to, opened.sender);
            }
            Ok((opened, frame)) => {
                debug_assert_eq!(opened.sender, from);
                s.rx_datagrams += 1;
                inst.handle_frame(now, opened.sender, frame);
                self.resend_held(to, opened.sender);
                self.drain(to);
            }
            Err(e) => {
                if e == DropReason::Unfresh {
                    self.stats.handshakes += 1;
                } else {
                    self.stats.rejected += 1;
                }
                // A session datagram from a boot seen first is dropped as
                // unfresh, yet it taught us the peer's boot.
                self.resend_held(to, from);
            }
        }
        self.send_replies(to);
    }

    /// Sends again what `id` sent `peer` before it knew `peer`'s boot.
    fn resend_held(&mut self, id: NodeId, peer: NodeId) {
        let s = &mut self.slots[id as usize];
        for frame in s.held.release(peer, &s.opener) {
            let s = &mut self.slots[id as usize];
            let echo = s.opener.peer_boot(peer);
            if s.sealer
                .seal(&self.keys, peer, echo, &frame, &mut self.buf)
                .is_ok()
            {
                let bytes = self.buf.clone();
                self.count_kind(KIND_RESENT, bytes.len());
                self.send(id, peer, bytes);
            }
        }
    }

    /// Sends the session datagrams `id`'s opener asks for.
    fn send_replies(&mut self, id: NodeId) {
        loop {
            let s = &mut self.slots[id as usize];
            let Some((peer, echo)) = s.opener.poll_reply() else {
                return;
            };
            if s.sealer
                .seal_session(&self.keys, peer, echo, &mut self.buf)
                .is_ok()
            {
                let bytes = self.buf.clone();
                self.count_kind(KIND_SESSION, bytes.len());
                self.send(id, peer, bytes);
            }
        }
    }

    /// Sends what `id` has queued and re-arms its timer.
    fn drain(&mut self, id: NodeId) {
        loop {
            let s = &mut self.slots[id as usize];
            let Some(inst) = s.inst.as_mut() else { return };
            let Some(t) = inst.poll_transmit() else { break };
            let echo = s.opener.peer_boot(t.to);
            if echo.is_none() {
                s.held.hold(t.to, &t.frame);
            }
            if s.sealer
                .seal(&self.keys, t.to, echo, &t.frame, &mut self.buf)
                .is_err()
            {
                self.stats.lost += 1;
                continue;
            }
            let bytes = self.buf.clone();
            if let Some(f) = self.classify {
                self.count_kind(f(&t.frame), bytes.len());
            }
            self.send(id, t.to, bytes);
        }
        let s = &mut self.slots[id as usize];
        let next = s.inst.as_mut().and_then(|i| i.poll_timeout());
        if let Some(at) = next {
            let at = at.max(self.now);
            if s.armed != Some(at) {
                s.armed = Some(at);
                self.push(at, What::Wake { node: id });
            }
        }
    }

    fn count_kind(&mut self, kind: &'static str, bytes: usize) {
        if self.classify.is_none() {
            return;
        }
        let c = self.stats.by_kind.entry(kind).or_default();
        c.datagrams += 1;
        c.bytes += bytes as u64;
    }

    fn send(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>) {
        if self.capture == Some((from, to)) && self.captured.len() < CAPTURED_MAX {
            self.captured.push(bytes.clone());
        }
        self.stats.datagrams += 1;
        self.stats.bytes += bytes.len() as u64;
        self.stats.max_datagram_bytes = self.stats.max_datagram_bytes.max(bytes.len());
        if (to as usize) >= self.slots.len() || self.cut(from, to) || self.rng.chance(self.cfg.loss)
        {
            self.stats.lost += 1;
            return;
        }
        if self.rng.chance(self.cfg.duplicate) {
            let at = self.now + self.delay(from, to);
            self.push(
                at,
                What::Datagram {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
        let at = self.now + self.delay(from, to);
        self.push(at, What::Datagram { from, to, bytes });
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        self.side
            .as_ref()
            .is_some_and(|s| s[a as usize] != s[b as usize])
    }

    fn delay(&mut self, from: NodeId, to: NodeId) -> Duration {
        let link = splitmix64(self.cfg.seed ^ ((from as u64) << 32 | to as u64));
        let spread = self.cfg.link_spread.as_nanos() as u64;
        let fixed = if spread == 0 { 0 } else { link % spread };
        let jitter = self.cfg.jitter.as_nanos() as u64;
        let random = if jitter == 0 {
            0
        } else {
            self.rng.below(jitter)
        };
        self.cfg.latency + Duration::from_nanos(fixed + random)
    }

    fn push(&mut self, at: Time, what: What) {
        self.order += 1;
        self.queue.push(Event {
            at,
            order: self.order,
            what,
        });
    }
}

#[cfg(test)]
mod tests;
