//! The root's read view: a copy of every node's state that the API reads
//! without going through the overlay's thread.
//!
//! - [`View`]: what never changes after start (names, racks, groups, the
//!   name index) and, per node, an [`Arc<LeafState>`] in shards of
//!   [`SHARD`] nodes behind short locks. The root ([`crate::daemon::root`])
//!   replaces a node's entry whenever its Cfg, Dsc or convergence changes
//!   (on its own thread: one allocation and one lock per change); readers
//!   clone the `Arc`s of a shard and work on them with no lock held, so a
//!   large read never delays a hello and the root never waits for a
//!   reader for longer than a copy of 256 pointers.
//! - Selections ([`View::select_hosts`], [`View::filter`], [`View::page`])
//!   and the JSON the API serves ([`View::detail`], [`View::summary`],
//!   [`View::counters`]) are computed here, on the API's threads. A node's
//!   rendered JSON is cached in its entry until the entry is replaced, so
//!   listing an unchanged cluster again costs a copy of bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use engine::events::Side;
use engine::planner::Planner;
use engine::url::{Path, Url};
use engine::value::Value;
use proto::node::Node;
use serde_json::{Value as Json, json};

use crate::daemon::control::{ApiError, Selection, clip};
use crate::daemon::model::Model;
use crate::daemon::root::chain_for;

/// Nodes per shard (one lock).
pub const SHARD: usize = 256;

/// One node's state as the root last published it.
#[derive(Default)]
pub struct LeafState {
    /// Its Cfg (`None` before the first).
    pub cfg: Option<Arc<Node>>,
    /// Its Dsc as the root holds it.
    pub dsc: Option<Arc<Node>>,
    /// The model's projection of the Cfg (tracked variables).
    pub target: Vec<i32>,
    /// The model's projection of the Dsc.
    pub vars: Vec<i32>,
    /// Dsc matches Cfg on every tracked variable.
    pub converged: bool,
    /// Control/Frozen is set in the Cfg.
    pub frozen_cfg: bool,
    /// Control/Frozen is set in the Dsc.
    pub frozen_dsc: bool,
    /// The detail JSON ([`View::detail`] without the chain), once rendered.
    detail: OnceLock<Bytes>,
    /// The dashboard summary JSON, once rendered.
    summary: OnceLock<Bytes>,
}

impl LeafState {
    /// A state with no rendering cached.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Option<Arc<Node>>,
        dsc: Option<Arc<Node>>,
        target: Vec<i32>,
        vars: Vec<i32>,
        converged: bool,
        frozen_cfg: bool,
        frozen_dsc: bool,
    ) -> LeafState {
        LeafState {
            cfg,
            dsc,
            target,
            vars,
            converged,
            frozen_cfg,
            frozen_dsc,
            detail: OnceLock::new(),
            summary: OnceLock::new(),
        }
    }

    fn side(&self, side: Side) -> Option<&Node> {
        match side {
            Side::Cfg => self.cfg.as_deref(),
            Side::Dsc => self.dsc.as_deref(),
        }
    }
}

/// The static facts of the topology the view needs.
pub struct Layout {
    /// Node names, in topology order (a node's index everywhere).
    pub names: Vec<String>,
    /// Each node's rack (group of its sub-parent).
    pub racks: Vec<String>,
    /// Each node's groups: indices in `group_names` of its rack and every
    /// group above it.
    pub groups: Vec<Vec<u32>>,
    /// Group names.
    pub group_names: Vec<String>,
}

/// The root's read view (see the module documentation).
pub struct View {
    model: Arc<Model>,
    layout: Layout,
    group_ids: HashMap<String, u32>,
    by_name: HashMap<String, usize>,
    shards: Vec<RwLock<Vec<Arc<LeafState>>>>,
    /// For the chains of [`View::detail_full`].
    planner: Mutex<Planner>,
}

impl View {
    /// A view of the nodes of `layout`, each with an empty state.
    pub fn new(model: Arc<Model>, layout: Layout) -> View {
        let n = layout.names.len();
        let vars = model.graph.set().vars.len();
        let shards = (0..n)
            .step_by(SHARD)
            .map(|lo| {
                let len = SHARD.min(n - lo);
                let empty = || {
                    Arc::new(LeafState {
                        target: vec![0; vars],
                        vars: vec![0; vars],
                        converged: true,
                        ..LeafState::default()
                    })
                };
                RwLock::new((0..len).map(|_| empty()).collect())
            })
            .collect();
        let by_name = layout
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let group_ids = layout
            .group_names
            .iter()
            .enumerate()
            .map(|(i, g)| (g.clone(), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        View {
            planner: Mutex::new(Planner::new(model.graph.clone())),
            model,
            layout,
            group_ids,
            by_name,
            shards,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.layout.names.len()
    }

    /// True when the topology has no node.
    pub fn is_empty(&self) -> bool {
        self.layout.names.is_empty()
    }

    /// The index of node `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The name of node `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.layout.names[i]
    }

    /// Node `i`'s current state (`i` < [`View::len`]).
    pub fn get(&self, i: usize) -> Arc<LeafState> {
        let shard = self.shards[i / SHARD]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        shard[i % SHARD].clone()
    }

    /// Replaces node `i`'s state (the root, after a change).
    pub fn set(&self, i: usize, state: LeafState) {
        let state = Arc::new(state);
        let mut shard = self.shards[i / SHARD]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        shard[i % SHARD] = state;
    }

    /// The states of shard `s` (nodes `s * SHARD ..`), copied out.
    fn shard(&self, s: usize) -> Vec<Arc<LeafState>> {
        self.shards[s]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The states of nodes `idx` (any order), each shard locked once per
    /// run of indices in it.
    pub fn states(&self, idx: &[usize]) -> Vec<Arc<LeafState>> {
        let mut out = Vec::with_capacity(idx.len());
        let mut at: Option<(usize, Vec<Arc<LeafState>>)> = None;
        for &i in idx {
            let s = i / SHARD;
            if at.as_ref().is_none_or(|(cur, _)| *cur != s) {
                at = Some((s, self.shard(s)));
            }
            if let Some((_, shard)) = &at {
                out.push(shard[i % SHARD].clone());
            }
        }
        out
    }

    /// The node indices a selection's hostlist and group name (every node
    /// without either), in topology order. The hostlist is costed first
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
                let mut known: Vec<&str> =
                    self.layout.group_names.iter().map(String::as_str).collect();
                known.sort_unstable();
                let shown = known.iter().take(8).copied().collect::<Vec<_>>().join(", ");
                return Err(ApiError::not_found(format!(
                    "no such group: `{}` (groups: {shown}{})",
                    clip(g),
                    if known.len() > 8 { ", ..." } else { "" }
                )));
            };
            idx.retain(|&i| self.layout.groups[i].contains(&gid));
        }
        Ok(idx)
    }

    /// The node indices the hostlist alone names (every node without one).
    fn select_names(&self, sel: &Selection) -> Result<Vec<usize>, ApiError> {
        sel.check(self.len())?;
        let Some(h) = sel.hosts() else {
            return Ok((0..self.len()).collect());
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

    /// The selection's filter, parsed: the side it reads and its
    /// conditions (`None`: no filter).
    fn conditions(&self, sel: &Selection) -> Result<Option<(Side, Vec<(Path, Value)>)>, ApiError> {
        let Some(f) = sel.filter.as_deref().filter(|f| !f.trim().is_empty()) else {
            return Ok(None);
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
        Ok(Some((side, self.parse_pairs(f.split(','))?)))
    }

    fn keeps(&self, st: &LeafState, side: Side, conds: &[(Path, Value)]) -> bool {
        st.side(side).is_some_and(|n| {
            conds
                .iter()
                .all(|(p, v)| self.model.registry.get(n, p).ok().as_ref() == Some(v))
        })
    }

    /// The indices of `idx` whose copy (`sel.side`) matches the selection's
    /// filter (all of `idx` without one).
    pub fn filter(&self, sel: &Selection, idx: &[usize]) -> Result<Vec<usize>, ApiError> {
        let Some((side, conds)) = self.conditions(sel)? else {
            return Ok(idx.to_vec());
        };
        let states = self.states(idx);
        Ok(idx
            .iter()
            .zip(&states)
            .filter(|(_, st)| self.keeps(st, side, &conds))
            .map(|(&i, _)| i)
            .collect())
    }

    /// Every node the selection names and its filter keeps.
    pub fn select(&self, sel: &Selection) -> Result<Vec<usize>, ApiError> {
        let idx = self.select_hosts(sel)?;
        self.filter(sel, &idx)
    }

    /// One page of a selection: at most `limit` nodes with index `from` or
    /// above, in topology order, and the index to continue from (`None`:
    /// no node is left). The filter runs only until the page is full.
    pub fn page(
        &self,
        sel: &Selection,
        from: usize,
        limit: usize,
    ) -> Result<(Vec<usize>, Option<usize>), ApiError> {
        let idx = self.select_hosts(sel)?;
        let conds = self.conditions(sel)?;
        let start = idx.partition_point(|&i| i < from);
        let mut out = Vec::with_capacity(limit.min(idx.len()));
        let mut rest = idx[start..].iter().copied();
        for i in rest.by_ref() {
            let keep = match &conds {
                None => true,
                Some((side, c)) => self.keeps(&self.get(i), *side, c),
            };
            if keep {
                out.push(i);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok((out, rest.next()))
    }

    /// Parses `URL=VALUE` words (node-relative URLs only).
    pub fn parse_pairs<'a>(
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

    /// Parses one node-relative `URL` and its `value`.
    pub fn parse_value(&self, url: &str, value: &str) -> Result<(Path, Value), ApiError> {
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

    fn detail_json(&self, i: usize, st: &LeafState) -> Json {
        let values = |n: &Option<Arc<Node>>| n.as_deref().map(|n| self.model.values(n));
        json!({
            "name": self.layout.names[i],
            "rack": self.layout.racks[i],
            "converged": st.converged,
            "frozen": st.frozen_cfg,
            "cfg": values(&st.cfg),
            "dsc": values(&st.dsc),
        })
    }

    /// Node `i`'s detail (both copies, convergence) as JSON text, rendered
    /// once per state.
    pub fn detail(&self, i: usize, st: &LeafState) -> Bytes {
        st.detail
            .get_or_init(|| Bytes::from(self.detail_json(i, st).to_string()))
            .clone()
    }

    /// Node `name` in full: its detail, the chain it runs from its Dsc as
    /// the root holds it, and what that chain waits for.
    pub fn detail_full(&self, name: &str) -> Result<Json, ApiError> {
        let i = self
            .index(name)
            .ok_or_else(|| ApiError::not_found(format!("no such node: {}", clip(name))))?;
        let st = self.get(i);
        let mut out = self.detail_json(i, &st);
        let mut planner = self.planner.lock().unwrap_or_else(|e| e.into_inner());
        let chain = st
            .cfg
            .as_deref()
            .and_then(|cfg| chain_for(&self.model, &mut planner, &st.vars, cfg));
        out["chain"] = json!(chain);
        out["waiting"] = json!(self.waiting(&st, &mut planner));
        Ok(out)
    }

    /// What a node's chain waits for: its next step's Dsc gate (e.g.
    /// `excludes Dsc /Busy=BUSY`) as the root's copy of its Dsc closes it.
    fn waiting(&self, st: &LeafState, planner: &mut Planner) -> Option<String> {
        let (cfg, dsc) = (st.cfg.as_deref()?, st.dsc.as_deref()?);
        let set = self.model.graph.set();
        let target = self.model.target(cfg);
        let mask = set.guard_mask(&self.model.registry, cfg);
        let plan = planner
            .preview(&[(st.vars.clone(), mask)], &target)
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

    /// Node `i`'s dashboard summary as JSON text, rendered once per state.
    pub fn summary(&self, i: usize, st: &LeafState) -> Bytes {
        st.summary
            .get_or_init(|| Bytes::from(self.summary_json(i, st).to_string()))
            .clone()
    }

    /// Node `i`'s dashboard summary (short keys: name, rack, Cfg and Dsc
    /// of the tracked states, converged, frozen).
    pub fn summary_json(&self, i: usize, st: &LeafState) -> Json {
        let m = &self.model;
        json!({
            "n": self.layout.names[i], "r": self.layout.racks[i],
            "cp": st.target[m.phys], "cr": st.target[m.run],
            "dp": st.vars[m.phys], "dr": st.vars[m.run], "dx": st.vars[m.pxe], "di": st.vars[m.image],
            "ok": st.converged, "fz": st.frozen_cfg || st.frozen_dsc,
        })
    }

    /// Counts by state (dashboard, `/health`): nodes, converged, frozen,
    /// and nodes per PhysState and RunState of their Dsc.
    pub fn counters(&self) -> Json {
        let m = &self.model;
        let mut phys = [0usize; 6];
        let mut run = [0usize; 4];
        let (mut converged, mut frozen) = (0usize, 0usize);
        for s in 0..self.shards.len() {
            for st in self.shard(s) {
                if let Some(c) = usize::try_from(st.vars[m.phys])
                    .ok()
                    .and_then(|x| phys.get_mut(x))
                {
                    *c += 1;
                }
                if let Some(c) = usize::try_from(st.vars[m.run])
                    .ok()
                    .and_then(|x| run.get_mut(x))
                {
                    *c += 1;
                }
                converged += usize::from(st.converged);
                frozen += usize::from(st.frozen_cfg);
            }
        }
        let named = |var: usize, counts: &[usize]| {
            counts
                .iter()
                .enumerate()
                .map(|(x, v)| (m.name_of(var, x as i32).to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "nodes": self.len(),
            "converged": converged,
            "frozen": frozen,
            "phys": named(m.phys, &phys),
            "run": named(m.run, &run),
        })
    }

    /// Number of shards (for readers that walk the whole view).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The states of shard `s` with their node indices.
    pub fn shard_states(&self, s: usize) -> Vec<(usize, Arc<LeafState>)> {
        self.shard(s)
            .into_iter()
            .enumerate()
            .map(|(k, st)| (s * SHARD + k, st))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: usize) -> View {
        let layout = Layout {
            names: (0..n).map(|i| format!("n{i:04}")).collect(),
            racks: (0..n).map(|i| format!("r{}", i / 100)).collect(),
            groups: (0..n).map(|i| vec![(i / 100) as u32]).collect(),
            group_names: (0..n.div_ceil(100)).map(|r| format!("r{r}")).collect(),
        };
        View::new(Arc::new(Model::new().unwrap()), layout)
    }

    #[test]
    fn pages_walk_every_selected_node_once() {
        let v = view(1000);
        let sel = Selection::default();
        let (mut seen, mut from) = (Vec::new(), Some(0));
        while let Some(f) = from {
            let (page, next) = v.page(&sel, f, 300).unwrap();
            assert!(page.len() <= 300);
            seen.extend(page);
            from = next;
        }
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        let sel = Selection {
            group: Some("@r3".into()),
            ..Selection::default()
        };
        let (page, next) = v.page(&sel, 0, 64).unwrap();
        assert_eq!((page[0], page.len(), next), (300, 64, Some(364)));
        let (page, next) = v.page(&sel, 364, 64).unwrap();
        assert_eq!((page.len(), next), (36, None));
    }

    #[test]
    fn a_replaced_state_is_seen_and_its_rendering_is_fresh() {
        let v = view(600);
        let st = v.get(300);
        let before = v.detail(300, &st);
        assert!(
            std::str::from_utf8(&before)
                .unwrap()
                .contains("\"converged\":true")
        );
        let mut n = Node::default();
        n.phys_state = 2;
        v.set(
            300,
            LeafState::new(
                Some(Arc::new(n.clone())),
                Some(Arc::new(n)),
                vec![0; st.target.len()],
                vec![0; st.vars.len()],
                false,
                false,
                false,
            ),
        );
        let st = v.get(300);
        let after = std::str::from_utf8(&v.detail(300, &st))
            .unwrap()
            .to_string();
        assert!(after.contains("\"converged\":false"), "{after}");
        assert!(after.contains("POWER_ON"), "{after}");
        let sel = Selection {
            filter: Some("/PhysState=POWER_ON".into()),
            ..Selection::default()
        };
        assert_eq!(v.select(&sel).unwrap(), vec![300]);
        assert_eq!(v.counters()["converged"], 599);
    }
}
