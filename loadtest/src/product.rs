//! The product's applications in the simulator: the root ([`RootApp`]) and
//! every other instance ([`MemberApp`]: relays, and nodes running their
//! engine with the virtual power and boot modules), exactly as `layercake
//! run` builds them, on the same sync stack. Only the database is left
//! out: the fault campaign keeps what the root accepted ("persist, then
//! acknowledge") and hands it to a restarted root as `layercake` hands it
//! the database's contents.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use engine::virt::VirtualConfig;
use layercake::daemon::cluster::Cluster as ProductCluster;
use layercake::daemon::control::{Selection, WriteOp};
use layercake::daemon::member::{MemberApp, NodeRuntime};
use layercake::daemon::model::Model;
use layercake::daemon::root::{Bus, RootApp};
use layercake::sync::{App, Node, Stack, StackEvent};
use overlay::{NodeId, Time};
use proto::node::Node as NodeState;
use topo::Role;

/// The virtual modules' step delays in the campaign (short, so a seed's
/// chains finish well within its convergence bound).
const STEP_MS: (u64, u64) = (5, 50);

/// The root or a member: the product's application of one instance.
// One per instance; the enum holds each inline.
#[allow(clippy::large_enum_variant)]
pub enum ProductApp {
    /// The root.
    Root(RootApp),
    /// Any other instance.
    Member(MemberApp),
}

impl App for ProductApp {
    fn on_start(&mut self, stack: &mut Stack, now: Time) {
        match self {
            ProductApp::Root(a) => a.on_start(stack, now),
            ProductApp::Member(a) => a.on_start(stack, now),
        }
    }

    fn on_event(&mut self, stack: &mut Stack, now: Time, event: StackEvent) {
        match self {
            ProductApp::Root(a) => a.on_event(stack, now, event),
            ProductApp::Member(a) => a.on_event(stack, now, event),
        }
    }

    fn after_events(&mut self, stack: &mut Stack, now: Time) {
        match self {
            ProductApp::Root(a) => a.after_events(stack, now),
            ProductApp::Member(a) => a.after_events(stack, now),
        }
    }

    fn on_timeout(&mut self, stack: &mut Stack, now: Time) {
        match self {
            ProductApp::Root(a) => a.on_timeout(stack, now),
            ProductApp::Member(a) => a.on_timeout(stack, now),
        }
    }

    fn poll_timeout(&self) -> Option<Time> {
        match self {
            ProductApp::Root(a) => a.poll_timeout(),
            ProductApp::Member(a) => a.poll_timeout(),
        }
    }
}

/// One instance of the product.
pub type ProductNode = Node<ProductApp>;

/// What every product instance of a simulated cluster shares.
pub struct Product<'a> {
    /// The cluster as layercake loads it (its sync `Spec` included).
    pub cluster: &'a ProductCluster,
    model: Arc<Model>,
    modules: VirtualConfig,
    bus: Bus,
}

impl<'a> Product<'a> {
    /// The product's instances of `cluster`.
    pub fn new(cluster: &'a ProductCluster) -> Result<Product<'a>> {
        Ok(Product {
            cluster,
            model: Arc::new(Model::new().context("the module set")?),
            modules: VirtualConfig {
                delay_min_ms: STEP_MS.0,
                delay_max_ms: STEP_MS.1,
                fail_rate: 0.0,
                hang_rate: 0.0,
                on_fraction: 0.0,
            },
            bus: tokio::sync::broadcast::channel(16).0,
        })
    }

    /// Instance `id` started at `now`. The root starts from `stored` (the
    /// Cfgs it accepted before) in boot epoch `boot`, publishing above
    /// `boot << 32` as `layercake` does with its database's epoch.
    pub fn node(
        &self,
        id: NodeId,
        seed: u64,
        now: Duration,
        stored: Vec<(String, NodeState)>,
        boot: u64,
    ) -> ProductNode {
        let c = self.cluster;
        let inst = &c.flat.instances[id as usize];
        let (floor, app) = match inst.role {
            Role::Root => {
                let app = RootApp::new(self.model.clone(), c, stored, self.bus.clone());
                (boot << 32, ProductApp::Root(app))
            }
            Role::SubParent => (
                now.as_millis() as u64 * 16,
                ProductApp::Member(MemberApp::relay()),
            ),
            Role::Leaf => {
                let vseed = seed ^ u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let rt = NodeRuntime::new(self.model.clone(), &inst.name, self.modules, vseed);
                (
                    now.as_millis() as u64 * 16,
                    ProductApp::Member(MemberApp::leaf(rt)),
                )
            }
        };
        let stack = c.sync.stack(id, seed, now, floor);
        Node::new(stack, app, now)
    }

    /// The root writes `values` to the Cfg of `names` at `now` as the API
    /// does (prepare, then apply; the caller is the database). Returns the
    /// Cfgs that changed.
    pub fn write(
        root: &mut ProductNode,
        now: Time,
        names: &[String],
        values: &[(&str, &str)],
    ) -> Result<Vec<(String, NodeState)>> {
        let sel = Selection {
            hosts: Some(topo::hostlist::compress(names)),
            ..Selection::default()
        };
        let op = WriteOp::Set {
            values: values
                .iter()
                .map(|(u, v)| (u.to_string(), v.to_string()))
                .collect(),
            replace: false,
        };
        root.with(now, |app, stack| {
            let ProductApp::Root(r) = app else {
                anyhow::bail!("instance {} is not the root", stack.id());
            };
            let prepared = r.prepare(&sel, &op).map_err(|e| anyhow::anyhow!("{e}"))?;
            let changes = prepared.changes;
            r.apply(stack, changes.clone(), now);
            Ok(changes)
        })
    }

    /// The root's view: nodes whose Dsc matches their Cfg, of how many.
    pub fn converged(root: &ProductNode) -> (usize, usize) {
        match root.app() {
            ProductApp::Root(r) => (r.converged(), r.len()),
            ProductApp::Member(_) => (0, 0),
        }
    }
}
