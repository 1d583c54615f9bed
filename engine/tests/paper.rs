//! The Kraken paper's examples, one test per claim.

mod common;

use common::*;
use engine::executor::{ExecEvent, Reason, Relation};
use engine::graph::{BuildOptions, Graph};
use engine::mutation::{Context, ModuleDecl, MutationSet, MutationSpec};
use engine::planner::Planner;
use engine::registry::Registry;
use engine::virt::{self, VirtualConfig, VirtualWorld};
use proto::node::Node;
use std::sync::Arc;

fn power(platform: &str) -> ModuleDecl {
    let m = |name: &str, from: &str, to: &str| {
        MutationSpec::new(&format!("{platform}_{name}"))
            .mutates("/PhysState", from, to)
            .requires("/Platform", platform)
            .context(Context::Child)
    };
    let mut mutations = vec![
        m("discover", "PHYS_UNKNOWN", "POWER_OFF"),
        m("on", "POWER_OFF", "POWER_ON"),
        m("off", "POWER_ON", "POWER_OFF"),
        m("hang_off", "PHYS_HANG", "POWER_OFF"),
    ];
    if platform == "redfish" {
        mutations.push(m("force_restart", "PHYS_HANG", "POWER_ON"));
    }
    ModuleDecl {
        name: platform.into(),
        mutations,
    }
}

fn chain(
    p: &mut Planner,
    reg: &Registry,
    from: &[i32],
    platform: &str,
    target: &[i32],
) -> Option<Vec<String>> {
    let cfg = Node {
        platform: platform.into(),
        ..Default::default()
    };
    let mask = p.graph().set().guard_mask(reg, &cfg);
    let plans = p.preview(&[(from.to_vec(), mask)], target).unwrap();
    plans[0].as_ref().map(|c| p.describe(c))
}

#[test]
fn two_platform_power_program_yields_the_right_chains() {
    let reg = Registry::new();
    let set = MutationSet::build(&reg, &[power("ipmi"), power("redfish")]).unwrap();
    let mut p = Planner::new(Arc::new(
        Graph::build(set, BuildOptions::default()).unwrap(),
    ));
    let (on, hang, unknown) = ([2], [4], [0]);
    assert_eq!(
        chain(&mut p, &reg, &unknown, "ipmi", &on).unwrap(),
        ["ipmi_discover", "ipmi_on"]
    );
    assert_eq!(
        chain(&mut p, &reg, &unknown, "redfish", &on).unwrap(),
        ["redfish_discover", "redfish_on"]
    );
    assert_eq!(
        chain(&mut p, &reg, &hang, "ipmi", &on).unwrap(),
        ["ipmi_hang_off", "ipmi_on"]
    );
    assert_eq!(
        chain(&mut p, &reg, &hang, "redfish", &on).unwrap(),
        ["redfish_force_restart"]
    );
    assert_eq!(
        chain(&mut p, &reg, &[1], "ipmi", &[1]).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        chain(&mut p, &reg, &unknown, "bmc-less", &on),
        None,
        "no module serves this platform"
    );
}

#[test]
fn ties_are_broken_by_cost() {
    let reg = Registry::new();
    let ps = "/PhysState";
    let decl = ModuleDecl {
        name: "power".into(),
        mutations: vec![
            MutationSpec::new("discover").mutates(ps, "PHYS_UNKNOWN", "POWER_OFF"),
            MutationSpec::new("slow_on")
                .mutates(ps, "POWER_OFF", "POWER_ON")
                .cost(5),
            MutationSpec::new("fast_on")
                .mutates(ps, "POWER_OFF", "POWER_ON")
                .cost(2),
            MutationSpec::new("cycle")
                .mutates(ps, "POWER_OFF", "POWER_CYCLE")
                .cost(1),
            MutationSpec::new("cycle_on")
                .mutates(ps, "POWER_CYCLE", "POWER_ON")
                .cost(1),
        ],
    };
    let set = MutationSet::build(&reg, &[decl]).unwrap();
    let mut p = Planner::new(Arc::new(
        Graph::build(set, BuildOptions::default()).unwrap(),
    ));
    // Fewest steps first (1 step at cost 2 beats 2 steps at cost 2), then cost.
    assert_eq!(chain(&mut p, &reg, &[1], "", &[2]).unwrap(), ["fast_on"]);
}

#[test]
fn unreal_state_is_merged_away_by_stripping() {
    let reg = Registry::new();
    let ps = "/PhysState";
    let decl = ModuleDecl {
        name: "m".into(),
        mutations: vec![
            MutationSpec::discovery("discover").mutates(ps, "PHYS_UNKNOWN", "POWER_OFF"),
            MutationSpec::new("on").mutates(ps, "POWER_OFF", "POWER_ON"),
            MutationSpec::new("off").mutates(ps, "POWER_ON", "POWER_OFF"),
            MutationSpec::new("boot")
                .mutates("/RunState", "UNKNOWN", "INIT")
                .requires(ps, "POWER_ON"),
            MutationSpec::new("sync")
                .mutates("/RunState", "INIT", "SYNC")
                .requires(ps, "POWER_ON"),
        ],
    };
    let set = MutationSet::build(&reg, &[decl]).unwrap();
    let g = Graph::build(set, BuildOptions { drift: false }).unwrap();
    // Phase 1 reaches OFF+INIT and OFF+SYNC through `off`; phase 3 merges them into OFF+UNKNOWN.
    assert_eq!(g.raw_state_count(), 7);
    assert_eq!(g.node_count(), 5);
    assert_eq!(g.lookup(&[1, 2]), None, "power off while SYNC is unreal");
    let mut s = [1, 2];
    assert!(g.strip(&mut s));
    assert_eq!(s, [1, 0]);
    for id in 0..g.node_count() as u32 {
        assert!(g.is_real(g.state(id)));
    }
    let off = g.mutation(g.set().mutation("off").unwrap());
    assert_eq!(off.name, "off");
    let sync_state = g.lookup(&[2, 2]).unwrap();
    let e = g
        .out_steps(sync_state)
        .iter()
        .find(|&&e| g.mutation(g.edge(e).mutation).name == "off")
        .unwrap();
    assert_eq!(g.state(g.edge(*e).to), [1, 0]);
}

/// Runs `e` against `world` until nothing is pending (the test drives the
/// engine and the world by hand so it can inject a change in between).
fn converge(e: &mut engine::node::NodeEngine, world: &mut VirtualWorld, mut now: u64) -> u64 {
    for _ in 0..10_000 {
        while let Some(c) = world.poll_completion(now) {
            match c.outcome {
                virt::Outcome::Dsc(values) => e.handle_report(&values, now),
                virt::Outcome::Failed => e.handle_failed(c.token, now),
            }
        }
        e.handle_timeout(now);
        while let Some(a) = e.poll_action() {
            world.handle_action(&a, now);
        }
        while e.poll_event().is_some() {}
        match [e.poll_timeout(), world.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
        {
            Some(t) => now = t.max(now),
            None => break,
        }
    }
    now
}

#[test]
fn node_whose_power_drops_is_driven_back_on() {
    let (reg, g) = virtual_set();
    let mut e = engine(&reg, &g, Relation::All);
    let mut world = VirtualWorld::new(&g, 1, VirtualConfig::default(), 3);
    e.set_cfg(booted_cfg(&reg, "n1"), 0).unwrap();
    let now = converge(&mut e, &mut world, 0);
    assert!(e.is_converged());
    let ps = g.set().var("/PhysState").unwrap();
    let drop = world.inject(0, ps, 1, now);
    let virt::Outcome::Dsc(values) = drop.outcome else {
        unreachable!()
    };
    e.handle_report(&values, now);
    assert!(!e.is_converged());
    assert_eq!(
        e.dsc().run_state,
        0,
        "RunState is forgotten while powered off"
    );
    let events: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|ev| matches!(ev, ExecEvent::Forgot { .. }))
    );
    assert!(
        e.chain_names().contains(&"power_on".to_owned()),
        "{:?}",
        e.chain_names()
    );
    converge(&mut e, &mut world, now);
    assert!(e.is_converged());
    assert_eq!(e.dsc().phys_state, 2);
    assert_eq!(e.dsc().run_state, 2);
}

#[test]
fn step_that_times_out_lands_in_fail_to_and_recovers() {
    let (reg, g) = virtual_set();
    let mut e = engine(&reg, &g, Relation::All);
    e.set_cfg(booted_cfg(&reg, "n1"), 0).unwrap();
    let mut done = Vec::new();
    let stuck = loop {
        let a = e.poll_action().expect("chain continues");
        if name(&g, &a) == "pxe_init" {
            break a;
        }
        done.push(name(&g, &a));
        e.handle_report(&success(&g, &a), 0);
    };
    assert_eq!(
        done,
        ["power_discover", "power_on", "pxe_discover", "pxe_wait"]
    );
    e.handle_timeout(89_999);
    assert_eq!(e.dsc().phys_state, 2, "not timed out yet");
    e.handle_timeout(90_000);
    assert_eq!(e.dsc().phys_state, 4, "fail_to PHYS_HANG");
    let _ = stuck;
    let names = e.chain_names();
    assert_eq!(names[0], "power_reset_hang");
    assert!(names.contains(&"power_on".to_owned()));
    let ran = run_ok(&mut e, &g, 100_000, 20);
    assert_eq!(&ran[..3], ["power_reset_hang", "power_on", "pxe_init"]);
    assert!(e.is_converged(), "{ran:?}");
}

#[test]
fn failure_off_the_chain_replans_and_on_the_chain_walks_back() {
    let (reg, g) = virtual_set();
    let mut e = engine(&reg, &g, Relation::All);
    e.set_cfg(booted_cfg(&reg, "n1"), 0).unwrap();
    let a = e.poll_action().unwrap();
    e.handle_report(&success(&g, &a), 0); // power_discover: POWER_OFF
    let a = e.poll_action().unwrap();
    assert_eq!(name(&g, &a), "power_on");
    while e.poll_event().is_some() {}
    e.handle_failed(a.token, 10);
    // power_on fails to PHYS_HANG, which this chain never passed: re-plan.
    let events: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(
        events.contains(&ExecEvent::Replanned {
            node: 0,
            reason: Reason::Timeout
        }),
        "{events:?}"
    );
    assert_eq!(e.dsc().phys_state, 4);
    let a = e.poll_action().unwrap();
    assert_eq!(name(&g, &a), "power_reset_hang");
    e.handle_report(&success(&g, &a), 20);
    let a = e.poll_action().unwrap();
    assert_eq!(name(&g, &a), "power_on");
    // This chain started at PHYS_HANG: failing again walks back to its start.
    e.handle_timeout(20 + 10_000);
    let events: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(
        events.contains(&ExecEvent::WalkedBack { node: 0 }),
        "{events:?}"
    );
    assert_eq!(name(&g, &e.poll_action().unwrap()), "power_reset_hang");
}

#[test]
fn cfg_change_mid_chain_replaces_the_chain() {
    let (reg, g) = virtual_set();
    let mut e = engine(&reg, &g, Relation::All);
    e.set_cfg(booted_cfg(&reg, "n1"), 0).unwrap();
    let ran = run_ok(&mut e, &g, 0, 3);
    assert_eq!(ran, ["power_discover", "power_on", "pxe_discover"]);
    assert_eq!(e.chain_names()[0], "pxe_wait");
    let mut off = reg.new_node("n1");
    off.phys_state = 1;
    while e.poll_event().is_some() {}
    e.set_cfg(off, 1).unwrap();
    let events: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(events.contains(&ExecEvent::Replanned {
        node: 0,
        reason: Reason::Cfg
    }));
    assert_eq!(e.chain_names(), ["power_off"]);
    let ran = run_ok(&mut e, &g, 2, 10);
    assert_eq!(ran, ["power_off"]);
    assert!(e.is_converged());
    assert_eq!(e.dsc().phys_state, 1);
}

#[test]
fn child_context_steps_run_on_the_parent_only() {
    let (reg, g) = virtual_set();
    let mut parent = engine(&reg, &g, Relation::Parent);
    let mut node = engine(&reg, &g, Relation::SelfNode);
    parent.set_cfg(booted_cfg(&reg, "n1"), 0).unwrap();
    node.set_cfg(booted_cfg(&reg, "n1"), 0).unwrap();
    let (mut on_parent, mut on_node) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let from_parent = parent.poll_action();
        let from_node = node.poll_action();
        let a = match (from_parent, from_node) {
            (Some(a), None) => {
                on_parent.push(name(&g, &a));
                assert_eq!(g.mutation(a.mutation).context, Context::Child);
                a
            }
            (None, Some(a)) => {
                on_node.push(name(&g, &a));
                assert_eq!(g.mutation(a.mutation).context, Context::SelfNode);
                a
            }
            (None, None) => break,
            (Some(_), Some(_)) => panic!("both instances ran a step"),
        };
        // Dsc flows to both instances (state sync).
        parent.handle_report(&success(&g, &a), 1);
        node.handle_report(&success(&g, &a), 1);
    }
    assert_eq!(
        on_parent,
        [
            "power_discover",
            "power_on",
            "pxe_discover",
            "pxe_wait",
            "pxe_init"
        ]
    );
    assert_eq!(on_node, ["boot_sync"]);
    assert!(parent.is_converged() && node.is_converged());
}

#[test]
fn plan_preview_runs_nothing() {
    let (reg, g) = virtual_set();
    let mut e = engine(&reg, &g, Relation::All);
    let mask = g.set().guard_mask(&reg, &Node::default());
    let booted = virt::booted_target(&g);
    let nodes: Vec<(Vec<i32>, u64)> = (0..500)
        .map(|i| {
            (
                if i % 2 == 0 {
                    vec![0; 3]
                } else {
                    booted.clone()
                },
                mask,
            )
        })
        .collect();
    let off = {
        let mut t = vec![0; 3];
        t[g.set().var("/PhysState").unwrap() as usize] = 1;
        t
    };
    let plans = e.executor().planner().preview(&nodes, &off).unwrap();
    let p = e.executor().planner();
    assert_eq!(p.describe(plans[0].as_ref().unwrap()), ["power_discover"]);
    assert_eq!(p.describe(plans[1].as_ref().unwrap()), ["power_off"]);
    assert!(e.poll_action().is_none());
}

#[test]
fn freeze_stops_and_thaw_resumes() {
    let (reg, g) = virtual_set();
    let mut e = engine(&reg, &g, Relation::All);
    e.freeze();
    e.set_cfg(booted_cfg(&reg, "n1"), 0).unwrap();
    assert!(e.poll_action().is_none());
    e.thaw(1);
    let a = e.poll_action().unwrap();
    assert_eq!(name(&g, &a), "power_discover");
    e.freeze();
    e.handle_report(&success(&g, &a), 2);
    assert!(e.poll_action().is_none());
    assert_eq!(e.dsc().phys_state, 1, "Dsc is still tracked while frozen");
    e.thaw(3);
    assert_eq!(name(&g, &e.poll_action().unwrap()), "power_on");
}

#[test]
fn many_nodes_converge_under_faults() {
    let (reg, g) = virtual_set();
    let target = virt::booted_target(&g);
    let mask = g.set().guard_mask(&reg, &Node::default());
    for seed in 1..=3 {
        let n = engine::bench::drive_all(&g, &target, mask, 2_000, seed);
        assert_eq!(n, 2_000, "replay: drive_all(.., 2000, {seed})");
    }
}
