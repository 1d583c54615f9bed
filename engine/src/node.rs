//! [`NodeEngine`]: one node's engine, sans-io, for instances that manage a
//! single node (and for the per-node loadtest).
//!
//! It owns the node's Cfg and Dsc copies and a one-node [`Executor`]; `now`
//! is milliseconds on any monotonic clock the caller chooses.
//!
//! Inputs: [`NodeEngine::set_cfg`], [`NodeEngine::handle_dsc`] (a full Dsc),
//! [`NodeEngine::handle_report`] (values a module reported),
//! [`NodeEngine::set_dsc_values`] (untracked Dsc values such as `/Busy`,
//! which open and close the mutations' Dsc gates),
//! [`NodeEngine::handle_failed`], [`NodeEngine::handle_timeout`],
//! [`NodeEngine::freeze`], [`NodeEngine::thaw`]. After each input, drain
//! [`NodeEngine::poll_action`] (run each through the module that declared
//! its mutation, echoing its token), optionally [`NodeEngine::poll_event`],
//! then arm [`NodeEngine::poll_timeout`] (it may name a deadline that has
//! become stale; handling it is harmless).
//!
//! [`crate::driver::Driver`] runs this loop against the node's modules
//! (the one engine driver of a node, with step timing):
//!
//! ```
//! # use engine::{driver::Driver, virt::*, executor::Relation};
//! # use std::sync::Arc;
//! let (reg, graph) = build().unwrap();
//! let (reg, graph) = (Arc::new(reg), Arc::new(graph));
//! let mut d = Driver::new(graph, reg.clone(), Relation::All, "n1", VirtualConfig::default(), 7);
//! let mut cfg = reg.new_node("n1");
//! cfg.phys_state = 2; // POWER_ON
//! cfg.run_state = 2; // SYNC
//! d.set_cfg(cfg, 0, false, false).unwrap();
//! let mut now = 0;
//! while let Some(next) = d.poll_timeout() {
//!     now = next.max(now);
//!     d.drive(now);
//!     if d.is_converged() { break; }
//! }
//! assert!(d.is_converged());
//! ```

use crate::executor::{Action, ExecEvent, Executor, Relation};
use crate::graph::Graph;
use crate::mutation::VarId;
use crate::planner::PlanError;
use crate::registry::Registry;
use crate::value::Value;
use proto::node::Node;
use std::sync::Arc;

/// Events one [`NodeEngine`] queues before dropping newer ones.
pub const NODE_EVENTS_MAX: usize = 1024;

/// One node's Cfg, Dsc and executor.
pub struct NodeEngine {
    exec: Executor,
    registry: Arc<Registry>,
    cfg: Node,
    dsc: Node,
}

impl NodeEngine {
    /// A node named `name` whose copies carry every registered extension;
    /// `relation` says which contexts this instance runs.
    pub fn new(graph: Arc<Graph>, registry: Arc<Registry>, relation: Relation, name: &str) -> Self {
        let mut exec = Executor::new(graph);
        exec.set_events_max(NODE_EVENTS_MAX);
        exec.add_node(relation);
        let cfg = registry.new_node(name);
        Self {
            exec,
            dsc: cfg.clone(),
            cfg,
            registry,
        }
    }

    /// The Cfg copy.
    pub fn cfg(&self) -> &Node {
        &self.cfg
    }

    /// The Dsc copy (with fail-to and forgotten values applied).
    pub fn dsc(&self) -> &Node {
        &self.dsc
    }

    /// The registry in use.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The executor (for its chain and planner).
    pub fn executor(&mut self) -> &mut Executor {
        &mut self.exec
    }

    /// True when Dsc is compatible with Cfg.
    pub fn is_converged(&self) -> bool {
        self.exec.is_converged(0)
    }

    /// A new Cfg: replaces the chain.
    pub fn set_cfg(&mut self, cfg: Node, now_ms: u64) -> Result<(), PlanError> {
        let g = self.exec.graph().clone();
        let target = g.project(&self.registry, &cfg);
        let mask = g.set().guard_mask(&self.registry, &cfg);
        self.cfg = cfg;
        self.exec.set_target(0, &target, mask, now_ms)
    }

    /// A new full Dsc (its untracked values set the Dsc gates).
    pub fn handle_dsc(&mut self, dsc: Node, now_ms: u64) {
        let values = self.exec.graph().project(&self.registry, &dsc);
        self.dsc = dsc;
        self.exec.handle_dsc(0, &values, now_ms);
        self.update_gates(now_ms);
        self.sync_dsc();
    }

    /// Writes values into the Dsc copy (e.g. `/Busy` reported by the node
    /// itself, or a module's status fields). Tracked values among them are
    /// handled like a report; the Dsc gates are re-evaluated, so a step
    /// waiting for one starts in this call.
    pub fn set_dsc_values(
        &mut self,
        values: &[(crate::url::Path, Value)],
        now_ms: u64,
    ) -> Result<(), crate::registry::AccessError> {
        let g = self.exec.graph().clone();
        let mut tracked = Vec::new();
        for (p, v) in values {
            self.registry.set(&mut self.dsc, p, v)?;
            if let (Some(i), Value::Enum(x)) = (g.set().vars.iter().position(|w| w.path == *p), v) {
                tracked.push((i as VarId, *x));
            }
        }
        if !tracked.is_empty() {
            self.exec.handle_dsc_update(0, &tracked, now_ms);
        }
        self.update_gates(now_ms);
        self.sync_dsc();
        Ok(())
    }

    /// What the chain waits for, if its next step's Dsc gate is closed:
    /// `(mutation name, conditions)`, e.g. `("power_off", "excludes Dsc /Busy=BUSY")`.
    pub fn waiting(&self) -> Option<(String, String)> {
        let m = self.exec.waiting(0)?;
        let set = self.exec.graph().set();
        Some((
            set.mutations[m as usize].name.clone(),
            set.gate_text(m).to_owned(),
        ))
    }

    fn update_gates(&mut self, now_ms: u64) {
        let mask = self.exec.graph().set().gate_mask(&self.registry, &self.dsc);
        self.exec.set_gates(0, mask, now_ms);
    }

    /// Values a module reported (a completed step or a discovery).
    pub fn handle_report(&mut self, values: &[(VarId, i32)], now_ms: u64) {
        self.exec.handle_dsc_update(0, values, now_ms);
        self.sync_dsc();
    }

    /// The module running the step with `token` failed.
    pub fn handle_failed(&mut self, token: u32, now_ms: u64) {
        self.exec.handle_failed(0, token, now_ms);
        self.sync_dsc();
    }

    /// Fires deadlines at or before `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.exec.handle_timeout(now_ms);
        self.sync_dsc();
    }

    /// Stops driving the node.
    pub fn freeze(&mut self) {
        self.exec.freeze(0);
    }

    /// Resumes driving the node.
    pub fn thaw(&mut self, now_ms: u64) {
        self.exec.thaw(0, now_ms);
    }

    /// The next step to perform.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.exec.poll_action()
    }

    /// The next executor event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ExecEvent> {
        self.exec.poll_event()
    }

    /// The next deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.exec.poll_timeout()
    }

    /// Mutation names of the running chain from its current step on.
    pub fn chain_names(&self) -> Vec<String> {
        let g = self.exec.graph();
        self.exec.chain(0).map_or_else(Vec::new, |(c, pos)| {
            c[pos..]
                .iter()
                .map(|&e| g.mutation(g.edge(e).mutation).name.clone())
                .collect()
        })
    }

    /// Writes the executor's view of the tracked values into the Dsc copy.
    fn sync_dsc(&mut self) {
        let Some(s) = self.exec.state(0) else { return };
        let g = self.exec.graph().clone();
        for (var, &x) in g.set().vars.iter().zip(g.state(s)) {
            // Cannot fail: tracked variables are enums and `x` came from the graph.
            let _ = self.registry.set(&mut self.dsc, &var.path, &Value::Enum(x));
        }
    }
}
