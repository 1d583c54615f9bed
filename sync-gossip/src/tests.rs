//! Simulation tests over many seeds, named after the claims they check.
//!
//! Each test runs [`seeds`] ([`SEEDS_DEFAULT`]; `GOSSIP_SEEDS=n` for more,
//! `GOSSIP_SEED=s` to replay one) in two phases like TigerBeetle's
//! simulator: faults, then a liveness phase that checks convergence. A
//! failure prints the seed and the command that replays it.

use std::time::Duration;

use bytes::Bytes;
use overlay::sim::SimConfig;
use overlay::{Key, Kind, NodeId, Record};

use crate::GossipConfig;
use crate::harness::Harness;

/// Members of the simulated group (a small rack keeps CI fast).
const MEMBERS: u32 = 10;

/// Seeds per test by default: keeps the debug suite to seconds on two
/// cores (the simulator seals every datagram, unoptimised in debug). Run
/// `GOSSIP_SEEDS=200` for a wider campaign.
const SEEDS_DEFAULT: u64 = 20;

/// Time to form the group before faults start.
const FORM: Duration = Duration::from_secs(3);

/// Bound on failover: the acting member dies -> one acting member agreed
/// by all (detection ~2 s with hello 1 s, plus dissemination).
const FAILOVER_MAX: Duration = Duration::from_secs(5);

/// Bound on convergence after a partition heals or a member returns.
const HEAL_MAX: Duration = Duration::from_secs(20);

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("GOSSIP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("GOSSIP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS_DEFAULT);
    (1..=n).collect()
}

fn replay(test: &str, seed: u64) -> String {
    format!("seed {seed}; replay: GOSSIP_SEED={seed} cargo test -p sync-gossip {test}")
}

fn net(seed: u64, loss: f64) -> SimConfig {
    SimConfig {
        seed,
        loss,
        duplicate: loss / 5.0,
        ..SimConfig::default()
    }
}

fn cfg(retake: bool) -> GossipConfig {
    GossipConfig {
        retake,
        ..GossipConfig::for_hello(Duration::from_secs(1))
    }
}

fn formed(seed: u64, loss: f64, retake: bool) -> Harness {
    let mut h = Harness::new(MEMBERS, net(seed, loss), cfg(retake));
    h.run_for(FORM);
    h
}

fn record(node: NodeId, kind: Kind, version: u64, len: usize) -> Record {
    let data = Bytes::from(vec![(node as u8) ^ (version as u8); len]);
    Record {
        key: Key { node, kind },
        version,
        data,
    }
}

/// How long an agreement must hold to count as stable.
const HOLD: Duration = Duration::from_secs(3);

/// Waits until everyone agrees on `want` for [`HOLD`] in a row; returns
/// when that started.
fn expect_stable_acting(h: &mut Harness, limit: Duration, want: NodeId, ctx: &str) -> Duration {
    let took = h.wait_stable(limit, HOLD, |h| {
        let a = h.agreed_acting()?;
        (a.member == want)
            .then_some(())
            .ok_or(format!("agreed on {a:?}, want {want}"))
    });
    took.unwrap_or_else(|why| panic!("{ctx}: {why}"))
}

/// Waits for agreement on `want` and returns how long it took.
fn expect_acting(h: &mut Harness, limit: Duration, want: NodeId, ctx: &str) -> Duration {
    let took = h.wait_until(limit, |h| {
        let a = h.agreed_acting()?;
        (a.member == want)
            .then_some(())
            .ok_or(format!("agreed on {a:?}, want {want}"))
    });
    took.unwrap_or_else(|why| panic!("{ctx}: {why}"))
}

#[test]
fn group_forms_with_the_sub_parent_acting_at_epoch_0() {
    for seed in seeds() {
        let h = formed(seed, 0.0, true);
        let ctx = replay("group_forms", seed);
        let a = h
            .agreed_acting()
            .unwrap_or_else(|why| panic!("{ctx}: {why}"));
        assert_eq!((a.member, a.epoch), (0, 0), "{ctx}");
        for id in 0..MEMBERS {
            let alive = h.get(id).expect("up").alive().count();
            assert_eq!(
                alive,
                MEMBERS as usize - 1,
                "{ctx}: member {id} sees {alive} others"
            );
        }
    }
}

#[test]
fn sub_parent_failure_under_loss_elects_exactly_one_acting() {
    let mut worst = Duration::ZERO;
    for seed in seeds() {
        let mut h = formed(seed, 0.05, true);
        let ctx = replay("sub_parent_failure_under_loss", seed);
        h.crash(0);
        let took = expect_acting(&mut h, FAILOVER_MAX, 1, &ctx);
        if std::env::var("GOSSIP_VERBOSE").is_ok() {
            eprintln!("seed {seed}: failover {took:?}");
        }
        worst = worst.max(took);
        // Safety phase: it stays that way under loss.
        h.run_for(Duration::from_secs(5));
        let a = h
            .agreed_acting()
            .unwrap_or_else(|why| panic!("{ctx}: {why}"));
        assert_eq!(a.member, 1, "{ctx}");
    }
    eprintln!("worst failover under 5% loss: {worst:?}");
}

#[test]
fn two_sub_parents_dying_in_a_row_hand_over_to_the_next_rank() {
    for seed in seeds() {
        let mut h = formed(seed, 0.02, true);
        let ctx = replay("two_sub_parents_dying_in_a_row", seed);
        h.crash(0);
        expect_acting(&mut h, FAILOVER_MAX, 1, &ctx);
        h.crash(1);
        expect_acting(&mut h, FAILOVER_MAX, 2, &ctx);
        let a = h.agreed_acting().expect("agreed");
        assert!(a.epoch >= 2, "{ctx}: epoch {} after two changes", a.epoch);
    }
}

#[test]
fn returning_sub_parent_takes_back_with_retake() {
    for seed in seeds() {
        let mut h = formed(seed, 0.02, true);
        let ctx = replay("returning_sub_parent_takes_back_with_retake", seed);
        h.crash(0);
        expect_acting(&mut h, FAILOVER_MAX, 1, &ctx);
        let before = h.agreed_acting().expect("agreed").epoch;
        h.run_for(Duration::from_secs(2));
        h.restart(0);
        expect_stable_acting(&mut h, HEAL_MAX, 0, &ctx);
        let a = h.agreed_acting().expect("agreed");
        assert!(
            a.epoch > before,
            "{ctx}: retaken at epoch {} <= {before}",
            a.epoch
        );
    }
}

#[test]
fn returning_sub_parent_stays_away_without_retake() {
    for seed in seeds() {
        let mut h = formed(seed, 0.02, false);
        let ctx = replay("returning_sub_parent_stays_away_without_retake", seed);
        h.crash(0);
        expect_acting(&mut h, FAILOVER_MAX, 1, &ctx);
        h.run_for(Duration::from_secs(2));
        h.restart(0);
        // The returning member must learn the claim and follow member 1.
        expect_stable_acting(&mut h, HEAL_MAX, 1, &ctx);
        assert!(h.get(0).expect("up").is_alive(1), "{ctx}");
    }
}

#[test]
fn healed_partition_agrees_on_one_acting_member() {
    for retake in [true, false] {
        for seed in seeds() {
            let mut h = formed(seed, 0.01, retake);
            let ctx = replay("healed_partition_agrees_on_one_acting_member", seed);
            let side_b: Vec<NodeId> = (MEMBERS / 2..MEMBERS).collect();
            let side_a: Vec<NodeId> = (0..MEMBERS / 2).collect();
            h.partition(&side_b);
            // Each side elects its own: the cut-off side's best rank. Half
            // the group vanishing at once slows detection (indirect probes
            // through the other side fail too): twice the failover bound.
            let took = h.wait_until(2 * FAILOVER_MAX, |h| {
                let b = h.agreed_acting_among(&side_b)?;
                (b.member == side_b[0])
                    .then_some(())
                    .ok_or(format!("side b follows {b:?}"))
            });
            took.unwrap_or_else(|why| panic!("{ctx} retake {retake}: {why}"));
            // Side A agrees on one acting member: normally the sub-parent
            // 0, but with half the group cut off, indirect probes through
            // side B fail too, so a lost direct probe can get 0 suspected
            // and, if its refutation is late, replaced (1 seed in 200 at 1%
            // loss with quarter-hello probing). Safety is agreement.
            let a = h.agreed_acting_among(&side_a);
            assert!(a.is_ok(), "{ctx}: side a does not agree: {a:?}");
            h.run_for(Duration::from_secs(3));
            h.heal();
            // With retake the best rank wins; without, any one member.
            let took = h.wait_stable(HEAL_MAX, HOLD, |h| {
                let a = h.agreed_acting()?;
                (!retake || a.member == 0)
                    .then_some(())
                    .ok_or(format!("agreed on {a:?}, want 0"))
            });
            took.unwrap_or_else(|why| panic!("{ctx} retake {retake}: {why}"));
        }
    }
}

/// Every member's Dsc, and the sub-parent's Cfg for every member.
fn publish_all(h: &mut Harness, version: u64, len: usize) -> Vec<Record> {
    let mut all = Vec::new();
    for id in 0..h.len() {
        if !h.is_up(id) {
            continue;
        }
        let dsc = record(id, Kind::Dsc, version, len);
        h.publish(id, dsc.clone());
        all.push(dsc);
    }
    let publisher = h.agreed_acting().map(|a| a.member).unwrap_or(0);
    for id in 0..h.len() {
        let cfg = record(id, Kind::Cfg, version, len);
        h.publish(publisher, cfg.clone());
        all.push(cfg);
    }
    all
}

#[test]
fn published_records_reach_every_member() {
    for seed in seeds() {
        let mut h = formed(seed, 0.05, true);
        let ctx = replay("published_records_reach_every_member", seed);
        // Large records: a few per datagram, every frame within the limit.
        let all = publish_all(&mut h, 2, 400);
        let took = h.wait_until(HEAL_MAX, |h| all.iter().try_for_each(|r| h.holders_hold(r)));
        took.unwrap_or_else(|why| panic!("{ctx}: {why}"));
        let max = h.sim.stats.max_datagram_bytes;
        assert!(
            max <= overlay::strategy::MAX_DATAGRAM_BYTES,
            "{ctx}: datagram of {max} bytes"
        );
        let mut seen = std::collections::BTreeSet::new();
        for (_, id, e) in &h.log {
            if let crate::GossipEvent::Delivered(r) = e {
                assert!(
                    seen.insert((*id, r.key, r.version)),
                    "{ctx}: {r:?} delivered twice to {id}"
                );
            }
        }
    }
}

/// Issue 14: only the holders keep the group's records; every other
/// member keeps its own (memory per member does not grow with the rack).
#[test]
fn only_holders_keep_the_group_records() {
    for seed in seeds() {
        let mut h = formed(seed, 0.02, true);
        let ctx = replay("only_holders_keep_the_group_records", seed);
        let all = publish_all(&mut h, 2, 100);
        let took = h.wait_until(HEAL_MAX, |h| all.iter().try_for_each(|r| h.holders_hold(r)));
        took.unwrap_or_else(|why| panic!("{ctx}: {why}"));
        h.run_for(Duration::from_secs(5));
        for id in 0..h.len() {
            let core = h.get(id).expect("up");
            let holder = (id as usize) < crate::HOLDERS;
            assert_eq!(core.is_holder(), holder, "{ctx}: member {id}");
            let held = core.records();
            if holder {
                assert_eq!(held, all.len(), "{ctx}: holder {id}");
            } else {
                assert!(held <= 2, "{ctx}: member {id} holds {held} records");
            }
        }
    }
}

#[test]
fn restarted_member_catches_up() {
    for seed in seeds() {
        let mut h = formed(seed, 0.02, true);
        let ctx = replay("restarted_member_catches_up", seed);
        publish_all(&mut h, 2, 100);
        h.run_for(Duration::from_secs(3));
        // Member 2 ranks third: a holder, whose records must come back.
        h.crash(2);
        h.run_for(Duration::from_secs(3));
        let newer = publish_all(&mut h, 4, 100);
        h.run_for(Duration::from_secs(1));
        h.restart(2);
        let took = h.wait_until(HEAL_MAX, |h| {
            h.get(2).filter(|c| c.is_holder()).ok_or("2 not holding")?;
            newer.iter().try_for_each(|r| h.holders_hold(r))
        });
        took.unwrap_or_else(|why| panic!("{ctx}: {why}"));
        assert!(h.get(2).expect("up").records() >= newer.len() - 2, "{ctx}");
    }
}

#[test]
fn one_seed_replays_exactly() {
    let run = || {
        let mut h = formed(7, 0.05, true);
        h.crash(0);
        h.run_for(Duration::from_secs(5));
        (h.sim.stats.clone(), h.log.len(), h.agreed_acting())
    };
    assert_eq!(run(), run());
}

#[test]
fn the_core_is_sans_io() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let forbidden = [
        "Instant::",
        "SystemTime",
        "tokio",
        "std::net",
        "thread_rng",
        "std::thread",
        "getrandom",
    ];
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)
                    .expect("readable")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        if p.ends_with("src/tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("readable");
        for f in forbidden {
            assert!(!text.contains(f), "{} mentions {f}", p.display());
        }
    }
    let manifest = include_str!("../Cargo.toml");
    assert!(
        !manifest.contains("tokio"),
        "sync-gossip must not depend on tokio"
    );
}

/// A rack-sized group (slow: set `GOSSIP_LARGE=1`, best with `--release`):
/// it forms, and the sub-parent's death hands over within the bound.
#[test]
fn rack_of_500_forms_and_fails_over() {
    if std::env::var("GOSSIP_LARGE").is_err() {
        return;
    }
    for seed in seeds().into_iter().take(3) {
        let ctx = replay("rack_of_500_forms_and_fails_over", seed);
        let mut h = Harness::new(500, net(seed, 0.01), cfg(true));
        let formed = h.wait_until(Duration::from_secs(30), |h| {
            let n = h.get(0).expect("up").alive().count();
            (n == 499)
                .then_some(())
                .ok_or(format!("sub-parent sees {n} members"))
        });
        let formed = formed.unwrap_or_else(|why| panic!("{ctx}: {why}"));
        h.run_for(Duration::from_secs(5));
        h.crash(0);
        let took = expect_acting(&mut h, FAILOVER_MAX, 1, &ctx);
        eprintln!(
            "seed {seed}: formed in {formed:?}, failover in {took:?}, {:?}",
            h.sim.stats
        );
    }
}
