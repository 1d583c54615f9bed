//! The simulator on a toy instance: every node pings node 0 periodically and
//! node 0 answers; the trace of what each node saw must be seed-determined.

use super::*;
use crate::envelope::DropReason;
use crate::strategy::Transmit;
use proto::overlay::{Ack, Frame, frame};
use std::collections::VecDeque;

/// What one node saw: `(when, from whom, which ping)`.
type Seen = Vec<(Time, NodeId, u64)>;

struct Pinger {
    id: NodeId,
    next: Time,
    out: VecDeque<Transmit>,
    seen: Seen,
    sent: u64,
}

fn ack(n: u64) -> Frame {
    Frame {
        body: Some(frame::Body::Ack(Ack { acks: vec![n] })),
    }
}

impl Instance for Pinger {
    fn id(&self) -> NodeId {
        self.id
    }
    fn handle_frame(&mut self, now: Time, from: NodeId, f: Frame) {
        let Some(frame::Body::Ack(a)) = f.body else {
            panic!("only acks")
        };
        self.seen.push((now, from, a.acks[0]));
        if self.id == 0 {
            self.out.push_back(Transmit {
                to: from,
                frame: ack(a.acks[0]),
            });
        }
    }
    fn handle_timeout(&mut self, now: Time) {
        if self.id != 0 && now >= self.next {
            self.sent += 1;
            self.out.push_back(Transmit {
                to: 0,
                frame: ack(self.sent),
            });
            self.next = now + Duration::from_millis(100);
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
    fn poll_timeout(&mut self) -> Option<Time> {
        (self.id != 0).then_some(self.next)
    }
}

fn pinger(id: NodeId) -> Pinger {
    Pinger {
        id,
        next: Duration::from_millis(id as u64),
        out: VecDeque::new(),
        seen: Vec::new(),
        sent: 0,
    }
}

fn run(seed: u64, loss: f64) -> (Vec<Seen>, SimStats) {
    let cfg = SimConfig {
        seed,
        loss,
        duplicate: 0.05,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg, (0..20).map(pinger).collect());
    sim.run_until(Duration::from_millis(500));
    sim.crash(3);
    sim.run_until(Duration::from_millis(800));
    sim.restart(3, pinger(3));
    sim.run_until(Duration::from_secs(2));
    let seen = (0..20).map(|i| sim.get(i).unwrap().seen.clone()).collect();
    (seen, sim.stats.clone())
}

#[test]
fn one_seed_replays_exactly() {
    assert_eq!(run(7, 0.1), run(7, 0.1));
    assert_ne!(run(7, 0.1).0, run(8, 0.1).0);
}

#[test]
fn loss_drops_about_the_stated_share() {
    let (_, s) = run(3, 0.2);
    let share = s.lost as f64 / s.datagrams as f64;
    assert!((0.12..0.3).contains(&share), "lost share {share}");
    assert!(s.max_datagram_bytes < 100);
    // Duplicated datagrams are caught by the receiver's replay window.
    assert!(s.rejected > 0);
}

#[test]
fn partition_cuts_and_heals() {
    let mut sim = Sim::new(SimConfig::default(), (0..3).map(pinger).collect());
    let mut side = vec![0u8; 3];
    side[2] = 1;
    sim.set_partition(Some(side));
    sim.run_until(Duration::from_millis(300));
    assert!(sim.get(2).unwrap().seen.is_empty());
    assert!(!sim.get(1).unwrap().seen.is_empty());
    sim.set_partition(None);
    sim.run_until(Duration::from_millis(600));
    assert!(!sim.get(2).unwrap().seen.is_empty());
}

#[test]
fn a_restarted_node_is_heard_again_with_its_new_boot() {
    let mut sim = Sim::new(SimConfig::default(), (0..2).map(pinger).collect());
    sim.run_until(Duration::from_millis(250));
    sim.crash(1);
    sim.restart(1, pinger(1));
    let before = sim.get(0).unwrap().seen.len();
    sim.run_until(Duration::from_millis(500));
    assert!(sim.get(0).unwrap().seen.len() > before);
    // Only the first datagram of the new boot is held back (it introduces
    // the boot, and is answered); nothing else is dropped.
    let drops = sim.drops(0);
    assert!(drops.get(DropReason::Unfresh) <= 2, "{drops:?}");
    assert_eq!(drops.total(), drops.get(DropReason::Unfresh));
}

/// Issue 12, finding 4: datagrams captured on the wire and replayed into a
/// receiver that restarted since are dropped (`unfresh`), never delivered.
#[test]
fn a_capture_replayed_into_a_restarted_receiver_is_dropped() {
    let mut sim = Sim::new(SimConfig::default(), (0..2).map(pinger).collect());
    sim.run_until(Duration::from_millis(100));
    let _ = sim.capture(Some((1, 0)));
    sim.run_until(Duration::from_millis(600));
    let captured = sim.capture(None);
    assert!(captured.len() >= 4, "pings captured: {}", captured.len());
    assert!(!sim.get(0).unwrap().seen.is_empty());
    // Node 1 goes silent; node 0 restarts and gets the capture replayed.
    sim.crash(1);
    sim.crash(0);
    sim.restart(0, pinger(0));
    for d in &captured {
        sim.inject(0, d);
    }
    assert!(
        sim.get(0).unwrap().seen.is_empty(),
        "nothing replayed got in"
    );
    assert_eq!(sim.drops(0).get(DropReason::Unfresh), captured.len() as u64);
    assert_eq!(sim.drops(0).total(), captured.len() as u64);
}
