//! [`Stack`]: the sync cores of one instance and the questions an
//! application asks them.
//!
//! The hybrid wiring lives here and nowhere else: a group's
//! `ActingChanged` re-routes the tree ([`TreeCore::set_acting`]); the
//! acting member absorbs the group's replicated records into the tree so
//! it can serve the group at once; every member shares its own Dsc with its
//! groups, and the acting member shares the Cfg it gets from above and the
//! Dsc it authors for the group's members (BMC nodes) with the group, so
//! that a successor holds what it needs to take over (and publishes a BMC
//! node's Dsc above its predecessor's last version).

use std::collections::VecDeque;

use bytes::Bytes;
use overlay::strategy::{Event, Strategy};
use overlay::{Instance, Key, Kind, NodeId, Record, Time, Transmit};
use proto::overlay::{Frame, frame};
use sync_gossip::{FlatGossip, GossipCore, GossipEvent};
use sync_tree::{NeighborState, TreeCore, TreeStats};

use super::app::StackEvent;

/// Events a stack queues for its application before the oldest are
/// dropped (the application drains them after every input).
pub const STACK_EVENTS_MAX: usize = 1 << 16;

/// The core of an instance.
// One per instance; the common variant stays inline (the flat one is boxed).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Core {
    /// Hellos up and down the tree (`tree`, `hybrid`).
    Tree(TreeCore),
    /// The whole cluster as one SWIM group (`gossip`).
    Flat(Box<FlatGossip>),
}

/// One SWIM group of an instance (`hybrid`).
pub(crate) struct Side {
    group: u32,
    leader: NodeId,
    core: GossipCore,
    /// This instance acts for the group (the leader, at first).
    acting: bool,
}

impl Side {
    /// Instance `me`'s core for group `group` led by `leader`.
    pub(crate) fn new(group: u32, leader: NodeId, me: NodeId, core: GossipCore) -> Side {
        Side {
            group,
            leader,
            core,
            acting: leader == me,
        }
    }
}

/// Counters of the composition (beside the cores' own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Times this instance took over a group whose sub-parent it is not.
    pub failovers: u64,
    /// Times this instance handed a group back or lost it to another.
    pub handbacks: u64,
    /// Stack events dropped because the application did not drain them.
    pub events_dropped: u64,
}

/// The sync composition of one instance (see the module doc).
pub struct Stack {
    core: Core,
    sides: Vec<Side>,
    /// Version of our own Dsc last shared with the groups.
    shared_dsc: u64,
    events: VecDeque<StackEvent>,
    stats: StackStats,
    /// Crashed (a real-socket failover test): deaf and silent.
    dead: bool,
}

impl Stack {
    pub(crate) fn new(core: Core, sides: Vec<Side>) -> Stack {
        Stack {
            core,
            sides,
            shared_dsc: 0,
            events: VecDeque::new(),
            stats: StackStats::default(),
            dead: false,
        }
    }

    fn strategy(&self) -> &dyn Strategy {
        match &self.core {
            Core::Tree(c) => c,
            Core::Flat(c) => c.as_ref(),
        }
    }

    fn strategy_mut(&mut self) -> &mut dyn Strategy {
        match &mut self.core {
            Core::Tree(c) => c,
            Core::Flat(c) => c.as_mut(),
        }
    }

    fn tree(&self) -> Option<&TreeCore> {
        match &self.core {
            Core::Tree(c) => Some(c),
            Core::Flat(_) => None,
        }
    }

    /// This instance's id.
    pub fn id(&self) -> NodeId {
        self.strategy().id()
    }

    /// True on the root (the Cfg source of truth).
    pub fn is_root(&self) -> bool {
        self.id() == 0
    }

    /// Publishes a new version of a record this instance is the source of
    /// truth for (its own Dsc; any Cfg on the root; the Dsc of a node it
    /// drives through a BMC). Returns the version.
    ///
    /// The Dsc of another node (a BMC node this instance drives for a
    /// group it acts for) is also shared with that group: whoever takes
    /// the group over next then holds its latest version and publishes
    /// above it (its own version floor, its start time, may be below this
    /// instance's).
    pub fn publish(&mut self, now: Time, node: NodeId, kind: Kind, data: Bytes) -> u64 {
        let version = self.strategy_mut().publish(now, node, kind, data);
        if kind == Kind::Dsc && node != self.id() && !self.sides.is_empty() {
            let key = Key { node, kind };
            if let Some(r) = self.get(key).filter(|r| r.version == version) {
                self.share_acting(now, &r);
            }
        }
        version
    }

    /// Declares whether `node`'s Dsc is authored by the instance that
    /// drives its BMC (its Cfg names one) rather than by `node` itself:
    /// while it is, a Dsc of `node` sent by `node` itself is refused (one
    /// author per record; issue 12, finding 10). Set by the BMC driver and
    /// by the root. No effect in the flat baseline.
    pub fn set_bmc_authored(&mut self, node: NodeId, bmc: bool) {
        if let Core::Tree(t) = &mut self.core {
            t.set_authored_elsewhere(node, bmc);
        }
    }

    /// Marks a child's Dsc as failed with `data` (its last Dsc with the
    /// failure written in), upward.
    pub fn mark_failed(&mut self, now: Time, node: NodeId, data: Bytes) {
        self.strategy_mut().mark_failed(now, node, data);
    }

    /// The held record for `key`.
    pub fn get(&self, key: Key) -> Option<Record> {
        self.strategy().get(key)
    }

    /// Records held by the main core.
    pub fn held(&self) -> usize {
        match &self.core {
            Core::Tree(c) => c.held(),
            Core::Flat(c) => c.records(),
        }
    }

    /// True when `node` is in this instance's care now: its effective
    /// parent is this instance (a static child, or a member of a group this
    /// instance acts for). The flat baseline has no children.
    pub fn is_child(&self, node: NodeId) -> bool {
        self.tree()
            .is_some_and(|t| node != t.id() && t.parent_of(node) == Some(t.id()))
    }

    /// True when `r` is a failure mark (a Dsc a parent wrote for a child
    /// that went silent), not a report from the node itself.
    pub fn is_failure_mark(&self, r: &Record) -> bool {
        r.key.kind == Kind::Dsc && r.version % 2 == 1
    }

    /// True when this instance acts for group `group` now (it leads it and
    /// nobody replaced it, or it took over after a failover).
    pub fn acting_for(&self, group: u32) -> bool {
        self.sides.iter().any(|s| s.group == group && s.acting)
    }

    /// The groups this instance acts for whose sub-parent it is not.
    pub fn standing_in(&self) -> impl Iterator<Item = u32> + '_ {
        let me = self.id();
        self.sides
            .iter()
            .filter(move |s| s.acting && s.leader != me)
            .map(|s| s.group)
    }

    /// The member acting for the group `leader` leads, as this instance
    /// knows it (the flat baseline elects nobody: `leader`).
    pub fn acting_of(&self, leader: NodeId) -> NodeId {
        self.tree().map_or(leader, |t| t.acting(leader))
    }

    /// The groups this instance has a SWIM core for: `(group, leader)`.
    pub fn groups(&self) -> impl Iterator<Item = (u32, NodeId)> + '_ {
        self.sides.iter().map(|s| (s.group, s.leader))
    }

    /// The effective parent (`None` on the root and in the flat baseline).
    pub fn parent(&self) -> Option<NodeId> {
        self.tree().and_then(TreeCore::parent)
    }

    /// The state of the link to neighbour `peer`, if it is one.
    pub fn neighbor(&self, peer: NodeId) -> Option<NeighborState> {
        self.tree().and_then(|t| t.neighbor(peer))
    }

    /// The tree core's counters (`None` in the flat baseline).
    pub fn tree_stats(&self) -> Option<&TreeStats> {
        self.tree().map(TreeCore::stats)
    }

    /// The composition's own counters.
    pub fn stats(&self) -> StackStats {
        self.stats
    }

    /// Instances of the cluster.
    pub fn instances(&self) -> usize {
        match &self.core {
            Core::Tree(c) => c.routes_len(),
            Core::Flat(c) => c.members(),
        }
    }

    /// Members of group `group` this instance sees alive (its SWIM view).
    pub fn alive_in(&self, group: u32) -> Option<usize> {
        let s = self.sides.iter().find(|s| s.group == group)?;
        Some(s.core.alive().count())
    }

    /// The ranked members of group `group`, if this instance is in it.
    pub fn members_of(&self, group: u32) -> Option<&[NodeId]> {
        let s = self.sides.iter().find(|s| s.group == group)?;
        Some(s.core.group().ranked())
    }

    /// Crashes this instance where the driver cannot remove it (real
    /// sockets): from now on it is deaf and silent, as a dead machine.
    pub fn kill(&mut self) {
        self.dead = true;
    }

    /// The next event for the application.
    pub(crate) fn poll_event(&mut self) -> Option<StackEvent> {
        self.events.pop_front()
    }

    fn push(&mut self, e: StackEvent) {
        if self.events.len() >= STACK_EVENTS_MAX {
            self.events.pop_front();
            self.stats.events_dropped = self.stats.events_dropped.saturating_add(1);
        }
        self.events.push_back(e);
    }

    /// Moves what the cores produced into application events, running the
    /// hybrid wiring on the way. Returns whether anything happened.
    pub(crate) fn collect(&mut self, now: Time) -> bool {
        let mut any = self.drain_core(now);
        if !self.sides.is_empty() {
            any |= self.drain_sides(now);
            self.share_own(now);
            any |= self.drain_core(now);
        }
        any
    }

    fn drain_core(&mut self, now: Time) -> bool {
        let mut any = false;
        while let Some(e) = self.strategy_mut().poll_event() {
            any = true;
            let ev = match e {
                Event::Delivered(r) => {
                    // The acting member shares the Cfg it gets from above
                    // and the Dsc its group's members send it (their own
                    // gossip cores leave replication to the holders).
                    self.share_acting(now, &r);
                    StackEvent::Delivered(r)
                }
                Event::PeerDown(p) if self.is_child(p) => StackEvent::ChildDown(p),
                Event::PeerDown(p) => StackEvent::PeerDown(p),
                Event::PeerUp(p) if self.is_child(p) => StackEvent::ChildUp(p),
                Event::PeerUp(p) => StackEvent::PeerUp(p),
            };
            self.push(ev);
        }
        any
    }

    /// The groups' events: a new acting member re-routes the tree; the
    /// acting member absorbs the group's records.
    fn drain_sides(&mut self, now: Time) -> bool {
        let Core::Tree(tree) = &mut self.core else {
            return false;
        };
        let me = tree.id();
        let mut any = false;
        let mut changes = Vec::new();
        for side in &mut self.sides {
            while let Some(ev) = side.core.poll_event() {
                any = true;
                match ev {
                    GossipEvent::ActingChanged { acting, epoch } => {
                        tree.set_acting(now, side.leader, acting, epoch);
                        if acting == me {
                            for &node in side.core.group().ranked() {
                                for kind in [Kind::Cfg, Kind::Dsc] {
                                    if let Some(r) = side.core.get(Key { node, kind }) {
                                        tree.absorb(now, r);
                                    }
                                }
                            }
                        }
                        let now_acting = tree.acting(side.leader) == me;
                        if now_acting != side.acting {
                            side.acting = now_acting;
                            changes.push((side.group, side.leader, now_acting));
                        }
                    }
                    GossipEvent::Delivered(r) if side.acting => {
                        tree.absorb(now, r);
                    }
                    _ => {}
                }
            }
        }
        for (group, leader, on) in changes {
            if on && leader != me {
                self.stats.failovers = self.stats.failovers.saturating_add(1);
            } else if !on {
                self.stats.handbacks = self.stats.handbacks.saturating_add(1);
            }
            self.push(StackEvent::Acting { group, leader, on });
        }
        any
    }

    /// Shares our own Dsc with our groups when it changed.
    fn share_own(&mut self, now: Time) {
        let key = Key {
            node: self.id(),
            kind: Kind::Dsc,
        };
        let Some(r) = self.get(key).filter(|r| r.version > self.shared_dsc) else {
            return;
        };
        self.shared_dsc = r.version;
        for side in &mut self.sides {
            let _ = side.core.publish(now, r.clone());
        }
    }

    /// The acting member of a group shares with the group the Cfg it gets
    /// from above, the Dsc its members report and the Dsc it authors for
    /// the group's BMC nodes, so that a successor can serve the Cfg and
    /// supersede the BMC nodes' Dsc, and holds its members' latest Dsc.
    fn share_acting(&mut self, now: Time, r: &Record) {
        for side in &mut self.sides {
            if side.acting && side.core.group().contains(r.key.node) {
                let _ = side.core.publish(now, r.clone());
            }
        }
    }
}

impl Instance for Stack {
    fn id(&self) -> NodeId {
        Stack::id(self)
    }

    fn handle_frame(&mut self, now: Time, from: NodeId, frame: Frame) {
        if self.dead {
            return;
        }
        if let (Core::Tree(_), Some(frame::Body::Gossip(g))) = (&self.core, &frame.body) {
            let group = g.group;
            if let Some(side) = self.sides.iter_mut().find(|s| s.group == group) {
                side.core.handle_frame(now, from, frame);
            }
            return;
        }
        self.strategy_mut().handle_frame(now, from, frame);
    }

    fn handle_timeout(&mut self, now: Time) {
        if self.dead {
            return;
        }
        self.strategy_mut().handle_timeout(now);
        for side in &mut self.sides {
            side.core.handle_timeout(now);
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.dead {
            return None;
        }
        if let Some(t) = self.strategy_mut().poll_transmit() {
            return Some(t);
        }
        self.sides.iter_mut().find_map(|s| s.core.poll_transmit())
    }

    fn poll_timeout(&mut self) -> Option<Time> {
        if self.dead {
            return None;
        }
        let core = self.strategy_mut().poll_timeout();
        let sides = self
            .sides
            .iter()
            .filter_map(|s| s.core.poll_timeout())
            .min();
        [core, sides].into_iter().flatten().min()
    }
}
