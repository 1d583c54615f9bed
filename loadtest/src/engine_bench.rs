//! `loadtest engine`: the state engine alone, in one process.
//!
//! Runs [`engine::bench::run`]: builds the epistemic graph of the virtual
//! power and boot modules, plans every node from all-unknown to "powered
//! on and booted", and drives N nodes there on virtual time (with the
//! benchmark's own fault rates). Prints a table and optionally writes
//! [`EngineBenchReport`] as JSON.

use std::path::PathBuf;

use anyhow::{Result, bail};
use engine::bench::EngineReport;
use serde::Serialize;

use crate::report::peak_rss_mb;

/// Arguments of `loadtest engine`.
#[derive(clap::Args)]
pub struct EngineArgs {
    /// Nodes to plan and drive.
    #[arg(long, default_value_t = 50_000)]
    pub nodes: usize,
    /// Seed of the virtual modules' delays and faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `loadtest engine` measured (the JSON report).
#[derive(Debug, Clone, Serialize)]
pub struct EngineBenchReport {
    /// Nodes driven.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// The engine's measurements.
    #[serde(flatten)]
    pub engine: EngineReport,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mb: f64,
}

impl EngineBenchReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let e = &self.engine;
        let rows = [
            ("nodes, seed", format!("{}, {}", self.nodes, self.seed)),
            (
                "graph nodes / edges",
                format!("{} / {}", e.graph_nodes, e.graph_edges),
            ),
            ("graph build", format!("{:.3} ms", e.graph_build_ms)),
            (
                "plan p50 / p99",
                format!("{:.3} us / {:.3} us", e.plan_p50_us, e.plan_p99_us),
            ),
            ("drive all", format!("{:.3} s", e.drive_all_s)),
            ("peak RSS", format!("{:.0} MiB", self.peak_rss_mb)),
        ];
        rows.iter()
            .map(|(k, v)| format!("  {k:<34} {v}\n"))
            .collect()
    }
}

/// Runs the benchmark; fails if a node does not converge.
pub fn run(a: &EngineArgs) -> Result<()> {
    if a.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    eprintln!("loadtest engine: {} nodes, seed {}", a.nodes, a.seed);
    let (nodes, seed) = (a.nodes, a.seed);
    // The benchmark asserts that every node converged; turn that panic
    // into an error (the panic message is printed by the default hook).
    let engine = std::panic::catch_unwind(move || engine::bench::run(nodes, seed));
    let Ok(engine) = engine else {
        bail!(
            "the engine benchmark failed (replay: loadtest engine --nodes {nodes} --seed {seed})"
        );
    };
    let report = EngineBenchReport {
        nodes,
        seed,
        engine,
        peak_rss_mb: peak_rss_mb(),
    };
    println!("{}", report.table());
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}
