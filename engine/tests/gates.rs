//! Dsc gates: a step whose mutation excludes a Dsc value (the node says it
//! is busy) waits without failing and starts in the call that frees it.

use engine::executor::{ExecEvent, Relation};
use engine::mutation::{DeclError, ModuleDecl, MutationSet, MutationSpec};
use engine::node::NodeEngine;
use engine::registry::Registry;
use engine::virt;
use std::sync::Arc;

fn engine() -> NodeEngine {
    let (reg, g) = virt::build().unwrap();
    NodeEngine::new(Arc::new(g), Arc::new(reg), Relation::All, "n1")
}

fn busy(e: &mut NodeEngine, b: &str, now: u64) {
    let p = "/Busy".parse().unwrap();
    let v = e.registry().parse_value(&p, b).unwrap();
    e.set_dsc_values(&[(p, v)], now).unwrap();
}

#[test]
fn a_busy_node_waits_then_powers_off_when_free() {
    let mut e = engine();
    let g = e.executor().graph().clone();
    let phys = g.set().var("/PhysState").unwrap();
    let mut dsc = e.dsc().clone();
    dsc.phys_state = 2;
    e.handle_dsc(dsc, 0);
    busy(&mut e, "BUSY", 0);
    let mut cfg = e.cfg().clone();
    cfg.phys_state = 1; // POWER_OFF
    e.set_cfg(cfg, 10).unwrap();
    assert!(e.poll_action().is_none(), "no module call while busy");
    let waiting =
        std::iter::from_fn(|| e.poll_event()).any(|ev| matches!(ev, ExecEvent::Waiting { .. }));
    assert!(waiting, "a Waiting event says the chain waits");
    let (m, why) = e.waiting().expect("the chain waits");
    assert_eq!(m, "power_off");
    assert_eq!(why, "excludes Dsc /Busy=BUSY");
    // No timeout runs while waiting: an hour later nothing failed.
    e.handle_timeout(3_600_000);
    assert!(
        std::iter::from_fn(|| e.poll_event()).all(|ev| !matches!(ev, ExecEvent::StepFailed { .. }))
    );
    assert!(e.waiting().is_some());
    // Free: the step starts in the same call.
    busy(&mut e, "FREE", 3_600_001);
    let a = e.poll_action().expect("power_off starts when free");
    assert_eq!(g.mutation(a.mutation).name, "power_off");
    assert!(e.waiting().is_none());
    e.handle_report(&[(phys, 1)], 3_600_100);
    assert!(e.is_converged());
}

#[test]
fn a_step_running_when_the_node_turns_busy_is_not_interrupted() {
    let mut e = engine();
    let mut dsc = e.dsc().clone();
    dsc.phys_state = 2;
    e.handle_dsc(dsc, 0);
    let mut cfg = e.cfg().clone();
    cfg.phys_state = 1;
    e.set_cfg(cfg, 0).unwrap();
    assert!(e.poll_action().is_some(), "power_off starts while free");
    busy(&mut e, "BUSY", 5);
    assert!(e.waiting().is_none(), "the running step keeps running");
    let phys = e.executor().graph().set().var("/PhysState").unwrap();
    e.handle_report(&[(phys, 1)], 100);
    assert!(e.is_converged());
}

#[test]
fn dsc_conditions_are_validated() {
    let reg = Registry::with_pxe();
    let build = |spec: MutationSpec| {
        MutationSet::build(
            &reg,
            &[ModuleDecl {
                name: "m".into(),
                mutations: vec![spec],
            }],
        )
    };
    let e = build(
        MutationSpec::new("x")
            .mutates("/PhysState", "POWER_OFF", "POWER_ON")
            .excludes_dsc("/PhysState", "PHYS_HANG"),
    )
    .unwrap_err();
    assert!(matches!(e, DeclError::DscOnTracked { .. }), "{e}");
    let e = build(
        MutationSpec::new("x")
            .mutates("/PhysState", "POWER_OFF", "POWER_ON")
            .excludes_dsc("/Busy", "SLEEPY"),
    )
    .unwrap_err();
    assert!(matches!(e, DeclError::UnknownValue { .. }), "{e}");
    let set = build(
        MutationSpec::new("x")
            .mutates("/PhysState", "POWER_OFF", "POWER_ON")
            .excludes_dsc("/Busy", "BUSY"),
    )
    .unwrap();
    assert_eq!(set.gates.len(), 2);
    let mut n = reg.new_node("n");
    assert_eq!(set.gate_mask(&reg, &n), 0b11);
    n.busy = 2;
    assert_eq!(set.gate_mask(&reg, &n), 0b01, "busy closes the gate");
}
