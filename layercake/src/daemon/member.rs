//! Every instance but the root: a sync core and, on a leaf, the node's own
//! state engine with the virtual power and boot modules.
//!
//! - [`MemberApp`]: the [`App`] of every instance but the root, on the
//!   sync stack ([`crate::sync`]): a Cfg for this node goes to the engine;
//!   a child that went silent is marked failed upward; the engine's
//!   deadlines are the app's own; the engine's Dsc is published whenever
//!   it changes.
//! - [`NodeRuntime`]: one node's [`NodeEngine`] and the [`VirtualWorld`]
//!   that performs its module calls, plus the mutation metrics.
//!
//! **Simplification (documented in `docs/cli.md`):** the engine runs with
//! [`Relation::All`]: the node performs CHILD-context steps (power, PXE)
//! itself against its virtual machine. On a real cluster those steps run on
//! the node's parent (its sub-parent) with real power and PXE modules; the
//! virtual modules make no difference between the two.
//!
//! **BMC nodes (CHILD context for real):** a node whose Cfg names a BMC
//! (`layercake.power.Power/Protocol` ipmi, redfish or virtual) has no
//! process of its own. Its sub-parent's [`MemberApp`] holds a
//! [`BmcHost`] (attached with [`MemberApp::attach_bmc`]) that receives the
//! child's Cfg from the overlay, runs the power steps through the backends
//! (`crate::daemon::bmc` starts the driver task) and is the only author of the
//! child's Dsc, published with [`Strategy::publish`]; the child's silence is
//! not reported as a failure.
//!
//! **Network boot:** with `--boot-server`, the same host boots children
//! whose Cfg names a `Network/Mac` (`crate::daemon::boot` runs the
//! servers). The child's agent (layer 0's `layercake run`) saying hello
//! to this instance ([`StackEvent::ChildUp`]) completes its boot (RunState
//! SYNC, PXE COMP); its silence ([`StackEvent::ChildDown`]) makes the
//! host drive the boot chain again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::driver::{Driver, Step};
use engine::executor::Relation;
use engine::virt::VirtualConfig;
use overlay::{Key, Kind, NodeId, Time};
use prost::Message;
use proto::node::{Busy, Node, RunState};

use crate::daemon::metrics as m;
use crate::daemon::model::Model;
use crate::modules::image::host::Input as ImageInput;
use crate::modules::image::spec::Wanted;
use crate::modules::power::config::{Protocol, power_of};
use crate::modules::power::host::BmcHost;
use crate::modules::power::setup::ChildPlaces;
use crate::modules::pxe::network::NodeNet;
use crate::sync::{App, Stack, StackEvent};
use sync_tree::NeighborState;
use tokio::sync::mpsc;

/// Milliseconds of an instance time (the engine's clock unit).
fn ms(now: Time) -> u64 {
    now.as_millis() as u64
}

/// One node's engine driven against its virtual machine
/// ([`engine::driver::Driver`], the one engine driver), plus the mutation
/// metrics and what the node publishes.
pub struct NodeRuntime {
    model: Arc<Model>,
    driver: Driver,
    /// The image host's inputs (`run --images`).
    images: Option<mpsc::Sender<ImageInput>>,
    published: Option<Bytes>,
    /// The Cfg names a BMC: the sub-parent authors this node's Dsc.
    parent_drives: bool,
    /// The Dsc RunState was SYNC at the last look (images may run).
    in_sync: bool,
}

impl NodeRuntime {
    /// The engine of node `name` with a virtual machine seeded by `seed`.
    pub fn new(model: Arc<Model>, name: &str, modules: VirtualConfig, seed: u64) -> NodeRuntime {
        let driver = Driver::new(
            model.graph.clone(),
            model.registry.clone(),
            Relation::All,
            name,
            modules,
            seed,
        );
        NodeRuntime {
            model,
            driver,
            images: None,
            published: None,
            parent_drives: false,
            in_sync: false,
        }
    }

    /// A new Cfg from the root; a re-delivery of the same Cfg changes
    /// nothing. Freezing happens before the new target, thawing after.
    pub fn handle_cfg(&mut self, cfg: Node, now_ms: u64) {
        if *self.driver.cfg() == cfg {
            return;
        }
        let bmc =
            power_of(&cfg).is_some_and(|p| matches!(Protocol::parse(&p.protocol), Ok(Some(_))));
        if bmc && !self.parent_drives {
            let netboot = matches!(NodeNet::of(&cfg), Ok(Some(_)));
            if netboot {
                // Layer 0's agent: its sub-parent booted it and reports it.
                tracing::info!(
                    "{}: booted from the network by the sub-parent, which reports this node",
                    cfg.nodename
                );
            } else {
                tracing::warn!(
                    "{}: the Cfg names a BMC; the sub-parent drives and reports this node, \
                     this process stops publishing its Dsc",
                    cfg.nodename
                );
            }
        }
        self.parent_drives = bmc;
        if let Some(tx) = &self.images {
            send(tx, ImageInput::Cfg(Wanted::from_cfg(&cfg)));
        }
        let frozen = self.model.frozen(&cfg);
        let was = self.model.frozen(self.driver.cfg());
        if let Err(e) = self
            .driver
            .set_cfg(cfg, now_ms, frozen && !was, !frozen && was)
        {
            tracing::warn!("engine rejected a Cfg: {e}");
        }
        self.record_steps();
    }

    /// Hands the image steps to the image host behind `tx` (the engine no
    /// longer performs them virtually) and tells it the current Cfg.
    pub fn attach_images(&mut self, tx: mpsc::Sender<ImageInput>) {
        self.driver.set_external(&["image"]);
        send(&tx, ImageInput::Cfg(Wanted::from_cfg(self.driver.cfg())));
        self.images = Some(tx);
    }

    /// Dsc values the image host reports; a finished step completes here.
    pub fn image_dsc(&mut self, values: &[(engine::url::Path, engine::value::Value)], now_ms: u64) {
        if let Err(e) = self.driver.set_dsc_values(values, now_ms) {
            tracing::warn!("image host values: {e}");
        }
        self.record_steps();
    }

    /// The node reports itself busy (`true`) or free: its Dsc `/Busy`;
    /// a step waiting for it to be free starts in this call.
    pub fn set_busy(&mut self, busy: bool, now_ms: u64) {
        let v = if busy { Busy::Busy } else { Busy::Free };
        let path = engine::url::Path::Field(engine::url::Field::Busy);
        let values = [(path, engine::value::Value::Enum(v as i32))];
        if let Err(e) = self.driver.set_dsc_values(&values, now_ms) {
            tracing::warn!("setting /Busy: {e}");
        }
        self.record_steps();
    }

    /// What the chain waits for (`(mutation, conditions)`), if anything.
    pub fn waiting(&self) -> Option<(String, String)> {
        self.driver.waiting()
    }

    /// Delivers completions and deadlines due at `now_ms` and starts the
    /// module calls the engine asks for.
    pub fn drive(&mut self, now_ms: u64) {
        self.driver.drive(now_ms);
        self.record_steps();
    }

    /// Turns the driver's step reports into the mutation metrics and hands
    /// external steps to the image host.
    fn record_steps(&mut self) {
        let sync = self.driver.dsc().run_state == RunState::Sync as i32;
        if std::mem::replace(&mut self.in_sync, sync) && !sync {
            // Why: layer 1 runs on layer 0; a node that left SYNC (however:
            // a FATAL set does not hold power off) runs no containers.
            if let Some(tx) = &self.images {
                send(tx, ImageInput::Call("image_stop_all".into()));
            }
        }
        while let Some(c) = self.driver.poll_external() {
            let name = self.model.graph.mutation(c.mutation).name.clone();
            match &self.images {
                Some(tx) => send(tx, ImageInput::Call(name)),
                None => tracing::warn!("no image host for step {name}"),
            }
        }
        let g = self.model.graph.clone();
        let name = |mu: u32| g.mutation(mu).name.clone();
        let dur = |ms: Option<u64>| ms.map(Duration::from_millis);
        while let Some(s) = self.driver.poll_step() {
            match s {
                Step::Started { mutation } => m::mutation_started(name(mutation)),
                Step::Done { mutation, took_ms } => {
                    m::mutation_completed(name(mutation), dur(took_ms));
                }
                Step::Failed {
                    mutation,
                    took_ms,
                    timed_out,
                } => m::mutation_failed(name(mutation), dur(took_ms), timed_out),
            }
        }
    }

    /// The next completion or step deadline, milliseconds.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.driver.poll_timeout()
    }

    /// The Dsc to publish (with the Frozen flag the engine really has), if
    /// it changed since the last call.
    pub fn dsc_if_changed(&mut self) -> Option<Bytes> {
        if self.parent_drives {
            return None;
        }
        let mut dsc = self.driver.dsc().clone();
        let frozen = self.model.frozen(self.driver.cfg());
        self.model.set_frozen(&mut dsc, frozen);
        let bytes = Bytes::from(dsc.encode_to_vec());
        if self.published.as_ref() == Some(&bytes) {
            return None;
        }
        self.published = Some(bytes.clone());
        Some(bytes)
    }
}

/// Queues `m` for the image host; a full queue drops it (the step times
/// out and is retried).
fn send(tx: &mpsc::Sender<ImageInput>, m: ImageInput) {
    if let Err(e) = tx.try_send(m) {
        tracing::warn!("image host queue: {e}");
    }
}

/// The children whose power this instance may drive.
struct BmcSide {
    host: BmcHost,
    places: ChildPlaces,
}

/// A relay (sub-parent), a node with its engine, or both; any of them may
/// drive BMC children.
pub struct MemberApp {
    node: Option<Box<NodeRuntime>>,
    bmc: Option<Box<BmcSide>>,
    /// Children this instance declared down.
    pub peers_down: u64,
}

fn dsc_key(node: NodeId) -> Key {
    Key {
        node,
        kind: Kind::Dsc,
    }
}

impl MemberApp {
    /// A sub-parent: it only relays and marks lost children.
    pub fn relay() -> MemberApp {
        MemberApp {
            node: None,
            bmc: None,
            peers_down: 0,
        }
    }

    /// A node running `node` (its first Dsc is published at start).
    pub fn leaf(node: NodeRuntime) -> MemberApp {
        MemberApp {
            node: Some(Box::new(node)),
            bmc: None,
            peers_down: 0,
        }
    }

    /// The node's own engine, if this instance is a node.
    pub fn node_mut(&mut self) -> Option<&mut NodeRuntime> {
        self.node.as_deref_mut()
    }

    /// Dsc values from the image host; published now.
    pub fn image_dsc(
        &mut self,
        stack: &mut Stack,
        now: Time,
        values: &[(engine::url::Path, engine::value::Value)],
    ) {
        if let Some(n) = self.node.as_mut() {
            n.image_dsc(values, ms(now));
        }
        self.publish_dsc(stack, now);
    }

    /// The node reports itself busy or free (the agent socket, a module
    /// hook); its Dsc is published now.
    pub fn set_busy(&mut self, stack: &mut Stack, now: Time, busy: bool) {
        if let Some(n) = self.node.as_mut() {
            n.set_busy(busy, ms(now));
        }
        self.publish_dsc(stack, now);
    }

    /// Makes this instance drive the power of the children in `places`
    /// whose Cfg names a BMC, while they are in its care (CHILD context;
    /// it publishes their Dsc).
    pub fn attach_bmc(&mut self, host: BmcHost, places: ChildPlaces) {
        self.bmc = Some(Box::new(BmcSide { host, places }));
    }

    /// True when a BMC host is attached.
    pub fn has_bmc(&self) -> bool {
        self.bmc.is_some()
    }

    /// BMC children driven now.
    pub fn bmc_children(&self) -> usize {
        self.bmc.as_ref().map_or(0, |b| b.host.len())
    }

    /// Runs `f` on the BMC host (the driver task's entry), then publishes
    /// the children's Dsc that changed.
    ///
    /// # Panics
    /// If no host is attached (the driver is only started for one).
    pub fn with_bmc<R>(
        &mut self,
        stack: &mut Stack,
        now: Time,
        f: impl FnOnce(&mut BmcHost, u64) -> R,
    ) -> R {
        let side = self.bmc.as_mut().expect("a BMC host is attached");
        let r = f(&mut side.host, ms(now));
        self.publish_bmc(stack, now);
        r
    }

    /// Publishes the Dsc of driven children that changed, over the latest
    /// Dsc this instance holds for each (the overlay keeps the highest
    /// version; this instance is the only author of a BMC node's Dsc).
    fn publish_bmc(&mut self, stack: &mut Stack, now: Time) {
        let Some(side) = self.bmc.as_mut() else {
            return;
        };
        let base = |id: u32| {
            stack
                .get(dsc_key(id))
                .and_then(|r| Node::decode(r.data.as_ref()).ok())
        };
        let changes = side.host.dsc_changes(base);
        for (id, dsc) in changes {
            stack.publish(now, id, Kind::Dsc, dsc);
        }
    }

    /// A Cfg for `child` reached this instance: if the child is in its
    /// care, its BMC host adopts or releases it.
    fn child_cfg(&mut self, stack: &mut Stack, now: Time, child: NodeId, data: &[u8]) {
        let Some(side) = self.bmc.as_mut() else {
            return;
        };
        let Some(place) = side.places.place(child) else {
            return;
        };
        if !stack.is_child(child) {
            side.host.release(child);
            stack.set_bmc_authored(child, false);
            return;
        }
        match Node::decode(data) {
            Ok(cfg) => {
                // While this instance drives the child's BMC it is the
                // only author of its Dsc: the child's own is refused.
                let driven = side.host.handle_cfg(child, place, cfg, ms(now));
                stack.set_bmc_authored(child, driven);
                if driven && stack.neighbor(child) == Some(NeighborState::Full) {
                    side.host.handle_agent(child, true, ms(now));
                }
            }
            Err(e) => tracing::warn!("undecodable Cfg for instance {child}: {e}"),
        }
    }

    /// This instance took group `group` over (`on`) or handed it back: its
    /// members' BMC work follows.
    fn acting(&mut self, stack: &mut Stack, now: Time, group: u32, on: bool) {
        let members: Vec<NodeId> = stack.members_of(group).unwrap_or(&[]).to_vec();
        for m in members {
            let cfg = Key {
                node: m,
                kind: Kind::Cfg,
            };
            match (on, stack.get(cfg)) {
                (true, Some(r)) => self.child_cfg(stack, now, m, &r.data),
                (false, _) if !stack.is_child(m) => {
                    if let Some(b) = self.bmc.as_mut() {
                        b.host.release(m);
                        stack.set_bmc_authored(m, false);
                    }
                }
                _ => {}
            }
        }
        if on {
            tracing::info!("acting for group {group}: its members are in this instance's care");
        } else {
            tracing::info!("no longer acting for group {group}");
        }
    }

    fn publish_dsc(&mut self, stack: &mut Stack, now: Time) {
        let me = stack.id();
        if let Some(dsc) = self.node.as_mut().and_then(|n| n.dsc_if_changed()) {
            stack.publish(now, me, Kind::Dsc, dsc);
        }
    }

    /// A child went silent: its Dsc is marked RunState ERROR upward.
    fn mark_child_failed(&mut self, stack: &mut Stack, now: Time, child: NodeId) {
        self.peers_down += 1;
        let mut last = stack
            .get(dsc_key(child))
            .and_then(|r| Node::decode(r.data.as_ref()).ok())
            .unwrap_or_default();
        last.run_state = RunState::Error as i32;
        stack.mark_failed(now, child, Bytes::from(last.encode_to_vec()));
    }
}

impl App for MemberApp {
    fn on_start(&mut self, stack: &mut Stack, now: Time) {
        self.publish_dsc(stack, now);
    }

    fn on_event(&mut self, stack: &mut Stack, now: Time, event: StackEvent) {
        let me = stack.id();
        match event {
            StackEvent::Delivered(r) if r.key.kind == Kind::Cfg && r.key.node == me => {
                if let Some(node) = self.node.as_mut() {
                    match Node::decode(r.data.as_ref()) {
                        Ok(cfg) => node.handle_cfg(cfg, ms(now)),
                        Err(e) => tracing::warn!("undecodable Cfg for instance {me}: {e}"),
                    }
                }
            }
            StackEvent::Delivered(r) if r.key.kind == Kind::Cfg => {
                self.child_cfg(stack, now, r.key.node, r.data.as_ref());
            }
            StackEvent::Delivered(r) if r.key.kind == Kind::Dsc => {
                // Someone else wrote the Dsc of a node this instance
                // authors: publish ours above it (in `after_events`).
                if let Some(b) = self.bmc.as_mut().filter(|b| b.host.drives(r.key.node)) {
                    b.host.reassert(r.key.node, r.data.as_ref());
                }
            }
            StackEvent::ChildDown(p) => {
                m::peer_event("down");
                // A BMC node has no process of its own, or one this
                // instance boots: its silence is expected (this instance
                // authors its Dsc), and a booted one must boot again.
                match self.bmc.as_mut().filter(|b| b.host.drives(p)) {
                    Some(b) => b.host.handle_agent(p, false, ms(now)),
                    None => self.mark_child_failed(stack, now, p),
                }
            }
            StackEvent::ChildUp(p) => {
                m::peer_event("up");
                if let Some(b) = self.bmc.as_mut().filter(|b| b.host.drives(p)) {
                    b.host.handle_agent(p, true, ms(now));
                }
            }
            StackEvent::PeerDown(_) => m::peer_event("down"),
            StackEvent::PeerUp(_) => m::peer_event("up"),
            StackEvent::Acting { group, on, .. } => self.acting(stack, now, group, on),
            StackEvent::Delivered(_) => {}
        }
    }

    fn after_events(&mut self, stack: &mut Stack, now: Time) {
        self.publish_dsc(stack, now);
        self.publish_bmc(stack, now);
    }

    fn on_timeout(&mut self, stack: &mut Stack, now: Time) {
        if let Some(n) = self.node.as_mut() {
            n.drive(ms(now));
        }
        self.publish_dsc(stack, now);
        self.publish_bmc(stack, now);
    }

    fn poll_timeout(&self) -> Option<Time> {
        self.node
            .as_ref()
            .and_then(|n| n.poll_timeout())
            .map(Duration::from_millis)
    }
}
