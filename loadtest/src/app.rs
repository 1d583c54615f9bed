//! The application each loadtest instance runs on top of its sync core.
//!
//! - Leaves apply a Cfg by copying its generation into their Dsc and note
//!   when each generation arrived (`down` times).
//! - Sub-parents mark a child that went down as RunState ERROR upward.
//! - The root publishes a generation for every leaf and notes when each
//!   leaf's matching Dsc arrives (`converge` times).
//! - With `--engine` ([`EngineRole`]), a leaf instead hands each Cfg to its
//!   state engine and publishes the engine's Dsc, which carries the
//!   generation only once the engine converged on it (see
//!   [`crate::engine_leaf`]); the root's Cfgs are real power and boot
//!   targets.
//!
//! Payloads are real `Node` messages carrying a `layercake.loadtest.Generation`
//! extension, so record sizes are those of the product.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use overlay::strategy::{Event, Strategy};
use overlay::{Instance, Key, Kind, NodeId, Time, Transmit};
use proto::loadtest::Generation;
use proto::node::{Node, PhysState, RunState};
use proto::overlay::{Frame, frame};
use proto::prost::Message;
use sync_gossip::{FlatGossip, GossipCore, GossipEvent};
use sync_tree::TreeCore;

use crate::engine_leaf::{EngineLeaf, EngineShared};

const GENERATION_URL: &str = "type.googleapis.com/layercake.loadtest.Generation";

/// Encodes a node state carrying `generation`.
pub fn node_bytes(generation: u64, run: RunState) -> Bytes {
    let mut n = Node {
        run_state: run as i32,
        phys_state: PhysState::PowerOn as i32,
        ..Default::default()
    };
    set_generation(&mut n, generation);
    Bytes::from(n.encode_to_vec())
}

/// Sets (or replaces) the `Generation` extension of `n`.
pub fn set_generation(n: &mut Node, generation: u64) {
    let value = Generation { generation }.encode_to_vec();
    match n
        .extensions
        .iter_mut()
        .find(|a| a.type_url == GENERATION_URL)
    {
        Some(a) => a.value = value,
        None => n.extensions.push(proto::prost_types::Any {
            type_url: GENERATION_URL.to_string(),
            value,
        }),
    }
}

/// The generation carried by a node state, if any.
pub fn generation_in(n: &Node) -> Option<u64> {
    let ext = n.extensions.iter().find(|a| a.type_url == GENERATION_URL)?;
    Some(Generation::decode(ext.value.as_slice()).ok()?.generation)
}

/// The generation carried by an encoded node state, if any.
pub fn generation_of(data: &[u8]) -> Option<(u64, RunState)> {
    let n = Node::decode(data).ok()?;
    Some((generation_in(&n)?, n.run_state()))
}

/// Milliseconds of an instance time (the engine's clock unit).
fn ms(now: Time) -> u64 {
    now.as_millis() as u64
}

/// What the root tracks for the generation being rolled out.
pub struct RootTrack {
    /// The generation being measured.
    pub generation: u64,
    /// Per instance id: when the root first held a matching Dsc.
    pub converged: Vec<Option<Time>>,
    /// Leaves that have converged.
    pub reached: usize,
    /// Which ids are leaves.
    pub is_leaf: Vec<bool>,
}

/// Whether and how the state engine runs on an instance (`--engine`).
pub enum EngineRole {
    /// No engine: leaves copy the Cfg's generation into their Dsc at once
    /// (also sub-parents with `--engine`: they only relay).
    Off,
    /// The root with `--engine`: publishes real power and boot Cfgs.
    Root(Arc<EngineShared>),
    /// A leaf with `--engine`: runs the engine and its virtual modules.
    Leaf(Box<EngineLeaf>),
}

/// The sync core of an instance: the tree (strategies `tree` and `hybrid`)
/// or one member of the flat SWIM group (strategy `gossip`).
// One per instance; the common variant stays inline (the flat one is boxed).
#[allow(clippy::large_enum_variant)]
pub enum Core {
    /// Hellos up and down the tree.
    Tree(TreeCore),
    /// The whole cluster as one SWIM group.
    Flat(Box<FlatGossip>),
}

impl Core {
    fn strategy(&self) -> &dyn Strategy {
        match self {
            Core::Tree(c) => c,
            Core::Flat(c) => c.as_ref(),
        }
    }

    fn strategy_mut(&mut self) -> &mut dyn Strategy {
        match self {
            Core::Tree(c) => c,
            Core::Flat(c) => c.as_mut(),
        }
    }

    fn id(&self) -> NodeId {
        self.strategy().id()
    }

    fn get(&self, key: Key) -> Option<overlay::Record> {
        self.strategy().get(key)
    }

    fn publish(&mut self, now: Time, node: NodeId, kind: Kind, data: Bytes) -> u64 {
        self.strategy_mut().publish(now, node, kind, data)
    }

    fn mark_failed(&mut self, now: Time, node: NodeId, data: Bytes) {
        self.strategy_mut().mark_failed(now, node, data);
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.strategy_mut().poll_event()
    }

    /// Instances of the cluster.
    fn instances(&self) -> usize {
        match self {
            Core::Tree(c) => c.routes_len(),
            Core::Flat(c) => c.members(),
        }
    }

    /// The acting member of `leader`'s group (the flat group has none).
    fn acting(&self, leader: NodeId) -> NodeId {
        match self {
            Core::Tree(c) => c.acting(leader),
            Core::Flat(_) => leader,
        }
    }

    /// Whether `p` is a tree neighbour (whose death we mark upward).
    fn is_neighbor(&self, p: NodeId) -> bool {
        match self {
            Core::Tree(c) => c.neighbor(p).is_some(),
            Core::Flat(_) => false,
        }
    }

    fn tree_mut(&mut self) -> Option<&mut TreeCore> {
        match self {
            Core::Tree(c) => Some(c),
            Core::Flat(_) => None,
        }
    }
}

/// One loadtest instance: a sync core and the application above it.
pub struct LoadNode {
    core: Core,
    engine: EngineRole,
    /// Leaves: `(generation, when its Cfg arrived)`, in arrival order.
    pub cfg_arrivals: Vec<(u64, Time)>,
    /// Root only: the generation being tracked.
    pub track: Option<RootTrack>,
    /// Children this instance declared down.
    pub peers_down: u64,
    /// Root only, failover scenario: what it watches after the kill.
    pub watch: Option<FailoverWatch>,
    /// Hybrid strategy: the SWIM groups this instance belongs to.
    sides: Vec<Side>,
    /// Version of our own Dsc last shared with the groups.
    shared_dsc: u64,
    /// Crashed (UDP failover): ignores everything and sends nothing.
    dead: bool,
}

/// One SWIM group of an instance (hybrid strategy).
pub struct Side {
    /// The topology's sub-parent of the group.
    pub leader: NodeId,
    /// The gossip core.
    pub core: GossipCore,
}

/// What the root records after sub-parents are killed.
pub struct FailoverWatch {
    /// Per instance: the Dsc version the root held at the kill.
    pub since: Vec<u64>,
    /// Per instance: when the root first held a newer Dsc (re-homed).
    pub fresh_at: Vec<Option<Time>>,
    /// Per instance: when it first became the root's neighbour (adopted
    /// after a fallback or announced as acting).
    pub adopted_at: Vec<Option<Time>>,
}

impl LoadNode {
    /// Root: starts watching for fresh Dsc and adoptions (failover).
    pub fn watch_failover(&mut self) {
        let n = self.core.instances();
        let since = (0..n as NodeId)
            .map(|node| {
                self.core
                    .get(Key {
                        node,
                        kind: Kind::Dsc,
                    })
                    .map_or(0, |r| r.version)
            })
            .collect();
        self.watch = Some(FailoverWatch {
            since,
            fresh_at: vec![None; n],
            adopted_at: vec![None; n],
        });
    }

    /// The acting member of the group `leader` leads, as this instance
    /// knows it.
    pub fn acting(&self, leader: NodeId) -> NodeId {
        self.core.acting(leader)
    }

    /// The record this instance holds for `key` (read by checkers such as
    /// the fault campaign).
    pub fn record(&self, key: Key) -> Option<overlay::Record> {
        self.core.get(key)
    }

    /// Wraps a core (no engine).
    pub fn new(core: Core) -> LoadNode {
        LoadNode::with_engine(core, EngineRole::Off)
    }

    /// Wraps a core with the engine `role`.
    pub fn with_engine(core: Core, engine: EngineRole) -> LoadNode {
        LoadNode {
            core,
            engine,
            cfg_arrivals: Vec::new(),
            track: None,
            peers_down: 0,
            watch: None,
            sides: Vec::new(),
            shared_dsc: 0,
            dead: false,
        }
    }

    /// A one-line account of this instance for diagnosing a stalled run:
    /// its parent and acting views, what it holds of its own records, and
    /// (on the root) what it holds of `about`.
    pub fn diag(&self, about: NodeId) -> String {
        let held = |node, kind| {
            self.core.get(Key { node, kind }).map(|r| {
                let g = generation_of(&r.data).map(|(g, run)| format!("{g}/{run:?}"));
                format!("v{} g{}", r.version, g.unwrap_or_default())
            })
        };
        let me = self.core.id();
        let tree = match &self.core {
            Core::Tree(t) => format!(
                "parent {:?} parent-link {:?}",
                t.parent(),
                t.parent().and_then(|p| t.neighbor(p))
            ),
            Core::Flat(_) => "flat".into(),
        };
        let sides: Vec<String> = self
            .sides
            .iter()
            .map(|s| {
                let a = s.core.acting();
                format!(
                    "group {} leader {} acting {}@{} alive {}",
                    s.core.group().group(),
                    s.leader,
                    a.member,
                    a.epoch,
                    s.core.alive().count()
                )
            })
            .collect();
        format!(
            "id {me}: {tree}; cfg({about}) {:?} dsc({about}) {:?}; sides [{}]; arrivals {:?}",
            held(about, Kind::Cfg),
            held(about, Kind::Dsc),
            sides.join("; "),
            self.cfg_arrivals.last()
        )
    }

    /// Root: up to `max` leaves not yet converged on the tracked generation.
    pub fn missing(&self, max: usize) -> Vec<NodeId> {
        let Some(t) = &self.track else {
            return Vec::new();
        };
        (0..t.converged.len())
            .filter(|&i| t.is_leaf[i] && t.converged[i].is_none())
            .take(max)
            .map(|i| i as NodeId)
            .collect()
    }

    /// Crashes this instance where the driver cannot remove it (real
    /// sockets): from now on it is silent and deaf, as a dead machine.
    pub fn kill(&mut self) {
        self.dead = true;
    }

    /// Adds the SWIM groups of the hybrid strategy.
    pub fn with_sides(mut self, sides: Vec<Side>) -> LoadNode {
        self.sides = sides;
        self
    }

    /// Hybrid: handles the groups' events. A change of acting member
    /// re-routes the tree; the acting member takes the group's records from
    /// the sideways replica so it can serve the group at once.
    fn pump_sides(&mut self, now: Time) {
        let me = self.core.id();
        for side in &mut self.sides {
            while let Some(ev) = side.core.poll_event() {
                match ev {
                    GossipEvent::ActingChanged { acting, epoch } => {
                        let Some(tree) = self.core.tree_mut() else {
                            continue;
                        };
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
                    }
                    GossipEvent::Delivered(r) if self.core.acting(side.leader) == me => {
                        if let Some(tree) = self.core.tree_mut() {
                            tree.absorb(now, r);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Hybrid: shares our own Dsc with our groups when it changed.
    fn share_own(&mut self, now: Time) {
        if self.sides.is_empty() {
            return;
        }
        let key = Key {
            node: self.core.id(),
            kind: Kind::Dsc,
        };
        let Some(r) = self.core.get(key).filter(|r| r.version > self.shared_dsc) else {
            return;
        };
        self.shared_dsc = r.version;
        for side in &mut self.sides {
            let _ = side.core.publish(now, r.clone());
        }
    }

    /// Hybrid: the acting member of a group shares the Cfg it gets from
    /// above with the group, so that a successor can serve it.
    fn share_cfg(&mut self, now: Time, r: &overlay::Record) {
        let me = self.core.id();
        for side in &mut self.sides {
            if side.core.group().contains(r.key.node) && self.core.acting(side.leader) == me {
                let _ = side.core.publish(now, r.clone());
            }
        }
    }

    /// Root: publishes `generation` as the Cfg of every leaf and starts
    /// tracking it.
    pub fn roll_out(&mut self, now: Time, generation: u64, is_leaf: &[bool]) {
        let data = match &self.engine {
            EngineRole::Root(shared) => Bytes::from(shared.cfg(generation).encode_to_vec()),
            _ => node_bytes(generation, RunState::Sync),
        };
        self.track = Some(RootTrack {
            generation,
            converged: vec![None; is_leaf.len()],
            reached: 0,
            is_leaf: is_leaf.to_vec(),
        });
        for (id, _) in is_leaf.iter().enumerate().filter(|(_, l)| **l) {
            self.core
                .publish(now, id as NodeId, Kind::Cfg, data.clone());
        }
        // Dsc that already matches (nothing changed) counts at once.
        for (id, _) in is_leaf.iter().enumerate().filter(|(_, l)| **l) {
            let key = Key {
                node: id as NodeId,
                kind: Kind::Dsc,
            };
            if let Some(r) = self.core.get(key) {
                self.on_root_dsc(now, id as NodeId, &r.data);
            }
        }
    }

    fn on_root_dsc(&mut self, now: Time, node: NodeId, data: &[u8]) {
        let Some(t) = self.track.as_mut() else { return };
        let Some((g, run)) = generation_of(data) else {
            return;
        };
        // With the engine a leaf adds the generation only once converged
        // (and a powered-off node's RunState is unknown); a Dsc marked
        // ERROR by a sub-parent never counts.
        let run_ok = match self.engine {
            EngineRole::Root(_) => run != RunState::Error,
            _ => run == RunState::Sync,
        };
        let slot = &mut t.converged[node as usize];
        if g == t.generation && run_ok && slot.is_none() && t.is_leaf[node as usize] {
            *slot = Some(now);
            t.reached += 1;
        }
    }

    fn pump(&mut self, now: Time) {
        let me = self.core.id();
        while let Some(e) = self.core.poll_event() {
            if let Event::Delivered(r) = &e
                && r.key.kind == Kind::Cfg
                && !self.sides.is_empty()
            {
                let r = r.clone();
                self.share_cfg(now, &r);
            }
            match e {
                Event::Delivered(r) if r.key.kind == Kind::Cfg && r.key.node == me => {
                    if let EngineRole::Leaf(leaf) = &mut self.engine {
                        let Ok(cfg) = Node::decode(r.data.as_ref()) else {
                            continue;
                        };
                        if let Some(g) = generation_in(&cfg) {
                            self.cfg_arrivals.push((g, now));
                        }
                        if let Some(dsc) = leaf.handle_cfg(cfg, ms(now)) {
                            self.core.publish(now, me, Kind::Dsc, dsc);
                        }
                    } else if let Some((g, _)) = generation_of(&r.data) {
                        self.cfg_arrivals.push((g, now));
                        self.core
                            .publish(now, me, Kind::Dsc, node_bytes(g, RunState::Sync));
                    }
                }
                Event::Delivered(r) if r.key.kind == Kind::Dsc && me == 0 => {
                    if let Some(w) = self.watch.as_mut() {
                        let n = r.key.node as usize;
                        if r.version > w.since[n] && r.version % 2 == 0 && w.fresh_at[n].is_none() {
                            w.fresh_at[n] = Some(now);
                        }
                    }
                    self.on_root_dsc(now, r.key.node, &r.data);
                }
                Event::PeerUp(p) if me == 0 => {
                    if let Some(w) = self.watch.as_mut()
                        && w.adopted_at[p as usize].is_none()
                    {
                        w.adopted_at[p as usize] = Some(now);
                    }
                }
                Event::PeerDown(p) if self.core.is_neighbor(p) && p > me => {
                    self.peers_down += 1;
                    let key = Key {
                        node: p,
                        kind: Kind::Dsc,
                    };
                    let g = self
                        .core
                        .get(key)
                        .and_then(|r| generation_of(&r.data))
                        .map_or(0, |x| x.0);
                    self.core
                        .mark_failed(now, p, node_bytes(g, RunState::Error));
                }
                _ => {}
            }
        }
    }
}

impl Instance for LoadNode {
    fn id(&self) -> NodeId {
        self.core.id()
    }
    fn handle_frame(&mut self, now: Time, from: NodeId, frame: Frame) {
        if self.dead {
            return;
        }
        if let Core::Flat(_) = self.core {
            self.core.strategy_mut().handle_frame(now, from, frame);
        } else if let Some(frame::Body::Gossip(g)) = &frame.body {
            let group = g.group;
            if let Some(side) = self
                .sides
                .iter_mut()
                .find(|s| s.core.group().group() == group)
            {
                side.core.handle_frame(now, from, frame);
            }
        } else {
            self.core.strategy_mut().handle_frame(now, from, frame);
        }
        self.after(now);
    }
    fn handle_timeout(&mut self, now: Time) {
        if self.dead {
            return;
        }
        self.core.strategy_mut().handle_timeout(now);
        for side in &mut self.sides {
            side.core.handle_timeout(now);
        }
        self.pump(now);
        if let EngineRole::Leaf(leaf) = &mut self.engine
            && let Some(dsc) = leaf.handle_timeout(ms(now))
        {
            let me = self.core.id();
            self.core.publish(now, me, Kind::Dsc, dsc);
        }
        self.after(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.dead {
            return None;
        }
        if let Some(t) = self.core.strategy_mut().poll_transmit() {
            return Some(t);
        }
        self.sides.iter_mut().find_map(|s| s.core.poll_transmit())
    }
    fn poll_timeout(&mut self) -> Option<Time> {
        if self.dead {
            return None;
        }
        let core = self.core.strategy_mut().poll_timeout();
        let engine = match &self.engine {
            EngineRole::Leaf(leaf) => leaf.poll_timeout().map(Duration::from_millis),
            _ => None,
        };
        let sides = self
            .sides
            .iter_mut()
            .filter_map(|s| s.core.poll_timeout())
            .min();
        [core, engine, sides].into_iter().flatten().min()
    }
}

impl LoadNode {
    /// After any input: tree events, group events, our Dsc to the groups
    /// (whose events may in turn move the tree).
    fn after(&mut self, now: Time) {
        self.pump(now);
        if !self.sides.is_empty() {
            self.pump_sides(now);
            self.share_own(now);
            self.pump(now);
        }
    }
}
