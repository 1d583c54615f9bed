//! The probe: the application each loadtest instance runs on top of the
//! product's sync stack (`layercake::sync`), as an [`App`].
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
use layercake::daemon::control::RootHost;
use layercake::daemon::root::RootApp;
use layercake::sync::{App, Node as SyncNode, Stack, StackEvent};
use overlay::{Key, Kind, NodeId, Time};
use proto::loadtest::Generation;
use proto::node::{Node, PhysState, RunState};
use proto::prost::Message;

use crate::engine_leaf::{
    BusyWatch, EngineLeaf, EngineShared, IMAGE_NAME, image_digest, running_digest,
};

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

/// The probe application of one instance.
pub struct Probe {
    engine: EngineRole,
    /// Leaves: `(generation, when its Cfg arrived)`, in arrival order.
    pub cfg_arrivals: Vec<(u64, Time)>,
    /// Root only: the generation being tracked.
    pub track: Option<RootTrack>,
    /// Children this instance declared down.
    pub peers_down: u64,
    /// Root only, failover scenario: what it watches after the kill.
    pub watch: Option<FailoverWatch>,
    /// Root only, `--api`: the product's root, which gets every event
    /// first; the probe measures beside it.
    pub product: Option<Box<RootApp>>,
    /// Root only: the highest generation rolled out so far (a Dsc can
    /// carry a generation only after its roll-out).
    rolled_max: u64,
}

/// One loadtest instance: the probe on the product's sync stack.
pub type LoadNode = SyncNode<Probe>;

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

impl Probe {
    /// A probe with the engine `role`.
    pub fn new(engine: EngineRole) -> Probe {
        Probe {
            engine,
            cfg_arrivals: Vec::new(),
            track: None,
            peers_down: 0,
            watch: None,
            product: None,
            rolled_max: 0,
        }
    }

    fn on_root_dsc(&mut self, now: Time, node: NodeId, data: &[u8]) {
        let Some(t) = self.track.as_mut() else { return };
        let Ok(n) = Node::decode(data) else { return };
        let Some(g) = generation_in(&n) else { return };
        let run = n.run_state();
        // Scenario `roll`: rolled means running the generation's image.
        if let EngineRole::Root(shared) = &self.engine
            && shared.images()
            && running_digest(&n, IMAGE_NAME) != Some(image_digest(g))
        {
            return;
        }
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

    /// `--api`: the rollout is a write of the product's root: every
    /// leaf's Cfg, as the root holds it, gets the generation (and asks for
    /// POWER_ON and SYNC); the root stores and publishes the changes as it
    /// does after an API write's commit (the harness keeps no database of
    /// its rollouts).
    fn roll_out_product(
        &mut self,
        stack: &mut Stack,
        now: Time,
        generation: u64,
        is_leaf: &[bool],
    ) {
        let Some(r) = self.product.as_deref_mut() else {
            return;
        };
        self.track = Some(RootTrack {
            generation,
            converged: vec![None; is_leaf.len()],
            reached: 0,
            is_leaf: is_leaf.to_vec(),
        });
        let view = r.view();
        let changes: Vec<(String, Node)> = (0..view.len())
            .map(|i| {
                let mut cfg = view.get(i).cfg.as_deref().cloned().unwrap_or_default();
                cfg.phys_state = PhysState::PowerOn as i32;
                cfg.run_state = RunState::Sync as i32;
                set_generation(&mut cfg, generation);
                (view.name(i).to_string(), cfg)
            })
            .collect();
        r.apply(stack, changes, now);
    }

    /// A Cfg for this instance: with the engine, it drives the chain;
    /// without, its generation is echoed into the Dsc at once.
    fn own_cfg(&mut self, stack: &mut Stack, now: Time, data: &[u8]) {
        let me = stack.id();
        if let EngineRole::Leaf(leaf) = &mut self.engine {
            let Ok(cfg) = Node::decode(data) else {
                return;
            };
            if let Some(g) = generation_in(&cfg) {
                self.cfg_arrivals.push((g, now));
            }
            if let Some(dsc) = leaf.handle_cfg(cfg, ms(now)) {
                stack.publish(now, me, Kind::Dsc, dsc);
            }
        } else if let Ok(cfg) = Node::decode(data) {
            // Without the engine the Dsc mirrors the Cfg at once (for the
            // root's own Cfgs, `node_bytes(g, Sync)`, the same bytes), so
            // a Cfg written through `--api`'s REST API converges too.
            if let Some(g) = generation_in(&cfg) {
                self.cfg_arrivals.push((g, now));
            }
            stack.publish(now, me, Kind::Dsc, Bytes::from(cfg.encode_to_vec()));
        }
    }
}

impl RootHost for Probe {
    fn root(&self) -> Option<&RootApp> {
        self.product.as_deref()
    }

    fn root_mut(&mut self) -> Option<&mut RootApp> {
        self.product.as_deref_mut()
    }
}

impl App for Probe {
    fn on_start(&mut self, stack: &mut Stack, now: Time) {
        if let Some(r) = self.product.as_deref_mut() {
            r.on_start(stack, now);
        }
    }

    fn after_events(&mut self, stack: &mut Stack, now: Time) {
        if let Some(r) = self.product.as_deref_mut() {
            r.after_events(stack, now);
        }
    }

    fn on_event(&mut self, stack: &mut Stack, now: Time, event: StackEvent) {
        let me = stack.id();
        if let Some(r) = self.product.as_deref_mut() {
            r.on_event(stack, now, event.clone());
        }
        match event {
            StackEvent::Delivered(r) if r.key.kind == Kind::Cfg && r.key.node == me => {
                self.own_cfg(stack, now, &r.data);
            }
            StackEvent::Delivered(r) if r.key.kind == Kind::Dsc && stack.is_root() => {
                if let Some(w) = self.watch.as_mut() {
                    let n = r.key.node as usize;
                    let fresh = r.version > w.since[n] && !stack.is_failure_mark(&r);
                    if fresh && w.fresh_at[n].is_none() {
                        w.fresh_at[n] = Some(now);
                    }
                }
                self.on_root_dsc(now, r.key.node, &r.data);
            }
            StackEvent::ChildUp(p) | StackEvent::PeerUp(p) if stack.is_root() => {
                if let Some(w) = self.watch.as_mut()
                    && w.adopted_at[p as usize].is_none()
                {
                    w.adopted_at[p as usize] = Some(now);
                }
            }
            StackEvent::ChildDown(p) => {
                self.peers_down += 1;
                let key = Key {
                    node: p,
                    kind: Kind::Dsc,
                };
                let g = stack
                    .get(key)
                    .and_then(|r| generation_of(&r.data))
                    .map_or(0, |x| x.0);
                stack.mark_failed(now, p, node_bytes(g, RunState::Error));
            }
            _ => {}
        }
    }

    fn on_timeout(&mut self, stack: &mut Stack, now: Time) {
        if let EngineRole::Leaf(leaf) = &mut self.engine
            && let Some(dsc) = leaf.handle_timeout(ms(now))
        {
            let me = stack.id();
            stack.publish(now, me, Kind::Dsc, dsc);
        }
    }

    fn poll_timeout(&self) -> Option<Time> {
        match &self.engine {
            EngineRole::Leaf(leaf) => leaf.poll_timeout().map(Duration::from_millis),
            _ => None,
        }
    }
}

/// What the scenarios and checkers ask of a loadtest instance.
pub trait Probing {
    /// Root: starts watching for fresh Dsc and adoptions (failover).
    fn watch_failover(&mut self);
    /// The acting member of the group `leader` leads, as this instance
    /// knows it.
    fn acting(&self, leader: NodeId) -> NodeId;
    /// A one-line account of this instance for diagnosing a stalled run.
    fn diag(&self, about: NodeId) -> String;
    /// Root: up to `max` leaves not yet converged on the tracked
    /// generation.
    fn missing(&self, max: usize) -> Vec<NodeId>;
    /// Root: publishes `generation` as the Cfg of every leaf and starts
    /// tracking it.
    fn roll_out(&mut self, now: Time, generation: u64, is_leaf: &[bool]);
    /// A leaf with the engine says it is busy or free (as `layercake busy`
    /// and `layercake free` on a node) and publishes its Dsc.
    fn set_busy(&mut self, now: Time, busy: bool);
    /// A leaf with the engine: its Busy checker.
    fn busy_watch(&self) -> Option<&BusyWatch>;
}

impl Probing for LoadNode {
    fn set_busy(&mut self, now: Time, busy: bool) {
        self.with(now, |p, stack| {
            if let EngineRole::Leaf(leaf) = &mut p.engine
                && let Some(dsc) = leaf.set_busy(busy, ms(now))
            {
                let me = stack.id();
                stack.publish(now, me, Kind::Dsc, dsc);
            }
        });
    }

    fn busy_watch(&self) -> Option<&BusyWatch> {
        match &self.app().engine {
            EngineRole::Leaf(leaf) => Some(leaf.busy_watch()),
            _ => None,
        }
    }

    fn watch_failover(&mut self) {
        let n = self.stack().instances();
        let since = (0..n as NodeId)
            .map(|node| {
                self.stack()
                    .get(Key {
                        node,
                        kind: Kind::Dsc,
                    })
                    .map_or(0, |r| r.version)
            })
            .collect();
        self.with_app(|p| {
            p.watch = Some(FailoverWatch {
                since,
                fresh_at: vec![None; n],
                adopted_at: vec![None; n],
            });
        });
    }

    fn acting(&self, leader: NodeId) -> NodeId {
        self.stack().acting_of(leader)
    }

    fn diag(&self, about: NodeId) -> String {
        let s = self.stack();
        let held = |node, kind| {
            s.get(Key { node, kind }).map(|r| {
                let g = generation_of(&r.data).map(|(g, run)| format!("{g}/{run:?}"));
                format!("v{} g{}", r.version, g.unwrap_or_default())
            })
        };
        let parent = s.parent();
        let groups: Vec<String> = s
            .groups()
            .map(|(g, leader)| {
                format!(
                    "group {g} leader {leader} acting {} alive {:?}",
                    s.acting_of(leader),
                    s.alive_in(g)
                )
            })
            .collect();
        format!(
            "id {}: parent {parent:?} parent-link {:?}; cfg({about}) {:?} dsc({about}) {:?}; groups [{}]; arrivals {:?}",
            s.id(),
            parent.and_then(|p| s.neighbor(p)),
            held(about, Kind::Cfg),
            held(about, Kind::Dsc),
            groups.join("; "),
            self.app().cfg_arrivals.last()
        )
    }

    fn missing(&self, max: usize) -> Vec<NodeId> {
        let Some(t) = &self.app().track else {
            return Vec::new();
        };
        (0..t.converged.len())
            .filter(|&i| t.is_leaf[i] && t.converged[i].is_none())
            .take(max)
            .map(|i| i as NodeId)
            .collect()
    }

    fn roll_out(&mut self, now: Time, generation: u64, is_leaf: &[bool]) {
        if self.app().product.is_some() {
            return self.with(now, |p, stack| {
                p.roll_out_product(stack, now, generation, is_leaf)
            });
        }
        self.with(now, |p, stack| {
            let data = match &p.engine {
                EngineRole::Root(shared) => Bytes::from(shared.cfg(generation).encode_to_vec()),
                _ => node_bytes(generation, RunState::Sync),
            };
            p.track = Some(RootTrack {
                generation,
                converged: vec![None; is_leaf.len()],
                reached: 0,
                is_leaf: is_leaf.to_vec(),
            });
            for (id, _) in is_leaf.iter().enumerate().filter(|(_, l)| **l) {
                stack.publish(now, id as NodeId, Kind::Cfg, data.clone());
            }
            // Dsc that already matches (nothing changed) counts at once;
            // none can before the generation's first roll-out (and this
            // pass decodes 100,000 Dsc records in the window it measures).
            let again = generation <= p.rolled_max;
            p.rolled_max = p.rolled_max.max(generation);
            if !again {
                return;
            }
            for (id, _) in is_leaf.iter().enumerate().filter(|(_, l)| **l) {
                let key = Key {
                    node: id as NodeId,
                    kind: Kind::Dsc,
                };
                if let Some(r) = stack.get(key) {
                    p.on_root_dsc(now, id as NodeId, &r.data);
                }
            }
        });
    }
}
