//! The planner: for a start state and a Cfg target, the mutation chain with
//! the fewest steps (ties broken by total cost, then by edge id), and the
//! plan preview.
//!
//! Each distinct `(target values, guard mask)` is interned as a
//! [`TargetId`] once: a backward Dijkstra from every compatible state over
//! the enabled step edges yields one shortest-path tree, and the chain of
//! every state is stored as a shared [`Plan`]. Planning is then one index
//! lookup. Because all chains of a target come from one tree, the chain
//! from any state on a chain is that chain's suffix.

use crate::graph::{EdgeId, Graph, StateId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// A mutation chain: step edges in order (empty: already there).
pub type Plan = Arc<[EdgeId]>;
/// An interned Cfg target.
pub type TargetId = u32;

/// The most targets one planner interns.
pub const TARGETS_MAX: usize = 4096;

/// Why no target could be interned. The planner is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// [`TARGETS_MAX`] targets are interned already.
    #[error("planner holds {TARGETS_MAX} targets")]
    TooManyTargets,
    /// The target has the wrong number of values.
    #[error("target has {got} values, graph has {want} variables")]
    BadTarget {
        /// Values given.
        got: usize,
        /// Variables in the graph.
        want: usize,
    },
}

/// Plans by table lookup over a shared [`Graph`].
pub struct Planner {
    graph: Arc<Graph>,
    ids: HashMap<(Box<[i32]>, u64), TargetId>,
    chains: Vec<Vec<Option<Plan>>>,
}

impl Planner {
    /// A planner with no targets yet.
    pub fn new(graph: Arc<Graph>) -> Self {
        Self {
            graph,
            ids: HashMap::new(),
            chains: Vec::new(),
        }
    }

    /// The graph planned over.
    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }

    /// Interns a target: Cfg values (0 = any) and the node's guard mask.
    pub fn target(&mut self, values: &[i32], mask: u64) -> Result<TargetId, PlanError> {
        let want = self.graph.set().vars.len();
        if values.len() != want {
            return Err(PlanError::BadTarget {
                got: values.len(),
                want,
            });
        }
        if let Some(&id) = self.ids.get(&(values.into(), mask)) {
            return Ok(id);
        }
        if self.chains.len() >= TARGETS_MAX {
            return Err(PlanError::TooManyTargets);
        }
        let id = self.chains.len() as TargetId;
        self.chains.push(build_tree(&self.graph, values, mask));
        self.ids.insert((values.into(), mask), id);
        Ok(id)
    }

    /// The chain from `start` to target `t`; `None` when unreachable.
    #[inline]
    pub fn plan(&self, start: StateId, t: TargetId) -> Option<&Plan> {
        self.chains.get(t as usize)?.get(start as usize)?.as_ref()
    }

    /// Plan preview: the chain each `(Dsc values, guard mask)` would run if
    /// its Cfg became `target`. Dsc values are stripped first; nothing runs.
    pub fn preview(
        &mut self,
        nodes: &[(Vec<i32>, u64)],
        target: &[i32],
    ) -> Result<Vec<Option<Plan>>, PlanError> {
        let mut out = Vec::with_capacity(nodes.len());
        for (dsc, mask) in nodes {
            let t = self.target(target, *mask)?;
            let mut s = dsc.clone();
            self.graph.strip(&mut s);
            out.push(self.graph.lookup(&s).and_then(|s| self.plan(s, t).cloned()));
        }
        Ok(out)
    }

    /// The mutation names of a chain.
    pub fn describe(&self, plan: &Plan) -> Vec<String> {
        plan.iter()
            .map(|&e| {
                self.graph
                    .mutation(self.graph.edge(e).mutation)
                    .name
                    .clone()
            })
            .collect()
    }
}

type Dist = (u32, u64);

fn build_tree(g: &Graph, target: &[i32], mask: u64) -> Vec<Option<Plan>> {
    let n = g.node_count();
    let mut dist: Vec<Option<Dist>> = vec![None; n];
    let mut next: Vec<Option<EdgeId>> = vec![None; n];
    let mut done = vec![false; n];
    let mut chains: Vec<Option<Plan>> = vec![None; n];
    let mut heap = BinaryHeap::new();
    for s in 0..n as StateId {
        if g.compatible(s, target) {
            dist[s as usize] = Some((0, 0));
            heap.push(Reverse((0u32, 0u64, s)));
        }
    }
    while let Some(Reverse((steps, cost, v))) = heap.pop() {
        if done[v as usize] || dist[v as usize] != Some((steps, cost)) {
            continue;
        }
        done[v as usize] = true;
        chains[v as usize] = Some(chain_of(&chains, next[v as usize], g));
        for &e in g.in_steps(v) {
            let edge = g.edge(e);
            let m = g.mutation(edge.mutation);
            let u = edge.from as usize;
            if done[u] || (mask >> m.guard) & 1 == 0 {
                continue;
            }
            let cand = (steps + 1, cost + u64::from(m.cost));
            let better = match dist[u] {
                None => true,
                Some(d) => cand < d || (cand == d && Some(e) < next[u]),
            };
            if better {
                dist[u] = Some(cand);
                next[u] = Some(e);
                heap.push(Reverse((cand.0, cand.1, edge.from)));
            }
        }
    }
    chains
}

fn chain_of(chains: &[Option<Plan>], first: Option<EdgeId>, g: &Graph) -> Plan {
    match first {
        None => Arc::from(Vec::new()),
        Some(e) => {
            let rest = chains[g.edge(e).to as usize]
                .as_ref()
                .expect("successor settled first");
            let mut v = Vec::with_capacity(rest.len() + 1);
            v.push(e);
            v.extend_from_slice(rest);
            Arc::from(v)
        }
    }
}
