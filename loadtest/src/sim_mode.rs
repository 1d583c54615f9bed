//! `--net sim`: every instance in one process on the deterministic simulator.
//!
//! Phases: (1) the root publishes generation 1 for every leaf and the run
//! waits until it holds every matching Dsc (initial sync); (2) it settles
//! and the root's received datagrams are counted over five hellos (steady
//! state, after [`SETTLE_HELLOS`]); (3) at `t0` the root publishes generation 2 for every leaf, and
//! per node `down` (Cfg held by the node) and `converge` (matching Dsc held
//! by the root) are measured on the virtual clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use overlay::sim::{KindCount, Sim, SimConfig};

use crate::app::{LoadNode, Probing};
use crate::progress::Progress;
use crate::report::{Percentiles, Report, peak_rss_mb};
use crate::setup::{Cluster, ClusterArgs};

/// Hellos over which the root's steady-state load is measured.
pub const STEADY_HELLOS: u32 = 5;

/// Hellos between the initial sync and the steady-state window when a
/// level gossips: the hybrid and gossip strategies fill their replicas by
/// anti-entropy for some seconds after the root already holds every Dsc.
pub const SETTLE_HELLOS: u32 = 30;

/// Hellos between the initial sync and the steady-state window of a
/// simulated tree-only cluster: it holds no replica to fill, and the
/// simulator has no CPU to settle, so its hellos are steady at once. (On
/// real UDP every run settles [`SETTLE_HELLOS`]: 100,000 sockets started
/// together need that long before a change is timed on a quiet machine;
/// with 2 hellos the same run's converge p99 was 3.66 s instead of 2.14.)
pub const SETTLE_HELLOS_TREE: u32 = 2;

/// The settling hellos of cluster `c` ([`SETTLE_HELLOS`] or
/// [`SETTLE_HELLOS_TREE`]).
pub fn settle_hellos(c: &Cluster) -> u32 {
    if c.strategy == "tree" {
        SETTLE_HELLOS_TREE
    } else {
        SETTLE_HELLOS
    }
}

/// The steady-state background load (measured over [`STEADY_HELLOS`]).
pub struct Steady {
    /// Datagrams the root received per root child per hello.
    pub per_child: f64,
    /// Datagrams the root received per hello, in all.
    pub per_hello_total: f64,
    /// Bytes sent per instance per second.
    pub bytes_per_node_per_s: f64,
    /// The same by kind of datagram (`layercake::sync::frame_kind`).
    pub by_kind: BTreeMap<String, f64>,
}

impl Steady {
    /// Datagrams at the root per child per hello, rounded for the report.
    pub fn per_child(&self) -> f64 {
        (self.per_child * 1000.0).round() / 1000.0
    }

    /// Datagrams at the root per hello, rounded for the report.
    pub fn total(&self) -> f64 {
        (self.per_hello_total * 10.0).round() / 10.0
    }

    /// Bytes per node per second, rounded for the report.
    pub fn bytes(&self) -> f64 {
        (self.bytes_per_node_per_s * 10.0).round() / 10.0
    }
}

/// Leaves whose matching Dsc the root holds for the tracked generation.
pub fn reached(s: &Sim<LoadNode>) -> usize {
    s.get(0)
        .and_then(|r| r.app().track.as_ref())
        .map_or(0, |t| t.reached)
}

/// Runs the `converge` scenario in simulation.
pub fn run(
    a: &ClusterArgs,
    c: &Cluster,
    limit: Duration,
    progress: &Progress,
    failover: Option<&crate::failover::Kill>,
    roll: Option<&crate::roll::Roll>,
) -> Result<Report> {
    let wall = Instant::now();
    let leaves = c.leaves();
    let nodes = (0..c.flat.instances.len() as u32)
        .map(|i| c.node(i, a.seed, Duration::ZERO))
        .collect();
    let cfg = SimConfig {
        seed: a.seed,
        loss: if a.loss_scenario { 0.0 } else { a.loss },
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg, nodes);
    sim.classify_with(layercake::sync::frame_kind);
    let step = Duration::from_millis(10);

    progress.phase("initial sync", leaves);
    sim.with(0, |r, now| r.roll_out(now, 1, &c.is_leaf));
    let ok = sim.run_while(step, limit, |s| {
        progress.set(reached(s), s.stats.datagrams);
        reached(s) == leaves
    });
    if !ok {
        bail!(
            "initial sync did not finish within {limit:?} of virtual time ({} of {leaves})",
            reached(&sim)
        );
    }
    let initial_sync = sim.now();

    progress.phase("steady state", 0);
    sim.run_until(sim.now() + c.root_hello * settle_hellos(c));
    let rx0 = sim.rx_datagrams(0);
    let bytes0 = sim.stats.bytes;
    let kinds0 = sim.stats.by_kind.clone();

    sim.run_until(sim.now() + c.root_hello * STEADY_HELLOS);
    let root_children = c.tree.children(0).len().max(1) as f64;
    let per_hello_total = (sim.rx_datagrams(0) - rx0) as f64 / STEADY_HELLOS as f64;
    let node_seconds = c.flat.instances.len() as f64 * (c.root_hello * STEADY_HELLOS).as_secs_f64();
    let steady = Steady {
        by_kind: kinds_between(&kinds0, &sim.stats.by_kind, node_seconds),
        per_child: per_hello_total / root_children,
        per_hello_total,
        bytes_per_node_per_s: (sim.stats.bytes - bytes0) as f64
            / c.flat.instances.len() as f64
            / (c.root_hello * STEADY_HELLOS).as_secs_f64(),
    };

    if let Some(roll) = roll {
        return crate::roll::run(
            a,
            c,
            sim,
            roll,
            limit,
            progress,
            wall,
            initial_sync,
            &steady,
        );
    }
    if let Some(kill) = failover {
        return crate::failover::run(
            a,
            c,
            sim,
            kill,
            limit,
            progress,
            wall,
            initial_sync,
            &steady,
        );
    }

    progress.phase("converge", leaves);
    if a.loss_scenario {
        let d = SimConfig::default();
        sim.set_network(a.loss, d.duplicate, d.jitter);
    }
    let t0 = sim.now();
    sim.with(0, |r, now| r.roll_out(now, 2, &c.is_leaf));
    sim.run_while(step, t0 + limit, |s| {
        progress.set(reached(s), s.stats.datagrams);
        reached(s) == leaves
    });
    progress.finish();

    let root = sim.get(0).expect("the root is never crashed here");
    let track = root.app().track.as_ref().expect("tracking generation 2");
    let converge = Percentiles::new(track.converged.iter().flatten().map(|t| *t - t0));
    let down = crate::failover::downs(&sim, 2, t0);
    let (scenario, lost_updates) = if a.loss_scenario {
        ("loss".to_string(), Some((leaves - down.len()) as u64))
    } else {
        ("converge".to_string(), None)
    };
    Ok(Report {
        scenario,
        lost_updates,
        reached: track.reached,
        ..with_sim(
            Report::converge(a, c, "sim", &down, &converge),
            &sim,
            wall,
            initial_sync,
            &steady,
        )
    })
}

/// Bytes per node per second of each kind sent between two snapshots of
/// the simulator's counters, rounded for the report.
fn kinds_between(
    before: &BTreeMap<&'static str, KindCount>,
    after: &BTreeMap<&'static str, KindCount>,
    node_seconds: f64,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, a)| {
            let b = before.get(k).map_or(0, |b| b.bytes);
            let per = ((a.bytes - b) as f64 / node_seconds * 10.0).round() / 10.0;
            (per > 0.0).then(|| (k.to_string(), per))
        })
        .collect()
}

/// `base` with what every simulated run reports: the initial sync, the
/// steady-state load, the simulator's traffic, the times and the memory.
pub fn with_sim(
    base: Report,
    sim: &Sim<LoadNode>,
    wall: Instant,
    initial_sync: Duration,
    steady: &Steady,
) -> Report {
    Report {
        initial_sync_s: initial_sync.as_secs_f64(),
        root_rx_datagrams_per_hello: steady.per_child(),
        root_rx_datagrams_per_hello_total: steady.total(),
        steady_bytes_per_node_per_s: steady.bytes(),
        steady_bytes_by_kind: steady.by_kind.clone(),
        max_datagram_bytes: sim.stats.max_datagram_bytes,
        datagrams_total: sim.stats.datagrams,
        bytes_total: sim.stats.bytes,
        datagrams_rejected: sim.stats.rejected,
        wall_s: wall.elapsed().as_secs_f64(),
        virtual_s: sim.now().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
        workers: 1,
        ..base
    }
}
