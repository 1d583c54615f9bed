//! Virtual power and boot modules, and a sans-io [`VirtualWorld`] that
//! performs their steps on virtual time with seeded delays, failures and
//! hangs (tests, demos, the loadtest).
//!
//! - [`power_module`]: `/PhysState` UNKNOWN->OFF (discovery), OFF->ON,
//!   ON->OFF (waits while the node's Dsc says `/Busy` BUSY), HANG->OFF;
//!   CHILD context.
//! - [`boot_module`]: PXE state ([`PXE_URL`]) UNKNOWN->NONE (discovery), NONE->WAIT, WAIT->INIT together with
//!   `/RunState` UNKNOWN->INIT (fails to PHYS_HANG), then INIT->SYNC with
//!   PXE INIT->COMP (SELF context: the booted node reports itself), and
//!   WAIT/INIT/COMP->NONE while powered off.
//! - [`VirtualWorld`]: feed it [`Action`]s with [`VirtualWorld::handle_action`],
//!   arm [`VirtualWorld::poll_timeout`], and drain
//!   [`VirtualWorld::poll_completion`] at that time: each completion is a Dsc
//!   update for the executor (or a module failure).

use crate::executor::{Action, NodeIdx};
use crate::graph::{BuildOptions, Graph, TooLarge};
use crate::mutation::{
    Context, DeclError, ModuleDecl, MutationId, MutationKind, MutationSet, MutationSpec, VarId,
};
use crate::registry::Registry;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The PXE state URL.
pub const PXE_URL: &str = "type.googleapis.com/layercake.pxe.Pxe/State";

/// The virtual power module.
pub fn power_module() -> ModuleDecl {
    let ps = "/PhysState";
    let m = |name: &str, from: &str, to: &str| {
        MutationSpec::new(name)
            .mutates(ps, from, to)
            .context(Context::Child)
            .timeout_ms(10_000)
    };
    ModuleDecl {
        name: "power".into(),
        mutations: vec![
            MutationSpec::discovery("power_discover")
                .mutates(ps, "PHYS_UNKNOWN", "POWER_OFF")
                .context(Context::Child)
                .timeout_ms(5_000),
            m("power_on", "POWER_OFF", "POWER_ON").fail_to(ps, "PHYS_HANG"),
            m("power_off", "POWER_ON", "POWER_OFF").excludes_dsc("/Busy", "BUSY"),
            m("power_reset_hang", "PHYS_HANG", "POWER_OFF"),
        ],
    }
}

/// The virtual boot (PXE) module.
pub fn boot_module() -> ModuleDecl {
    let on = |s: MutationSpec| s.requires("/PhysState", "POWER_ON");
    let reset = |from: &str| {
        MutationSpec::new(&format!("pxe_reset_{}", from.to_lowercase()))
            .mutates(PXE_URL, from, "NONE")
            .requires("/PhysState", "POWER_OFF")
            .context(Context::Child)
            .timeout_ms(5_000)
    };
    ModuleDecl {
        name: "boot".into(),
        mutations: vec![
            MutationSpec::discovery("pxe_discover")
                .mutates(PXE_URL, "UNKNOWN", "NONE")
                .context(Context::Child)
                .timeout_ms(5_000),
            on(MutationSpec::new("pxe_wait")
                .mutates(PXE_URL, "NONE", "WAIT")
                .context(Context::Child)
                .timeout_ms(30_000)),
            on(MutationSpec::new("pxe_init")
                .mutates(PXE_URL, "WAIT", "INIT")
                .mutates("/RunState", "UNKNOWN", "INIT")
                .context(Context::Child)
                .timeout_ms(90_000)
                .fail_to("/PhysState", "PHYS_HANG")),
            on(MutationSpec::new("boot_sync")
                .mutates("/RunState", "INIT", "SYNC")
                .mutates(PXE_URL, "INIT", "COMP")
                .context(Context::SelfNode)
                .timeout_ms(60_000)
                .fail_to("/PhysState", "PHYS_HANG")),
            reset("WAIT"),
            reset("INIT"),
            reset("COMP"),
        ],
    }
}

/// Why the virtual module set could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtError {
    /// A declaration was rejected.
    #[error(transparent)]
    Decl(#[from] DeclError),
    /// The graph is too large.
    #[error(transparent)]
    Graph(#[from] TooLarge),
    /// The registry refused an extension.
    #[error(transparent)]
    Registry(#[from] crate::registry::AccessError),
}

/// The registry (with the PXE extension) and graph of the virtual modules.
pub fn build() -> Result<(Registry, Graph), VirtError> {
    let reg = Registry::with_pxe();
    let set = MutationSet::build(&reg, &[power_module(), boot_module()])?;
    let g = Graph::build(set, BuildOptions::default())?;
    Ok((reg, g))
}

/// The Cfg target "powered on and booted": PhysState POWER_ON, RunState SYNC, PXE COMP.
pub fn booted_target(g: &Graph) -> Vec<i32> {
    let mut t = vec![0; g.set().vars.len()];
    let set = g.set();
    for (url, v) in [("/PhysState", 2), ("/RunState", 2), (PXE_URL, 4)] {
        if let Some(i) = set.var(url) {
            t[i as usize] = v;
        }
    }
    t
}

/// Delays and fault rates of the virtual modules.
#[derive(Debug, Clone, Copy)]
pub struct VirtualConfig {
    /// Shortest step duration.
    pub delay_min_ms: u64,
    /// Longest step duration.
    pub delay_max_ms: u64,
    /// Probability that a step reports a module error.
    pub fail_rate: f64,
    /// Probability that a step never answers (the machine lands in fail-to).
    pub hang_rate: f64,
    /// Fraction of machines initially powered on.
    pub on_fraction: f64,
}

impl Default for VirtualConfig {
    fn default() -> Self {
        Self {
            delay_min_ms: 100,
            delay_max_ms: 2_000,
            fail_rate: 0.0,
            hang_rate: 0.0,
            on_fraction: 0.0,
        }
    }
}

/// What a finished step reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// New Dsc values.
    Dsc(Vec<(VarId, i32)>),
    /// The module reported an error.
    Failed,
}

/// A finished step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Node.
    pub node: NodeIdx,
    /// The action's token.
    pub token: u32,
    /// Its result.
    pub outcome: Outcome,
}

/// What performing one mutation does: kind, values set, fail-to value.
type Effect = (MutationKind, Vec<(VarId, i32)>, Option<(VarId, i32)>);
/// A step in flight: (due, sequence, node, token, mutation, fails).
type Job = (u64, u64, NodeIdx, u32, MutationId, bool);

/// The most steps in flight at once.
pub const JOBS_MAX: usize = 1 << 22;

/// Simulated machines: the real values of every tracked variable, and the
/// steps in flight. Deterministic for a given seed and input order.
pub struct VirtualWorld {
    cfg: VirtualConfig,
    rng: SmallRng,
    vars: usize,
    real: Vec<i32>,
    mutations: Vec<Effect>,
    jobs: BinaryHeap<Reverse<Job>>,
    seq: u64,
}

impl VirtualWorld {
    /// `nodes` machines for `g`'s variables, seeded.
    pub fn new(g: &Graph, nodes: usize, cfg: VirtualConfig, seed: u64) -> Self {
        let vars = g.set().vars.len();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut real = vec![0; nodes * vars];
        if let Some(p) = g.set().var("/PhysState") {
            for n in 0..nodes {
                real[n * vars + p as usize] = if rng.random_bool(cfg.on_fraction) {
                    2
                } else {
                    1
                };
            }
        }
        if let Some(x) = g.set().var(PXE_URL) {
            (0..nodes).for_each(|n| real[n * vars + x as usize] = 1);
        }
        let mutations = g
            .set()
            .mutations
            .iter()
            .map(|m| {
                (
                    m.kind,
                    m.mutates.iter().map(|&(v, _, t)| (v, t)).collect(),
                    m.fail_to,
                )
            })
            .collect();
        Self {
            cfg,
            rng,
            vars,
            real,
            mutations,
            jobs: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// The real value of `var` on node `n`.
    pub fn real(&self, n: NodeIdx, var: VarId) -> i32 {
        self.real[n as usize * self.vars + var as usize]
    }

    /// Changes a real value (e.g. a power drop) and reports it at `now_ms`.
    pub fn inject(&mut self, n: NodeIdx, var: VarId, value: i32, now_ms: u64) -> Completion {
        self.real[n as usize * self.vars + var as usize] = value;
        let _ = now_ms;
        Completion {
            node: n,
            token: 0,
            outcome: Outcome::Dsc(vec![(var, value)]),
        }
    }

    /// Starts performing `a`; its result comes from [`Self::poll_completion`].
    pub fn handle_action(&mut self, a: &Action, now_ms: u64) {
        assert!(self.jobs.len() < JOBS_MAX, "virtual world job table full");
        let delay = self
            .rng
            .random_range(self.cfg.delay_min_ms..=self.cfg.delay_max_ms.max(self.cfg.delay_min_ms));
        let roll: f64 = self.rng.random();
        if roll < self.cfg.hang_rate {
            if let Some((v, x)) = self.mutations[a.mutation as usize].2 {
                self.real[a.node as usize * self.vars + v as usize] = x;
            }
            return;
        }
        let failed = roll < self.cfg.hang_rate + self.cfg.fail_rate;
        self.seq += 1;
        self.jobs.push(Reverse((
            now_ms + delay,
            self.seq,
            a.node,
            a.token,
            a.mutation,
            failed,
        )));
    }

    /// When the next step finishes.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.jobs.peek().map(|Reverse(j)| j.0)
    }

    /// The next step finished at or before `now_ms`.
    #[must_use]
    pub fn poll_completion(&mut self, now_ms: u64) -> Option<Completion> {
        let &Reverse((at, _, node, token, m, failed)) = self.jobs.peek()?;
        if at > now_ms {
            return None;
        }
        self.jobs.pop();
        if failed {
            return Some(Completion {
                node,
                token,
                outcome: Outcome::Failed,
            });
        }
        Some(Completion {
            node,
            token,
            outcome: Outcome::Dsc(self.perform(node, m)),
        })
    }

    fn perform(&mut self, node: NodeIdx, m: MutationId) -> Vec<(VarId, i32)> {
        let (kind, sets, _) = &self.mutations[m as usize];
        let base = node as usize * self.vars;
        let mut out = Vec::with_capacity(sets.len());
        for &(v, to) in sets {
            let cell = &mut self.real[base + v as usize];
            if *kind == MutationKind::Mutation || *cell == 0 {
                *cell = to;
            }
            out.push((v, *cell));
        }
        out
    }
}
