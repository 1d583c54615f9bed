//! `loadtest`: runs an overlay of tens of thousands of nodes and reports
//! convergence times.
//!
//! - `loadtest run --net sim|udp [--engine] ...`: one scenario, a table at
//!   the end and an optional JSON report; `--engine` runs the state engine
//!   on every leaf.
//! - `loadtest engine --nodes N ...`: the state engine alone (graph build,
//!   planning, driving N nodes), a table and an optional JSON report.
//! - `loadtest campaign --seeds S --nodes N`: the deterministic fault
//!   campaign (`campaign.rs`); `--seed S` alone replays one seed.
//! - `loadtest flood --nodes N --flood D`: garbage at the root of a
//!   real-UDP cluster while it converges (`flood.rs`).
//! - `loadtest worker ...` (hidden): one UDP worker process, started by `run`.

mod app;
mod campaign;
mod engine_bench;
mod engine_leaf;
mod failover;
mod flood;
mod product;
mod progress;
mod report;
mod roll;
mod setup;
mod sim_mode;
mod udp_mode;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use topo::duration;

use crate::setup::ClusterArgs;

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load harness for the Layercake sync overlay"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario and report convergence times.
    Run(RunArgs),
    /// Benchmark the state engine alone: graph, planning, driving N nodes.
    Engine(engine_bench::EngineArgs),
    /// Deterministic fault campaign: many seeds of faults in simulation,
    /// invariants checked, failing seeds printed with their replay command.
    Campaign(campaign::CampaignArgs),
    /// Flood the root of a real-UDP cluster with garbage while it converges;
    /// report the root's memory, drops by reason and converge times.
    Flood(flood::FloodArgs),
    /// One UDP worker process (started by `run --net udp`).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Where the nodes run: `sim` (virtual time) or `udp` (real sockets).
    #[arg(long, default_value = "sim")]
    net: String,
    /// The scenario: `converge`, `loss` (converge with `--loss`, 5 % if
    /// unset, on the measured change; reports `lost_updates`), `failover`
    /// (`--kill-subparents K`, `--restore`), `partition` (simulation:
    /// `--kill-subparents K` racks cut off for `--cut-for`, then healed) or
    /// `roll` (simulation with `--engine`: a new image-set version while
    /// `--busy-fraction` of the nodes are busy, freed after `--free-after`).
    #[arg(long, default_value = "converge")]
    scenario: String,
    /// Give up on a phase after this long (virtual time in `sim`).
    #[arg(long, default_value = "60s", value_parser = duration::parse_flag)]
    timeout: Duration,
    /// UDP worker processes (default: the root alone, then one per 18,000
    /// instances and at least one per CPU core).
    #[arg(long)]
    workers: Option<usize>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Serve Prometheus metrics on this address while running.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Failover: how many sub-parents to kill.
    #[arg(long, default_value_t = 1)]
    kill_subparents: usize,
    /// Failover: bring the killed sub-parents back afterwards.
    #[arg(long)]
    restore: bool,
    /// Partition: how long the racks (`--kill-subparents` of them) stay cut off.
    #[arg(long, default_value = "5s", value_parser = duration::parse_flag)]
    cut_for: Duration,
    /// Roll: the fraction of nodes busy when the new version is published.
    #[arg(long, default_value_t = 0.2)]
    busy_fraction: f64,
    /// Roll: busy nodes are freed between this long and twice this long
    /// after the new version (virtual time).
    #[arg(long, default_value = "5s", value_parser = duration::parse_flag)]
    free_after: Duration,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// With `--api`: keep every instance (and the root's API) running this
    /// long after the report, for a user or a script to query.
    #[arg(long, value_parser = duration::parse_flag)]
    hold: Option<Duration>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Run(a) => run(a),
        Cmd::Engine(a) => engine_bench::run(&a),
        Cmd::Campaign(a) => campaign::run(&a),
        Cmd::Flood(a) => flood::run(&a),
        Cmd::Worker(w) => worker::main(w),
    }
}

fn run(mut a: RunArgs) -> Result<()> {
    let mut roll = None;
    let failover = match a.scenario.as_str() {
        "converge" => None,
        "roll" => {
            if a.net != "sim" || !a.cluster.engine {
                bail!("--scenario roll runs with --net sim --engine so far");
            }
            let r = roll::Roll {
                busy_fraction: a.busy_fraction,
                free_after: a.free_after,
            };
            r.check(a.timeout)?;
            a.cluster.images = true;
            roll = Some(r);
            None
        }
        "loss" => {
            // Simulation: a clean initial sync, then the loss on the
            // measured change; UDP: the loss from the start.
            if a.cluster.loss == 0.0 {
                a.cluster.loss = 0.05;
            }
            a.cluster.loss_scenario = true;
            None
        }
        "failover" => Some(failover::Kill {
            subparents: a.kill_subparents.max(1),
            restore: a.restore,
            partition: None,
        }),
        "partition" if a.net == "sim" => Some(failover::Kill {
            subparents: a.kill_subparents.max(1),
            restore: false,
            partition: Some(a.cut_for),
        }),
        "partition" => bail!("--scenario partition runs with --net sim so far"),
        other => {
            bail!("--scenario {other}: use `converge`, `loss`, `failover`, `partition` or `roll`")
        }
    };
    let cluster = setup::cluster(&a.cluster)?;
    let progress = progress::Progress::new(a.quiet, a.metrics)?;
    eprintln!(
        "loadtest: {} nodes, {} sub-parents, net {}, strategy {}, seed {}{}",
        cluster.leaves(),
        cluster.sub_parents(),
        a.net,
        cluster.strategy,
        a.cluster.seed,
        if a.cluster.engine { ", engine" } else { "" }
    );
    if a.cluster.api.is_some() && a.net != "udp" {
        bail!("--api serves the product's root of a `--net udp` run (worker processes)");
    }
    if a.hold.is_some() && a.cluster.api.is_none() {
        bail!("--hold keeps the root's API up after the report: give --api ADDR too");
    }
    let mut held = None;
    let report = match a.net.as_str() {
        "sim" if cluster.transport != setup::Wire::Udp => {
            bail!("--transport quic|auto runs on real sockets: use it with --net udp")
        }
        "sim" => sim_mode::run(
            &a.cluster,
            &cluster,
            a.timeout,
            &progress,
            failover.as_ref(),
            roll.as_ref(),
        )?,
        "udp" => {
            let (report, fleet) = udp_mode::run(
                &a.cluster,
                &cluster,
                a.timeout,
                a.workers,
                &progress,
                failover.as_ref(),
                a.hold.is_some(),
            )?;
            held = fleet;
            report
        }
        other => bail!("--net {other}: use `sim` or `udp`"),
    };
    println!("{}", report.table());
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!("report written to {}", path.display());
    }
    if let (Some(d), Some(fleet)) = (a.hold, held) {
        if let Some(api) = a.cluster.api {
            eprintln!(
                "holding for {}: the root's API at http://{api}/api/v1, dashboard http://{api}/",
                topo::duration::format(d)
            );
        }
        fleet.hold(d)?;
        drop(fleet);
    }
    if let Some(n) = report.busy_interrupted.filter(|&n| n > 0) {
        bail!("{n} busy nodes had their images touched while busy");
    }
    if report.reached < report.nodes {
        bail!(
            "only {} of {} nodes converged",
            report.reached,
            report.nodes
        );
    }
    Ok(())
}
