//! The root instance: source of truth for every node's Cfg, holder of
//! every node's Dsc, and the state behind the API.
//!
//! - [`RootApp`]: the root's [`App`] on the sync stack ([`crate::sync`]).
//!   It holds an engine [`Store`] with both copies of every node, a [`Planner`] for plan preview and the active chains, and the
//!   convergence tracking behind `kraken_convergence_seconds`.
//! - Writes come in two steps driven by the control task
//!   (`world::control`): [`RootApp::prepare`] computes the new Cfgs (and
//!   validates the request) without changing anything; the caller commits
//!   them to the database; then [`RootApp::apply`] stores and publishes
//!   them. Nothing reaches the overlay before the commit.
//! - Events: store changes become `change` messages, and changed node
//!   summaries are flushed as one `nodes` message (with the counters) by
//!   [`RootApp::flush`], on the [`Bus`] the event stream reads.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use engine::events::{EventKind, Filter, Side, SubId};
use engine::planner::Planner;
use engine::store::Store;
use engine::url::Path;
use engine::value::Value;
use overlay::{Kind, NodeId, Time};
use prost::Message;
use proto::node::Node;
use serde_json::{Value as Json, json};
use tokio::sync::broadcast;

use crate::daemon::cluster::Cluster;
use crate::daemon::control::{ApiError, Selection, WriteOp};
use crate::daemon::metrics as m;
use crate::daemon::model::Model;
use crate::daemon::view::{Layout, LeafState, View};
use crate::modules::power::config::{Protocol, power_of};
use crate::sync::{App, Stack, StackEvent};

/// Messages the event stream buffers per subscriber before it lags.
pub const BUS_CAPACITY: usize = 8192;
/// Store events drained per pump (the dispatcher's own queue is bounded).
const CHANGES_PER_PUMP_MAX: usize = 4096;

/// One event-stream message: an SSE event name and its JSON data.
#[derive(Debug)]
pub struct BusMsg {
    /// `change` or `nodes`.
    pub event: &'static str,
    /// JSON text.
    pub data: String,
}

/// The sender side of the event stream.
pub type Bus = broadcast::Sender<Arc<BusMsg>>;

pub use crate::daemon::view::{PlanInput, Prepared, PreparedBatch};

/// The chain a node whose Dsc is `dsc` runs to reach `cfg` (`None`: no
/// chain reaches it). Since every chain of a target comes from one
/// shortest-path tree, this is the node's own active chain from its
/// current step on.
pub fn chain_for(
    model: &Model,
    planner: &mut Planner,
    dsc: &[i32],
    cfg: &Node,
) -> Option<Vec<String>> {
    let target = model.target(cfg);
    let mask = model.graph.set().guard_mask(&model.registry, cfg);
    let plans = planner.preview(&[(dsc.to_vec(), mask)], &target).ok()?;
    let plan = plans.into_iter().next().flatten()?;
    Some(planner.describe(&plan))
}

/// One managed node as the root sees it.
struct Leaf {
    name: String,
    id: NodeId,
    target: Vec<i32>,
    dsc: Vec<i32>,
    /// When the Cfg change not yet matched by Dsc was accepted.
    pending: Option<Time>,
    converged: bool,
    frozen_cfg: bool,
    frozen_dsc: bool,
    dirty: bool,
}

/// The root's application.
pub struct RootApp {
    model: Arc<Model>,
    store: Store,
    sub: Option<SubId>,
    leaves: Vec<Leaf>,
    by_id: HashMap<NodeId, usize>,
    /// The copy of every node's state the API reads (names, groups and
    /// selections live there too).
    view: Arc<View>,
    dirty: Vec<usize>,
    bus: Bus,
    /// Dsc records that did not decode.
    pub bad_records: u64,
    /// Cfgs loaded from the database, published when the stack starts.
    stored: Vec<(String, Node)>,
}

impl RootApp {
    /// The root of `cluster`, with the Cfgs loaded from the database
    /// (`stored`); they are published when the stack starts.
    pub fn new(
        model: Arc<Model>,
        cluster: &Cluster,
        stored: Vec<(String, Node)>,
        bus: Bus,
    ) -> RootApp {
        let mut store = Store::new(model.registry.clone());
        let sub = store.events().subscribe(Filter {
            kinds: vec![EventKind::StateChange],
            ..Filter::default()
        });
        let mut leaves = Vec::new();
        let (mut racks, mut all_groups) = (Vec::new(), Vec::new());
        let mut group_names: Vec<String> = Vec::new();
        let mut group_ids: HashMap<String, u32> = HashMap::new();
        for id in cluster.leaves() {
            let inst = &cluster.flat.instances[id as usize];
            // Cannot fail: topology names are unique and far below NODES_MAX.
            let _ = store.create(&inst.name);
            // The groups of the node and of every sub-parent above it.
            let mut groups = Vec::new();
            let mut at = Some(id);
            while let Some(i) = at {
                let g = &cluster.rack[i as usize];
                if !g.is_empty() {
                    let next = u32::try_from(group_names.len()).unwrap_or(u32::MAX);
                    let gid = *group_ids.entry(g.clone()).or_insert_with(|| {
                        group_names.push(g.clone());
                        next
                    });
                    if !groups.contains(&gid) {
                        groups.push(gid);
                    }
                }
                at = cluster.flat.instances[i as usize].parent;
            }
            racks.push(cluster.rack[id as usize].clone());
            all_groups.push(groups);
            leaves.push(Leaf {
                name: inst.name.clone(),
                id,
                target: vec![0; model.graph.set().vars.len()],
                dsc: vec![0; model.graph.set().vars.len()],
                pending: None,
                converged: true,
                frozen_cfg: false,
                frozen_dsc: false,
                dirty: true,
            });
        }
        let layout = Layout {
            names: leaves.iter().map(|l| l.name.clone()).collect(),
            racks,
            groups: all_groups,
            group_names,
        };
        let view = Arc::new(View::new(model.clone(), layout));
        let by_id = leaves.iter().enumerate().map(|(i, l)| (l.id, i)).collect();
        let mut root = RootApp {
            model,
            store,
            sub,
            dirty: (0..leaves.len()).collect(),
            leaves,
            by_id,
            view,
            bus,
            bad_records: 0,
            stored: Vec::new(),
        };
        let known: Vec<_> = stored
            .into_iter()
            .filter(|(name, _)| {
                let ok = root.view.index(name).is_some();
                if !ok {
                    tracing::warn!("stored Cfg of `{name}` ignored: not in the topology");
                }
                ok
            })
            .collect();
        root.stored = known;
        for i in 0..root.leaves.len() {
            root.publish_view(i, None);
        }
        root
    }

    /// Number of managed nodes.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// True when the topology has no node.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Number of nodes whose Dsc matches their Cfg.
    pub fn converged(&self) -> usize {
        self.leaves.iter().filter(|l| l.converged).count()
    }
    /// The read view the API serves from.
    pub fn view(&self) -> Arc<View> {
        self.view.clone()
    }

    /// Computes the new Cfgs of a write without changing anything
    /// ([`View::prepare`]).
    pub fn prepare(&self, sel: &Selection, op: &WriteOp) -> Result<Prepared, ApiError> {
        self.view.prepare(sel, op)
    }

    /// Stores and publishes committed Cfgs.
    pub fn apply(&mut self, stack: &mut Stack, changes: Vec<(String, Node)>, now: Time) {
        for (name, node) in changes {
            let Some(i) = self.view.index(&name) else {
                continue;
            };
            let bytes = Bytes::from(node.encode_to_vec());
            let target = self.model.target(&node);
            let frozen = self.model.frozen(&node);
            // A node whose BMC its sub-parent drives is not the author of
            // its Dsc: one it sends itself (e.g. falling back to the root)
            // is refused.
            let bmc = power_of(&node)
                .is_some_and(|p| matches!(Protocol::parse(&p.protocol), Ok(Some(_))));
            // Cannot fail: the node exists.
            // Per-value changes are computed only for a watched stream.
            let _ = if self.bus.receiver_count() > 0 {
                self.store.update(&name, Side::Cfg, node).map(drop)
            } else {
                self.store.replace_quiet(&name, Side::Cfg, node)
            };
            let leaf = &mut self.leaves[i];
            stack.set_bmc_authored(leaf.id, bmc);
            stack.publish(now, leaf.id, Kind::Cfg, bytes);
            if leaf.target != target {
                leaf.target = target;
                leaf.pending = Some(now);
            }
            leaf.frozen_cfg = frozen;
            self.check(i, now, Side::Cfg);
        }
        self.drain_changes();
    }

    /// Updates node `i`'s convergence after its `changed` copy changed.
    fn check(&mut self, i: usize, now: Time, changed: Side) {
        let leaf = &mut self.leaves[i];
        let ok = Model::matches(&leaf.target, &leaf.dsc);
        if let Some(t0) = leaf.pending.take_if(|_| ok) {
            m::convergence(now.saturating_sub(t0));
        }
        leaf.converged = ok;
        if !leaf.dirty {
            leaf.dirty = true;
            self.dirty.push(i);
        }
        self.publish_view(i, Some(changed));
    }

    /// Replaces node `i`'s entry in the read view with its state now; the
    /// copy that did not change (not `changed`) keeps its allocation.
    fn publish_view(&mut self, i: usize, changed: Option<Side>) {
        let leaf = &self.leaves[i];
        let prev = self.view.get(i);
        let copy = |side, prev: &Option<Arc<Node>>| match prev {
            Some(p) if changed != Some(side) => Some(p.clone()),
            _ => self.store.get(&leaf.name, side).cloned().map(Arc::new),
        };
        let state = LeafState::new(
            copy(Side::Cfg, &prev.cfg),
            copy(Side::Dsc, &prev.dsc),
            leaf.target.clone(),
            leaf.dsc.clone(),
            leaf.converged,
            leaf.frozen_cfg,
            leaf.frozen_dsc,
        );
        self.view.set(i, state);
    }

    fn on_dsc(&mut self, node: NodeId, data: &[u8], now: Time) {
        let Some(&i) = self.by_id.get(&node) else {
            return;
        };
        let Ok(dsc) = Node::decode(data) else {
            self.bad_records += 1;
            tracing::warn!("undecodable Dsc from instance {node}");
            return;
        };
        let leaf = &mut self.leaves[i];
        leaf.dsc = self.model.project(&dsc);
        leaf.frozen_dsc = self.model.frozen(&dsc);
        let name = leaf.name.clone();
        let _ = if self.bus.receiver_count() > 0 {
            self.store.update_from_sync(&name, Side::Dsc, dsc).map(drop)
        } else {
            self.store.replace_quiet(&name, Side::Dsc, dsc)
        };
        self.check(i, now, Side::Dsc);
    }

    /// Turns store events into `change` messages on the bus.
    fn drain_changes(&mut self) {
        let Some(sub) = self.sub else { return };
        let live = self.bus.receiver_count() > 0;
        for _ in 0..CHANGES_PER_PUMP_MAX {
            let Some(e) = self.store.events().poll(sub) else {
                break;
            };
            if !live {
                continue;
            }
            let show = |v: &Option<Value>| {
                v.as_ref().map(|v| {
                    let kind = e
                        .url
                        .parse::<Path>()
                        .ok()
                        .and_then(|p| self.model.registry.kind(&p).ok());
                    kind.map_or_else(|| v.to_string(), |k| k.display(v))
                })
            };
            let data = json!({
                "node": e.node,
                "side": if e.side == Side::Cfg { "cfg" } else { "dsc" },
                "url": e.url,
                "old": show(&e.old),
                "new": show(&e.new),
            });
            let _ = self.bus.send(Arc::new(BusMsg {
                event: "change",
                data: data.to_string(),
            }));
        }
    }

    /// Counts by state, for the dashboard, `/health` and the gauges.
    pub fn counters(&self) -> Json {
        let mut phys = [0usize; 6];
        let mut run = [0usize; 4];
        let mut frozen = 0;
        for l in &self.leaves {
            if let Some(c) = phys.get_mut(l.dsc[self.model.phys] as usize) {
                *c += 1;
            }
            if let Some(c) = run.get_mut(l.dsc[self.model.run] as usize) {
                *c += 1;
            }
            frozen += usize::from(l.frozen_cfg);
        }
        let phys: Vec<_> = (0..6)
            .map(|x| (self.model.name_of(self.model.phys, x as i32), phys[x]))
            .collect();
        let run: Vec<_> = (0..4)
            .map(|x| (self.model.name_of(self.model.run, x as i32), run[x]))
            .collect();
        m::node_states(self.len(), self.converged(), &phys, &run);
        json!({
            "nodes": self.len(),
            "converged": self.converged(),
            "frozen": frozen,
            "phys": phys.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "run": run.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }

    /// Sends the summaries of nodes changed since the last flush, with the
    /// counters, as one `nodes` message; updates the state gauges.
    pub fn flush(&mut self) {
        let counters = self.counters();
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.leaves[i].dirty = false;
        }
        if self.bus.receiver_count() == 0 {
            return;
        }
        // The summaries are rendered once per state and cached in the
        // view, where the next snapshot finds them.
        let mut data = String::from("{\"nodes\":[");
        for (k, (&i, st)) in dirty.iter().zip(self.view.states(&dirty)).enumerate() {
            if k > 0 {
                data.push(',');
            }
            data.push_str(&String::from_utf8_lossy(&self.view.summary(i, &st)));
        }
        data.push_str("],\"counters\":");
        data.push_str(&counters.to_string());
        data.push('}');
        let _ = self.bus.send(Arc::new(BusMsg {
            event: "nodes",
            data,
        }));
    }

    /// Health summary (`stack`: this instance's sync stack).
    pub fn health(&self, stack: &Stack) -> Json {
        json!({
            "status": "ok",
            "role": "root",
            "nodes": self.len(),
            "converged": self.converged(),
            "held_records": stack.held(),
        })
    }
}

impl App for RootApp {
    fn on_start(&mut self, stack: &mut Stack, now: Time) {
        let stored = std::mem::take(&mut self.stored);
        tracing::info!("publishing {} stored Cfgs", stored.len());
        self.apply(stack, stored, now);
    }

    fn on_event(&mut self, _stack: &mut Stack, now: Time, event: StackEvent) {
        match event {
            StackEvent::Delivered(r) if r.key.kind == Kind::Dsc => {
                self.on_dsc(r.key.node, &r.data, now);
            }
            StackEvent::PeerUp(_) | StackEvent::ChildUp(_) => m::peer_event("up"),
            StackEvent::PeerDown(_) | StackEvent::ChildDown(_) => m::peer_event("down"),
            StackEvent::Delivered(_) | StackEvent::Acting { .. } => {}
        }
    }

    fn after_events(&mut self, _stack: &mut Stack, _now: Time) {
        self.drain_changes();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::daemon::cluster::demo_topology;

    fn root(nodes: usize) -> RootApp {
        let t = demo_topology(
            nodes,
            1,
            7000,
            Duration::from_secs(1),
            topo::StrategyKind::Tree,
        )
        .unwrap();
        let c = Cluster::new(t).unwrap();
        RootApp::new(
            Arc::new(Model::new().unwrap()),
            &c,
            Vec::new(),
            broadcast::channel(16).0,
        )
    }

    fn hosts(h: &str) -> Selection {
        Selection {
            hosts: Some(h.into()),
            ..Selection::default()
        }
    }

    /// Issue 12, finding 3: the hostlist bomb of the report (18 ranges of
    /// 10^18 and one more, whose sum wrapped to 1 on the old code) and a
    /// legal hostlist of a million hosts are refused with 400 before any
    /// name is generated; the old code expanded the million names on the
    /// overlay's thread and answered 404.
    #[test]
    fn finding3_hostlists_are_costed_before_expansion() {
        let r = root(10);
        let mut bomb = vec!["0-999999999999999999"; 18];
        bomb.push("0-446744073709551616");
        let bomb = format!("n[{}]", bomb.join(","));
        let t0 = Instant::now();
        let e = r.view().select(&hosts(&bomb)).unwrap_err();
        assert_eq!(e.status, 400, "{e}");
        assert!(
            e.message.len() < 300,
            "the message echoes a clipped hostlist"
        );
        let e = r.view().select(&hosts("n[0-999999]")).unwrap_err();
        assert_eq!((e.status, e.code), (400, "bad_request"), "{e}");
        assert!(e.message.contains("names 1000000 hosts"), "{e}");
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
        // Within the cluster's size hostlists work as before.
        assert_eq!(r.view().select(&hosts("n[0001-0010]")).unwrap().len(), 10);
        assert_eq!(r.view().select(&hosts("n0001,n0001")).unwrap(), vec![0]);
        assert_eq!(
            r.view().select(&hosts("n[0005-0014]")).unwrap_err().status,
            404
        );
        assert_eq!(
            r.view().select(&hosts("n[0001-0011]")).unwrap_err().status,
            400
        );
    }

    /// Issue 12, finding 3: a filter's terms are bounded; plan inputs and
    /// details come per chunk of leaves.
    #[test]
    fn finding3_filters_are_bounded_and_reads_come_in_chunks() {
        let r = root(10);
        let many =
            vec!["/PhysState=POWER_ON"; crate::daemon::control::FILTER_TERMS_MAX + 1].join(",");
        let sel = Selection {
            filter: Some(many),
            ..Selection::default()
        };
        assert_eq!(r.view().select(&sel).unwrap_err().status, 400);
        let sel = Selection {
            filter: Some("/PhysState=PHYS_UNKNOWN".into()),
            ..Selection::default()
        };
        assert_eq!(r.view().filter(&sel, &[0, 3, 5]).unwrap(), vec![0, 3, 5]);
        assert_eq!(r.view().states(&[1, 2, 9]).len(), 3);
        let values = vec![("/PhysState".to_string(), "POWER_ON".to_string())];
        let inputs = r
            .view()
            .plan_inputs(&Selection::default(), &[0, 1], &values)
            .unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0].cfg.phys_state, 2);
        let model = Model::new().unwrap();
        let mut planner = Planner::new(model.graph.clone());
        assert!(chain_for(&model, &mut planner, &inputs[0].dsc, &inputs[0].cfg).is_some());
    }
}
