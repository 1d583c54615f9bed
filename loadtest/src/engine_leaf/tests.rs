//! Tests of the engine leaf: alone on a virtual clock, and in a small
//! simulated cluster.

use super::*;

fn shared() -> EngineShared {
    EngineShared::new(0.0, 0.0, 7, None).expect("the virtual module set builds")
}

/// Drives `leaf` to quiescence from `now_ms`; returns every Dsc published
/// with its time, and the final time.
fn drive(leaf: &mut EngineLeaf, mut now_ms: u64) -> (Vec<(u64, Node)>, u64) {
    let mut out = Vec::new();
    for _ in 0..1_000 {
        let Some(next) = leaf.poll_timeout() else {
            break;
        };
        now_ms = now_ms.max(next);
        if let Some(b) = leaf.handle_timeout(now_ms) {
            out.push((now_ms, Node::decode(b.as_ref()).unwrap()));
        }
    }
    (out, now_ms)
}

#[test]
fn generation_is_published_only_after_convergence() {
    let s = shared();
    let mut leaf = s.leaf(3, "n3");
    assert_eq!(leaf.poll_timeout(), None, "nothing runs before a Cfg");
    let first = leaf.handle_cfg(s.cfg(1), 0);
    assert!(first.is_some(), "the first Dsc is published at once");
    assert_eq!(generation_in(&Node::decode(first.unwrap()).unwrap()), None);
    let (dscs, t1) = drive(&mut leaf, 0);
    let last = &dscs.last().expect("power discovery changed Dsc").1;
    assert!(leaf.is_converged());
    assert_eq!(last.phys_state(), PhysState::PowerOff);
    assert_eq!(generation_in(last), Some(1));

    assert_eq!(
        leaf.handle_cfg(s.cfg(1), t1),
        None,
        "re-delivery: no change"
    );
    let _ = leaf.handle_cfg(s.cfg(2), t1);
    let (dscs, _) = drive(&mut leaf, t1);
    // Power on, PXE wait, PXE init, boot sync: every intermediate Dsc
    // still carries generation 1 or none, never 2.
    assert!(dscs.len() >= 4, "{} Dsc changes", dscs.len());
    let (before, last) = dscs.split_at(dscs.len() - 1);
    assert!(before.iter().all(|(_, n)| generation_in(n) != Some(2)));
    let last = &last[0].1;
    assert!(leaf.is_converged());
    assert_eq!(generation_in(last), Some(2));
    assert_eq!(last.phys_state(), PhysState::PowerOn);
    assert_eq!(last.run_state(), proto::node::RunState::Sync);
}

#[test]
fn steps_take_the_loadtest_delays() {
    let s = shared();
    let mut leaf = s.leaf(1, "n1");
    let _ = leaf.handle_cfg(s.cfg(2), 1_000);
    let (dscs, end) = drive(&mut leaf, 1_000);
    let done = dscs.iter().find(|(_, n)| generation_in(n) == Some(2));
    let (at, _) = done.expect("booted");
    // Six steps of at most STEP_DELAY_MAX_MS each (power and PXE
    // discovery, power on, PXE wait, PXE init, boot sync), plus slack.
    assert!(
        *at - 1_000 <= 8 * STEP_DELAY_MAX_MS,
        "took {} ms",
        at - 1_000
    );
    // Stale step deadlines may fire later; they change nothing.
    assert!(end >= *at);
}

#[test]
fn leaves_are_seeded_differently() {
    let s = shared();
    let time_to_boot = |id| {
        let mut leaf = s.leaf(id, "n");
        let _ = leaf.handle_cfg(s.cfg(2), 0);
        let (dscs, _) = drive(&mut leaf, 0);
        dscs.iter()
            .find(|(_, n)| generation_in(n) == Some(2))
            .map(|(t, _)| *t)
    };
    let times: Vec<_> = (1..=8).map(time_to_boot).collect();
    assert!(times.iter().all(Option::is_some));
    assert!(times.windows(2).any(|w| w[0] != w[1]), "{times:?}");
    assert_eq!(time_to_boot(5), times[4], "same id, same seed: same run");
}

#[test]
fn a_small_simulated_cluster_with_engines_converges() {
    use crate::setup::{ClusterArgs, cluster};
    let a = ClusterArgs {
        nodes: 50,
        racks: 5,
        levels: 2,
        topology: None,
        strategy: None,
        hello: None,
        dead: None,
        seed: 11,
        loss: 0.0,
        loss_scenario: false,
        engine: true,
        engine_fail_rate: 0.0,
        engine_hang_rate: 0.0,
        images: false,
        image_start: std::time::Duration::from_secs(1),
        transport: "udp".into(),
        ca_dir: None,
        port: None,
        api: None,
    };
    let c = cluster(&a).unwrap();
    let p = crate::progress::Progress::new(true, None).unwrap();
    let limit = std::time::Duration::from_secs(60);
    let r = crate::sim_mode::run(&a, &c, limit, &p, None, None).unwrap();
    assert!(r.engine);
    assert_eq!(r.reached, 50, "{}", r.table());
    // A boot chain of several steps of at least STEP_DELAY_MIN_MS each
    // lies under every convergence time.
    assert!(r.converge_p50_s >= 0.025, "{}", r.table());
}

fn image_shared() -> EngineShared {
    EngineShared::new(0.0, 0.0, 7, Some(1_000)).expect("the module set with images builds")
}

fn running(leaf: &EngineLeaf) -> Option<Container> {
    leaf.running().and_then(|r| r.get(IMAGE_NAME)).cloned()
}

#[test]
fn a_busy_leaf_keeps_its_image_until_free_then_rolls() {
    let s = image_shared();
    let mut leaf = s.leaf(4, "n4");
    let _ = leaf.handle_cfg(s.cfg(1), 0);
    let (dscs, t1) = drive(&mut leaf, 0);
    let last = &dscs.last().expect("booted").1;
    assert_eq!(generation_in(last), Some(1));
    assert_eq!(running_digest(last, IMAGE_NAME), Some(image_digest(1)));
    let v1 = running(&leaf).expect("v1 runs");

    let dsc = leaf.set_busy(true, t1).expect("Busy is published");
    assert_eq!(Node::decode(dsc).unwrap().busy(), Busy::Busy);
    let dsc = leaf.handle_cfg(s.cfg(2), t1).expect("the flip to UPDATE");
    assert_eq!(generation_in(&Node::decode(dsc).unwrap()), None);
    let (_, t2) = drive(&mut leaf, t1);
    assert_eq!(running(&leaf), Some(v1), "untouched while busy");
    assert!(!leaf.busy_watch().interrupted());

    let _ = leaf.set_busy(false, t2 + 3_600_000);
    let (dscs, _) = drive(&mut leaf, t2 + 3_600_000);
    let last = &dscs.last().expect("rolled").1;
    assert_eq!(generation_in(last), Some(2));
    assert_eq!(running_digest(last, IMAGE_NAME), Some(image_digest(2)));
    let v2 = running(&leaf).unwrap();
    assert!(v2.started_ms - (t2 + 3_600_000) <= 1_000, "one start time");
    assert!(!leaf.busy_watch().interrupted());
}

#[test]
fn the_busy_watch_sees_an_image_changed_while_busy() {
    // The checker must be able to fail: roll a busy leaf's image behind the
    // engine's back (as a module ignoring the gate would).
    let s = image_shared();
    let mut leaf = s.leaf(5, "n5");
    let _ = leaf.handle_cfg(s.cfg(1), 0);
    let (_, t1) = drive(&mut leaf, 0);
    let _ = leaf.set_busy(true, t1);
    let _ = leaf.handle_cfg(s.cfg(2), t1);
    leaf.images
        .as_deref_mut()
        .unwrap()
        .handle_call("image_update", 0, t1);
    let _ = drive(&mut leaf, t1);
    assert_eq!(running(&leaf).unwrap().digest, image_digest(2));
    assert!(leaf.busy_watch().interrupted());
    assert_eq!(leaf.busy_watch().changes_while_busy, 1);
}

#[test]
fn a_small_roll_interrupts_no_busy_node() {
    use crate::setup::{ClusterArgs, cluster};
    let a = ClusterArgs {
        nodes: 60,
        racks: 3,
        levels: 2,
        topology: None,
        strategy: None,
        hello: Some(std::time::Duration::from_millis(500)),
        dead: None,
        seed: 5,
        loss: 0.0,
        loss_scenario: false,
        engine: true,
        engine_fail_rate: 0.0,
        engine_hang_rate: 0.0,
        transport: "udp".into(),
        ca_dir: None,
        port: None,
        api: None,
        images: true,
        image_start: std::time::Duration::from_millis(400),
    };
    let c = cluster(&a).unwrap();
    let p = crate::progress::Progress::new(true, None).unwrap();
    let limit = std::time::Duration::from_secs(30);
    let roll = crate::roll::Roll {
        busy_fraction: 0.25,
        free_after: std::time::Duration::from_secs(2),
    };
    let r = crate::sim_mode::run(&a, &c, limit, &p, None, Some(&roll)).unwrap();
    let t = r.table();
    assert_eq!(r.busy_nodes, Some(15), "{t}");
    assert_eq!(r.rolled, Some(60), "{t}");
    assert_eq!(r.busy_interrupted, Some(0), "{t}");
    // A free node rolls within one start time plus the sync's round trip;
    // a busy one no sooner than its free (at least 2 s after t0).
    let p99 = r.roll_free_p99_s.unwrap();
    assert!((0.2..=0.4 + 0.5).contains(&p99), "{t}");
    assert!(r.roll_freed_p99_s.unwrap() <= 0.4 + 0.5, "{t}");
    assert!(r.roll_freed_p50_s.unwrap() > 0.0, "{t}");
}
