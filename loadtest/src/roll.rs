//! Scenario `roll` (simulation, `--engine`): a new image-set version rolled
//! over a cluster where some nodes are busy.
//!
//! Every leaf runs its engine with the virtual power, boot and image
//! modules (`crate::engine_leaf`); generation 1 boots every node and
//! starts image `app` v1 (the initial sync waits until the root holds
//! every node's Dsc running v1's digest). Then:
//!
//! 1. `--busy-fraction F` of the leaves (chosen from the seed) say they
//!    are busy, as `layercake busy` does on a node: Dsc `/Busy`=BUSY.
//! 2. At `t0` the root publishes generation 2 (image `app` v2) for every
//!    leaf. Free leaves roll at once; busy ones wait (the image steps'
//!    Dsc gate).
//! 3. Each busy leaf is freed at `t0 + D + u * D` (`D` = `--free-after`,
//!    `u` in [0, 1) from the seed), as `layercake free` does.
//!
//! Measured on the virtual clock: `roll_free` (free leaves: `t0` until the
//! root holds the Dsc running v2's digest) and `roll_freed` (busy leaves:
//! their `free` until the same). `rolled` counts leaves the root saw
//! running v2. `busy_interrupted` counts busy leaves whose images were
//! touched while busy: an image step handed out or a container changed
//! (each leaf's `BusyWatch`, a checker outside the module), or the root
//! holding a rolled Dsc before the leaf was freed. It must be 0.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use overlay::NodeId;
use overlay::Time;
use overlay::sim::Sim;

use crate::app::{LoadNode, Probing};
use crate::engine_leaf::mix;
use crate::progress::Progress;
use crate::report::{Percentiles, Report};
use crate::setup::{Cluster, ClusterArgs};
use crate::sim_mode::{Steady, reached, with_sim};

/// What the scenario does.
#[derive(Clone, Debug)]
pub struct Roll {
    /// Fraction of the leaves busy at `t0`.
    pub busy_fraction: f64,
    /// Busy leaves are freed between `t0 + free_after` and
    /// `t0 + 2 * free_after`.
    pub free_after: Duration,
}

impl Roll {
    /// Checks the settings against the phase limit.
    pub fn check(&self, limit: Duration) -> Result<()> {
        if !(0.0..=1.0).contains(&self.busy_fraction) {
            bail!(
                "--busy-fraction must be in [0, 1], got {}",
                self.busy_fraction
            );
        }
        if self.free_after * 2 >= limit {
            bail!(
                "--free-after ({:?}) must be under half of --timeout ({limit:?}): busy nodes are freed until twice it",
                self.free_after
            );
        }
        Ok(())
    }
}

/// A number in [0, 1) from the seed, the leaf and a purpose.
fn unit(seed: u64, id: NodeId, purpose: u64) -> f64 {
    let z = mix(seed ^ mix(u64::from(id) ^ purpose.rotate_left(32)));
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The busy leaves: `fraction` of them, chosen from the seed.
fn pick_busy(c: &Cluster, seed: u64, fraction: f64) -> Vec<NodeId> {
    let mut leaves: Vec<NodeId> = (0..c.is_leaf.len() as NodeId)
        .filter(|&i| c.is_leaf[i as usize])
        .collect();
    let k = (fraction * leaves.len() as f64).round() as usize;
    leaves.sort_by_key(|&i| mix(seed ^ mix(u64::from(i))));
    let mut busy = leaves[..k.min(leaves.len())].to_vec();
    busy.sort_unstable();
    busy
}

/// Runs the roll phases on a synced simulation (generation 1 running).
#[allow(clippy::too_many_arguments)]
pub fn run(
    a: &ClusterArgs,
    c: &Cluster,
    mut sim: Sim<LoadNode>,
    roll: &Roll,
    limit: Duration,
    progress: &Progress,
    wall: Instant,
    initial_sync: Duration,
    steady: &Steady,
) -> Result<Report> {
    let leaves = c.leaves();
    let busy = pick_busy(c, a.seed, roll.busy_fraction);
    progress.phase("busy", 0);
    for &id in &busy {
        sim.with(id, |n, now| n.set_busy(now, true));
    }
    // Why: a node's Busy travels to the root with its Dsc; the roll does
    // not need it there (the gate is the node's), but an operator would
    // see it first.
    sim.run_until(sim.now() + c.node_hello);

    progress.phase("roll", leaves);
    let t0 = sim.now();
    sim.with(0, |r, now| r.roll_out(now, 2, &c.is_leaf));
    let mut frees: Vec<(Time, NodeId)> = busy
        .iter()
        .map(|&id| {
            let u = unit(a.seed, id, 0xF4EE);
            (t0 + roll.free_after + roll.free_after.mul_f64(u), id)
        })
        .collect();
    frees.sort_unstable();
    let mut freed_at: Vec<Option<Time>> = vec![None; c.is_leaf.len()];
    for (at, id) in frees {
        sim.run_until(at);
        sim.with(id, |n, now| n.set_busy(now, false));
        freed_at[id as usize] = Some(sim.now());
        progress.set(reached(&sim), sim.stats.datagrams);
    }
    let step = Duration::from_millis(10);
    sim.run_while(step, t0 + limit, |s| {
        progress.set(reached(s), s.stats.datagrams);
        reached(s) == leaves
    });
    progress.finish();
    Ok(report(
        a,
        c,
        &sim,
        roll,
        &busy,
        &freed_at,
        t0,
        wall,
        initial_sync,
        steady,
    ))
}

/// The report of a finished roll.
#[allow(clippy::too_many_arguments)]
fn report(
    a: &ClusterArgs,
    c: &Cluster,
    sim: &Sim<LoadNode>,
    roll: &Roll,
    busy: &[NodeId],
    freed_at: &[Option<Time>],
    t0: Time,
    wall: Instant,
    initial_sync: Duration,
    steady: &Steady,
) -> Report {
    let root = sim.get(0).expect("the root is never crashed here");
    let track = root.app().track.as_ref().expect("tracking generation 2");
    let is_busy = |i: usize| freed_at[i].is_some();
    let rolled_at = |i: usize| track.converged[i];
    let free = Percentiles::new(
        (0..c.is_leaf.len())
            .filter(|&i| c.is_leaf[i] && !is_busy(i))
            .filter_map(|i| Some(rolled_at(i)? - t0)),
    );
    let freed = Percentiles::new(
        busy.iter()
            .map(|&i| i as usize)
            .filter_map(|i| Some(rolled_at(i)?.saturating_sub(freed_at[i]?))),
    );
    let interrupted = busy
        .iter()
        .filter(|&&i| {
            let i = i as usize;
            let watched = sim
                .get(i as NodeId)
                .and_then(|n| n.busy_watch())
                .is_none_or(|w| w.interrupted());
            let early = matches!((rolled_at(i), freed_at[i]), (Some(r), Some(f)) if r < f);
            watched || early
        })
        .count();
    let all = Percentiles::new(track.converged.iter().flatten().map(|t| *t - t0));
    let down = crate::failover::downs(sim, 2, t0);
    Report {
        scenario: "roll".into(),
        reached: track.reached,
        busy_nodes: Some(busy.len()),
        rolled: Some(track.reached),
        busy_interrupted: Some(interrupted),
        image_start_max_s: Some(a.image_start.as_secs_f64()),
        free_after_s: Some(roll.free_after.as_secs_f64()),
        roll_free_p50_s: Some(free.at(0.5)),
        roll_free_p99_s: Some(free.at(0.99)),
        roll_free_max_s: Some(free.max()),
        roll_freed_p50_s: Some(freed.at(0.5)),
        roll_freed_p99_s: Some(freed.at(0.99)),
        roll_freed_max_s: Some(freed.max()),
        ..with_sim(
            Report::converge(a, c, "sim", &down, &all),
            sim,
            wall,
            initial_sync,
            steady,
        )
    }
}
