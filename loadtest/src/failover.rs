//! Scenario `failover` (simulation): kill sub-parents, change every Cfg
//! while they are dead, and measure how the cluster re-homes.
//!
//! After the initial sync and steady state of [`crate::sim_mode`], `K`
//! sub-parents spread over the cluster crash at `t_kill`; half a hello later
//! the root publishes generation 2 for every leaf. Measured per killed group:
//! `failover_detect` (the kill until the root first adopts a member of the
//! group: a fallen-back leaf or an acting sub-parent announcing itself) and
//! `rehome` (the kill until the root holds a Dsc published after the kill for
//! every member). `lost_updates` counts leaves that never received
//! generation 2; `acting_per_group_max` the most distinct acting members the
//! alive members of one killed group believe in after stabilisation (1: no
//! split brain; with the tree strategy every member keeps the dead
//! sub-parent as the group's leader and falls back to the root).
//! With `--restore`, the killed sub-parents come back afterwards and
//! generation 3 must converge too.

use std::time::{Duration, Instant};

use anyhow::Result;
use overlay::NodeId;
use overlay::sim::Sim;

use crate::app::{LoadNode, Probing};
use crate::progress::Progress;
use crate::report::{Percentiles, Report};
use crate::setup::{Cluster, ClusterArgs};
use crate::sim_mode::reached;
use crate::sim_mode::{Steady, with_sim};

/// What to kill (or cut off).
#[derive(Clone, Debug)]
pub struct Kill {
    /// Sub-parents to crash (or racks to cut off).
    pub subparents: usize,
    /// Bring them back once the cluster has re-homed.
    pub restore: bool,
    /// Scenario `partition`: instead of crashing, cut these racks (the
    /// sub-parent and its members) off from the rest for this long.
    pub partition: Option<Duration>,
}

/// The sub-parents directly above leaves, `k` of them spread evenly.
pub fn victims(c: &Cluster, k: usize) -> Vec<NodeId> {
    let racks: Vec<NodeId> = c
        .tree
        .aggregators()
        .filter(|&s| s != 0 && c.tree.children(s).iter().any(|&x| c.is_leaf[x as usize]))
        .collect();
    let k = k.min(racks.len());
    (0..k).map(|i| racks[i * racks.len() / k.max(1)]).collect()
}

fn members(c: &Cluster, v: NodeId) -> Vec<NodeId> {
    c.tree
        .children(v)
        .iter()
        .copied()
        .filter(|&x| c.is_leaf[x as usize])
        .collect()
}

fn leaves_with(sim: &Sim<LoadNode>, c: &Cluster, generation: u64) -> usize {
    (0..sim.len() as NodeId)
        .filter(|&i| c.is_leaf[i as usize])
        .filter_map(|i| sim.get(i))
        .filter(|n| n.app().cfg_arrivals.iter().any(|(g, _)| *g == generation))
        .count()
}

/// Per group: how many distinct acting members its alive members believe
/// in; the largest over the groups (1: no split brain).
fn acting_max(sim: &Sim<LoadNode>, leaders: &[NodeId], groups: &[Vec<NodeId>]) -> usize {
    leaders
        .iter()
        .zip(groups)
        .map(|(&v, g)| {
            let mut acting: Vec<NodeId> = g
                .iter()
                .filter_map(|&m| Some(sim.get(m)?.acting(v)))
                .collect();
            acting.sort_unstable();
            acting.dedup();
            acting.len()
        })
        .max()
        .unwrap_or(0)
}

/// Per group: from `since` until the root held a fresh Dsc of every member
/// (groups with a member never refreshed are left out).
fn rehome(fresh_at: &[Option<Time>], groups: &[Vec<NodeId>], since: Time) -> Percentiles {
    Percentiles::new(groups.iter().filter_map(|g| {
        g.iter()
            .map(|&m| fresh_at[m as usize].map(|t| t - since))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }))
}

/// When each node received the Cfg of `generation`, from `t0`.
pub fn downs(sim: &Sim<LoadNode>, generation: u64, t0: Time) -> Percentiles {
    Percentiles::new(
        (0..sim.len() as NodeId)
            .filter_map(|i| sim.get(i))
            .flat_map(|n| {
                n.app()
                    .cfg_arrivals
                    .iter()
                    .filter(move |(g, _)| *g == generation)
                    .map(move |(_, t)| *t - t0)
            }),
    )
}

/// Runs the failover phases on a synced simulation.
#[allow(clippy::too_many_arguments)]
pub fn run(
    a: &ClusterArgs,
    c: &Cluster,
    mut sim: Sim<LoadNode>,
    kill: &Kill,
    limit: Duration,
    progress: &Progress,
    wall: Instant,
    initial_sync: Duration,
    steady: &Steady,
) -> Result<Report> {
    if let Some(cut) = kill.partition {
        let ctx = Ctx {
            a,
            c,
            limit,
            progress,
            wall,
            initial_sync,
            steady,
        };
        return partition(&ctx, sim, kill.subparents, cut);
    }
    let leaves = c.leaves();
    let victims = victims(c, kill.subparents);
    let step = Duration::from_millis(10);
    progress.phase("failover", leaves);
    let t_kill = sim.now();
    sim.with(0, |r, _| r.watch_failover());
    for &v in &victims {
        sim.crash(v);
    }
    sim.run_until(t_kill + c.node_hello / 2);
    let t0 = sim.now();
    sim.with(0, |r, now| r.roll_out(now, 2, &c.is_leaf));
    let groups: Vec<Vec<NodeId>> = victims.iter().map(|&v| members(c, v)).collect();
    let rehomed = |s: &Sim<LoadNode>| {
        let w = s
            .get(0)
            .and_then(|r| r.app().watch.as_ref())
            .expect("watching");
        groups
            .iter()
            .flatten()
            .all(|&m| w.fresh_at[m as usize].is_some())
    };
    sim.run_while(step, t0 + limit, |s| {
        progress.set(reached(s), s.stats.datagrams);
        reached(s) == leaves && rehomed(s)
    });
    // Stabilise, then look at who the members report to.
    sim.run_until(sim.now() + c.node_hello * 2);
    let acting_max = acting_max(&sim, &victims, &groups);
    let root = sim.get(0).expect("the root is never killed");
    let w = root.app().watch.as_ref().expect("watching");
    let since = |t: Option<Time>| t.map(|t| t - t_kill);
    let rehome = rehome(&w.fresh_at, &groups, t_kill);
    let detect = Percentiles::new(groups.iter().filter_map(|g| {
        g.iter()
            .filter_map(|&m| since(w.adopted_at[m as usize]))
            .min()
    }));
    let track = root.app().track.as_ref().expect("tracking generation 2");
    let converge = Percentiles::new(track.converged.iter().flatten().map(|t| *t - t0));
    let down = downs(&sim, 2, t0);
    let mut lost = (leaves - leaves_with(&sim, c, 2)) as u64;
    let reached_2 = track.reached;
    if kill.restore {
        lost += restore(c, &mut sim, &victims, a.seed, limit, progress);
    }
    Ok(Report {
        scenario: "failover".into(),
        reached: reached_2,
        kill_subparents: Some(victims.len()),
        // Detection is seen where the victims' parent is the root (the
        // root adopts the acting member); deeper, the root sees only the
        // re-homed Dsc.
        failover_detect_p99_s: victims
            .iter()
            .all(|&v| c.tree.parent(v) == Some(0))
            .then(|| detect.at(0.99)),
        rehome_p99_s: Some(rehome.at(0.99)),
        lost_updates: Some(lost),
        acting_per_group_max: Some(acting_max),
        ..with_sim(
            Report::converge(a, c, "sim", &down, &converge),
            &sim,
            wall,
            initial_sync,
            steady,
        )
    })
}

type Time = Duration;

/// Brings the killed sub-parents back and rolls out generation 3; returns
/// the leaves that never received it.
fn restore(
    c: &Cluster,
    sim: &mut Sim<LoadNode>,
    victims: &[NodeId],
    seed: u64,
    limit: Duration,
    p: &Progress,
) -> u64 {
    p.phase("restore", c.leaves());
    for &v in victims {
        let now = sim.now();
        sim.restart(v, c.node(v, seed, now));
    }
    sim.run_until(sim.now() + c.node_hello * 3);
    let t0 = sim.now();
    sim.with(0, |r, now| r.roll_out(now, 3, &c.is_leaf));
    let leaves = c.leaves();
    sim.run_while(Duration::from_millis(10), t0 + limit, |s| {
        reached(s) == leaves
    });
    (leaves - leaves_with(sim, c, 3)) as u64
}

/// What a scenario run carries along.
struct Ctx<'a> {
    a: &'a ClusterArgs,
    c: &'a Cluster,
    limit: Duration,
    progress: &'a Progress,
    wall: Instant,
    initial_sync: Duration,
    steady: &'a Steady,
}

/// Scenario `partition`: `k` racks are cut off for `cut`; half a hello
/// into the cut every Cfg changes; then the network heals. Measured:
/// `rehome` is the heal until the root holds a Dsc published after the heal
/// for every member of the cut racks, `lost_updates` the leaves that never
/// got the change, `acting_per_group_max` as in `failover`.
fn partition(x: &Ctx, mut sim: Sim<LoadNode>, k: usize, cut: Duration) -> Result<Report> {
    let (a, c) = (x.a, x.c);
    let leaves = c.leaves();
    let racks = victims(c, k);
    let mut side = vec![0u8; sim.len()];
    for &r in &racks {
        for m in c.tree.subtree(r) {
            side[m as usize] = 1;
        }
    }
    x.progress.phase("partition", leaves);
    sim.set_partition(Some(side));
    let t_cut = sim.now();
    sim.run_until(t_cut + c.node_hello / 2);
    let t0 = sim.now();
    sim.with(0, |r, now| r.roll_out(now, 2, &c.is_leaf));
    sim.run_until(t_cut + cut);
    sim.set_partition(None);
    let t_heal = sim.now();
    sim.with(0, |r, _| r.watch_failover());
    let groups: Vec<Vec<NodeId>> = racks.iter().map(|&v| members(c, v)).collect();
    sim.run_while(Duration::from_millis(10), t_heal + x.limit, |s| {
        x.progress.set(reached(s), s.stats.datagrams);
        let w = s
            .get(0)
            .and_then(|r| r.app().watch.as_ref())
            .expect("watching");
        reached(s) == leaves
            && groups
                .iter()
                .flatten()
                .all(|&m| w.fresh_at[m as usize].is_some())
    });
    sim.run_until(sim.now() + c.node_hello * 2);
    let acting_max = acting_max(&sim, &racks, &groups);
    let root = sim.get(0).expect("the root is never cut off");
    let w = root.app().watch.as_ref().expect("watching");
    let rehome = rehome(&w.fresh_at, &groups, t_heal);
    let track = root.app().track.as_ref().expect("tracking generation 2");
    let converge = Percentiles::new(track.converged.iter().flatten().map(|t| *t - t0));
    let down = downs(&sim, 2, t0);
    Ok(Report {
        scenario: "partition".into(),
        reached: track.reached,
        kill_subparents: Some(racks.len()),
        rehome_p99_s: Some(rehome.at(0.99)),
        lost_updates: Some((leaves - leaves_with(&sim, c, 2)) as u64),
        acting_per_group_max: Some(acting_max),
        ..with_sim(
            Report::converge(a, c, "sim", &down, &converge),
            &sim,
            x.wall,
            x.initial_sync,
            x.steady,
        )
    })
}
