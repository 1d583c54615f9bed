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

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use engine::events::{EventKind, Filter, Side, SubId};
use engine::planner::Planner;
use engine::store::Store;
use engine::url::{Field, Path, Url};
use engine::value::Value;
use overlay::{Kind, NodeId, Time};
use prost::Message;
use proto::node::Node;
use serde_json::{Value as Json, json};
use tokio::sync::broadcast;

use crate::daemon::cluster::Cluster;
use crate::daemon::control::{ApiError, Selection, WriteOp, clip};
use crate::daemon::metrics as m;
use crate::daemon::model::Model;
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

/// The result of [`RootApp::prepare`]: the new Cfgs to commit.
pub struct Prepared {
    /// Nodes selected.
    pub matched: usize,
    /// The changed nodes' new Cfgs.
    pub changes: Vec<(String, Node)>,
}

/// The result of [`RootApp::prepare_batch`]: every entry's counts and the
/// new Cfgs of the whole batch, to commit in one transaction.
pub struct PreparedBatch {
    /// Per entry: nodes selected and the names of those it changes.
    pub entries: Vec<(usize, Vec<String>)>,
    /// The new Cfgs of every node the batch changes (each node once, with
    /// every entry that touches it applied in order).
    pub changes: Vec<(String, Node)>,
}

/// What plan preview needs of one node ([`RootApp::plan_inputs`]).
pub struct PlanInput {
    /// The node's name.
    pub name: String,
    /// Its Dsc as the root holds it (the model's projection).
    pub dsc: Vec<i32>,
    /// The Cfg it would have.
    pub cfg: Node,
}

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
    rack: String,
    /// Indices in [`RootApp::group_names`] of every group above the node
    /// (its rack, the rack's row, ...), for `group` selections.
    groups: Vec<u32>,
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
    planner: RefCell<Planner>,
    leaves: Vec<Leaf>,
    by_name: HashMap<String, usize>,
    by_id: HashMap<NodeId, usize>,
    /// Group names of the topology; [`Leaf::groups`] index them.
    group_names: Vec<String>,
    group_ids: HashMap<String, u32>,
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
            leaves.push(Leaf {
                name: inst.name.clone(),
                id,
                rack: cluster.rack[id as usize].clone(),
                groups,
                target: vec![0; model.graph.set().vars.len()],
                dsc: vec![0; model.graph.set().vars.len()],
                pending: None,
                converged: true,
                frozen_cfg: false,
                frozen_dsc: false,
                dirty: true,
            });
        }
        let by_name = leaves
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.clone(), i))
            .collect();
        let by_id = leaves.iter().enumerate().map(|(i, l)| (l.id, i)).collect();
        let mut root = RootApp {
            planner: RefCell::new(Planner::new(model.graph.clone())),
            model,
            store,
            sub,
            dirty: (0..leaves.len()).collect(),
            leaves,
            by_name,
            by_id,
            group_names,
            group_ids,
            bus,
            bad_records: 0,
            stored: Vec::new(),
        };
        let known: Vec<_> = stored
            .into_iter()
            .filter(|(name, _)| {
                let ok = root.by_name.contains_key(name);
                if !ok {
                    tracing::warn!("stored Cfg of `{name}` ignored: not in the topology");
                }
                ok
            })
            .collect();
        root.stored = known;
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

    /// Resolves a selection to leaf indices, in topology order: its hosts
    /// ([`RootApp::select_hosts`]), then its filter ([`RootApp::filter`]).
    pub fn select(&self, sel: &Selection) -> Result<Vec<usize>, ApiError> {
        let idx = self.select_hosts(sel)?;
        self.filter(sel, &idx)
    }

    /// The leaf indices a selection's hostlist names (every leaf without
    /// one), in topology order. The hostlist is costed first
    /// ([`Selection::check`]): one that names more hosts than the cluster
    /// has nodes is refused before a name is generated.
    pub fn select_hosts(&self, sel: &Selection) -> Result<Vec<usize>, ApiError> {
        let mut idx = self.select_names(sel)?;
        if let Some(g) = sel
            .group
            .as_deref()
            .map(str::trim)
            .filter(|g| !g.is_empty())
        {
            let g = g.strip_prefix('@').unwrap_or(g);
            let Some(&gid) = self.group_ids.get(g) else {
                let mut known: Vec<&str> = self.group_names.iter().map(String::as_str).collect();
                known.sort_unstable();
                let shown = known.iter().take(8).copied().collect::<Vec<_>>().join(", ");
                return Err(ApiError::not_found(format!(
                    "no such group: `{}` (groups: {shown}{})",
                    clip(g),
                    if known.len() > 8 { ", ..." } else { "" }
                )));
            };
            idx.retain(|&i| self.leaves[i].groups.contains(&gid));
        }
        Ok(idx)
    }

    /// The leaf indices the hostlist alone names (every leaf without one).
    fn select_names(&self, sel: &Selection) -> Result<Vec<usize>, ApiError> {
        sel.check(self.leaves.len())?;
        let Some(h) = sel.hosts() else {
            return Ok((0..self.leaves.len()).collect());
        };
        let names = topo::hostlist::expand(h)
            .map_err(|e| ApiError::bad(format!("bad hostlist `{}`: {e}", clip(h))))?;
        let mut out = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        for n in &names {
            match self.by_name.get(n) {
                Some(&i) => out.push(i),
                None => missing.push(n.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(ApiError::not_found(format!(
                "no such node: {} ({} of {} names unknown)",
                clip(&topo::hostlist::compress(&missing)),
                missing.len(),
                names.len()
            )));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The indices of `idx` whose copy (`sel.side`) matches the selection's
    /// filter (all of `idx` without one).
    pub fn filter(&self, sel: &Selection, idx: &[usize]) -> Result<Vec<usize>, ApiError> {
        let Some(f) = sel.filter.as_deref().filter(|f| !f.trim().is_empty()) else {
            return Ok(idx.to_vec());
        };
        let side = match sel.side.as_deref() {
            None | Some("dsc") => Side::Dsc,
            Some("cfg") => Side::Cfg,
            Some(s) => {
                return Err(ApiError::bad(format!(
                    "side must be cfg or dsc, not `{}`",
                    clip(s)
                )));
            }
        };
        let conds = self.parse_pairs(f.split(','))?;
        let keep = |&i: &usize| {
            let node = self.store.get(&self.leaves[i].name, side);
            node.is_some_and(|n| {
                conds
                    .iter()
                    .all(|(p, v)| self.model.registry.get(n, p).ok().as_ref() == Some(v))
            })
        };
        Ok(idx.iter().copied().filter(keep).collect())
    }

    /// Parses `URL=VALUE` words (node-relative URLs only).
    fn parse_pairs<'a>(
        &self,
        words: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<(Path, Value)>, ApiError> {
        let mut out = Vec::new();
        for w in words.map(str::trim).filter(|w| !w.is_empty()) {
            let Some((url, value)) = w.split_once('=') else {
                return Err(ApiError::bad(format!("`{w}` is not URL=VALUE")));
            };
            out.push(self.parse_value(url.trim(), value.trim())?);
        }
        Ok(out)
    }

    fn parse_value(&self, url: &str, value: &str) -> Result<(Path, Value), ApiError> {
        let u: Url = url
            .parse()
            .map_err(|e| ApiError::bad(format!("bad URL `{url}`: {e}")))?;
        if u.node.is_some() {
            return Err(ApiError::bad(format!(
                "`{url}`: cluster-wide URLs (node:URL) are not accepted here; select nodes with hosts"
            )));
        }
        let v = self
            .model
            .registry
            .parse_value(&u.path, value)
            .map_err(|e| ApiError::bad(format!("`{url}={value}`: {e}")))?;
        Ok((u.path, v))
    }

    /// Computes the new Cfgs of a write without changing anything.
    pub fn prepare(&self, sel: &Selection, op: &WriteOp) -> Result<Prepared, ApiError> {
        self.prepare_over(sel, op, &HashMap::new())
    }

    /// Computes the new Cfgs of a batch of writes, all or nothing: every
    /// entry is validated, each sees the Cfgs the entries before it wrote,
    /// and the first bad entry fails the whole batch (`entry N: ...`).
    pub fn prepare_batch(&self, batch: &[(Selection, WriteOp)]) -> Result<PreparedBatch, ApiError> {
        let mut pending: HashMap<String, Node> = HashMap::new();
        let mut entries = Vec::with_capacity(batch.len());
        for (k, (sel, op)) in batch.iter().enumerate() {
            let p = self.prepare_over(sel, op, &pending).map_err(|mut e| {
                e.message = format!("entry {}: {}", k + 1, e.message);
                e
            })?;
            let names = p.changes.iter().map(|(n, _)| n.clone()).collect();
            entries.push((p.matched, names));
            pending.extend(p.changes);
        }
        // Only what differs from the stored Cfg is committed.
        let mut changes: Vec<(String, Node)> = pending
            .into_iter()
            .filter(|(name, new)| self.store.get(name, Side::Cfg) != Some(new))
            .collect();
        changes.sort_unstable_by_key(|(name, _)| self.by_name.get(name).copied());
        Ok(PreparedBatch { entries, changes })
    }

    /// [`RootApp::prepare`] over `pending`: Cfgs not yet committed that
    /// stand in for the stored ones.
    fn prepare_over(
        &self,
        sel: &Selection,
        op: &WriteOp,
        pending: &HashMap<String, Node>,
    ) -> Result<Prepared, ApiError> {
        if sel.is_empty() {
            return Err(ApiError::bad(
                "select nodes with `hosts`, `filter` or `all` (writes never default to every node)",
            ));
        }
        let idx = self.select(sel)?;
        self.prepare_idx(&idx, op, pending)
    }

    /// [`RootApp::prepare`] on resolved leaf indices, over `pending`.
    fn prepare_idx(
        &self,
        idx: &[usize],
        op: &WriteOp,
        pending: &HashMap<String, Node>,
    ) -> Result<Prepared, ApiError> {
        let values = match op {
            WriteOp::Set { values, .. } => {
                let mut out = Vec::with_capacity(values.len());
                for (u, v) in values {
                    let (p, val) = self.parse_value(u, v)?;
                    if matches!(p, Path::Field(Field::Id | Field::Nodename)) {
                        return Err(ApiError::bad(format!(
                            "`{u}` is the node's identity; it cannot be set"
                        )));
                    }
                    out.push((p, val));
                }
                if out.is_empty() {
                    return Err(ApiError::bad("no URL=VALUE given"));
                }
                out
            }
            _ => Vec::new(),
        };
        let reg = &self.model.registry;
        let mut changes = Vec::new();
        for &i in idx {
            let name = &self.leaves[i].name;
            let Some(cur) = pending
                .get(name)
                .or_else(|| self.store.get(name, Side::Cfg))
            else {
                continue;
            };
            let mut new = match op {
                WriteOp::Set { replace: true, .. } | WriteOp::Reset => reg.new_node(name),
                _ => cur.clone(),
            };
            for (p, v) in &values {
                reg.set(&mut new, p, v)
                    .map_err(|e| ApiError::bad(format!("{name}: {e}")))?;
            }
            if let WriteOp::Freeze(f) = op {
                self.model.set_frozen(&mut new, *f);
            }
            self.model.normalize(&mut new);
            if new != *cur {
                changes.push((name.clone(), new));
            }
        }
        Ok(Prepared {
            matched: idx.len(),
            changes,
        })
    }

    /// Stores and publishes committed Cfgs.
    pub fn apply(&mut self, stack: &mut Stack, changes: Vec<(String, Node)>, now: Time) {
        for (name, node) in changes {
            let Some(&i) = self.by_name.get(&name) else {
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
            let _ = self.store.update(&name, Side::Cfg, node);
            let leaf = &mut self.leaves[i];
            stack.set_bmc_authored(leaf.id, bmc);
            stack.publish(now, leaf.id, Kind::Cfg, bytes);
            if leaf.target != target {
                leaf.target = target;
                leaf.pending = Some(now);
            }
            leaf.frozen_cfg = frozen;
            self.check(i, now);
        }
        self.drain_changes();
    }

    fn check(&mut self, i: usize, now: Time) {
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
        let _ = self.store.update_from_sync(&name, Side::Dsc, dsc);
        self.check(i, now);
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

    fn summary(&self, i: usize) -> Json {
        let l = &self.leaves[i];
        let (p, r, x) = (self.model.phys, self.model.run, self.model.pxe);
        json!({
            "n": l.name, "r": l.rack,
            "cp": l.target[p], "cr": l.target[r],
            "dp": l.dsc[p], "dr": l.dsc[r], "dx": l.dsc[x], "di": l.dsc[self.model.image],
            "ok": l.converged, "fz": l.frozen_cfg || l.frozen_dsc,
        })
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
        let nodes: Vec<Json> = dirty.iter().map(|&i| self.summary(i)).collect();
        for &i in &dirty {
            self.leaves[i].dirty = false;
        }
        if nodes.is_empty() && self.bus.receiver_count() == 0 {
            return;
        }
        let data = json!({ "nodes": nodes, "counters": counters });
        let _ = self.bus.send(Arc::new(BusMsg {
            event: "nodes",
            data: data.to_string(),
        }));
    }

    /// One node in full: both copies, convergence and its chain.
    pub fn get(&mut self, name: &str) -> Result<Json, ApiError> {
        let &i = self
            .by_name
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("no such node: {name}")))?;
        Ok(self.detail(i, true))
    }

    fn detail(&self, i: usize, with_chain: bool) -> Json {
        let l = &self.leaves[i];
        let get = |side| self.store.get(&l.name, side).map(|n| self.model.values(n));
        let mut out = json!({
            "name": l.name,
            "rack": l.rack,
            "converged": l.converged,
            "frozen": l.frozen_cfg,
            "cfg": get(Side::Cfg),
            "dsc": get(Side::Dsc),
        });
        if with_chain {
            out["chain"] = json!(self.chain_of(i, None));
            out["waiting"] = json!(self.waiting_of(i));
        }
        out
    }

    /// What node `i`'s chain waits for: its next step's Dsc gate (e.g.
    /// `excludes Dsc /Busy=BUSY`) as the root's copy of its Dsc closes it.
    fn waiting_of(&self, i: usize) -> Option<String> {
        let l = &self.leaves[i];
        let cfg = self.store.get(&l.name, Side::Cfg)?;
        let dsc = self.store.get(&l.name, Side::Dsc)?;
        let set = self.model.graph.set();
        let target = self.model.target(cfg);
        let mask = set.guard_mask(&self.model.registry, cfg);
        let mut planner = self.planner.borrow_mut();
        let plan = planner
            .preview(&[(l.dsc.clone(), mask)], &target)
            .ok()?
            .into_iter()
            .next()
            .flatten()?;
        let m = self.model.graph.edge(*plan.first()?).mutation;
        let gate = set.mutations[m as usize].gate;
        let open = set.gate_mask(&self.model.registry, dsc);
        ((open >> gate) & 1 == 0)
            .then(|| format!("{} ({})", set.mutations[m as usize].name, set.gate_text(m)))
    }

    /// The chain node `i` runs (or would run with `cfg`), planned from its
    /// Dsc as the root holds it. Since every chain of a target comes from
    /// one shortest-path tree, this is the node's own active chain from its
    /// current step on. `None`: no chain reaches the target.
    fn chain_of(&self, i: usize, cfg: Option<&Node>) -> Option<Vec<String>> {
        let l = &self.leaves[i];
        let cur = self.store.get(&l.name, Side::Cfg)?;
        let cfg = cfg.unwrap_or(cur);
        chain_for(&self.model, &mut self.planner.borrow_mut(), &l.dsc, cfg)
    }

    /// What plan preview needs of the leaves `idx` that pass the
    /// selection's filter, computed without planning (the planner runs on
    /// the API's side, off this thread): each one's name, its Dsc as the
    /// root holds it, and the Cfg it would have with `values` written.
    pub fn plan_inputs(
        &self,
        sel: &Selection,
        idx: &[usize],
        values: &[(String, String)],
    ) -> Result<Vec<PlanInput>, ApiError> {
        let idx = self.filter(sel, idx)?;
        let op = WriteOp::Set {
            values: values.to_vec(),
            replace: false,
        };
        let mut changed: HashMap<String, Node> = self
            .prepare_idx(&idx, &op, &HashMap::new())?
            .changes
            .into_iter()
            .collect();
        let mut out = Vec::with_capacity(idx.len());
        for i in idx {
            let l = &self.leaves[i];
            let cfg = match changed.remove(&l.name) {
                Some(c) => c,
                None => match self.store.get(&l.name, Side::Cfg) {
                    Some(c) => c.clone(),
                    None => continue,
                },
            };
            out.push(PlanInput {
                name: l.name.clone(),
                dsc: l.dsc.clone(),
                cfg,
            });
        }
        Ok(out)
    }

    /// The details ([`RootApp::get`] without the chain) of leaves `idx`.
    pub fn details(&self, idx: &[usize]) -> Vec<Json> {
        idx.iter()
            .filter(|&&i| i < self.leaves.len())
            .map(|&i| self.detail(i, false))
            .collect()
    }

    /// The dashboard summaries of leaves `range` (clipped to the leaves).
    pub fn summaries(&self, range: std::ops::Range<usize>) -> Vec<Json> {
        let end = range.end.min(self.leaves.len());
        (range.start.min(end)..end)
            .map(|i| self.summary(i))
            .collect()
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
        let e = r.select(&hosts(&bomb)).unwrap_err();
        assert_eq!(e.status, 400, "{e}");
        assert!(
            e.message.len() < 300,
            "the message echoes a clipped hostlist"
        );
        let e = r.select(&hosts("n[0-999999]")).unwrap_err();
        assert_eq!((e.status, e.code), (400, "bad_request"), "{e}");
        assert!(e.message.contains("names 1000000 hosts"), "{e}");
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
        // Within the cluster's size hostlists work as before.
        assert_eq!(r.select(&hosts("n[0001-0010]")).unwrap().len(), 10);
        assert_eq!(r.select(&hosts("n0001,n0001")).unwrap(), vec![0]);
        assert_eq!(r.select(&hosts("n[0005-0014]")).unwrap_err().status, 404);
        assert_eq!(r.select(&hosts("n[0001-0011]")).unwrap_err().status, 400);
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
        assert_eq!(r.select(&sel).unwrap_err().status, 400);
        let sel = Selection {
            filter: Some("/PhysState=PHYS_UNKNOWN".into()),
            ..Selection::default()
        };
        assert_eq!(r.filter(&sel, &[0, 3, 5]).unwrap(), vec![0, 3, 5]);
        assert_eq!(r.details(&[1, 2, 99]).len(), 2);
        assert_eq!(r.summaries(8..20).len(), 2);
        let values = vec![("/PhysState".to_string(), "POWER_ON".to_string())];
        let inputs = r
            .plan_inputs(&Selection::default(), &[0, 1], &values)
            .unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0].cfg.phys_state, 2);
        let model = Model::new().unwrap();
        let mut planner = Planner::new(model.graph.clone());
        assert!(chain_for(&model, &mut planner, &inputs[0].dsc, &inputs[0].cfg).is_some());
    }
}
