//! The tree strategy's protocol core for one instance.
//!
//! Inputs: [`Instance::handle_frame`], [`Instance::handle_timeout`],
//! [`Strategy::publish`], [`Strategy::mark_failed`], all with `now`.
//! Outputs: [`Instance::poll_transmit`], [`Strategy::poll_event`], and the
//! next deadline from [`Instance::poll_timeout`]. Internally each link has
//! one deadline; a heap of `(deadline, link)` with lazy deletion finds the
//! next one without scanning hundreds of children.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use bytes::Bytes;
use proto::overlay::{Ack, Frame, Hello, Update, VersionHint, frame};
use proto::prost::Message;

use overlay::record::Applied;
use overlay::rng::Rng;
use overlay::strategy::{Event, MAX_FRAME_BYTES, Strategy};
use overlay::tree::Tree;
use overlay::{Instance, Key, Kind, NodeId, Record, Store, Time, Transmit};

use crate::config::TreeConfig;
use crate::link::{Dir, InFlight, Link, NeighborState};
use crate::routes::Routes;

/// Bytes kept free in an update for its header and acknowledgements.
const UPDATE_OVERHEAD_BYTES: usize = 32;
/// Most acknowledgements carried by one frame.
const ACKS_PER_FRAME_MAX: usize = 64;
/// Most events queued for the application before the oldest are dropped.
const EVENTS_MAX: usize = 1 << 20;
/// Slots per hello interval on which an instance's hellos to its children
/// fall (see [`TreeCore::on_grid`]).
pub const HELLO_GRID_SLOTS: u32 = 10;
/// Most a claim's epoch may exceed the epoch this core knows for the group
/// while its view of the group is live (see [`TreeCore`]'s claim rules):
/// the sideways election raises the epoch by one per change of acting
/// member, so a jump beyond this is a forgery or a view long out of date.
pub const CLAIM_EPOCH_AHEAD_MAX: u64 = 16;

/// Counters of one core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Records that arrived from a direction they may not flow in.
    pub records_rejected: u64,
    /// Records too large for a datagram (they need the QUIC fallback).
    pub records_oversized: u64,
    /// Full resyncs started on a link.
    pub resyncs: u64,
    /// Updates re-sent after `rxmt` without acknowledgement.
    pub retransmits: u64,
    /// Frames received from instances that are not neighbours.
    pub strangers: u64,
    /// Events dropped because the application did not drain them.
    pub events_dropped: u64,
    /// Times this instance fell back to its grandparent.
    pub fallbacks: u64,
    /// Acting claims in hellos that were refused: a tree-only group, the
    /// root's place, a claimant outside the group, a receiver neither in
    /// the group nor its parent, or an epoch too far ahead. (A claim at or
    /// below the known epoch is merely old and not counted.)
    pub claims_rejected: u64,
    /// Publishes refused because the record's versions were exhausted
    /// (a held version within 2 of `u64::MAX`; nothing changed).
    pub versions_exhausted: u64,
    /// Records this instance published that it re-stamped above the
    /// versions its parent held of them (after a restart).
    pub restamped: u64,
}

/// One instance of the tree strategy.
///
/// **Claims.** An acting member announces its place in every hello to its
/// parent (`claim_leader`, `claim_epoch`). A claim heard from the network
/// is adopted only where the strategy makes it legitimate: the group runs a
/// sideways strategy ([`Tree::sideways`]; a `tree`-only group ignores
/// claims), its leader is not the root, the claimant is a member of the
/// group ([`Tree::in_group`]), this instance is a member too or holds the
/// group's parent position (its static parent, or the member acting for
/// it), and the epoch is above the known one by at most
/// [`CLAIM_EPOCH_AHEAD_MAX`]. The bound is lifted for the group's own
/// leader (taking its place back only restores the static tree) and while
/// this instance does not hear the group's current occupant on a full link
/// (after a restart, or when the occupant is dead), so a view that fell
/// behind can catch up. Refusals are counted in
/// [`TreeStats::claims_rejected`]. [`TreeCore::set_acting`] is the
/// application's trusted path (its sideways strategy's election).
pub struct TreeCore {
    me: NodeId,
    routes: Routes,
    cfg: TreeConfig,
    rng: Rng,
    store: Store,
    links: Vec<Link>,
    index: HashMap<NodeId, usize>,
    heap: BinaryHeap<Reverse<(Time, usize)>>,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_seq: u64,
    stats: TreeStats,
    rebuild_pending: bool,
    /// Keys whose latest version known here this instance published (its
    /// own Dsc, the Dsc it authors for BMC nodes): re-stamped when the
    /// parent hints a higher version. A newer record from elsewhere (the
    /// next author after a failover) removes its key.
    authored: BTreeSet<Key>,
    /// Nodes whose Dsc another instance authors (their BMC driver): a Dsc
    /// of one of them from the node itself is refused.
    authored_elsewhere: BTreeSet<NodeId>,
    /// This instance's offset of its hello grid, as a fraction of a slot
    /// (drawn once: different parents' grids do not line up).
    grid_phase: f64,
}

impl TreeCore {
    /// The core of instance `me`, starting at `now`.
    pub fn new(me: NodeId, tree: Arc<Tree>, cfg: TreeConfig, now: Time) -> TreeCore {
        let mut rng = Rng::new(cfg.seed ^ (me as u64).wrapping_mul(0x9E37_79B9));
        let grid_phase = rng.next_f64();
        let mut core = TreeCore {
            me,
            routes: Routes::new(tree),
            cfg,
            rng,
            store: Store::new(),
            links: Vec::new(),
            index: HashMap::default(),
            heap: BinaryHeap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            next_seq: 0,
            stats: TreeStats::default(),
            rebuild_pending: false,
            authored: BTreeSet::new(),
            authored_elsewhere: BTreeSet::new(),
            grid_phase,
        };
        core.rebuild_links(now, true);
        core
    }

    /// Re-derives the links from the effective routes: links to neighbours
    /// that remain keep their state; new ones start down with a hello due
    /// (at a random point of the first interval when `spread_first`).
    /// Records queued on a dropped link are routed again.
    fn rebuild_links(&mut self, now: Time, spread_first: bool) {
        let mut old: HashMap<(NodeId, bool), Link> = self
            .links
            .drain(..)
            .map(|l| ((l.peer, l.dir == Dir::ToParent), l))
            .collect();
        let mut wanted: Vec<(NodeId, Dir)> = Vec::new();
        if let Some(p) = self.routes.parent(self.me) {
            wanted.push((p, Dir::ToParent));
        }
        wanted.extend(
            self.routes
                .children(self.me)
                .into_iter()
                .map(|c| (c, Dir::ToChild)),
        );
        for (peer, dir) in wanted {
            let link = match old.remove(&(peer, dir == Dir::ToParent)) {
                Some(l) => l,
                None => {
                    let child = if dir == Dir::ToParent { self.me } else { peer };
                    let t = self.routes.timers(child);
                    let first = if spread_first {
                        spread(&mut self.rng, t.hello)
                    } else {
                        Time::ZERO
                    };
                    Link::new(peer, dir, t, now + first)
                }
            };
            self.links.push(link);
        }
        self.index = self
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| (l.peer, i))
            .collect();
        self.heap.clear();
        for l in 0..self.links.len() {
            self.links[l].scheduled = None;
            self.reschedule(l);
        }
        let orphans: Vec<Key> = old
            .into_values()
            .flat_map(|l| l.dirty.into_iter())
            .collect();
        for key in orphans {
            self.changed(now, key);
        }
    }

    /// Applies a failover decision: `acting` now fills the place of the
    /// static sub-parent `leader` (or `leader` itself, taking its role
    /// back), if `epoch` is newer than the one known. Returns whether the
    /// routes changed; links are re-derived at once.
    pub fn set_acting(&mut self, now: Time, leader: NodeId, acting: NodeId, epoch: u64) -> bool {
        let changed = self.routes.set(leader, acting, epoch);
        if changed {
            self.rebuild_links(now, false);
        }
        changed
    }

    /// Adopts a claim heard in a hello from `from` if it is legitimate (see
    /// [`TreeCore`]); counts the refusals.
    fn on_claim(&mut self, now: Time, from: NodeId, leader: NodeId, epoch: u64) {
        let known = self.routes.epoch(leader);
        if !self.claim_allowed(from, leader) {
            self.stats.claims_rejected += 1;
            return;
        }
        if epoch <= known {
            return;
        }
        let ahead = epoch - known;
        let bounded = from != leader && self.hears_occupant(leader);
        if bounded && ahead > CLAIM_EPOCH_AHEAD_MAX {
            self.stats.claims_rejected += 1;
            return;
        }
        self.set_acting(now, leader, from, epoch);
    }

    /// The structural rules of a claim by `from` of the group `leader`.
    fn claim_allowed(&self, from: NodeId, leader: NodeId) -> bool {
        let tree = self.routes.tree();
        let Some(parent) = tree.parent(leader) else {
            return false;
        };
        let parent_position = self.me == parent || self.routes.replaced(parent) == Some(self.me);
        tree.sideways(leader)
            && tree.in_group(leader, from)
            && (tree.in_group(leader, self.me) || parent_position)
    }

    /// Whether this instance hears the group's current occupant on a full
    /// link (or is the occupant): its view of the group is live.
    fn hears_occupant(&self, leader: NodeId) -> bool {
        let occupant = self.acting(leader);
        occupant == self.me
            || self
                .index
                .get(&occupant)
                .is_some_and(|&l| self.links[l].state == NeighborState::Full)
    }

    /// The acting member of the group `leader` leads, as this core knows it.
    pub fn acting(&self, leader: NodeId) -> NodeId {
        self.routes.replaced(leader).unwrap_or(leader)
    }

    /// Number of instances in the topology.
    pub fn routes_len(&self) -> usize {
        self.routes.len()
    }

    /// The effective parent of this instance.
    pub fn parent(&self) -> Option<NodeId> {
        self.routes.parent(self.me)
    }

    /// The effective parent of instance `x` as this core knows it (after
    /// failovers and fallbacks): whoever serves `x` now.
    pub fn parent_of(&self, x: NodeId) -> Option<NodeId> {
        self.routes.parent(x)
    }

    /// Takes a record from a sideways source (the group's gossip) as if it
    /// had arrived on its proper link: a newer one is delivered to the
    /// application (a node's own Cfg may first reach it this way while it
    /// acts for its group) and forwarded. The tree's direction rules hold:
    /// a Cfg only for this instance's effective subtree (its acting groups
    /// included), a Dsc only from below it (never its own, which is ignored
    /// without counting); anything else is counted in `records_rejected`.
    /// Returns whether it was taken and newer.
    pub fn absorb(&mut self, now: Time, rec: Record) -> bool {
        let key = rec.key;
        if key.node == self.me && key.kind == Kind::Dsc {
            // Its own Dsc is its to publish; the group's replica of it is
            // passed along by the application and quietly ignored.
            return false;
        }
        if !self.routes.within(key.node, self.me) {
            self.stats.records_rejected += 1;
            return false;
        }
        let newer = self.store.apply(&rec) == Applied::Newer;
        if newer {
            // Someone else published above us: no longer ours to re-stamp.
            self.authored.remove(&key);
            self.event(Event::Delivered(rec));
            self.changed(now, key);
        }
        newer
    }

    /// The core's counters.
    pub fn stats(&self) -> &TreeStats {
        &self.stats
    }

    /// The neighbour state of `peer`, if it is a neighbour.
    pub fn neighbor(&self, peer: NodeId) -> Option<NeighborState> {
        self.index.get(&peer).map(|&l| self.links[l].state)
    }

    /// Number of records held.
    pub fn held(&self) -> usize {
        self.store.len()
    }

    /// Keys that flow out on link `l`.
    fn out_keys(&self, l: usize) -> impl Iterator<Item = Key> + '_ {
        let (top, kind) = match self.links[l].dir {
            Dir::ToParent => (self.me, Kind::Dsc),
            Dir::ToChild => (self.links[l].peer, Kind::Cfg),
        };
        self.routes.subtree(top).map(move |node| Key { node, kind })
    }

    /// Keys that flow in on link `l`.
    fn in_keys(&self, l: usize) -> impl Iterator<Item = Key> + '_ {
        let (top, kind) = match self.links[l].dir {
            Dir::ToParent => (self.me, Kind::Cfg),
            Dir::ToChild => (self.links[l].peer, Kind::Dsc),
        };
        self.routes.subtree(top).map(move |node| Key { node, kind })
    }

    /// The stamp a cached digest is valid for: nothing it covers can have
    /// changed while the store's records and the routes have not.
    fn digest_stamp(&self) -> (u64, u64) {
        (self.store.changes(), self.routes.generation())
    }

    /// Digest and count of what this instance holds that flows in on link
    /// `l` (sent in its hellos), cached until the store or the routes move.
    /// Why: a sub-parent's hello to its parent covers its whole subtree
    /// (hundreds of lookups of cold records every interval) although in
    /// steady state nothing changed since the last one.
    fn digest_in(&mut self, l: usize) -> (u64, u32) {
        let stamp = self.digest_stamp();
        if let Some((s, d, n)) = self.links[l].digests.inward
            && s == stamp
        {
            return (d, n);
        }
        let (d, n) = self.store.digest(self.in_keys(l));
        self.links[l].digests.inward = Some((stamp, d, n));
        (d, n)
    }

    /// Digest and count of what flows out on link `l` (checked against the
    /// peer's hello), cached like [`TreeCore::digest_in`].
    fn digest_out(&mut self, l: usize) -> (u64, u32) {
        let stamp = self.digest_stamp();
        if let Some((s, d, n)) = self.links[l].digests.outward
            && s == stamp
        {
            return (d, n);
        }
        let (d, n) = self.store.digest(self.out_keys(l));
        self.links[l].digests.outward = Some((stamp, d, n));
        (d, n)
    }

    /// May `key` arrive on link `l`? (Cfg only from above, Dsc only from below.)
    fn may_arrive(&self, l: usize, key: Key) -> bool {
        match (self.links[l].dir, key.kind) {
            (Dir::ToParent, Kind::Cfg) => self.routes.within(key.node, self.me),
            (Dir::ToChild, Kind::Dsc) => self.routes.within(key.node, self.links[l].peer),
            _ => false,
        }
    }

    /// The link a changed record must travel next, if any.
    fn route(&self, key: Key) -> Option<usize> {
        match key.kind {
            Kind::Cfg => self
                .routes
                .next_hop(self.me, key.node)
                .and_then(|c| self.index.get(&c).copied()),
            Kind::Dsc => {
                let up = self.links.first().filter(|l| l.dir == Dir::ToParent);
                (up.is_some() && self.routes.within(key.node, self.me)).then_some(0)
            }
        }
    }

    /// Coalescing pays where many records change together (aggregators);
    /// a leaf's only record goes at once, in the same wake-up.
    fn coalesce(&self) -> Time {
        if !self.links.iter().any(|l| l.dir == Dir::ToChild) {
            Time::ZERO
        } else {
            self.cfg.coalesce
        }
    }

    fn changed(&mut self, now: Time, key: Key) {
        if let Some(l) = self.route(key) {
            let coalesce = self.coalesce();
            self.links[l].mark_dirty(key, now, coalesce);
            if coalesce.is_zero() {
                self.service(now, l);
            } else {
                self.reschedule(l);
            }
        }
    }

    fn event(&mut self, e: Event) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    fn reschedule(&mut self, l: usize) {
        let d = self.links[l].deadline(&self.cfg);
        if self.links[l].scheduled != Some(d) {
            self.links[l].scheduled = Some(d);
            self.heap.push(Reverse((d, l)));
        }
    }

    /// Does whatever link `l` has due at `now`, then re-arms it.
    fn service(&mut self, now: Time, l: usize) {
        self.check_dead(now, l);
        self.retransmit(now, l);
        if self.links[l].can_flush(&self.cfg) && self.links[l].flush_at.is_some_and(|f| f <= now) {
            self.flush(now, l);
        }
        let link = &self.links[l];
        if link.hello_now || link.next_hello <= now {
            self.send_hello(now, l);
        }
        let link = &self.links[l];
        if !link.acks.is_empty() && link.ack_at.is_some_and(|a| a <= now) {
            self.send_ack(l);
        }
        self.reschedule(l);
    }

    fn check_dead(&mut self, now: Time, l: usize) {
        let link = &mut self.links[l];
        let expired = link.state != NeighborState::Down
            && link.last_rx.is_some_and(|rx| rx + link.timers.dead <= now);
        if expired {
            link.state = NeighborState::Down;
            link.inflight.clear();
            link.acks.clear();
            let (peer, dir) = (link.peer, link.dir);
            self.event(Event::PeerDown(peer));
            let own_parent = self.routes.static_parent(self.me) == Some(peer);
            if dir == Dir::ToParent
                && own_parent
                && self.cfg.fallback
                && self.routes.set_fallback(self.me, true)
            {
                self.stats.fallbacks += 1;
                self.rebuild_pending = true;
            }
        }
    }

    /// A hello from an instance that is not a neighbour: a fallback from a
    /// grandchild whose parent is dead is adopted, or sent home if that
    /// parent is alive for us.
    fn on_stranger_hello(&mut self, now: Time, from: NodeId, h: &Hello) -> bool {
        if !h.fallback || self.routes.grandparent(from) != Some(self.me) {
            return false;
        }
        let parent = self.routes.static_parent(from).expect("has a grandparent");
        // Send it home only if we have heard its parent lately: our own
        // dead timer for that parent may not have run out yet.
        let fresh = self.index.get(&parent).is_some_and(|&l| {
            let link = &self.links[l];
            link.state == NeighborState::Full
                && link
                    .last_rx
                    .is_some_and(|rx| now.saturating_sub(rx) <= link.timers.hello.mul_f64(1.5))
        });
        if fresh {
            let home = Hello {
                home: true,
                ..Hello::default()
            };
            self.out.push_back(Transmit {
                to: from,
                frame: Frame {
                    body: Some(frame::Body::Hello(home)),
                },
            });
            return false;
        }
        self.routes.set_fallback(from, true);
        self.rebuild_links(now, false);
        true
    }

    fn rebuild_if_pending(&mut self, now: Time) {
        if std::mem::take(&mut self.rebuild_pending) {
            self.rebuild_links(now, false);
        }
    }

    fn retransmit(&mut self, now: Time, l: usize) {
        let cfg = self.cfg;
        let rxmt = self.links[l].rxmt(&cfg);
        while let Some(f) = self.links[l].inflight.front() {
            if f.sent_at + rxmt > now {
                break;
            }
            let f = self.links[l].inflight.pop_front().expect("front exists");
            self.stats.retransmits += 1;
            for (key, _) in f.items {
                if self.store.version(key) > self.links[l].known.get(&key).copied() {
                    self.links[l].mark_dirty(key, now, Time::ZERO);
                }
            }
            self.links[l].flush_at = Some(now);
        }
    }

    /// An update just went to the peer of link `l`. It proves this
    /// instance alive to the peer as a hello would (any frame refreshes the
    /// peer's dead timer), so the first hello due within one interval moves
    /// one interval later, keeping its random phase so that deferred hellos
    /// do not pile up. At most one hello in a row is skipped: the digest
    /// check and the two-way state still get a hello at least every other
    /// interval (well inside `dead`). A pending state change or hint still
    /// goes at once.
    ///
    /// Why: in a change that reaches every node (a roll-out) each link
    /// carries an update each way; the hellos due next on those links are
    /// pure background that competed with the roll-out for the same CPUs
    /// (issue 14: about half of the datagrams in the converge window of a
    /// 100,000-node run were such hellos).
    fn defer_hello(&mut self, now: Time, l: usize) {
        let link = &mut self.links[l];
        if link.hello_deferred
            || link.hello_now
            || link.state != NeighborState::Full
            || !link.hints.is_empty()
            || link.next_hello > now + link.timers.hello
        {
            return;
        }
        link.next_hello += link.timers.hello;
        link.hello_deferred = true;
    }

    /// Packs dirty records into updates while the window allows.
    fn flush(&mut self, now: Time, l: usize) {
        let mut sent = false;
        while self.links[l].can_flush(&self.cfg) {
            let Some(update) = self.pack(l) else { break };
            sent = true;
            let items = update
                .records
                .iter()
                .filter_map(|r| {
                    Some((
                        Key {
                            node: r.node,
                            kind: Kind::from_wire(r.kind)?,
                        },
                        r.version,
                    ))
                })
                .collect();
            let link = &mut self.links[l];
            link.inflight.push_back(InFlight {
                seq: update.update_seq,
                sent_at: now,
                items,
            });
            let frame = Frame {
                body: Some(frame::Body::Update(update)),
            };
            debug_assert!(frame.encoded_len() <= MAX_FRAME_BYTES);
            self.out.push_back(Transmit {
                to: link.peer,
                frame,
            });
        }
        if sent {
            self.defer_hello(now, l);
        }
        let link = &mut self.links[l];
        link.flush_at = if link.dirty.is_empty() {
            None
        } else {
            Some(now)
        };
    }

    /// One update of dirty records, or `None` if nothing was left to send.
    fn pack(&mut self, l: usize) -> Option<Update> {
        let acks = take_acks(&mut self.links[l]);
        let mut size = UPDATE_OVERHEAD_BYTES + acks.len() * 10;
        let mut records = Vec::new();
        while let Some(key) = self.links[l].dirty.pop_front() {
            let link = &mut self.links[l];
            link.dirty_set.remove(&key);
            let Some(rec) = self.store.get(key) else {
                continue;
            };
            if link.known.get(&key).is_some_and(|&v| v >= rec.version) {
                continue;
            }
            let wire = rec.to_wire();
            let len = wire.encoded_len() + 4;
            if UPDATE_OVERHEAD_BYTES + len > MAX_FRAME_BYTES {
                self.stats.records_oversized += 1;
                continue;
            }
            if size + len > MAX_FRAME_BYTES {
                link.dirty_set.insert(key);
                link.dirty.push_front(key);
                break;
            }
            size += len;
            records.push(wire);
        }
        if records.is_empty() {
            self.links[l].acks.extend(acks);
            return None;
        }
        self.next_seq += 1;
        Some(Update {
            update_seq: self.next_seq,
            records,
            acks,
        })
    }

    fn send_hello(&mut self, now: Time, l: usize) {
        let (in_digest, in_count) = self.digest_in(l);
        let stale = take_hints(&mut self.links[l]);
        let claim = match self.links[l].dir {
            Dir::ToParent => self.routes.acting_for(self.me),
            Dir::ToChild => None,
        };
        let hello = {
            let timers = self.links[l].timers;
            let mut next = now + self.jittered(timers);
            if self.links[l].dir == Dir::ToChild {
                next = self.on_grid(next, timers.hello).max(now + timers.hello / 2);
            } else if self.links[l].answering {
                // The parent's next hello comes within one interval plus
                // its jitter and half a grid slot: wait for it rather than
                // race it with our own timer (see `answer_parent`).
                next = now + answer_wait(timers);
            }
            let link = &mut self.links[l];
            link.hello_now = false;
            link.hello_deferred = false;
            link.answering = false;
            link.last_hello = Some(now);
            link.next_hello = next;
            Hello {
                in_digest,
                in_count,
                acks: take_acks(link),
                hello_ms: link.timers.hello.as_millis() as u32,
                seen: link.state != NeighborState::Down,
                claim_leader: claim.map_or(0, |c| c.0),
                claim_epoch: claim.map_or(0, |c| c.1),
                fallback: link.dir == Dir::ToParent && self.routes.is_fallback(self.me),
                home: false,
                stale,
            }
        };
        let to = self.links[l].peer;
        self.out.push_back(Transmit {
            to,
            frame: Frame {
                body: Some(frame::Body::Hello(hello)),
            },
        });
    }

    fn send_ack(&mut self, l: usize) {
        let acks = take_acks(&mut self.links[l]);
        let to = self.links[l].peer;
        self.out.push_back(Transmit {
            to,
            frame: Frame {
                body: Some(frame::Body::Ack(Ack { acks })),
            },
        });
    }

    /// `t` moved to the nearest slot of this instance's hello grid: slots
    /// a tenth of `hello` apart ([`HELLO_GRID_SLOTS`]), offset by the
    /// instance's own phase. A parent's hellos to its children fall on the
    /// grid, so the ones due in one slot leave in one wake-up (one timer,
    /// one flush, one batch of sends) and the children's answers
    /// ([`TreeCore::on_hello`]) come back together, where a random phase
    /// per link woke the parent once per child and hello. Each link keeps
    /// its own jittered interval; rounding moves a hello by at most half a
    /// slot either way, so the mean interval stays `hello`.
    ///
    /// Why: at 100,000 instances on two cores the steady hellos alone took
    /// 1.9 of the 2 cores (19.5 us per datagram, much of it the wake-ups
    /// of 16,700 instances per process), leaving a roll-out nothing.
    fn on_grid(&self, t: Time, hello: Time) -> Time {
        let slot = (hello.as_nanos() / u128::from(HELLO_GRID_SLOTS)).max(1);
        let offset = (slot as f64 * self.grid_phase) as u128;
        let from = t.as_nanos().saturating_sub(offset);
        let k = (from + slot / 2) / slot;
        let nanos = k.saturating_mul(slot).saturating_add(offset);
        Time::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn jittered(&mut self, t: overlay::tree::LinkTimers) -> Time {
        let f = 1.0 - t.jitter + 2.0 * t.jitter * self.rng.next_f64();
        t.hello.mul_f64(f)
    }

    fn on_hello(&mut self, now: Time, l: usize, h: Hello) {
        self.on_acks(now, l, &h.acks);
        if self.links[l].dir == Dir::ToParent {
            for hint in h.stale.iter().take(HINTS_PER_HELLO_MAX) {
                self.on_hint(now, hint.node, hint.version);
            }
        }
        if h.home && self.links[l].dir == Dir::ToParent && self.routes.set_fallback(self.me, false)
        {
            self.rebuild_pending = true;
            return;
        }
        let before = self.links[l].state;
        let after = match (before, h.seen) {
            (_, true) => NeighborState::Full,
            (_, false) => NeighborState::Init,
        };
        self.links[l].state = after;
        if after != before {
            self.links[l].hello_now = true;
        }
        // A child we hear from in full: its children that fell back to us
        // go home (whether its link went down or was only slow).
        if after == NeighborState::Full
            && self.links[l].dir == Dir::ToChild
            && self.routes.has_fallback()
        {
            for x in self.routes.fallen_from(self.links[l].peer) {
                self.routes.set_fallback(x, false);
                self.rebuild_pending = true;
            }
        }
        if after == NeighborState::Full && before != NeighborState::Full {
            let peer = self.links[l].peer;
            self.event(Event::PeerUp(peer));
            self.resync(now, l);
            return;
        }
        if after == NeighborState::Full {
            self.check_digest(now, l, h.in_digest);
            self.answer_parent(now, l);
        }
    }

    /// A child answers its parent's hello with its own: in steady state a
    /// child's hellos then ride on the wake-up its parent's hello causes
    /// (one wake-up per interval instead of two: the receive and its own
    /// timer) and reach the parent together with its other children's
    /// (see [`TreeCore::on_grid`]). After an answer the child's own timer
    /// is set just past the latest the parent's next hello can come
    /// ([`answer_wait`]), so the two do not race; when the parent falls
    /// silent, the child's own hellos go on (the first after at most 1.2
    /// intervals, then every interval). No answer within a grid slot of
    /// the child's last hello: a child whose own timer ran just before its
    /// parent's hello answers the next one, once, and from then on only
    /// answers.
    fn answer_parent(&mut self, now: Time, l: usize) {
        let link = &mut self.links[l];
        let slot = link.timers.hello / HELLO_GRID_SLOTS;
        let recent = link.last_hello.is_some_and(|t| now < t + slot);
        if link.dir == Dir::ToParent && !recent {
            link.hello_now = true;
            link.answering = true;
        }
    }

    /// The parent holds `node`'s Dsc at version `held`, above what this
    /// instance sent it. If this instance authors that record, its previous
    /// boot published up to `held` (this boot lost its versions): its
    /// floor moves above `held` and the record is re-stamped, so its
    /// versions supersede the previous boot's whatever the clock says. If
    /// the author is below, the hint goes on toward it. A hint at or below
    /// what this instance holds (an update that arrived after a newer one)
    /// is ignored.
    fn on_hint(&mut self, now: Time, node: NodeId, held: u64) {
        let key = Key {
            node,
            kind: Kind::Dsc,
        };
        if self.store.version(key).is_some_and(|v| v >= held) {
            return;
        }
        if self.authored.contains(&key) {
            let Some(floor) = held.checked_add(2) else {
                self.stats.versions_exhausted += 1;
                return;
            };
            self.cfg.version_floor = self.cfg.version_floor.max(floor);
            if let Some(r) = self.store.get(key) {
                self.stats.restamped += 1;
                self.publish(now, node, Kind::Dsc, r.data);
            }
            return;
        }
        let toward = self
            .routes
            .next_hop(self.me, node)
            .and_then(|c| self.index.get(&c).copied());
        if let Some(c) = toward {
            hint(&mut self.links[c], node, held);
        }
    }

    /// Declares whether another instance authors `node`'s Dsc (the
    /// instance that drives its BMC): while it does, a Dsc of `node` that
    /// arrives from `node` itself is refused and counted in
    /// `records_rejected` (one author per record).
    pub fn set_authored_elsewhere(&mut self, node: NodeId, elsewhere: bool) {
        if elsewhere {
            self.authored_elsewhere.insert(node);
        } else {
            self.authored_elsewhere.remove(&node);
        }
    }

    /// Compares what the peer holds from us with what we hold for it.
    fn check_digest(&mut self, now: Time, l: usize, theirs: u64) {
        let (mine, _) = self.digest_out(l);
        let link = &mut self.links[l];
        if mine == theirs || !link.idle() {
            link.mismatches = 0;
            return;
        }
        link.mismatches += 1;
        if link.mismatches >= self.cfg.mismatch_limit {
            link.mismatches = 0;
            self.resync(now, l);
        }
    }

    /// Forgets what the peer is known to hold and re-sends everything;
    /// records we own are re-stamped so they supersede a failure mark.
    fn resync(&mut self, now: Time, l: usize) {
        self.stats.resyncs += 1;
        self.links[l].known.clear();
        if self.links[l].dir == Dir::ToParent {
            let own = Key {
                node: self.me,
                kind: Kind::Dsc,
            };
            if let Some(r) = self.store.get(own) {
                self.publish(now, self.me, Kind::Dsc, r.data);
            }
        }
        let keys: Vec<Key> = self
            .out_keys(l)
            .filter(|&k| self.store.version(k).is_some())
            .collect();
        let coalesce = self.coalesce();
        for k in keys {
            self.links[l].mark_dirty(k, now, coalesce);
        }
    }

    fn on_acks(&mut self, _now: Time, l: usize, acks: &[u64]) {
        for &seq in acks {
            let Some(items) = self.links[l].take_acked(seq) else {
                continue;
            };
            let known = &mut self.links[l].known;
            for (k, v) in items {
                let e = known.entry(k).or_insert(0);
                *e = (*e).max(v);
            }
        }
        if self.links[l].can_flush(&self.cfg) && self.links[l].flush_at.is_none() {
            self.links[l].flush_at = Some(_now);
        }
    }

    fn on_update(&mut self, now: Time, l: usize, u: Update) {
        self.on_acks(now, l, &u.acks);
        for wire in u.records {
            let Some(rec) = Record::from_wire(wire) else {
                self.stats.records_rejected += 1;
                continue;
            };
            if !self.may_arrive(l, rec.key) {
                self.stats.records_rejected += 1;
                continue;
            }
            if rec.key.kind == Kind::Dsc
                && rec.key.node == self.links[l].peer
                && self.authored_elsewhere.contains(&rec.key.node)
            {
                self.stats.records_rejected += 1;
                continue;
            }
            match self.store.apply(&rec) {
                Applied::Newer => {
                    let key = rec.key;
                    self.authored.remove(&key);
                    self.event(Event::Delivered(rec));
                    self.changed(now, key);
                }
                _ if rec.key.kind == Kind::Dsc => {
                    // Older than what we hold: its author may have
                    // restarted; tell the link it came from.
                    if let Some(held) = self.store.version(rec.key).filter(|&v| v > rec.version) {
                        hint(&mut self.links[l], rec.key.node, held);
                    }
                }
                _ => {}
            }
        }
        let link = &mut self.links[l];
        if link.acks.len() < ACKS_PER_FRAME_MAX * 4 {
            link.acks.push(u.update_seq);
        }
        if link.ack_at.is_none() {
            link.ack_at = Some(now + link.ack_delay(&self.cfg));
        }
        // Why: a burst (a rack's Dsc after a roll) fills the sender's
        // window long before the next hello; a full frame of
        // acknowledgements goes at once, so the window moves once per
        // round trip instead of once per delayed acknowledgement.
        if link.acks.len() >= ACKS_PER_FRAME_MAX {
            link.ack_at = Some(now);
        }
    }
}

fn take_acks(link: &mut Link) -> Vec<u64> {
    let n = link.acks.len().min(ACKS_PER_FRAME_MAX);
    let acks: Vec<u64> = link.acks.drain(..n).collect();
    if link.acks.is_empty() {
        link.ack_at = None;
    }
    acks
}

/// How long a child's own timer waits after it answered its parent's
/// hello: the longest interval the parent's next hello can take (its
/// jitter and half a grid slot on top of `hello`) plus half a slot.
fn answer_wait(t: overlay::tree::LinkTimers) -> Time {
    t.hello.mul_f64(1.0 + t.jitter) + t.hello / HELLO_GRID_SLOTS
}

/// A random first-hello offset in `[0, hello)`, so hellos do not align.
fn spread(rng: &mut Rng, hello: Time) -> Time {
    hello.mul_f64(rng.next_f64())
}

impl Instance for TreeCore {
    fn id(&self) -> NodeId {
        self.me
    }

    fn handle_frame(&mut self, now: Time, from: NodeId, frame: Frame) {
        if let Some(frame::Body::Hello(h)) = &frame.body
            && h.claim_epoch > 0
        {
            self.on_claim(now, from, h.claim_leader, h.claim_epoch);
        }
        if !self.index.contains_key(&from)
            && let Some(frame::Body::Hello(h)) = &frame.body
        {
            self.on_stranger_hello(now, from, h);
        }
        let Some(&l) = self.index.get(&from) else {
            self.stats.strangers += 1;
            return;
        };
        self.links[l].last_rx = Some(now);
        match frame.body {
            Some(frame::Body::Hello(h)) => self.on_hello(now, l, h),
            Some(frame::Body::Update(u)) => self.on_update(now, l, u),
            Some(frame::Body::Ack(a)) => self.on_acks(now, l, &a.acks),
            // Gossip belongs to the sideways strategy; a tree-only core
            // ignores it (the frame still proves the peer alive).
            Some(frame::Body::Gossip(_)) | None => {}
        }
        self.service(now, l);
        self.rebuild_if_pending(now);
    }

    fn handle_timeout(&mut self, now: Time) {
        while let Some(&Reverse((t, l))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            if self.links[l].scheduled == Some(t) {
                self.links[l].scheduled = None;
                self.service(now, l);
            }
        }
        self.rebuild_if_pending(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Time> {
        while let Some(&Reverse((t, l))) = self.heap.peek() {
            if self.links[l].scheduled == Some(t) {
                return Some(t);
            }
            self.heap.pop();
        }
        None
    }
}

impl Strategy for TreeCore {
    fn publish(&mut self, now: Time, node: NodeId, kind: Kind, data: Bytes) -> u64 {
        let key = Key { node, kind };
        let Some(version) = self.store.next_version(key, self.cfg.version_floor) else {
            self.stats.versions_exhausted += 1;
            return self.store.version(key).unwrap_or(u64::MAX);
        };
        self.store.apply(&Record { key, version, data });
        self.authored.insert(key);
        self.changed(now, key);
        version
    }

    fn mark_failed(&mut self, now: Time, node: NodeId, data: Bytes) {
        let key = Key {
            node,
            kind: Kind::Dsc,
        };
        if !self.routes.within(node, self.me) {
            return;
        }
        let Some(version) = self.store.failure_mark(key) else {
            return;
        };
        self.store.apply(&Record { key, version, data });
        self.changed(now, key);
    }

    fn get(&self, key: Key) -> Option<Record> {
        self.store.get(key)
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

/// Version hints queued per link before more are dropped (a later hello
/// or update repeats what is still stale).
pub const HINTS_PER_LINK_MAX: usize = 256;
/// Version hints carried by one hello (16 bytes each at most, so a hello
/// stays far below a datagram).
pub const HINTS_PER_HELLO_MAX: usize = 48;

/// Queues a version hint for `link`'s peer (the highest per node).
fn hint(link: &mut Link, node: NodeId, version: u64) {
    if link.hints.len() >= HINTS_PER_LINK_MAX && !link.hints.contains_key(&node) {
        return;
    }
    let v = link.hints.entry(node).or_insert(0);
    *v = (*v).max(version);
    link.hello_now = true;
}

/// Takes up to [`HINTS_PER_HELLO_MAX`] hints for the next hello.
fn take_hints(link: &mut Link) -> Vec<VersionHint> {
    let nodes: Vec<NodeId> = link
        .hints
        .keys()
        .copied()
        .take(HINTS_PER_HELLO_MAX)
        .collect();
    nodes
        .into_iter()
        .filter_map(|node| {
            link.hints
                .remove(&node)
                .map(|version| VersionHint { node, version })
        })
        .collect()
}
