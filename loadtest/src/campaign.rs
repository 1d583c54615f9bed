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
//! Every instance runs the product's application ([`crate::product`]: the
//! root's `RootApp`, the relays' and nodes' `MemberApp`, the nodes' engines
//! with the virtual power and boot modules) on the product's sync stack,
//! the same code `layercake run` runs; a Cfg change is a write through the
//! root's `prepare` and `apply`, as the API makes it. Generations
//! alternate between "powered on and booted" (odd) and "powered off"
//! (even), so every change runs real mutation chains.
//!
//! After six hellos of stabilisation the checkers run outside the
//! production code: no accepted Cfg change is lost (the root holds the
//! accepted Cfg of every leaf, and every leaf holds the root's record,
//! same version), Cfg versions never went backwards at a leaf (sampled
//! every step while the leaf lives), at most one acting sub-parent per
//! group (the views of the sub-parent, its alive members and the root
//! agree), and no panic (each seed runs under `catch_unwind`).
//!
//! A restarted root is rebuilt as layercake rebuilds it: its Cfg comes from
//! persistence (here the campaign's record of the Cfg accepted per leaf:
//! "persist, then acknowledge") and is re-published above a new boot
//! epoch's version floor. While the root is down no change is accepted.
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
use proto::node::Node as NodeState;
use proto::prost::Message;
use topo::duration;

use crate::product::{Product, ProductNode};
use crate::report::Percentiles;
use crate::setup::{Cluster, ClusterArgs};

/// The Cfg of an odd generation: powered on and booted.
const BOOTED: [(&str, &str); 3] = [
    ("/PhysState", "POWER_ON"),
    ("/RunState", "SYNC"),
    (engine::virt::PXE_URL, "COMP"),
];
/// The Cfg of an even generation: powered off.
const OFF: [(&str, &str); 1] = [("/PhysState", "POWER_OFF")];

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
    /// `tree`, `hybrid` (two levels, SWIM groups in the racks), `mixed`
    /// (three levels: `tree` between the root and the rows, `hybrid` in the
    /// racks) or `mix` (seeds cycle tree, hybrid, tree, mixed).
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
            "mix" => ["tree", "hybrid", "tree", "mixed"][(seed % 4) as usize],
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
    product: &'a Product<'a>,
    seed: u64,
    sim: Sim<ProductNode>,
    /// Per instance: the Cfg the root accepted last (persisted).
    accepted: Vec<Option<NodeState>>,
    generation: u64,
    /// Root boots so far (its boot epoch).
    boots: u64,
    /// Per leaf: the highest Cfg version it held since it (re)started.
    cfg_seen: Vec<u64>,
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

    /// A fresh instance; a fresh root starts from its persisted Cfg.
    fn restart(&mut self, id: NodeId) {
        let now = self.sim.now();
        let stored = if id == 0 {
            self.boots += 1;
            self.stored()
        } else {
            Vec::new()
        };
        let node = self.product.node(id, self.seed, now, stored, self.boots);
        self.sim.restart(id, node);
        self.cfg_seen[id as usize] = 0;
    }

    /// The root's database: every accepted Cfg, by name.
    fn stored(&self) -> Vec<(String, NodeState)> {
        self.accepted
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((self.c.flat.instances[i].name.clone(), n.clone()?)))
            .collect()
    }

    /// The root accepts a new generation for `leaves` (unless it is down):
    /// a write through its `prepare` and `apply`, then "persisted".
    fn publish(&mut self, leaves: &[NodeId]) {
        let Some(now) = self.sim.get(0).map(|_| self.sim.now()) else {
            return;
        };
        self.generation += 1;
        let values: &[(&str, &str)] = if self.generation % 2 == 1 {
            &BOOTED
        } else {
            &OFF
        };
        let names: Vec<String> = leaves
            .iter()
            .map(|&l| self.c.flat.instances[l as usize].name.clone())
            .collect();
        let written = self
            .sim
            .with(0, |r, _| Product::write(r, now, &names, values));
        match written {
            Some(Ok(changes)) => {
                for (name, cfg) in changes {
                    if let Some(id) = self.c.flat.by_name(&name) {
                        self.accepted[id as usize] = Some(cfg);
                    }
                }
                self.out.cfg_changes += 1;
            }
            Some(Err(e)) => self.out.check(false, || format!("write refused: {e:#}")),
            None => {}
        }
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

    /// The Cfg record `holder` has for `leaf`.
    fn cfg_at(&self, holder: NodeId, leaf: NodeId) -> Option<overlay::Record> {
        let key = Key {
            node: leaf,
            kind: Kind::Cfg,
        };
        self.sim.get(holder)?.stack().get(key)
    }

    /// Leaf `l` is settled: it is up, the root holds its accepted Cfg and
    /// the leaf the root's record (same version).
    fn leaf_settled(&self, l: NodeId) -> bool {
        let Some(at_root) = self.cfg_at(0, l) else {
            return self.accepted[l as usize].is_none();
        };
        let accepted = self.accepted[l as usize]
            .as_ref()
            .map(Message::encode_to_vec);
        accepted.as_deref() == Some(at_root.data.as_ref())
            && self.cfg_at(l, l).map(|r| r.version) == Some(at_root.version)
    }

    /// Every leaf is up and settled, and the root sees every node's Dsc
    /// match its Cfg (the chains have run).
    fn converged(&self) -> bool {
        let Some(root) = self.sim.get(0) else {
            return false;
        };
        let (ok, all) = Product::converged(root);
        ok == all && self.x.leaves.iter().all(|&l| self.leaf_settled(l))
    }

    /// Samples every live leaf's Cfg version: it must never go back while
    /// the leaf lives.
    fn sample_cfg(&mut self) {
        for i in 0..self.x.leaves.len() {
            let l = self.x.leaves[i];
            let Some(v) = self.cfg_at(l, l).map(|r| r.version) else {
                continue;
            };
            let seen = self.cfg_seen[l as usize];
            self.out.check(v >= seen, || {
                format!("leaf {l}: its Cfg went back from version {seen} to {v}")
            });
            self.cfg_seen[l as usize] = seen.max(v);
        }
    }

    /// Runs to `until` in steps, sampling the leaves' Cfg versions.
    fn run_to(&mut self, until: Duration) {
        while self.sim.now() < until {
            let next = (self.sim.now() + STEP).min(until);
            self.sim.run_until(next);
            self.sample_cfg();
        }
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
            .filter(|&l| self.sim.get(l).is_none() || !self.leaf_settled(l))
            .collect();
        let detail: Vec<String> = lag
            .iter()
            .take(k)
            .map(|&l| {
                let parent = self.c.tree.parent(l);
                let dsc = root
                    .stack()
                    .get(Key {
                        node: l,
                        kind: Kind::Dsc,
                    })
                    .and_then(|r| NodeState::decode(r.data.as_ref()).ok())
                    .map(|n| (n.phys_state(), n.run_state()));
                format!(
                    "leaf {l} (parent {parent:?}, acting {:?}): root Cfg v{:?}, leaf Cfg v{:?}, root holds Dsc {dsc:?}",
                    parent.and_then(|p| Some(self.sim.get(l)?.stack().acting_of(p))),
                    self.cfg_at(0, l).map(|r| r.version),
                    self.cfg_at(l, l).map(|r| r.version),
                )
            })
            .collect();
        let (ok, all) = Product::converged(root);
        format!(
            "{} leaves lag, the root sees {ok}/{all} converged; {}",
            lag.len(),
            detail.join("; ")
        )
    }

    /// Runs until converged or `limit` passes; the time it took.
    fn wait_converged(&mut self, limit: Duration) -> Option<Duration> {
        let t0 = self.sim.now();
        let mut done = self.converged();
        while !done && self.sim.now() < t0 + limit {
            let next = (self.sim.now() + STEP).min(t0 + limit);
            self.run_to(next);
            done = self.converged();
        }
        done.then(|| self.sim.now() - t0)
    }
}

/// Builds the cluster of one seed through the same parser as `run`.
fn cluster(a: &CampaignArgs, seed: u64) -> Result<Cluster> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        c: ClusterArgs,
    }
    let racks = a.racks.unwrap_or((a.nodes / 100).max(1));
    let (strategy, levels) = match a.strategy_for(seed) {
        "mixed" => ("hybrid", 3),
        s => (s, 2),
    };
    let argv = [
        "campaign".to_string(),
        format!("--nodes={}", a.nodes),
        format!("--racks={racks}"),
        format!("--levels={levels}"),
        format!("--strategy={strategy}"),
        format!("--hello={}", duration::format(a.hello)),
        format!("--seed={seed}"),
    ];
    crate::setup::cluster(&Wrap::try_parse_from(argv)?.c)
}

/// Runs one seed: initial sync, safety phase, liveness phase, checkers.
fn one_seed(a: &CampaignArgs, seed: u64) -> Result<Outcome> {
    let c = cluster(a, seed)?;
    let x = Shape::new(&c);
    let product = Product::new(&c.product)?;
    let nodes = (0..x.instances as NodeId)
        .map(|i| product.node(i, seed, Duration::ZERO, Vec::new(), 1))
        .collect();
    let cfg = SimConfig {
        seed,
        ..SimConfig::default()
    };
    let mut run = Run {
        c: &c,
        x: &x,
        seed,
        product: &product,
        sim: Sim::new(cfg, nodes),
        accepted: vec![None; x.instances],
        generation: 0,
        boots: 1,
        cfg_seen: vec![0; x.instances],
        out: Outcome {
            seed,
            strategy: a.strategy_for(seed).to_string(),
            ..Outcome::default()
        },
    };
    run.publish(&x.leaves.clone());
    let synced = run.wait_converged(INITIAL_SYNC_MAX).is_some();
    run.out
        .check(synced, || "initial sync did not finish".into());
    if !synced {
        return Ok(run.out);
    }
    let start = run.sim.now();
    for (at, act) in Plan::draw(&x, seed, a.fault_window, a.hello).actions {
        run.run_to(start + at);
        run.apply(act);
    }
    run.run_to(start + a.fault_window);
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
    run.run_to(run.sim.now() + a.hello * 6);
    check_lost(&mut run);
    check_acting(&mut run);
    run.out.virtual_time = run.sim.now();
    run.out.datagrams = run.sim.stats.datagrams;
    Ok(run.out)
}

/// The root holds every leaf's accepted Cfg and every leaf the root's
/// record, same version (Cfg going backwards is checked while running).
fn check_lost(run: &mut Run) {
    if run.sim.get(0).is_none() {
        run.out
            .check(false, || "the root is down after quiescing".into());
        return;
    }
    for i in 0..run.x.leaves.len() {
        let l = run.x.leaves[i];
        let ok = run.leaf_settled(l);
        let (at_root, at_leaf) = (run.cfg_at(0, l), run.cfg_at(l, l));
        run.out.check(ok, || {
            format!(
                "leaf {l}: holds Cfg v{:?}, root v{:?}, root's matches the accepted one: {}",
                at_leaf.map(|r| r.version),
                at_root.as_ref().map(|r| r.version),
                at_root.is_some_and(|r| run.accepted[l as usize]
                    .as_ref()
                    .is_some_and(|a| a.encode_to_vec() == r.data.as_ref()))
            )
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
            .filter_map(|&m| Some(run.sim.get(m)?.stack().acting_of(v)))
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
