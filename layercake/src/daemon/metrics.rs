//! Prometheus metrics: the recorder, the metric names and one function per
//! thing measured, so that names and labels live in one place (the
//! reference is `docs/metrics.md`).
//!
//! - [`install`]: installs the global `metrics` recorder (a
//!   `metrics-exporter-prometheus` handle that `/metrics` renders).
//! - Engine side: [`mutation_started`], [`mutation_completed`],
//!   [`mutation_failed`] (failed or timed out), with durations.
//! - Root side: [`convergence`] (the `kraken_convergence_seconds`
//!   histogram), node state gauges ([`node_states`]).
//! - Sync side: [`peer_event`], [`traffic`], [`dropped`], and per hosted
//!   instance [`instance`] (failovers, acting groups, BMC children) and
//!   [`paths`] (QUIC).
//! - Process: `layercake_build_info` and, through `metrics-process`, the
//!   standard `process_*` metrics ([`process`], sampled with the rest).

use std::time::Duration;

use anyhow::{Context, Result};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets of every `*_seconds` metric.
const SECONDS_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Installs the process-wide recorder and describes every metric.
pub fn install() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "kraken_convergence_seconds",
        metrics::Unit::Seconds,
        "From a Cfg change accepted at the root until the root holds a matching Dsc, per node"
    );
    describe_gauge!("kraken_nodes", "Nodes managed by the root");
    describe_counter!(
        "layercake_image_fetches_total",
        "Image tarballs this instance fetched from its parent (cache misses)"
    );
    describe_counter!(
        "kraken_sync_failovers_total",
        "Times an instance took over a group whose sub-parent it is not"
    );
    describe_counter!(
        "kraken_sync_handbacks_total",
        "Times an instance handed a group back (or lost it to another member)"
    );
    describe_gauge!(
        "kraken_sync_acting",
        "1 while the instance acts for the group (as its sub-parent or after a failover)"
    );
    describe_gauge!(
        "kraken_sync_standing_in",
        "1 while the instance acts for a group whose sub-parent it is not"
    );
    describe_gauge!(
        "layercake_bmc_children",
        "BMC-driven nodes this instance drives now"
    );
    describe_counter!(
        "kraken_sync_quic_fallbacks_total",
        "Peers whose path fell back from UDP to QUIC"
    );
    describe_counter!(
        "kraken_sync_quic_frames_total",
        "Frames sent over QUIC (pinned links and fallback)"
    );
    describe_gauge!(
        "kraken_nodes_converged",
        "Nodes whose Dsc (at the root) matches their Cfg"
    );
    describe_gauge!("kraken_nodes_phys_state", "Nodes by discovered PhysState");
    describe_gauge!("kraken_nodes_run_state", "Nodes by discovered RunState");
    describe_counter!("kraken_mutations_started_total", "Mutation steps started");
    describe_counter!(
        "kraken_mutations_completed_total",
        "Mutation steps completed"
    );
    describe_counter!(
        "kraken_mutations_failed_total",
        "Mutation steps whose module reported an error"
    );
    describe_counter!(
        "kraken_mutations_timed_out_total",
        "Mutation steps that exceeded their timeout"
    );
    describe_histogram!(
        "kraken_mutation_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of mutation steps by mutation and outcome"
    );
    describe_counter!(
        "kraken_sync_datagrams_total",
        "Sync datagrams by level and direction"
    );
    describe_counter!("kraken_sync_bytes_total", "Sync bytes sent by level");
    describe_counter!(
        "kraken_sync_dropped_total",
        "Datagrams the envelope rejected, by reason"
    );
    describe_counter!(
        "kraken_sync_claims_rejected_total",
        "Acting claims in hellos that the tree refused (wrong group, sender, receiver or epoch)"
    );
    describe_counter!(
        "kraken_sync_records_rejected_total",
        "Records refused: wrong direction, outside the subtree, or a BMC node's own Dsc"
    );
    describe_gauge!(
        "kraken_sync_neighbors",
        "Neighbour links by level and state (alive, dead)"
    );
    describe_counter!(
        "kraken_sync_peer_events_total",
        "Neighbours that came up or went down"
    );
    describe_counter!(
        "kraken_api_writes_total",
        "Cfg writes committed through the API"
    );
    describe_histogram!(
        "kraken_cfg_commit_seconds",
        metrics::Unit::Seconds,
        "Time to commit one API write to the database"
    );
    describe_gauge!(
        "layercake_build_info",
        "Always 1; the labels say which build runs (version, profile)"
    );
    gauge!(
        "layercake_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "profile" => if cfg!(debug_assertions) { "debug" } else { "release" },
    )
    .set(1.0);
    process_collector().describe();
    process();
}

/// The process metrics collector (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, open files, threads, start time).
fn process_collector() -> &'static metrics_process::Collector {
    static C: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    C.get_or_init(metrics_process::Collector::default)
}

/// Samples this process's CPU, memory, file descriptors and threads.
pub fn process() {
    process_collector().collect();
}

/// A mutation step started on this instance.
pub fn mutation_started(mutation: String) {
    counter!("kraken_mutations_started_total", "mutation" => mutation).increment(1);
}

/// A mutation step completed after `took` (if its start was seen).
pub fn mutation_completed(mutation: String, took: Option<Duration>) {
    counter!("kraken_mutations_completed_total", "mutation" => mutation.clone()).increment(1);
    if let Some(t) = took {
        histogram!("kraken_mutation_duration_seconds", "mutation" => mutation, "outcome" => "completed")
            .record(t.as_secs_f64());
    }
}

/// A mutation step failed (`timed_out`: no answer in time; else the
/// module reported an error).
pub fn mutation_failed(mutation: String, took: Option<Duration>, timed_out: bool) {
    let (name, outcome) = if timed_out {
        ("kraken_mutations_timed_out_total", "timed_out")
    } else {
        ("kraken_mutations_failed_total", "failed")
    };
    counter!(name, "mutation" => mutation.clone()).increment(1);
    if let Some(t) = took {
        histogram!("kraken_mutation_duration_seconds", "mutation" => mutation, "outcome" => outcome)
            .record(t.as_secs_f64());
    }
}

/// One node converged `took` after its Cfg change was accepted.
pub fn convergence(took: Duration) {
    histogram!("kraken_convergence_seconds").record(took.as_secs_f64());
}

/// A neighbour came `up` or went `down`.
pub fn peer_event(event: &'static str) {
    counter!("kraken_sync_peer_events_total", "event" => event).increment(1);
}

/// Node counts at the root: total, converged, by PhysState and RunState.
pub fn node_states(
    total: usize,
    converged: usize,
    phys: &[(&'static str, usize)],
    run: &[(&'static str, usize)],
) {
    gauge!("kraken_nodes").set(total as f64);
    gauge!("kraken_nodes_converged").set(converged as f64);
    for &(s, n) in phys {
        gauge!("kraken_nodes_phys_state", "state" => s).set(n as f64);
    }
    for &(s, n) in run {
        gauge!("kraken_nodes_run_state", "state" => s).set(n as f64);
    }
}

/// Traffic totals of one level (absolute counter values).
#[derive(Clone, Debug, Default)]
pub struct LevelTraffic {
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Datagrams received and accepted.
    pub rx_datagrams: u64,
    /// Bytes received and accepted.
    pub rx_bytes: u64,
    /// Neighbour links in state full.
    pub alive: u64,
    /// Neighbour links in state down.
    pub dead: u64,
}

/// Publishes the traffic and neighbour totals of `level`.
pub fn traffic(level: &str, t: &LevelTraffic) {
    let l = level.to_string();
    counter!("kraken_sync_datagrams_total", "level" => l.clone(), "direction" => "out")
        .absolute(t.tx_datagrams);
    counter!("kraken_sync_datagrams_total", "level" => l.clone(), "direction" => "in")
        .absolute(t.rx_datagrams);
    counter!("kraken_sync_bytes_total", "level" => l.clone(), "direction" => "out")
        .absolute(t.tx_bytes);
    counter!("kraken_sync_bytes_total", "level" => l.clone(), "direction" => "in")
        .absolute(t.rx_bytes);
    gauge!("kraken_sync_neighbors", "level" => l.clone(), "state" => "alive").set(t.alive as f64);
    gauge!("kraken_sync_neighbors", "level" => l, "state" => "dead").set(t.dead as f64);
}

/// Publishes the envelope's drop counters (absolute, by reason).
pub fn dropped(reason: &'static str, count: u64) {
    counter!("kraken_sync_dropped_total", "reason" => reason).absolute(count);
}

/// Authenticated input the tree refused (absolute, summed over the
/// hosted instances): acting claims and records from the wrong direction
/// or author.
pub fn rejected(claims: u64, records: u64) {
    counter!("kraken_sync_claims_rejected_total").absolute(claims);
    counter!("kraken_sync_records_rejected_total").absolute(records);
}

/// One API write of `nodes` nodes committed in `took`.
pub fn api_write(took: Duration) {
    counter!("kraken_api_writes_total").increment(1);
    histogram!("kraken_cfg_commit_seconds").record(took.as_secs_f64());
}

/// What one hosted instance reports beside its traffic.
pub struct InstanceSample<'a> {
    /// The instance's name.
    pub name: &'a str,
    /// Failovers and hand-backs so far.
    pub failovers: u64,
    /// Hand-backs so far.
    pub handbacks: u64,
    /// `(group name, acting now, standing in for its sub-parent)` per group
    /// the instance is a member of.
    pub groups: Vec<(&'a str, bool, bool)>,
    /// BMC children driven now (`None`: no BMC host).
    pub bmc_children: Option<usize>,
}

/// Sets the per-instance sync gauges and counters.
pub fn instance(s: &InstanceSample<'_>) {
    let name = s.name.to_string();
    counter!("kraken_sync_failovers_total", "instance" => name.clone()).absolute(s.failovers);
    counter!("kraken_sync_handbacks_total", "instance" => name.clone()).absolute(s.handbacks);
    for &(group, acting, standing_in) in &s.groups {
        let labels = [("instance", name.clone()), ("group", group.to_string())];
        gauge!("kraken_sync_acting", &labels).set(f64::from(u8::from(acting)));
        gauge!("kraken_sync_standing_in", &labels).set(f64::from(u8::from(standing_in)));
    }
    if let Some(n) = s.bmc_children {
        gauge!("layercake_bmc_children", "instance" => name).set(n as f64);
    }
}

/// Sets the dual driver's counters of instance `name`.
pub fn paths(name: &str, p: &overlay::dual::PathCounters) {
    let name = name.to_string();
    counter!("kraken_sync_quic_fallbacks_total", "instance" => name.clone()).absolute(p.fallbacks);
    counter!("kraken_sync_quic_frames_total", "instance" => name).absolute(p.quic_tx);
}
