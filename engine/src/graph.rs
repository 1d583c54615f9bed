//! The epistemic state graph, built once per module set in Kraken's three
//! phases, with JSON and Graphviz DOT export.
//!
//! A graph node is one assignment of every tracked variable (an enum
//! number, 0 = UNKNOWN), interned as a [`StateId`]. Edges are mutation steps
//! (plannable) or fail-to transitions (taken on timeout, never planned).
//!
//! 1. **Expand**: from the all-unknown root through every mutation that is
//!    in-wise (its `from`, `requires` and `excludes` hold) and out-wise (its
//!    result still satisfies them) compatible, and through fail-to values.
//!    With [`BuildOptions::drift`], every combination of declared values is
//!    added too, so any Dsc a module can report is a graph node.
//! 2. **Epistemology**: for each variable, the ways it can become known:
//!    one conjunction per edge taking it from UNKNOWN, made of that edge's
//!    requirements on variables it does not itself mutate.
//! 3. **Strip and merge**: values whose variable is not knowable in their
//!    state are set to UNKNOWN (to a fixpoint), equal states merge, and the
//!    edges are recomputed on the stripped states.

use crate::mutation::{Mutation, MutationId, MutationSet, VarId};
use crate::registry::Registry;
use petgraph::graph::{DiGraph, NodeIndex};
use proto::node::Node;
use std::collections::{HashMap, VecDeque};

/// Index of a graph node.
pub type StateId = u32;
/// Index of a graph edge.
pub type EdgeId = u32;

/// The most graph nodes (bounds memory and the drift product).
pub const STATES_MAX: usize = 1 << 16;

/// Options for [`Graph::build`].
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// Add every combination of declared values in phase 1.
    pub drift: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self { drift: true }
    }
}

/// What an edge stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EdgeKind {
    /// A mutation step the planner may choose.
    Step,
    /// The fail-to transition of a mutation that timed out.
    FailTo,
}

/// One edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeInfo {
    /// Source state.
    pub from: StateId,
    /// Target state.
    pub to: StateId,
    /// The mutation.
    pub mutation: MutationId,
    /// Step or fail-to.
    pub kind: EdgeKind,
}

/// The graph is too large. Nothing was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("epistemic graph exceeds {STATES_MAX} states")]
pub struct TooLarge;

/// One way of knowing a variable: `(var, value)` pairs that must all hold.
pub type Conjunction = Vec<(VarId, i32)>;

/// The epistemic state graph of one module set.
pub struct Graph {
    set: MutationSet,
    graph: DiGraph<Box<[i32]>, EdgeInfo>,
    index: HashMap<Box<[i32]>, StateId>,
    edges: Vec<EdgeInfo>,
    out_steps: Vec<Vec<EdgeId>>,
    in_steps: Vec<Vec<EdgeId>>,
    know: Vec<Vec<Conjunction>>,
    raw_states: usize,
}

impl Graph {
    /// Builds the graph in three phases.
    pub fn build(set: MutationSet, opts: BuildOptions) -> Result<Self, TooLarge> {
        let raw = expand(&set, opts.drift)?;
        let know = epistemology(&set);
        let mut g = Graph {
            raw_states: raw.len(),
            set,
            graph: DiGraph::new(),
            index: HashMap::new(),
            edges: Vec::new(),
            out_steps: Vec::new(),
            in_steps: Vec::new(),
            know,
        };
        g.strip_and_merge(raw)?;
        Ok(g)
    }

    fn strip_and_merge(&mut self, raw: Vec<Box<[i32]>>) -> Result<(), TooLarge> {
        let mut work = VecDeque::new();
        for mut s in raw {
            self.strip(&mut s);
            if let Some(id) = self.intern(s)? {
                work.push_back(id);
            }
        }
        while let Some(id) = work.pop_front() {
            for m in 0..self.set.mutations.len() as MutationId {
                self.add_edges(id, m, &mut work)?;
            }
        }
        Ok(())
    }

    fn add_edges(
        &mut self,
        id: StateId,
        m: MutationId,
        work: &mut VecDeque<StateId>,
    ) -> Result<(), TooLarge> {
        let mutation = &self.set.mutations[m as usize];
        let s = self.state(id).to_vec();
        let Some(mut t) = apply(mutation, &s) else {
            return Ok(());
        };
        let fail = mutation.fail_to.map(|(v, x)| {
            let mut f = s.clone();
            f[v as usize] = x;
            f
        });
        self.strip(&mut t);
        self.link(id, t.into(), m, EdgeKind::Step, work)?;
        if let Some(mut f) = fail {
            self.strip(&mut f);
            self.link(id, f.into(), m, EdgeKind::FailTo, work)?;
        }
        Ok(())
    }

    fn link(
        &mut self,
        from: StateId,
        to: Box<[i32]>,
        m: MutationId,
        kind: EdgeKind,
        work: &mut VecDeque<StateId>,
    ) -> Result<(), TooLarge> {
        let to = match self.intern(to.clone())? {
            Some(new) => {
                work.push_back(new);
                new
            }
            None => self.index[&to],
        };
        if to == from {
            return Ok(());
        }
        let e = EdgeInfo {
            from,
            to,
            mutation: m,
            kind,
        };
        let id = self.edges.len() as EdgeId;
        self.graph.add_edge(
            NodeIndex::new(from as usize),
            NodeIndex::new(to as usize),
            e,
        );
        self.edges.push(e);
        if kind == EdgeKind::Step {
            self.out_steps[from as usize].push(id);
            self.in_steps[to as usize].push(id);
        }
        Ok(())
    }

    /// Adds a state; `Some(id)` when it is new.
    fn intern(&mut self, s: Box<[i32]>) -> Result<Option<StateId>, TooLarge> {
        if self.index.contains_key(&s) {
            return Ok(None);
        }
        if self.index.len() >= STATES_MAX {
            return Err(TooLarge);
        }
        let id = self.graph.add_node(s.clone()).index() as StateId;
        self.index.insert(s, id);
        self.out_steps.push(Vec::new());
        self.in_steps.push(Vec::new());
        Ok(Some(id))
    }

    /// Sets unknowable values to UNKNOWN (to a fixpoint); true if any changed.
    pub fn strip(&self, s: &mut [i32]) -> bool {
        let mut any = false;
        loop {
            let before = any;
            for v in 0..s.len() {
                if s[v] != 0 && !self.knowable(v as VarId, s) {
                    s[v] = 0;
                    any = true;
                }
            }
            if any == before {
                return any;
            }
        }
    }

    /// True when variable `v` can be known in state `s`.
    pub fn knowable(&self, v: VarId, s: &[i32]) -> bool {
        let ways = &self.know[v as usize];
        ways.is_empty()
            || ways
                .iter()
                .any(|c| c.iter().all(|&(w, x)| s[w as usize] == x))
    }

    /// True when every known value in `s` is knowable.
    pub fn is_real(&self, s: &[i32]) -> bool {
        (0..s.len()).all(|v| s[v] == 0 || self.knowable(v as VarId, s))
    }

    /// The ways of knowing each variable (phase 2's result).
    pub fn epistemology(&self) -> &[Vec<Conjunction>] {
        &self.know
    }

    /// The validated declarations.
    pub fn set(&self) -> &MutationSet {
        &self.set
    }
    /// One mutation.
    pub fn mutation(&self, m: MutationId) -> &Mutation {
        &self.set.mutations[m as usize]
    }
    /// Number of graph nodes.
    pub fn node_count(&self) -> usize {
        self.index.len()
    }
    /// Number of edges (steps and fail-to).
    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }
    /// States found by phase 1 before stripping.
    pub fn raw_state_count(&self) -> usize {
        self.raw_states
    }
    /// The petgraph view.
    pub fn petgraph(&self) -> &DiGraph<Box<[i32]>, EdgeInfo> {
        &self.graph
    }
    /// The values of a state.
    pub fn state(&self, id: StateId) -> &[i32] {
        &self.graph[NodeIndex::new(id as usize)]
    }
    /// The state with exactly these values.
    pub fn lookup(&self, s: &[i32]) -> Option<StateId> {
        self.index.get(s).copied()
    }
    /// The all-unknown root.
    pub fn root(&self) -> StateId {
        self.lookup(&vec![0; self.set.vars.len()])
            .expect("root is always a state")
    }
    /// One edge.
    pub fn edge(&self, e: EdgeId) -> &EdgeInfo {
        &self.edges[e as usize]
    }
    /// Plannable edges leaving `s`.
    pub fn out_steps(&self, s: StateId) -> &[EdgeId] {
        &self.out_steps[s as usize]
    }
    /// Plannable edges entering `s`.
    pub fn in_steps(&self, s: StateId) -> &[EdgeId] {
        &self.in_steps[s as usize]
    }
    /// The fail-to state of mutation `m` taken from `s`, stripped.
    pub fn fail_state(&self, s: StateId, m: MutationId) -> Option<StateId> {
        let (v, x) = self.mutation(m).fail_to?;
        let mut f = self.state(s).to_vec();
        f[v as usize] = x;
        self.strip(&mut f);
        self.lookup(&f)
    }

    /// The tracked values of a node (unstripped).
    pub fn project(&self, reg: &Registry, node: &Node) -> Vec<i32> {
        let get = |p| match reg.get(node, p) {
            Ok(crate::value::Value::Enum(n)) => n,
            _ => 0,
        };
        self.set.vars.iter().map(|v| get(&v.path)).collect()
    }

    /// True when state `s` has every non-zero value of `target`.
    pub fn compatible(&self, s: StateId, target: &[i32]) -> bool {
        self.state(s)
            .iter()
            .zip(target)
            .all(|(a, b)| *b == 0 || a == b)
    }

    /// A state as `URL=NAME` pairs of its known values.
    pub fn label(&self, s: StateId) -> Vec<String> {
        let vars = &self.set.vars;
        let st = self.state(s);
        (0..vars.len())
            .filter(|&v| st[v] != 0)
            .map(|v| {
                format!(
                    "{}={}",
                    vars[v].url,
                    vars[v].spec.name_of(st[v]).unwrap_or("?")
                )
            })
            .collect()
    }

    /// The graph as JSON: variables, nodes, edges and the epistemology.
    pub fn to_json(&self) -> serde_json::Value {
        let nodes: Vec<_> = (0..self.node_count() as StateId)
            .map(|s| serde_json::json!({"id": s, "state": self.label(s)}))
            .collect();
        let edges: Vec<_> = self
            .edges
            .iter()
            .map(|e| {
                let m = self.mutation(e.mutation);
                serde_json::json!({"from": e.from, "to": e.to, "mutation": m.name, "kind": e.kind})
            })
            .collect();
        let vars: Vec<_> = self.set.vars.iter().map(|v| v.url.clone()).collect();
        let know: Vec<Vec<Vec<String>>> =
            self.know.iter().map(|ways| self.ways_text(ways)).collect();
        serde_json::json!({"vars": vars, "nodes": nodes, "edges": edges, "epistemology": know})
    }

    fn ways_text(&self, ways: &[Conjunction]) -> Vec<Vec<String>> {
        let name = |v: VarId, x: i32| {
            let var = &self.set.vars[v as usize];
            format!("{}={}", var.url, var.spec.name_of(x).unwrap_or("?"))
        };
        ways.iter()
            .map(|c| c.iter().map(|&(v, x)| name(v, x)).collect())
            .collect()
    }

    /// The graph in Graphviz DOT; fail-to edges are dashed.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph epistemic {\n  node [shape=box];\n");
        for s in 0..self.node_count() as StateId {
            let l = self.label(s);
            let l = if l.is_empty() {
                "(all unknown)".to_owned()
            } else {
                l.join("\\n")
            };
            out.push_str(&format!("  n{s} [label=\"{l}\"];\n"));
        }
        for e in &self.edges {
            let style = if e.kind == EdgeKind::FailTo {
                ", style=dashed"
            } else {
                ""
            };
            let name = &self.mutation(e.mutation).name;
            out.push_str(&format!(
                "  n{} -> n{} [label=\"{name}\"{style}];\n",
                e.from, e.to
            ));
        }
        out.push_str("}\n");
        out
    }
}

/// The result of `m` from `s`, if in-wise and out-wise compatible.
pub fn apply(m: &Mutation, s: &[i32]) -> Option<Vec<i32>> {
    let holds = |s: &[i32]| {
        m.requires.iter().all(|&(v, x)| s[v as usize] == x)
            && !m.excludes.iter().any(|&(v, x)| s[v as usize] == x)
    };
    if !m.mutates.iter().all(|&(v, f, _)| s[v as usize] == f) || !holds(s) {
        return None;
    }
    let mut t = s.to_vec();
    for &(v, _, to) in &m.mutates {
        t[v as usize] = to;
    }
    holds(&t).then_some(t)
}

fn expand(set: &MutationSet, drift: bool) -> Result<Vec<Box<[i32]>>, TooLarge> {
    let root: Box<[i32]> = vec![0; set.vars.len()].into();
    let mut seen: HashMap<Box<[i32]>, ()> = HashMap::new();
    let mut order = vec![root.clone()];
    seen.insert(root, ());
    let mut i = 0;
    while i < order.len() {
        let s = order[i].clone();
        i += 1;
        for m in &set.mutations {
            let mut next = Vec::new();
            if let Some(t) = apply(m, &s) {
                next.push(t);
                if let Some((v, x)) = m.fail_to {
                    let mut f = s.to_vec();
                    f[v as usize] = x;
                    next.push(f);
                }
            }
            for t in next {
                push_new(&mut seen, &mut order, t.into())?;
            }
        }
    }
    if drift {
        for s in product(&declared_values(set))? {
            push_new(&mut seen, &mut order, s)?;
        }
    }
    Ok(order)
}

fn push_new(
    seen: &mut HashMap<Box<[i32]>, ()>,
    order: &mut Vec<Box<[i32]>>,
    s: Box<[i32]>,
) -> Result<(), TooLarge> {
    if seen.insert(s.clone(), ()).is_none() {
        if order.len() >= STATES_MAX {
            return Err(TooLarge);
        }
        order.push(s);
    }
    Ok(())
}

fn declared_values(set: &MutationSet) -> Vec<Vec<i32>> {
    let mut vals = vec![vec![0]; set.vars.len()];
    let mut add = |v: VarId, x: i32| {
        if !vals[v as usize].contains(&x) {
            vals[v as usize].push(x);
        }
    };
    for m in &set.mutations {
        m.mutates.iter().for_each(|&(v, f, t)| {
            add(v, f);
            add(v, t)
        });
        m.requires
            .iter()
            .chain(&m.excludes)
            .chain(&m.fail_to)
            .for_each(|&(v, x)| add(v, x));
    }
    vals
}

fn product(vals: &[Vec<i32>]) -> Result<Vec<Box<[i32]>>, TooLarge> {
    let size = vals.iter().try_fold(1usize, |acc, v| {
        acc.checked_mul(v.len()).filter(|&n| n <= STATES_MAX)
    });
    let size = size.ok_or(TooLarge)?;
    let mut out = Vec::with_capacity(size);
    for mut k in 0..size {
        let mut s = Vec::with_capacity(vals.len());
        for v in vals {
            s.push(v[k % v.len()]);
            k /= v.len();
        }
        out.push(s.into());
    }
    Ok(out)
}

fn epistemology(set: &MutationSet) -> Vec<Vec<Conjunction>> {
    let mut know: Vec<Vec<Conjunction>> = vec![Vec::new(); set.vars.len()];
    for m in &set.mutations {
        for &(v, from, _) in &m.mutates {
            if from != 0 {
                continue;
            }
            let own = |w: VarId| m.mutates.iter().any(|&(x, _, _)| x == w);
            let conj: Conjunction = m
                .requires
                .iter()
                .copied()
                .filter(|&(w, _)| !own(w))
                .collect();
            if !know[v as usize].contains(&conj) {
                know[v as usize].push(conj);
            }
        }
    }
    know
}
