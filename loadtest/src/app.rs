//! The application each loadtest instance runs on top of its sync core.
//!
//! - Leaves apply a Cfg by copying its generation into their Dsc and note
//!   when each generation arrived (`down` times).
//! - Sub-parents mark a child that went down as RunState ERROR upward.
//! - The root publishes a generation for every leaf and notes when each
//!   leaf's matching Dsc arrives (`converge` times).
//!
//! Payloads are real `Node` messages carrying a `layercake.loadtest.Generation`
//! extension, so record sizes are those of the product.

use bytes::Bytes;
use overlay::strategy::{Event, Strategy};
use overlay::{Instance, Key, Kind, NodeId, Time, Transmit};
use proto::loadtest::Generation;
use proto::node::{Node, PhysState, RunState};
use proto::overlay::Frame;
use proto::prost::Message;
use sync_tree::TreeCore;

const GENERATION_URL: &str = "type.googleapis.com/layercake.loadtest.Generation";

/// Encodes a node state carrying `generation`.
pub fn node_bytes(generation: u64, run: RunState) -> Bytes {
    let ext = proto::prost_types::Any {
        type_url: GENERATION_URL.to_string(),
        value: Generation { generation }.encode_to_vec(),
    };
    let n = Node {
        run_state: run as i32,
        phys_state: PhysState::PowerOn as i32,
        extensions: vec![ext],
        ..Default::default()
    };
    Bytes::from(n.encode_to_vec())
}

/// The generation carried by an encoded node state, if any.
pub fn generation_of(data: &[u8]) -> Option<(u64, RunState)> {
    let n = Node::decode(data).ok()?;
    let ext = n.extensions.iter().find(|a| a.type_url == GENERATION_URL)?;
    let g = Generation::decode(ext.value.as_slice()).ok()?;
    Some((g.generation, n.run_state()))
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

/// One loadtest instance: a sync core and the application above it.
pub struct LoadNode {
    core: TreeCore,
    /// Leaves: `(generation, when its Cfg arrived)`, in arrival order.
    pub cfg_arrivals: Vec<(u64, Time)>,
    /// Root only: the generation being tracked.
    pub track: Option<RootTrack>,
    /// Children this instance declared down.
    pub peers_down: u64,
}

impl LoadNode {
    /// Wraps a core.
    pub fn new(core: TreeCore) -> LoadNode {
        LoadNode {
            core,
            cfg_arrivals: Vec::new(),
            track: None,
            peers_down: 0,
        }
    }

    /// Root: publishes `generation` as the Cfg of every leaf and starts
    /// tracking it.
    pub fn roll_out(&mut self, now: Time, generation: u64, is_leaf: &[bool]) {
        let data = node_bytes(generation, RunState::Sync);
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
        let slot = &mut t.converged[node as usize];
        if g == t.generation && run == RunState::Sync && slot.is_none() && t.is_leaf[node as usize]
        {
            *slot = Some(now);
            t.reached += 1;
        }
    }

    fn pump(&mut self, now: Time) {
        let me = self.core.id();
        while let Some(e) = self.core.poll_event() {
            match e {
                Event::Delivered(r) if r.key.kind == Kind::Cfg && r.key.node == me => {
                    if let Some((g, _)) = generation_of(&r.data) {
                        self.cfg_arrivals.push((g, now));
                        self.core
                            .publish(now, me, Kind::Dsc, node_bytes(g, RunState::Sync));
                    }
                }
                Event::Delivered(r) if r.key.kind == Kind::Dsc && me == 0 => {
                    self.on_root_dsc(now, r.key.node, &r.data);
                }
                Event::PeerDown(p) if self.core.neighbor(p).is_some() && p > me => {
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
        self.core.handle_frame(now, from, frame);
        self.pump(now);
    }
    fn handle_timeout(&mut self, now: Time) {
        self.core.handle_timeout(now);
        self.pump(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.core.poll_transmit()
    }
    fn poll_timeout(&mut self) -> Option<Time> {
        self.core.poll_timeout()
    }
}
