//! The engine benchmark behind `loadtest engine`: builds the virtual
//! module set's graph, plans for every node, and drives N nodes from
//! all-unknown to powered-on-and-booted on virtual time.
//!
//! This is the one module that reads the wall clock (`std::time::Instant`),
//! to measure; the executor and the virtual world it drives stay sans-io.

use crate::executor::{Executor, Relation};
use crate::virt::{self, Outcome, VirtualConfig, VirtualWorld};
use proto::node::Node;
use std::sync::Arc;
use std::time::Instant;

/// Results of one [`run`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineReport {
    /// States in the graph.
    pub graph_nodes: usize,
    /// Edges in the graph (steps and fail-to).
    pub graph_edges: usize,
    /// Wall time to validate declarations and build the graph.
    pub graph_build_ms: f64,
    /// Median time to plan one node (target lookup and chain lookup).
    pub plan_p50_us: f64,
    /// 99th percentile of the same.
    pub plan_p99_us: f64,
    /// Wall time to drive every node to the target.
    pub drive_all_s: f64,
}

/// Faults used by [`run`]: some steps fail or hang, some machines start on.
pub const BENCH_FAULTS: VirtualConfig = VirtualConfig {
    delay_min_ms: 100,
    delay_max_ms: 2_000,
    fail_rate: 0.01,
    hang_rate: 0.005,
    on_fraction: 0.3,
};

/// Virtual time after which [`run`] stops and reports unconverged nodes.
pub const DRIVE_LIMIT_MS: u64 = 24 * 3_600 * 1_000;

/// Runs the benchmark for `nodes` nodes; panics if a node does not converge.
pub fn run(nodes: usize, seed: u64) -> EngineReport {
    let t0 = Instant::now();
    let (reg, graph) = virt::build().expect("virtual module set is valid");
    let graph_build_ms = t0.elapsed().as_secs_f64() * 1e3;
    let graph = Arc::new(graph);
    let target = virt::booted_target(&graph);
    let mask = graph.set().guard_mask(&reg, &Node::default());
    let (plan_p50_us, plan_p99_us) = plan_all(&graph, &target, mask, nodes);
    let t1 = Instant::now();
    let converged = drive_all(&graph, &target, mask, nodes, seed);
    let drive_all_s = t1.elapsed().as_secs_f64();
    assert_eq!(
        converged, nodes,
        "not all nodes converged (replay: engine::bench::run({nodes}, {seed}))"
    );
    EngineReport {
        graph_nodes: graph.node_count(),
        graph_edges: graph.edge_count(),
        graph_build_ms,
        plan_p50_us,
        plan_p99_us,
        drive_all_s,
    }
}

fn plan_all(
    graph: &Arc<crate::graph::Graph>,
    target: &[i32],
    mask: u64,
    nodes: usize,
) -> (f64, f64) {
    let mut planner = crate::planner::Planner::new(graph.clone());
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant figures");
    let root = graph.root();
    let mut steps = 0usize;
    for _ in 0..nodes {
        let t = Instant::now();
        let id = planner.target(target, mask).expect("valid target");
        steps += planner.plan(root, id).map_or(0, |p| p.len());
        hist.saturating_record(t.elapsed().as_nanos() as u64);
    }
    assert!(steps > 0 || nodes == 0, "a chain exists from all-unknown");
    (
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
    )
}

/// Drives `nodes` nodes on virtual time; returns how many converged.
pub fn drive_all(
    graph: &Arc<crate::graph::Graph>,
    target: &[i32],
    mask: u64,
    nodes: usize,
    seed: u64,
) -> usize {
    let mut exec = Executor::new(graph.clone());
    let mut world = VirtualWorld::new(graph, nodes, BENCH_FAULTS, seed);
    for _ in 0..nodes {
        let n = exec.add_node(Relation::All);
        exec.set_target(n, target, mask, 0).expect("valid target");
    }
    let mut now_ms = 0;
    loop {
        while let Some(a) = exec.poll_action() {
            world.handle_action(&a, now_ms);
        }
        while exec.poll_event().is_some() {}
        let next = [exec.poll_timeout(), world.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t <= DRIVE_LIMIT_MS => now_ms = now_ms.max(t),
            _ => break,
        }
        while let Some(c) = world.poll_completion(now_ms) {
            match c.outcome {
                Outcome::Dsc(values) => exec.handle_dsc_update(c.node, &values, now_ms),
                Outcome::Failed => exec.handle_failed(c.node, c.token, now_ms),
            }
        }
        exec.handle_timeout(now_ms);
    }
    (0..nodes as u32).filter(|&n| exec.is_converged(n)).count()
}
