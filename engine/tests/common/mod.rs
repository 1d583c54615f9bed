//! Helpers shared by the integration tests.
#![allow(dead_code)]

use engine::executor::{Action, Relation};
use engine::graph::Graph;
use engine::node::NodeEngine;
use engine::registry::Registry;
use engine::virt;
use proto::node::Node;
use std::sync::Arc;

/// The virtual module set.
pub fn virtual_set() -> (Arc<Registry>, Arc<Graph>) {
    let (reg, g) = virt::build().expect("virtual set builds");
    (Arc::new(reg), Arc::new(g))
}

/// A Cfg asking for powered on and booted.
pub fn booted_cfg(reg: &Registry, name: &str) -> Node {
    let mut cfg = reg.new_node(name);
    cfg.phys_state = 2;
    cfg.run_state = 2;
    let path = virt::PXE_URL.parse().unwrap();
    reg.set(&mut cfg, &path, &engine::value::Value::Enum(4))
        .unwrap();
    cfg
}

/// A node engine for `name`.
pub fn engine(reg: &Arc<Registry>, g: &Arc<Graph>, relation: Relation) -> NodeEngine {
    NodeEngine::new(g.clone(), reg.clone(), relation, "n1")
}

/// The Dsc values that performing `a` successfully reports.
pub fn success(g: &Graph, a: &Action) -> Vec<(u16, i32)> {
    g.mutation(a.mutation)
        .mutates
        .iter()
        .map(|&(v, _, t)| (v, t))
        .collect()
}

/// The name of `a`'s mutation.
pub fn name(g: &Graph, a: &Action) -> String {
    g.mutation(a.mutation).name.clone()
}

/// Performs every action successfully at once until nothing is pending or
/// `limit` steps ran; returns the mutation names performed.
pub fn run_ok(e: &mut NodeEngine, g: &Graph, now: u64, limit: usize) -> Vec<String> {
    let mut done = Vec::new();
    while let Some(a) = e.poll_action() {
        done.push(name(g, &a));
        e.handle_report(&success(g, &a), now);
        if done.len() >= limit {
            break;
        }
    }
    done
}
