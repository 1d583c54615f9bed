//! Property tests: planned chains are sound and stay within the epistemology.

mod common;

use engine::graph::{Graph, apply};
use proptest::prelude::*;

fn declared(g: &Graph, v: usize) -> Vec<i32> {
    let mut vals = vec![0];
    for s in 0..g.node_count() as u32 {
        let x = g.state(s)[v];
        if !vals.contains(&x) {
            vals.push(x);
        }
    }
    vals
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every chain, applied step by step from its start, ends compatible
    /// with the Cfg, and passes only through real (knowable) states.
    #[test]
    fn chains_reach_the_cfg_through_real_states(start in 0usize..1000, picks in proptest::collection::vec(0usize..100, 3), mask_bits in 0u64..4) {
        let (_, g) = common::virtual_set();
        let start = (start % g.node_count()) as u32;
        let target: Vec<i32> = picks.iter().enumerate().map(|(v, p)| { let d = declared(&g, v); d[p % d.len()] }).collect();
        let mut planner = engine::planner::Planner::new(g.clone());
        let mask = 1 | (mask_bits << 1);
        let t = planner.target(&target, mask).unwrap();
        if let Some(chain) = planner.plan(start, t) {
            let mut cur = start;
            prop_assert!(g.is_real(g.state(cur)));
            for &e in chain.iter() {
                let edge = g.edge(e);
                prop_assert_eq!(edge.from, cur);
                let m = g.mutation(edge.mutation);
                prop_assert!((mask >> m.guard) & 1 == 1, "guarded edge used");
                let mut next = apply(m, g.state(cur)).expect("step is compatible");
                g.strip(&mut next);
                prop_assert_eq!(g.lookup(&next), Some(edge.to));
                prop_assert!(g.is_real(&next));
                cur = edge.to;
            }
            prop_assert!(g.compatible(cur, &target));
        }
    }

    /// Stripping any Dsc yields a real state of the graph.
    #[test]
    fn stripped_dsc_is_a_real_graph_state(picks in proptest::collection::vec(0usize..100, 3)) {
        let (_, g) = common::virtual_set();
        let mut s: Vec<i32> = picks.iter().enumerate().map(|(v, p)| { let d = declared(&g, v); d[p % d.len()] }).collect();
        g.strip(&mut s);
        prop_assert!(g.is_real(&s));
        prop_assert!(g.lookup(&s).is_some());
    }

    /// Any seed and fault mix converges every node (liveness).
    #[test]
    fn executor_converges_for_any_seed(seed in any::<u64>()) {
        let (reg, g) = common::virtual_set();
        let target = engine::virt::booted_target(&g);
        let mask = g.set().guard_mask(&reg, &proto::node::Node::default());
        let n = engine::bench::drive_all(&g, &target, mask, 50, seed);
        prop_assert_eq!(n, 50, "replay: drive_all(.., 50, {})", seed);
    }
}
