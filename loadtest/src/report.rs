//! The run report: percentiles (hdrhistogram), JSON and a human table.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Everything a run measured. Times are seconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Report {
    /// The scenario that ran (`converge`).
    pub scenario: String,
    /// `sim` or `udp`.
    pub net: String,
    /// The sync strategy.
    pub strategy: String,
    /// The transport of every link (`udp` or `quic`).
    pub transport: String,
    /// Whether the state engine ran on every node.
    pub engine: bool,
    /// Leaf nodes.
    pub nodes: usize,
    /// Aggregators other than the root.
    pub sub_parents: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// Configured datagram loss.
    pub loss: f64,
    /// Hello interval of the nodes' tier.
    pub hello_s: f64,
    /// Leaves whose matching Dsc the root held by the end.
    pub reached: usize,
    /// Initial sync: start until the root held every leaf's first Dsc.
    pub initial_sync_s: f64,
    /// Cfg change at the root until the node holds it: median.
    pub down_p50_s: f64,
    /// Same, 99th percentile.
    pub down_p99_s: f64,
    /// Cfg change until the root holds the matching Dsc: median.
    pub converge_p50_s: f64,
    /// Same, 99th percentile.
    pub converge_p99_s: f64,
    /// Same, slowest node.
    pub converge_max_s: f64,
    /// Steady state: datagrams the root received per root child per hello.
    pub root_rx_datagrams_per_hello: f64,
    /// Steady state: datagrams the root received per hello, in all.
    pub root_rx_datagrams_per_hello_total: f64,
    /// Steady state: bytes sent per instance per second (the background
    /// load of the strategy).
    pub steady_bytes_per_node_per_s: f64,
    /// Steady state, simulation: bytes sent per instance per second by
    /// kind of datagram (tree frames, SWIM messages, digests, envelope
    /// handshakes: where the background load goes).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub steady_bytes_by_kind: BTreeMap<String, f64>,
    /// Largest datagram sent, envelope included.
    pub max_datagram_bytes: usize,
    /// Datagrams sent over the whole run.
    pub datagrams_total: u64,
    /// Bytes sent over the whole run.
    pub bytes_total: u64,
    /// Datagrams rejected by receivers' envelopes (replays of duplicates
    /// in simulation, anything else on UDP).
    pub datagrams_rejected: u64,
    /// Wall-clock duration of the run.
    pub wall_s: f64,
    /// Virtual duration (simulation) or measured span (UDP).
    pub virtual_s: f64,
    /// Peak resident memory over all processes of the run, MiB.
    pub peak_rss_mb: f64,
    /// Worker processes (UDP).
    pub workers: usize,
    /// `--transport auto`: frames per path and path changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<crate::worker::Paths>,
    /// Failover: sub-parents killed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_subparents: Option<usize>,
    /// Failover: the kill until the root adopts a member of the group
    /// (p99 over killed groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover_detect_p99_s: Option<f64>,
    /// Failover: the kill until the root holds fresh Dsc for every member
    /// of the group (p99 over killed groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rehome_p99_s: Option<f64>,
    /// Failover: Cfg changes accepted at the root that never reached their node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_updates: Option<u64>,
    /// Failover: most distinct parents among one killed group's members
    /// after stabilisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acting_per_group_max: Option<usize>,
    /// Roll: leaves busy when the new version was published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_nodes: Option<usize>,
    /// Roll: leaves the root saw running the new version's digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled: Option<usize>,
    /// Roll: busy leaves whose images were touched while busy (must be 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_interrupted: Option<usize>,
    /// Roll: the longest simulated container start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_start_max_s: Option<f64>,
    /// Roll: busy leaves are freed between this and twice this after `t0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_after_s: Option<f64>,
    /// Roll: free leaves, `t0` until the root holds their rolled Dsc: median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roll_free_p50_s: Option<f64>,
    /// Same, 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roll_free_p99_s: Option<f64>,
    /// Same, slowest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roll_free_max_s: Option<f64>,
    /// Roll: busy leaves, their `free` until the root holds their rolled
    /// Dsc: median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roll_freed_p50_s: Option<f64>,
    /// Same, 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roll_freed_p99_s: Option<f64>,
    /// Same, slowest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roll_freed_max_s: Option<f64>,
}

/// Percentiles of a set of durations.
pub struct Percentiles {
    h: Histogram<u64>,
}

impl Percentiles {
    /// Samples recorded.
    pub fn len(&self) -> usize {
        self.h.len() as usize
    }
}

impl Percentiles {
    /// Collects durations (microsecond resolution, up to one hour).
    pub fn new(samples: impl Iterator<Item = Duration>) -> Percentiles {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        for s in samples {
            h.saturating_record((s.as_micros() as u64).max(1));
        }
        Percentiles { h }
    }

    /// The value at `q` (0..=1), seconds; 0 when empty.
    pub fn at(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.value_at_quantile(q) as f64 / 1e6
    }

    /// The largest value, seconds.
    pub fn max(&self) -> f64 {
        if self.h.is_empty() {
            0.0
        } else {
            self.h.max() as f64 / 1e6
        }
    }
}

/// Peak resident set of this process (VmHWM), MiB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

impl Report {
    /// A report of the `converge` scenario with the run's settings and the
    /// two sets of per-node times filled in; the caller adds the rest.
    pub fn converge(
        a: &crate::setup::ClusterArgs,
        c: &crate::setup::Cluster,
        net: &str,
        down: &Percentiles,
        converge: &Percentiles,
    ) -> Report {
        Report {
            scenario: "converge".into(),
            net: net.into(),
            strategy: c.strategy.clone(),
            transport: c.transport.to_string(),
            engine: a.engine,
            nodes: c.leaves(),
            sub_parents: c.sub_parents(),
            seed: a.seed,
            loss: a.loss,
            hello_s: c.node_hello.as_secs_f64(),
            down_p50_s: down.at(0.5),
            down_p99_s: down.at(0.99),
            converge_p50_s: converge.at(0.5),
            converge_p99_s: converge.at(0.99),
            converge_max_s: converge.max(),
            ..Report::default()
        }
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let rows = [
            (
                "scenario",
                format!(
                    "{} ({} net, {} transport, {} strategy, engine {})",
                    self.scenario, self.net, self.transport, self.strategy, self.engine
                ),
            ),
            (
                "nodes / sub-parents",
                format!("{} / {}", self.nodes, self.sub_parents),
            ),
            ("reached", format!("{} of {}", self.reached, self.nodes)),
            (
                "seed, loss, hello",
                format!("{}, {}, {} s", self.seed, self.loss, self.hello_s),
            ),
            ("initial sync", format!("{:.3} s", self.initial_sync_s)),
            (
                "down p50 / p99",
                format!("{:.3} s / {:.3} s", self.down_p50_s, self.down_p99_s),
            ),
            (
                "converge p50 / p99 / max",
                format!(
                    "{:.3} s / {:.3} s / {:.3} s",
                    self.converge_p50_s, self.converge_p99_s, self.converge_max_s
                ),
            ),
            (
                "root rx per sub-parent per hello",
                format!("{:.2}", self.root_rx_datagrams_per_hello),
            ),
            (
                "root rx per hello, all",
                format!("{:.1}", self.root_rx_datagrams_per_hello_total),
            ),
            (
                "steady bytes per node per second",
                format!("{:.1}", self.steady_bytes_per_node_per_s),
            ),
            (
                "datagrams / bytes",
                format!("{} / {}", self.datagrams_total, self.bytes_total),
            ),
            (
                "largest datagram",
                format!("{} bytes", self.max_datagram_bytes),
            ),
            ("rejected datagrams", format!("{}", self.datagrams_rejected)),
            (
                "wall / virtual",
                format!("{:.2} s / {:.2} s", self.wall_s, self.virtual_s),
            ),
            ("peak RSS", format!("{:.0} MiB", self.peak_rss_mb)),
        ];
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("  {k:<40} {v}\n"));
        }
        let extra = [
            (
                "sub-parents killed or racks cut",
                self.kill_subparents.map(|k| k.to_string()),
            ),
            (
                "failover detect p99",
                self.failover_detect_p99_s.map(|d| format!("{d:.3} s")),
            ),
            ("rehome p99", self.rehome_p99_s.map(|r| format!("{r:.3} s"))),
            ("lost updates", self.lost_updates.map(|l| l.to_string())),
            (
                "acting per group (max)",
                self.acting_per_group_max.map(|g| g.to_string()),
            ),
            (
                "busy / rolled / busy interrupted",
                self.rolled.map(|r| {
                    format!(
                        "{} / {r} / {}",
                        self.busy_nodes.unwrap_or(0),
                        self.busy_interrupted.unwrap_or(0)
                    )
                }),
            ),
            (
                "image start (max), free after",
                self.image_start_max_s
                    .map(|s| format!("{s:.3} s, {:.3} s", self.free_after_s.unwrap_or(0.0))),
            ),
            (
                "roll free p50 / p99 / max",
                self.roll_free_p99_s.map(|p99| {
                    format!(
                        "{:.3} s / {p99:.3} s / {:.3} s",
                        self.roll_free_p50_s.unwrap_or(0.0),
                        self.roll_free_max_s.unwrap_or(0.0)
                    )
                }),
            ),
            (
                "roll freed (after free) p50 / p99 / max",
                self.roll_freed_p99_s.map(|p99| {
                    format!(
                        "{:.3} s / {p99:.3} s / {:.3} s",
                        self.roll_freed_p50_s.unwrap_or(0.0),
                        self.roll_freed_max_s.unwrap_or(0.0)
                    )
                }),
            ),
        ];
        for (k, v) in extra {
            if let Some(v) = v {
                out.push_str(&format!("  {k:<40} {v}\n"));
            }
        }
        if !self.steady_bytes_by_kind.is_empty() {
            out.push_str("  steady bytes per node per second, by kind:\n");
            let mut kinds: Vec<_> = self.steady_bytes_by_kind.iter().collect();
            kinds.sort_by(|a, b| b.1.total_cmp(a.1));
            for (k, v) in kinds {
                out.push_str(&format!("    {k:<38} {v:.1}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let p = Percentiles::new((1..=100).map(Duration::from_millis));
        assert!((p.at(0.5) - 0.050).abs() < 0.001);
        assert!((p.at(0.99) - 0.099).abs() < 0.001);
        assert!((p.max() - 0.100).abs() < 0.001);
        assert_eq!(Percentiles::new(std::iter::empty()).at(0.5), 0.0);
    }
}
