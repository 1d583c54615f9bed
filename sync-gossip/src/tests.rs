//! Simulation tests over many seeds, named after the claims they check.
//!
//! Each test runs [`seeds`] (50 by default; `GOSSIP_SEEDS=n` for more,
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

/// Time to form the group before faults start.
const FORM: Duration = Duration::from_secs(5);

/// Bound on failover: the acting member dies -> one acting member agreed
/// by all (detection ~2 s with hello 1 s, plus dissemination).
const FAILOVER_MAX: Duration = Duration::from_secs(6);

/// Bound on convergence after a partition heals or a member returns.
const HEAL_MAX: Duration = Duration::from_secs(20);

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("GOSSIP_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n = std::env::var("GOSSIP_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    (1..=n).collect()
}

fn replay(test: &str, seed: u64) -> String {
    format!("seed {seed}; replay: GOSSIP_SEED={seed} cargo test -p sync-gossip {test}")
}

fn net(seed: u64, loss: f64) -> SimConfig {
    SimConfig { seed, loss, duplicate: loss / 5.0, ..SimConfig::default() }
}

fn cfg(retake: bool) -> GossipConfig {
    GossipConfig { retake, ..GossipConfig::for_hello(Duration::from_secs(1)) }
}

fn formed(seed: u64, loss: f64, retake: bool) -> Harness {
    let mut h = Harness::new(MEMBERS, net(seed, loss), cfg(retake));
    h.run_for(FORM);
    h
}

fn record(node: NodeId, kind: Kind, version: u64, len: usize) -> Record {
    let data = Bytes::from(vec![(node as u8) ^ (version as u8); len]);
    Record { key: Key { node, kind }, version, data }
}

/// Waits for agreement on `want` and returns how long it took.
fn expect_acting(h: &mut Harness, limit: Duration, want: NodeId, ctx: &str) -> Duration {
    let took = h.wait_until(limit, |h| {
        let a = h.agreed_acting()?;
        (a.member == want).then_some(()).ok_or(format!("agreed on {a:?}, want {want}"))
    });
    took.unwrap_or_else(|why| panic!("{ctx}: {why}"))
}

#[test]
fn group_forms_with_the_sub_parent_acting_at_epoch_0() {
    for seed in seeds() {
        let h = formed(seed, 0.0, true);
        let ctx = replay("group_forms", seed);
        let a = h.agreed_acting().unwrap_or_else(|why| panic!("{ctx}: {why}"));
        assert_eq!((a.member, a.epoch), (0, 0), "{ctx}");
        for id in 0..MEMBERS {
            let alive = h.get(id).expect("up").alive().count();
            assert_eq!(alive, MEMBERS as usize - 1, "{ctx}: member {id} sees {alive} others");
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
        worst = worst.max(took);
        // Safety phase: it stays that way under loss.
        h.run_for(Duration::from_secs(10));
        let a = h.agreed_acting().unwrap_or_else(|why| panic!("{ctx}: {why}"));
        assert_eq!(a.member, 1, "{ctx}");
    }
    eprintln!("worst failover under 5% loss: {worst:?}");
}
