//! [`Driver`]: the one engine driver of a node: its [`NodeEngine`], the
//! modules that perform its steps (here the virtual [`VirtualWorld`]), the
//! step timing and re-planning, sans-io on a millisecond clock the caller
//! chooses (virtual in the simulator, monotonic on real sockets).
//!
//! `layercake` (a node's `NodeRuntime`) and `loadtest --engine` (each
//! leaf's engine) both run their engines through it; they differ only in
//! what they add to the Dsc they publish.
//!
//! Inputs: [`Driver::set_cfg`] when a Cfg arrives, [`Driver::drive`] at
//! [`Driver::poll_timeout`], [`Driver::set_dsc_values`] for untracked Dsc
//! values the node reports (`/Busy`: they open and close the Dsc gates).
//! Outputs: [`Driver::dsc`] (publish it when it changed) and
//! [`Driver::poll_step`] (finished and failed steps with their durations,
//! for metrics).
//!
//! External modules: the mutations of the modules named in
//! [`Driver::set_external`] are not performed by the virtual world but
//! handed to the caller ([`Driver::poll_external`]), who runs them on real
//! things and answers with [`Driver::report`] (new Dsc values, also
//! unsolicited ones: a container that died) or [`Driver::report_failed`].

use std::collections::VecDeque;
use std::sync::Arc;

use proto::node::Node;

use crate::executor::{ExecEvent, Relation};
use crate::graph::Graph;
use crate::mutation::{MutationId, VarId};
use crate::node::NodeEngine;
use crate::planner::PlanError;
use crate::registry::AccessError;
use crate::registry::Registry;
use crate::url::Path;
use crate::value::Value;
use crate::virt::{Outcome, VirtualConfig, VirtualWorld};

/// Step reports a driver keeps before the oldest are dropped (the caller
/// drains them after every input).
pub const STEPS_MAX: usize = 256;

/// What happened to one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A step this node runs started.
    Started {
        /// The mutation.
        mutation: MutationId,
    },
    /// A step reached its values; `took_ms` when it started here.
    Done {
        /// The mutation.
        mutation: MutationId,
        /// Milliseconds from start to done.
        took_ms: Option<u64>,
    },
    /// A step failed (`timed_out`: no answer before its timeout; else its
    /// module reported an error); its fail-to value was applied.
    Failed {
        /// The mutation.
        mutation: MutationId,
        /// Milliseconds from start to failure.
        took_ms: Option<u64>,
        /// True for a timeout, false for a module error.
        timed_out: bool,
    },
}

/// One node's engine driven against its modules (see the module doc).
pub struct Driver {
    engine: NodeEngine,
    world: VirtualWorld,
    /// The local step in flight and when it started.
    step: Option<(MutationId, u64)>,
    /// The last completion delivered was a module error (not a timeout).
    module_failed: bool,
    steps: VecDeque<Step>,
    /// Per mutation: performed by the caller, not the virtual world.
    external: Vec<bool>,
    calls: VecDeque<External>,
}

/// A step of an external module for the caller to perform; answer with
/// [`Driver::report`] or [`Driver::report_failed`] echoing `token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct External {
    /// The mutation to perform.
    pub mutation: MutationId,
    /// The step's token.
    pub token: u32,
}

/// External calls a driver queues before the oldest are dropped (a
/// dropped call times out like a lost one).
pub const CALLS_MAX: usize = 256;

impl Driver {
    /// The engine of node `name` over `graph`/`registry`, running the steps
    /// of `relation`'s contexts on a virtual machine seeded by `seed`.
    pub fn new(
        graph: Arc<Graph>,
        registry: Arc<Registry>,
        relation: Relation,
        name: &str,
        modules: VirtualConfig,
        seed: u64,
    ) -> Driver {
        let world = VirtualWorld::new(&graph, 1, modules, seed);
        let external = vec![false; graph.set().mutations.len()];
        Driver {
            engine: NodeEngine::new(graph, registry, relation, name),
            world,
            step: None,
            module_failed: false,
            steps: VecDeque::new(),
            external,
            calls: VecDeque::new(),
        }
    }

    /// Makes the caller perform the mutations of `modules` (see the module
    /// doc); the virtual world performs the others.
    pub fn set_external(&mut self, modules: &[&str]) {
        let g = self.engine.executor().graph().clone();
        for (i, m) in g.set().mutations.iter().enumerate() {
            self.external[i] = modules.contains(&m.module.as_str());
        }
    }

    /// The next external step to perform.
    #[must_use]
    pub fn poll_external(&mut self) -> Option<External> {
        self.calls.pop_front()
    }

    /// Values an external module reports (a finished step, or a change it
    /// observed by itself), then runs what is due.
    pub fn report(&mut self, values: &[(VarId, i32)], now_ms: u64) {
        self.engine.handle_report(values, now_ms);
        self.drain_events(now_ms);
        self.drive(now_ms);
    }

    /// The external step with `token` failed (a module error).
    pub fn report_failed(&mut self, token: u32, now_ms: u64) {
        self.module_failed = true;
        self.engine.handle_failed(token, now_ms);
        self.drain_events(now_ms);
        self.module_failed = false;
        self.drive(now_ms);
    }

    /// Writes Dsc values (untracked ones such as `/Busy`, or tracked ones
    /// like a report); a step waiting for a Dsc gate that opens starts here.
    pub fn set_dsc_values(
        &mut self,
        values: &[(Path, Value)],
        now_ms: u64,
    ) -> Result<(), AccessError> {
        let r = self.engine.set_dsc_values(values, now_ms);
        self.drain_events(now_ms);
        self.drive(now_ms);
        r
    }

    /// What the chain waits for: `(mutation, conditions)` while the next
    /// step's Dsc gate is closed.
    pub fn waiting(&self) -> Option<(String, String)> {
        self.engine.waiting()
    }

    /// The graph driven.
    pub fn graph(&mut self) -> Arc<Graph> {
        self.engine.executor().graph().clone()
    }

    /// The node's Cfg as the engine holds it.
    pub fn cfg(&self) -> &Node {
        self.engine.cfg()
    }

    /// The node's Dsc as the engine knows it.
    pub fn dsc(&self) -> &Node {
        self.engine.dsc()
    }

    /// True when the Dsc is compatible with the Cfg.
    pub fn is_converged(&self) -> bool {
        self.engine.is_converged()
    }

    /// The chain the engine runs (mutation names), for descriptions.
    pub fn chain_names(&self) -> Vec<String> {
        self.engine.chain_names()
    }

    /// A new Cfg: the engine replaces its chain, then runs what is due.
    /// `freeze`/`thaw` say whether the Cfg freezes the node or lifts a
    /// freeze (freezing happens before the new target, thawing after).
    pub fn set_cfg(
        &mut self,
        cfg: Node,
        now_ms: u64,
        freeze: bool,
        thaw: bool,
    ) -> Result<(), PlanError> {
        if freeze {
            self.engine.freeze();
        }
        let r = self.engine.set_cfg(cfg, now_ms);
        if thaw {
            self.engine.thaw(now_ms);
        }
        self.drive(now_ms);
        r
    }

    /// Delivers completions and deadlines due at `now_ms`, starts the module
    /// calls the engine asks for and re-plans where Dsc moved.
    pub fn drive(&mut self, now_ms: u64) {
        while let Some(c) = self.world.poll_completion(now_ms) {
            match c.outcome {
                Outcome::Dsc(values) => self.engine.handle_report(&values, now_ms),
                Outcome::Failed => {
                    self.module_failed = true;
                    self.engine.handle_failed(c.token, now_ms);
                }
            }
            self.drain_events(now_ms);
        }
        self.engine.handle_timeout(now_ms);
        self.drain_events(now_ms);
        while let Some(a) = self.engine.poll_action() {
            if self.external[a.mutation as usize] {
                if self.calls.len() >= CALLS_MAX {
                    self.calls.pop_front();
                }
                self.calls.push_back(External {
                    mutation: a.mutation,
                    token: a.token,
                });
            } else {
                self.world.handle_action(&a, now_ms);
            }
        }
        self.drain_events(now_ms);
    }

    /// The next completion or step deadline, milliseconds (a stale step
    /// deadline is harmless to handle).
    pub fn poll_timeout(&self) -> Option<u64> {
        [self.engine.poll_timeout(), self.world.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next step report, oldest first.
    pub fn poll_step(&mut self) -> Option<Step> {
        self.steps.pop_front()
    }

    fn push(&mut self, s: Step) {
        if self.steps.len() >= STEPS_MAX {
            self.steps.pop_front();
        }
        self.steps.push_back(s);
    }

    fn drain_events(&mut self, now_ms: u64) {
        while let Some(e) = self.engine.poll_event() {
            match e {
                ExecEvent::StepStarted {
                    mutation,
                    local: true,
                    ..
                } => {
                    self.step = Some((mutation, now_ms));
                    self.push(Step::Started { mutation });
                }
                ExecEvent::StepDone { mutation, .. } => {
                    let took_ms = self.took(mutation, now_ms);
                    self.push(Step::Done { mutation, took_ms });
                }
                ExecEvent::StepFailed { mutation, .. } => {
                    let took_ms = self.took(mutation, now_ms);
                    let timed_out = !std::mem::take(&mut self.module_failed);
                    self.push(Step::Failed {
                        mutation,
                        took_ms,
                        timed_out,
                    });
                }
                _ => {}
            }
        }
    }

    fn took(&mut self, mutation: MutationId, now_ms: u64) -> Option<u64> {
        match self.step.take() {
            Some((mu, t0)) if mu == mutation => Some(now_ms.saturating_sub(t0)),
            other => {
                self.step = other;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virt::build;

    #[test]
    fn a_node_boots_and_reports_its_steps() {
        let (reg, graph) = build().unwrap();
        let (reg, graph) = (Arc::new(reg), Arc::new(graph));
        let mut d = Driver::new(
            graph,
            reg.clone(),
            Relation::All,
            "n1",
            VirtualConfig::default(),
            7,
        );
        let mut cfg = reg.new_node("n1");
        cfg.phys_state = 2; // POWER_ON
        cfg.run_state = 2; // SYNC
        d.set_cfg(cfg, 0, false, false).unwrap();
        let mut now = 0;
        let mut done = 0;
        for _ in 0..10_000 {
            while let Some(s) = d.poll_step() {
                if let Step::Done { took_ms, .. } = s {
                    assert!(took_ms.is_some(), "a local step is timed");
                    done += 1;
                }
            }
            let Some(next) = d.poll_timeout() else { break };
            now = next.max(now);
            d.drive(now);
        }
        assert!(d.is_converged());
        assert!(done >= 3, "discover, power on and boot steps: {done}");
    }
}
