//! The executor: a deterministic state machine that drives every node's
//! Dsc towards its Cfg, one active chain per node, from `(now_ms, input)`.
//!
//! Inputs: [`Executor::set_target`] (a Cfg change replaces the chain),
//! [`Executor::handle_dsc`] / [`Executor::handle_dsc_update`] (Dsc
//! changes), [`Executor::handle_failed`] (a module reported an error),
//! [`Executor::handle_timeout`], [`Executor::freeze`] / [`Executor::thaw`].
//! Outputs, polled in this order after each input: [`Executor::poll_action`]
//! (a step this instance must run via a module), [`Executor::poll_event`],
//! then [`Executor::poll_timeout`] (the next deadline to arm).
//!
//! Rules:
//! - A step completes when Dsc reaches its `to` values (a discovery: when
//!   its variables are known); the chain then continues, or re-plans if the
//!   state is not the one the chain expected.
//! - Any other Dsc change re-plans (self-healing); if the new chain starts
//!   with the step in flight, that step keeps running.
//! - A timeout or module failure sets the `fail_to` value; if the chain
//!   passes through that state it walks back to it, else it re-plans.
//! - Values that become unknowable are forgotten (set to UNKNOWN).
//! - Context: a step runs here only if this instance's [`Relation`] to the
//!   node allows it (SELF on the node, CHILD on its parent); otherwise the
//!   step is awaited (its timeout still applies).
//! - Re-plans are bounded by [`REPLANS_MAX`] per Cfg; then the node gives up
//!   until its Cfg changes or it is thawed.
//! - Gates: a step whose mutation has a Dsc gate (e.g. "excludes Dsc
//!   `/Busy`=BUSY") that is closed in the node's open-gate mask
//!   ([`Executor::set_gates`]) waits: no action, no timeout, an
//!   [`ExecEvent::Waiting`] event; it starts in the same call that opens
//!   the gate. A step already running is never interrupted by a gate.

use crate::graph::{EdgeId, Graph, StateId};
use crate::mutation::{Context, MutationId, MutationKind, VarId};
use crate::planner::{Plan, PlanError, Planner, TargetId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

/// Index of a node in an executor.
pub type NodeIdx = u32;
const NONE: u32 = u32::MAX;

/// Re-plans allowed per Cfg before a node gives up.
pub const REPLANS_MAX: u16 = 64;
/// Default bound on queued events; newer ones are dropped and counted.
pub const EVENTS_MAX: usize = 1 << 16;

/// This instance's relation to a node: which contexts it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// This instance is the node: it runs SELF and ALL steps.
    SelfNode,
    /// This instance is the node's parent: it runs CHILD and ALL steps.
    Parent,
    /// All-in-one (tests, loadtest): it runs every step.
    All,
}

impl Relation {
    /// True when a step in context `c` runs on this instance.
    pub fn runs(self, c: Context) -> bool {
        matches!(
            (self, c),
            (Relation::All, _)
                | (_, Context::All)
                | (Relation::SelfNode, Context::SelfNode)
                | (Relation::Parent, Context::Child)
        )
    }
}

/// A step to perform through the module that declared `mutation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// The node.
    pub node: NodeIdx,
    /// The mutation to perform.
    pub mutation: MutationId,
    /// Echo it in [`Executor::handle_failed`]; stale tokens are ignored.
    pub token: u32,
}

/// Why a chain was (re)planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Cfg changed (or first target).
    Cfg,
    /// Dsc changed in a way the chain did not expect.
    Unexpected,
    /// A step timed out or failed.
    Timeout,
    /// The node was thawed.
    Thaw,
}

/// What the executor did, for observers and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecEvent {
    /// A step started; `local` when this instance runs it.
    StepStarted {
        /// Node.
        node: NodeIdx,
        /// Mutation.
        mutation: MutationId,
        /// Whether an [`Action`] was emitted here.
        local: bool,
    },
    /// A step reached its `to` values.
    StepDone {
        /// Node.
        node: NodeIdx,
        /// Mutation.
        mutation: MutationId,
    },
    /// A step timed out or its module failed; `fail_to` was applied.
    StepFailed {
        /// Node.
        node: NodeIdx,
        /// Mutation.
        mutation: MutationId,
    },
    /// A new chain replaced the old one.
    Replanned {
        /// Node.
        node: NodeIdx,
        /// Why.
        reason: Reason,
    },
    /// After a failure the chain resumed at an earlier state of itself.
    WalkedBack {
        /// Node.
        node: NodeIdx,
    },
    /// Dsc is compatible with Cfg.
    Converged {
        /// Node.
        node: NodeIdx,
    },
    /// No chain leads from Dsc to Cfg (or Dsc is not a graph state).
    NoPlan {
        /// Node.
        node: NodeIdx,
    },
    /// A value became unknowable and was set to UNKNOWN.
    Forgot {
        /// Node.
        node: NodeIdx,
        /// Variable.
        var: VarId,
    },
    /// The next step's Dsc gate is closed: the chain waits for it to open.
    Waiting {
        /// Node.
        node: NodeIdx,
        /// The waiting mutation.
        mutation: MutationId,
    },
    /// [`REPLANS_MAX`] re-plans were used; the node waits for a new Cfg.
    GaveUp {
        /// Node.
        node: NodeIdx,
    },
}

#[derive(Debug, Clone)]
struct Slot {
    state: StateId,
    target: TargetId,
    chain: Option<Plan>,
    step: EdgeId,
    pos: u16,
    replans: u16,
    token: u32,
    relation: Relation,
    frozen: bool,
    converged: bool,
    /// Open gates (bit i: gate i's conditions hold in Dsc).
    gates: u64,
    /// `step` waits for its gate.
    waiting: bool,
}

/// Drives many nodes' chains; sans-io, deterministic.
pub struct Executor {
    planner: Planner,
    slots: Vec<Slot>,
    timers: BinaryHeap<Reverse<(u64, NodeIdx, u32)>>,
    actions: VecDeque<Action>,
    events: VecDeque<ExecEvent>,
    events_max: usize,
    events_dropped: u64,
}

impl Executor {
    /// An executor over `graph` with no nodes.
    pub fn new(graph: Arc<Graph>) -> Self {
        Self {
            planner: Planner::new(graph),
            slots: Vec::new(),
            timers: BinaryHeap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            events_max: EVENTS_MAX,
            events_dropped: 0,
        }
    }

    /// Sets the event queue bound (default [`EVENTS_MAX`]).
    pub fn set_events_max(&mut self, max: usize) {
        self.events_max = max;
    }

    /// The planner (for previews over the same graph).
    pub fn planner(&mut self) -> &mut Planner {
        &mut self.planner
    }

    /// The graph.
    pub fn graph(&self) -> &Arc<Graph> {
        self.planner.graph()
    }

    /// Adds a node in the all-unknown state, with no target yet.
    pub fn add_node(&mut self, relation: Relation) -> NodeIdx {
        let root = self.graph().root();
        self.slots.push(Slot {
            state: root,
            target: NONE,
            chain: None,
            step: NONE,
            pos: 0,
            replans: 0,
            token: 0,
            relation,
            frozen: false,
            converged: false,
            gates: u64::MAX,
            waiting: false,
        });
        (self.slots.len() - 1) as NodeIdx
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The node's Dsc state, if it is a graph state.
    pub fn state(&self, n: NodeIdx) -> Option<StateId> {
        Some(self.slots[n as usize].state).filter(|&s| s != NONE)
    }

    /// True when the node's Dsc is compatible with its Cfg.
    pub fn is_converged(&self, n: NodeIdx) -> bool {
        self.slots[n as usize].converged
    }

    /// The chain the node is running and the index of its current step.
    pub fn chain(&self, n: NodeIdx) -> Option<(Plan, usize)> {
        let s = &self.slots[n as usize];
        s.chain.clone().map(|c| (c, s.pos as usize))
    }

    /// The mutation whose step waits for its Dsc gate, if any.
    pub fn waiting(&self, n: NodeIdx) -> Option<MutationId> {
        let s = &self.slots[n as usize];
        (s.waiting && s.step != NONE).then(|| self.graph().edge(s.step).mutation)
    }

    /// Sets the node's open gates (bit i: gate i holds in its Dsc; every
    /// node starts with all gates open). A waiting step whose gate opens
    /// starts now.
    pub fn set_gates(&mut self, n: NodeIdx, mask: u64, now_ms: u64) {
        let slot = &mut self.slots[n as usize];
        slot.gates = mask | 1;
        if slot.waiting && slot.step != NONE && !slot.frozen {
            let step = slot.step;
            let gate = self.graph().mutation(self.graph().edge(step).mutation).gate;
            if (mask >> gate) & 1 == 1 {
                self.start_step(n, step, now_ms);
            }
        }
    }

    /// Events lost to a full queue.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Sets the node's Cfg target (values, 0 = any; guard mask); replaces the chain.
    pub fn set_target(
        &mut self,
        n: NodeIdx,
        values: &[i32],
        mask: u64,
        now_ms: u64,
    ) -> Result<(), PlanError> {
        let t = self.planner.target(values, mask)?;
        if self.slots[n as usize].chain.is_some() {
            self.event(ExecEvent::Replanned {
                node: n,
                reason: Reason::Cfg,
            });
        }
        let slot = &mut self.slots[n as usize];
        slot.target = t;
        slot.replans = 0;
        slot.converged = false;
        self.drive(n, now_ms, Reason::Cfg);
        Ok(())
    }

    /// A full Dsc (tracked values, unstripped).
    pub fn handle_dsc(&mut self, n: NodeIdx, values: &[i32], now_ms: u64) {
        let mut s = values.to_vec();
        self.settle(n, &mut s, now_ms);
    }

    /// Some Dsc values changed (e.g. a module's report).
    pub fn handle_dsc_update(&mut self, n: NodeIdx, updates: &[(VarId, i32)], now_ms: u64) {
        let cur = self.slots[n as usize].state;
        let mut s = if cur == NONE {
            vec![0; self.graph().set().vars.len()]
        } else {
            self.graph().state(cur).to_vec()
        };
        for &(v, x) in updates {
            s[v as usize] = x;
        }
        self.settle(n, &mut s, now_ms);
    }

    fn settle(&mut self, n: NodeIdx, s: &mut [i32], now_ms: u64) {
        let before = s.to_vec();
        if self.graph().strip(s) {
            for v in (0..s.len()).filter(|&v| before[v] != s[v]) {
                self.event(ExecEvent::Forgot {
                    node: n,
                    var: v as VarId,
                });
            }
        }
        match self.graph().lookup(s) {
            Some(id) => self.on_state(n, id, now_ms),
            None => {
                self.cancel(n);
                self.slots[n as usize].state = NONE;
                self.event(ExecEvent::NoPlan { node: n });
            }
        }
    }

    /// The module running step `token` failed: handled like its timeout.
    pub fn handle_failed(&mut self, n: NodeIdx, token: u32, now_ms: u64) {
        let slot = &self.slots[n as usize];
        if slot.token == token && slot.step != NONE {
            self.fail(n, now_ms);
        }
    }

    /// Fires every deadline at or before `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some(&Reverse((at, n, token))) = self.timers.peek() {
            if at > now_ms {
                break;
            }
            self.timers.pop();
            let slot = &self.slots[n as usize];
            if slot.token == token && slot.step != NONE {
                self.fail(n, now_ms);
            }
        }
    }

    /// Stops driving the node (its step is abandoned); Dsc is still tracked.
    pub fn freeze(&mut self, n: NodeIdx) {
        self.cancel(n);
        let slot = &mut self.slots[n as usize];
        slot.frozen = true;
        slot.chain = None;
    }

    /// Resumes driving the node with a fresh re-plan budget.
    pub fn thaw(&mut self, n: NodeIdx, now_ms: u64) {
        let slot = &mut self.slots[n as usize];
        slot.frozen = false;
        slot.replans = 0;
        self.drive(n, now_ms, Reason::Thaw);
    }

    /// True when the node is frozen.
    pub fn is_frozen(&self, n: NodeIdx) -> bool {
        self.slots[n as usize].frozen
    }

    /// The next step this instance must run.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        while let Some(a) = self.actions.pop_front() {
            let slot = &self.slots[a.node as usize];
            if slot.token == a.token && slot.step != NONE {
                return Some(a);
            }
        }
        None
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ExecEvent> {
        self.events.pop_front()
    }

    /// The earliest armed deadline (it may belong to a finished step).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    fn event(&mut self, e: ExecEvent) {
        if self.events.len() >= self.events_max {
            self.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }

    fn cancel(&mut self, n: NodeIdx) {
        let slot = &mut self.slots[n as usize];
        slot.step = NONE;
        slot.waiting = false;
        slot.token = slot.token.wrapping_add(1);
    }

    fn on_state(&mut self, n: NodeIdx, new: StateId, now_ms: u64) {
        let slot = &self.slots[n as usize];
        if slot.state == new {
            return;
        }
        let step = slot.step;
        self.slots[n as usize].state = new;
        if step == NONE {
            return self.drive(n, now_ms, Reason::Unexpected);
        }
        if !self.step_done(step, new) {
            self.event(ExecEvent::Replanned {
                node: n,
                reason: Reason::Unexpected,
            });
            return self.drive(n, now_ms, Reason::Unexpected);
        }
        let mutation = self.graph().edge(step).mutation;
        self.event(ExecEvent::StepDone { node: n, mutation });
        self.cancel(n);
        let slot = &mut self.slots[n as usize];
        let chain = slot.chain.clone().expect("a step runs inside a chain");
        let next = slot.pos as usize + 1;
        if self.graph().edge(step).to == new && next < chain.len() {
            self.slots[n as usize].pos = next as u16;
            self.start_step(n, chain[next], now_ms);
        } else {
            self.drive(n, now_ms, Reason::Unexpected);
        }
    }

    fn step_done(&self, step: EdgeId, new: StateId) -> bool {
        let g = self.graph();
        let m = g.mutation(g.edge(step).mutation);
        let s = g.state(new);
        match m.kind {
            MutationKind::Mutation => m.mutates.iter().all(|&(v, _, to)| s[v as usize] == to),
            MutationKind::Discovery => m.mutates.iter().all(|&(v, _, _)| s[v as usize] != 0),
        }
    }

    fn fail(&mut self, n: NodeIdx, now_ms: u64) {
        let slot = &self.slots[n as usize];
        let (state, mutation) = (slot.state, self.graph().edge(slot.step).mutation);
        self.cancel(n);
        self.event(ExecEvent::StepFailed { node: n, mutation });
        if self.spend_replan(n) {
            return;
        }
        if let Some(f) = self.graph().fail_state(state, mutation) {
            self.slots[n as usize].state = f;
            let chain = self.slots[n as usize]
                .chain
                .clone()
                .expect("a step runs inside a chain");
            if let Some(i) = chain.iter().position(|&e| self.graph().edge(e).from == f) {
                self.event(ExecEvent::WalkedBack { node: n });
                self.slots[n as usize].pos = i as u16;
                return self.start_step(n, chain[i], now_ms);
            }
        }
        self.event(ExecEvent::Replanned {
            node: n,
            reason: Reason::Timeout,
        });
        self.drive(n, now_ms, Reason::Timeout);
    }

    fn drive(&mut self, n: NodeIdx, now_ms: u64, reason: Reason) {
        let slot = &self.slots[n as usize];
        if slot.frozen || slot.target == NONE || slot.state == NONE {
            return;
        }
        let plan = self.planner.plan(slot.state, slot.target).cloned();
        let Some(plan) = plan else {
            self.cancel(n);
            self.slots[n as usize].chain = None;
            return self.event(ExecEvent::NoPlan { node: n });
        };
        if plan.is_empty() {
            return self.converge(n);
        }
        let g = self.planner.graph();
        let slot = &mut self.slots[n as usize];
        slot.converged = false;
        let same_step = slot.step != NONE && g.edge(slot.step).mutation == g.edge(plan[0]).mutation;
        slot.chain = Some(plan.clone());
        slot.pos = 0;
        if same_step {
            // The step in flight is still the right one: keep it running.
            slot.step = plan[0];
            return;
        }
        if reason == Reason::Unexpected && self.spend_replan(n) {
            return;
        }
        self.start_step(n, plan[0], now_ms);
    }

    /// Counts one re-plan; true (and the node gives up) past [`REPLANS_MAX`].
    fn spend_replan(&mut self, n: NodeIdx) -> bool {
        let slot = &mut self.slots[n as usize];
        slot.replans += 1;
        if slot.replans <= REPLANS_MAX {
            return false;
        }
        self.cancel(n);
        self.slots[n as usize].chain = None;
        self.event(ExecEvent::GaveUp { node: n });
        true
    }

    fn converge(&mut self, n: NodeIdx) {
        self.cancel(n);
        let slot = &mut self.slots[n as usize];
        slot.chain = None;
        slot.replans = 0;
        if !slot.converged {
            slot.converged = true;
            self.event(ExecEvent::Converged { node: n });
        }
    }

    fn start_step(&mut self, n: NodeIdx, edge: EdgeId, now_ms: u64) {
        let mutation = self.graph().edge(edge).mutation;
        let m = self.graph().mutation(mutation);
        let (timeout, context, gate) = (m.timeout_ms, m.context, m.gate);
        let slot = &mut self.slots[n as usize];
        slot.step = edge;
        slot.token = slot.token.wrapping_add(1);
        if (slot.gates >> gate) & 1 == 0 {
            // Why: a gate (e.g. the node is busy) must hold the step without
            // failing it, however long that takes: no timer, no action.
            if !slot.waiting {
                slot.waiting = true;
                self.event(ExecEvent::Waiting { node: n, mutation });
            }
            return;
        }
        slot.waiting = false;
        let token = slot.token;
        let local = slot.relation.runs(context);
        self.timers
            .push(Reverse((now_ms.saturating_add(timeout), n, token)));
        if local {
            self.actions.push_back(Action {
                node: n,
                mutation,
                token,
            });
        }
        self.event(ExecEvent::StepStarted {
            node: n,
            mutation,
            local,
        });
    }
}

impl ExecEvent {
    /// The event as a dispatcher [`Event`](crate::events::Event) for node
    /// `name`: steps become `Mutation` (or `Discovery`) events whose URL is
    /// the mutation name; bookkeeping events return `None`.
    pub fn to_event(&self, g: &Graph, name: &str) -> Option<crate::events::Event> {
        use crate::events::{Event, EventKind, Side};
        let (mutation, phase) = match *self {
            ExecEvent::StepStarted { mutation, .. } => (mutation, "started"),
            ExecEvent::StepDone { mutation, .. } => (mutation, "done"),
            ExecEvent::StepFailed { mutation, .. } => (mutation, "failed"),
            _ => return None,
        };
        let m = g.mutation(mutation);
        let kind = match m.kind {
            MutationKind::Mutation => EventKind::Mutation,
            MutationKind::Discovery => EventKind::Discovery,
        };
        let new = Some(crate::value::Value::Str(phase.to_owned()));
        Some(Event {
            kind,
            node: name.to_owned(),
            url: m.name.clone(),
            side: Side::Dsc,
            old: None,
            new,
        })
    }
}
