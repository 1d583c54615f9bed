//! `loadtest campaign`: a deterministic fault campaign over many seeds.
//!
//! Every seed runs the whole cluster in the simulator ([`Sim`]) in two
//! phases, after an initial sync:
//!
//! 1. **Safety phase** (`--fault-window` of virtual time): a fault plan
//!    drawn from the seed ([`Plan::draw`]) changes loss (up to 20 %),
//!    duplication and jitter (reordering), crashes and restarts leaves,
//!    sub-parents and the root, cuts racks, scattered leaves or the root off
//!    and heals them, while the root accepts new Cfg generations for every
//!    leaf, one rack or a random tenth of the leaves.
//! 2. **Liveness phase**: the faults stop (clean network, partition healed,
//!    every crashed instance restarted) and every leaf must converge within
//!    [`bound`]: the root holds its Dsc echoing the latest generation the
//!    root accepted for it.
//!
//! After six hellos of stabilisation the checkers run outside the
//! production code: no accepted Cfg change is lost (every leaf holds the
//! root's latest Cfg, same version), Cfg generations never went backwards
//! at a leaf, at most one acting sub-parent per group (the views of the
//! sub-parent, its alive members and the root agree), and no panic (each
//! seed runs under `catch_unwind`).
//!
//! A restarted root is rebuilt as layercake rebuilds it: its Cfg comes from
//! persistence (here the campaign's record of the latest generation accepted
//! per leaf: "persist, then acknowledge") and is re-published above a new
//! version floor (`TreeConfig::version_floor`, from the restart time) under a
//! new envelope epoch. While the root is down no change is accepted.
//!
//! A seed's result depends only on the seed and the arguments; seeds run on
//! `--jobs` threads. A failing seed prints the command that replays it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use overlay::rng::Rng;
use overlay::sim::{Sim, SimConfig};
use overlay::{Key, Kind, NodeId};
use proto::node::RunState;
use topo::duration;

use crate::app::{LoadNode, Probing, generation_of};
use crate::report::Percentiles;
use crate::setup::{Cluster, ClusterArgs};

/// Loss never exceeds this during the safety phase.
pub const LOSS_MAX: f64 = 0.20;
/// Duplication never exceeds this during the safety phase.
pub const DUPLICATE_MAX: f64 = 0.05;
/// Convergence bound after the faults stop, in dead intervals.
pub const BOUND_DEADS: u32 = 4;
/// Virtual time the initial sync may take before the seed fails.
const INITIAL_SYNC_MAX: Duration = Duration::from_secs(30);
/// Step of the convergence checks (the resolution of the measured time).
const STEP: Duration = Duration::from_millis(20);
/// Most violations kept per seed (the first ones tell the story).
const VIOLATIONS_PER_SEED_MAX: usize = 8;
/// Jitter outside the fault windows (the simulator's default).
const CALM_JITTER: Duration = Duration::from_micros(300);

/// Arguments of `loadtest campaign`.
#[derive(clap::Args, Clone, Debug)]
pub struct CampaignArgs {
    /// Seeds to run, from `--seed` on (default: only `--seed`).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// The first (or only) seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Leaf nodes of the generated topology.
    #[arg(long, default_value_t = 2000)]
    pub nodes: usize,
    /// Racks (default: one per 100 nodes).
    #[arg(long)]
    pub racks: Option<usize>,
    /// `tree`, `hybrid`, or `mix` (hybrid on every fourth seed, tree on the others).
    #[arg(long, default_value = "mix")]
    pub strategy: String,
    /// Hello interval of every level; dead is four hellos.
    #[arg(long, default_value = "500ms", value_parser = duration::parse_flag)]
    pub hello: Duration,
    /// Virtual time during which faults are injected.
    #[arg(long, default_value = "6s", value_parser = duration::parse_flag)]
    pub fault_window: Duration,
    /// Threads running seeds (default: the machine's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print only failures and the summary.
    #[arg(long)]
    pub quiet: bool,
}

impl CampaignArgs {
    /// The command that replays `seed` alone.
    fn replay(&self, seed: u64) -> String {
        let mut cmd = format!("loadtest campaign --seed {seed} --nodes {}", self.nodes);
        if let Some(r) = self.racks {
            cmd += &format!(" --racks {r}");
        }
        if self.strategy != "mix" {
            cmd += &format!(" --strategy {}", self.strategy);
        }
        if self.hello != Duration::from_millis(500) {
            cmd += &format!(" --hello {}", duration::format(self.hello));
        }
        if self.fault_window != Duration::from_secs(6) {
            cmd += &format!(" --fault-window {}", duration::format(self.fault_window));
        }
        cmd
    }

    /// The strategy of `seed`.
    fn strategy_for(&self, seed: u64) -> &str {
        match self.strategy.as_str() {
            "mix" if seed.is_multiple_of(4) => "hybrid",
            "mix" => "tree",
            s => s,
        }
    }
}

/// The convergence bound after the faults stop.
pub fn bound(hello: Duration) -> Duration {
    hello * 4 * BOUND_DEADS
}

/// One fault or change, at an offset into the safety phase.
#[derive(Clone, Debug)]
enum Action {
    /// New loss, duplication and jitter.
    Network {
        loss: f64,
        duplicate: f64,
        jitter: Duration,
    },
    /// The instance crashes (loses all state).
    Crash(NodeId),
    /// The instance comes back fresh (the root re-publishes its Cfg).
    Restart(NodeId),
    /// The network is cut between instances of different sides.
    Cut(Vec<u8>),
    /// The partition heals.
    Heal,
    /// The root accepts a new Cfg generation for these leaves.
    Publish(Vec<NodeId>),
}

/// The safety phase of one seed: actions sorted by their offset.
struct Plan {
    actions: Vec<(Duration, Action)>,
}

/// A duration uniformly in `[from, to)`.
fn between(r: &mut Rng, from: Duration, to: Duration) -> Duration {
    from + to.saturating_sub(from).mul_f64(r.next_f64())
}

/// Up to `k` distinct picks from `from`.
fn pick(r: &mut Rng, from: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut out: Vec<NodeId> = (0..k.min(from.len()))
        .map(|_| from[r.below(from.len() as u64) as usize])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl Plan {
    /// Draws the plan of one seed (deterministic in `seed`).
    fn draw(x: &Shape, seed: u64, window: Duration, hello: Duration) -> Plan {
        let mut r = Rng::new(seed ^ 0x6361_6d70_6169_676e);
        let mut acts = Vec::new();
        for half in 0..2u32 {
            acts.push((window * half / 2, Plan::network(&mut r)));
        }
        let crash = |r: &mut Rng, id: NodeId, acts: &mut Vec<(Duration, Action)>| {
            let at = between(r, Duration::ZERO, window * 3 / 4);
            let back = (at + between(r, hello, window / 2)).min(window);
            acts.push((at, Action::Crash(id)));
            acts.push((back, Action::Restart(id)));
        };
        let k = r.below(21) as usize;
        for id in pick(&mut r, &x.leaves, k) {
            crash(&mut r, id, &mut acts);
        }
        let k = r.below(3) as usize;
        for id in pick(&mut r, &x.racks, k) {
            crash(&mut r, id, &mut acts);
        }
        if r.chance(0.35) {
            crash(&mut r, 0, &mut acts);
        }
        for half in 0..2u32 {
            if r.chance(0.5) {
                let start = window * half / 2;
                let at = between(&mut r, start, start + window / 4);
                let heal = (at + between(&mut r, hello, window / 4)).min(start + window / 2);
                acts.push((at, Action::Cut(x.side(&mut r))));
                acts.push((heal, Action::Heal));
            }
        }
        for _ in 0..1 + r.below(4) {
            let at = between(&mut r, Duration::ZERO, window);
            acts.push((at, Action::Publish(x.subset(&mut r))));
        }
        acts.sort_by_key(|(at, _)| *at);
        Plan { actions: acts }
    }

    fn network(r: &mut Rng) -> Action {
        let loss = if r.chance(0.75) {
            r.next_f64() * LOSS_MAX
        } else {
            0.0
        };
        let duplicate = if r.chance(0.5) {
            r.next_f64() * DUPLICATE_MAX
        } else {
            0.0
        };
        let jitter = if r.chance(0.5) {
            Duration::from_micros(1_000 + r.below(19_000))
        } else {
            CALM_JITTER
        };
        Action::Network {
            loss,
            duplicate,
            jitter,
        }
    }
}

/// The parts of the cluster's shape the plan and the checkers use.
struct Shape {
    leaves: Vec<NodeId>,
    /// Sub-parents directly above leaves.
    racks: Vec<NodeId>,
    /// Per rack: its leaves.
    members: Vec<Vec<NodeId>>,
    instances: usize,
}

impl Shape {
    fn new(c: &Cluster) -> Shape {
        let instances = c.flat.instances.len();
        let leaves = (0..instances as NodeId)
            .filter(|&i| c.is_leaf[i as usize])
            .collect();
        let racks: Vec<NodeId> = c
            .tree
            .aggregators()
            .filter(|&s| s != 0 && c.tree.children(s).iter().any(|&x| c.is_leaf[x as usize]))
            .collect();
        let members = racks
            .iter()
            .map(|&s| {
                let ch = c.tree.children(s).iter().copied();
                ch.filter(|&x| c.is_leaf[x as usize]).collect()
            })
            .collect();
        Shape {
            leaves,
            racks,
            members,
            instances,
        }
    }

    /// A partition: 1-3 racks, a scattered tenth of the leaves, or the root
    /// alone on the other side.
    fn side(&self, r: &mut Rng) -> Vec<u8> {
        let mut side = vec![0u8; self.instances];
        match r.below(3) {
            0 => {
                for i in 0..1 + r.below(3) as usize {
                    let k = r.below(self.racks.len() as u64) as usize;
                    side[self.racks[(k + i) % self.racks.len()] as usize] = 1;
                    for &m in &self.members[(k + i) % self.racks.len()] {
                        side[m as usize] = 1;
                    }
                }
            }
            1 => {
                for &l in &self.leaves {
                    side[l as usize] = r.chance(0.1) as u8;
                }
            }
            _ => side[0] = 1,
        }
        side
    }

    /// Which leaves a Cfg change touches: all, one rack, or a random tenth.
    fn subset(&self, r: &mut Rng) -> Vec<NodeId> {
        match r.below(3) {
            0 => self.leaves.clone(),
            1 => self.members[r.below(self.members.len() as u64) as usize].clone(),
            _ => {
                let tenth: Vec<NodeId> = self
                    .leaves
                    .iter()
                    .copied()
                    .filter(|_| r.chance(0.1))
                    .collect();
                if tenth.is_empty() {
                    self.leaves[..1].to_vec()
                } else {
                    tenth
                }
            }
        }
    }
}

/// Kinds of injected faults, in report order.
const FAULT_KINDS: [&str; 7] = [
    "loss",
    "duplication",
    "reordering",
    "partition",
    "leaf crash",
    "sub-parent crash",
    "root crash",
];

/// What one seed found.
#[derive(Debug, Default)]
struct Outcome {
    seed: u64,
    strategy: String,
    faults: u64,
    /// Faults by kind ([`FAULT_KINDS`]).
    by_kind: [u64; 7],
    cfg_changes: u64,
    checks: u64,
    violations: Vec<String>,
    /// Faults stopped until every leaf converged.
    converge: Option<Duration>,
    virtual_time: Duration,
    datagrams: u64,
}

impl Outcome {
    fn fault(&mut self, kind: usize) {
        self.faults += 1;
        self.by_kind[kind] += 1;
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok && self.violations.len() < VIOLATIONS_PER_SEED_MAX {
            self.violations.push(what());
        }
    }
}

/// One seed's simulation and the campaign's bookkeeping around it.
struct Run<'a> {
    c: &'a Cluster,
    x: &'a Shape,
    seed: u64,
    sim: Sim<LoadNode>,
    /// Per instance: the latest generation the root accepted (persisted).
    expected: Vec<u64>,
    generation: u64,
    out: Outcome,
}

impl Run<'_> {
    fn apply(&mut self, act: Action) {
        match act {
            Action::Network {
                loss,
                duplicate,
                jitter,
            } => {
                self.sim.set_network(loss, duplicate, jitter);
                let kinds = [loss > 0.0, duplicate > 0.0, jitter > CALM_JITTER];
                for (k, on) in kinds.into_iter().enumerate() {
                    if on {
                        self.out.fault(k);
                    }
                }
            }
            Action::Crash(id) if self.sim.get(id).is_some() => {
                self.sim.crash(id);
                let kind = match id {
                    0 => 6,
                    _ if self.c.is_leaf[id as usize] => 4,
                    _ => 5,
                };
                self.out.fault(kind);
            }
            Action::Restart(id) if self.sim.get(id).is_none() => self.restart(id),
            Action::Cut(side) => {
                self.sim.set_partition(Some(side));
                self.out.fault(3);
            }
            Action::Heal => self.sim.set_partition(None),
            Action::Publish(leaves) => self.publish(&leaves),
            Action::Crash(_) | Action::Restart(_) => {}
        }
    }

    /// A fresh instance; a fresh root re-publishes its persisted Cfg.
    fn restart(&mut self, id: NodeId) {
        let now = self.sim.now();
        self.sim.restart(id, self.c.node(id, self.seed, now));
        if id == 0 {
            let mut gens: Vec<u64> = self
                .x
                .leaves
                .iter()
                .map(|&l| self.expected[l as usize])
                .collect();
            gens.sort_unstable();
            gens.dedup();
            for g in gens {
                let mask: Vec<bool> = (0..self.x.instances)
                    .map(|i| self.c.is_leaf[i] && self.expected[i] == g)
                    .collect();
                self.sim.with(0, |r, now| r.roll_out(now, g, &mask));
            }
        }
    }

    /// The root accepts a new generation for `leaves` (unless it is down).
    fn publish(&mut self, leaves: &[NodeId]) {
        if self.sim.get(0).is_none() {
            return;
        }
        self.generation += 1;
        let g = self.generation;
        let mut mask = vec![false; self.x.instances];
        for &l in leaves {
            mask[l as usize] = true;
            self.expected[l as usize] = g;
        }
        self.sim.with(0, |r, now| r.roll_out(now, g, &mask));
        self.out.cfg_changes += 1;
    }

    /// Stops every fault: clean network, healed partition, all instances up.
    fn quiesce(&mut self) {
        self.sim.set_network(0.0, 0.0, CALM_JITTER);
        self.sim.set_partition(None);
        for id in 0..self.x.instances as NodeId {
            if self.sim.get(id).is_none() {
                self.restart(id);
            }
        }
    }

    /// Every leaf is up and the root holds its Dsc echoing the expected
    /// generation (stops at the first leaf that is not there yet).
    fn converged(&self) -> bool {
        let Some(root) = self.sim.get(0) else {
            return false;
        };
        self.x.leaves.iter().all(|&l| {
            self.sim.get(l).is_some()
                && dsc_generation(root, l) == Some((self.expected[l as usize], RunState::Sync))
        })
    }

    /// The leaves not converged (count, and details of the first `k`).
    fn lagging(&self, k: usize) -> String {
        let Some(root) = self.sim.get(0) else {
            return "the root is down".into();
        };
        let lag: Vec<NodeId> = self
            .x
            .leaves
            .iter()
            .copied()
            .filter(|&l| {
                let want = Some((self.expected[l as usize], RunState::Sync));
                self.sim.get(l).is_none() || dsc_generation(root, l) != want
            })
            .collect();
        let detail: Vec<String> = lag
            .iter()
            .take(k)
            .map(|&l| {
                let parent = self.c.tree.parent(l);
                let leaf_cfg = self.sim.get(l).and_then(|n| cfg_of(n, l));
                format!(
                    "leaf {l} (parent {parent:?}, acting {:?}): expected {}, root holds Dsc {:?}, leaf holds Cfg {leaf_cfg:?}",
                    parent.and_then(|p| Some(self.sim.get(l)?.acting(p))),
                    self.expected[l as usize],
                    dsc_generation(root, l),
                )
            })
            .collect();
        format!("{} leaves lag; {}", lag.len(), detail.join("; "))
    }

    /// Runs until converged or `limit` passes; the time it took.
    fn wait_converged(&mut self, limit: Duration) -> Option<Duration> {
        let t0 = self.sim.now();
        let mut done = self.converged();
        while !done && self.sim.now() < t0 + limit {
            let next = (self.sim.now() + STEP).min(t0 + limit);
            self.sim.run_until(next);
            done = self.converged();
        }
        done.then(|| self.sim.now() - t0)
    }
}

fn dsc_generation(root: &LoadNode, leaf: NodeId) -> Option<(u64, RunState)> {
    let key = Key {
        node: leaf,
        kind: Kind::Dsc,
    };
    generation_of(&root.record(key)?.data)
}

/// The Cfg `node` holds: its generation and version.
fn cfg_of(n: &LoadNode, leaf: NodeId) -> Option<(u64, u64)> {
    let key = Key {
        node: leaf,
        kind: Kind::Cfg,
    };
    let r = n.record(key)?;
    Some((generation_of(&r.data)?.0, r.version))
}

/// Builds the cluster of one seed through the same parser as `run`.
fn cluster(a: &CampaignArgs, seed: u64) -> Result<Cluster> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        c: ClusterArgs,
    }
    let racks = a.racks.unwrap_or((a.nodes / 100).max(1));
    let argv = [
        "campaign".to_string(),
        format!("--nodes={}", a.nodes),
        format!("--racks={racks}"),
        format!("--strategy={}", a.strategy_for(seed)),
        format!("--hello={}", duration::format(a.hello)),
        format!("--seed={seed}"),
    ];
    crate::setup::cluster(&Wrap::try_parse_from(argv)?.c)
}

/// Runs one seed: initial sync, safety phase, liveness phase, checkers.
fn one_seed(a: &CampaignArgs, seed: u64) -> Result<Outcome> {
    let c = cluster(a, seed)?;
    let x = Shape::new(&c);
    let nodes = (0..x.instances as NodeId)
        .map(|i| c.node(i, seed, Duration::ZERO))
        .collect();
    let cfg = SimConfig {
        seed,
        ..SimConfig::default()
    };
    let mut run = Run {
        c: &c,
        x: &x,
        seed,
        sim: Sim::new(cfg, nodes),
        expected: vec![1; x.instances],
        generation: 1,
        out: Outcome {
            seed,
            strategy: a.strategy_for(seed).to_string(),
            ..Outcome::default()
        },
    };
    run.sim.with(0, |r, now| r.roll_out(now, 1, &c.is_leaf));
    let synced = run.wait_converged(INITIAL_SYNC_MAX).is_some();
    run.out
        .check(synced, || "initial sync did not finish".into());
    if !synced {
        return Ok(run.out);
    }
    let start = run.sim.now();
    for (at, act) in Plan::draw(&x, seed, a.fault_window, a.hello).actions {
        run.sim.run_until(start + at);
        run.apply(act);
    }
    run.sim.run_until(start + a.fault_window);
    run.quiesce();
    let limit = bound(a.hello);
    run.out.converge = run.wait_converged(limit);
    let converge = run.out.converge;
    if converge.is_none() {
        let why = run.lagging(5);
        run.out.check(false, || {
            format!("not every leaf converged within {limit:?} after the faults stopped: {why}")
        });
    } else {
        run.out.check(true, String::new);
    }
    run.sim.run_until(run.sim.now() + a.hello * 6);
    check_lost(&mut run);
    check_acting(&mut run);
    run.out.virtual_time = run.sim.now();
    run.out.datagrams = run.sim.stats.datagrams;
    Ok(run.out)
}

/// Every leaf holds the root's latest Cfg (same generation and version),
/// and its Cfg generations never went backwards.
fn check_lost(run: &mut Run) {
    let Some(root) = run.sim.get(0) else {
        run.out
            .check(false, || "the root is down after quiescing".into());
        return;
    };
    for &l in &run.x.leaves {
        let want = run.expected[l as usize];
        let at_root = cfg_of(root, l);
        let at_leaf = run.sim.get(l).and_then(|n| cfg_of(n, l));
        run.out.check(
            at_root.is_some_and(|(g, _)| g == want) && at_leaf == at_root,
            || {
                format!(
                    "leaf {l}: holds Cfg {at_leaf:?}, root {at_root:?}, accepted generation {want}"
                )
            },
        );
        let arrivals = run
            .sim
            .get(l)
            .map(|n| n.app().cfg_arrivals.clone())
            .unwrap_or_default();
        run.out
            .check(arrivals.windows(2).all(|w| w[0].0 <= w[1].0), || {
                format!("leaf {l}: Cfg generations went backwards: {arrivals:?}")
            });
    }
}

/// At most one acting sub-parent per group: the sub-parent, its alive
/// members and the root name the same one.
fn check_acting(run: &mut Run) {
    for (i, &v) in run.x.racks.iter().enumerate() {
        let mut views: Vec<NodeId> = run.x.members[i]
            .iter()
            .chain([&v, &0])
            .filter_map(|&m| Some(run.sim.get(m)?.acting(v)))
            .collect();
        views.sort_unstable();
        views.dedup();
        run.out.check(views.len() <= 1, || {
            format!("group of sub-parent {v}: acting members {views:?}")
        });
    }
}

/// Runs one seed and turns a panic into a violation.
fn guarded(a: &CampaignArgs, seed: u64) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| one_seed(a, seed))) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => Outcome {
            seed,
            violations: vec![format!("setup failed: {e:#}")],
            ..Outcome::default()
        },
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            Outcome {
                seed,
                checks: 1,
                violations: vec![format!("panic: {msg}")],
                ..Outcome::default()
            }
        }
    }
}

fn line(o: &Outcome, a: &CampaignArgs) -> String {
    let conv = o
        .converge
        .map_or_else(|| "-".to_string(), |d| format!("{:.3} s", d.as_secs_f64()));
    let mut s = format!(
        "seed {} ({}): {} faults, {} cfg changes, converged {conv} after the faults, {} checks, {} datagrams, {:.1} s virtual",
        o.seed,
        o.strategy,
        o.faults,
        o.cfg_changes,
        o.checks,
        o.datagrams,
        o.virtual_time.as_secs_f64()
    );
    if !o.violations.is_empty() {
        s += &format!("\nFAIL seed {}:", o.seed);
        for v in &o.violations {
            s += &format!("\n  {v}");
        }
        s += &format!("\n  replay: {}", a.replay(o.seed));
    }
    s
}

/// Runs the campaign; fails if any seed violated an invariant.
pub fn run(a: &CampaignArgs) -> Result<()> {
    let seeds = a.seeds.unwrap_or(1);
    if seeds == 0 || a.nodes == 0 {
        bail!("--seeds and --nodes must be at least 1");
    }
    let wall = Instant::now();
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, seeds as usize);
    eprintln!(
        "campaign: seeds {}..={}, {} nodes, strategy {}, hello {:?}, faults for {:?}, bound {:?}, {jobs} threads",
        a.seed,
        a.seed + seeds - 1,
        a.nodes,
        a.strategy,
        a.hello,
        a.fault_window,
        bound(a.hello)
    );
    let next = AtomicU64::new(a.seed);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= a.seed + seeds {
                        return;
                    }
                    let o = guarded(a, seed);
                    if !a.quiet || !o.violations.is_empty() {
                        eprintln!("{}", line(&o, a));
                    }
                    outcomes.lock().expect("no panic holds the lock").push(o);
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().expect("threads joined");
    summary(a, &outcomes, wall.elapsed())
}

fn summary(a: &CampaignArgs, outcomes: &[Outcome], wall: Duration) -> Result<()> {
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    let conv = Percentiles::new(outcomes.iter().filter_map(|o| o.converge));
    let mut failed: Vec<u64> = outcomes
        .iter()
        .filter(|o| !o.violations.is_empty())
        .map(|o| o.seed)
        .collect();
    failed.sort_unstable();
    println!(
        "campaign: {} seeds, {} faults injected, {} cfg changes accepted, {} invariants checked, {} violations",
        outcomes.len(),
        sum(|o| o.faults),
        sum(|o| o.cfg_changes),
        sum(|o| o.checks),
        sum(|o| o.violations.len() as u64)
    );
    println!(
        "  converge after the faults stop: p50 {:.3} s, p99 {:.3} s, max {:.3} s (bound {:?}); wall {:.1} s",
        conv.at(0.5),
        conv.at(0.99),
        conv.max(),
        bound(a.hello),
        wall.as_secs_f64()
    );
    let kinds: Vec<String> = FAULT_KINDS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            format!(
                "{name} {}",
                outcomes.iter().map(|o| o.by_kind[k]).sum::<u64>()
            )
        })
        .collect();
    println!("  faults by kind: {}", kinds.join(", "));
    if failed.is_empty() {
        return Ok(());
    }
    for s in &failed {
        println!("  failed seed {s}: {}", a.replay(*s));
    }
    bail!(
        "{} of {} seeds violated an invariant",
        failed.len(),
        outcomes.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: usize) -> CampaignArgs {
        CampaignArgs {
            seeds: None,
            seed: 1,
            nodes,
            racks: None,
            strategy: "mix".into(),
            hello: Duration::from_millis(500),
            fault_window: Duration::from_secs(6),
            jobs: Some(1),
            quiet: true,
        }
    }

    #[test]
    fn a_seed_replays_exactly() {
        let a = args(200);
        let one = one_seed(&a, 3).expect("runs");
        let two = one_seed(&a, 3).expect("runs");
        assert_eq!(one.faults, two.faults);
        assert_eq!(one.datagrams, two.datagrams);
        assert_eq!(one.converge, two.converge);
        assert!(one.violations.is_empty(), "{:?}", one.violations);
    }

    #[test]
    fn plans_stay_within_the_fault_limits() {
        let a = args(1000);
        let c = cluster(&a, 1).expect("cluster");
        let x = Shape::new(&c);
        for seed in 0..50 {
            let p = Plan::draw(&x, seed, a.fault_window, a.hello);
            for (at, act) in &p.actions {
                assert!(*at <= a.fault_window);
                if let Action::Network {
                    loss, duplicate, ..
                } = act
                {
                    assert!(*loss <= LOSS_MAX && *duplicate <= DUPLICATE_MAX);
                }
            }
        }
    }

    #[test]
    fn the_replay_command_names_the_seed() {
        let mut a = args(2000);
        assert_eq!(a.replay(17), "loadtest campaign --seed 17 --nodes 2000");
        a.strategy = "hybrid".into();
        assert!(a.replay(4).ends_with("--strategy hybrid"));
    }

    #[test]
    fn the_replay_command_keeps_durations_exact() {
        let mut a = args(200);
        a.hello = Duration::from_micros(1500);
        a.fault_window = Duration::from_millis(2500);
        let cmd = a.replay(5);
        assert!(
            cmd.ends_with("--hello 1500us --fault-window 2500ms"),
            "{cmd}"
        );
        #[derive(Parser)]
        struct Wrap {
            #[command(subcommand)]
            cmd: Sub,
        }
        #[derive(clap::Subcommand)]
        enum Sub {
            Campaign(CampaignArgs),
        }
        let argv = cmd.split(' ');
        let Sub::Campaign(back) = Wrap::try_parse_from(argv).expect("parses").cmd;
        assert_eq!((back.hello, back.fault_window), (a.hello, a.fault_window));
    }
}
