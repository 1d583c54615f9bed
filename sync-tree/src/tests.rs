//! The tree strategy in the simulator: a small cluster with an echo
//! application on top (a leaf copies its Cfg into its Dsc), checked for
//! convergence, root load, datagram size, loss, crashes and direction rules.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use overlay::sim::{Sim, SimConfig};
use overlay::strategy::{Event, Strategy};
use overlay::tree::{LinkTimers, Tree};
use overlay::{Instance, Key, Kind, NodeId, Time, Transmit};
use proto::overlay::Frame;

use crate::{NeighborState, TreeConfig, TreeCore};

/// A core plus the echo application.
struct Echo {
    core: TreeCore,
    failed: Vec<NodeId>,
    /// The time of the last input (what the core's output was sent at).
    now: Time,
    /// Hellos sent: (time, to).
    hellos_out: Vec<(Time, NodeId)>,
    /// Hellos received: (time, from).
    hellos_in: Vec<(Time, NodeId)>,
}

fn is_hello(f: &Frame) -> bool {
    matches!(f.body, Some(proto::overlay::frame::Body::Hello(_)))
}

impl Echo {
    fn new(core: TreeCore, now: Time) -> Echo {
        Echo {
            core,
            failed: Vec::new(),
            now,
            hellos_out: Vec::new(),
            hellos_in: Vec::new(),
        }
    }

    fn pump(&mut self, now: Time) {
        while let Some(e) = self.core.poll_event() {
            match e {
                Event::Delivered(r) if r.key.kind == Kind::Cfg && r.key.node == self.core.id() => {
                    self.core.publish(now, r.key.node, Kind::Dsc, r.data);
                }
                Event::PeerDown(p) if p > self.core.id() => {
                    self.failed.push(p);
                    self.core.mark_failed(now, p, Bytes::from_static(b"failed"));
                }
                _ => {}
            }
        }
    }
}

impl Instance for Echo {
    fn id(&self) -> NodeId {
        self.core.id()
    }
    fn handle_frame(&mut self, now: Time, from: NodeId, f: Frame) {
        self.now = now;
        if is_hello(&f) {
            self.hellos_in.push((now, from));
        }
        self.core.handle_frame(now, from, f);
        self.pump(now);
    }
    fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        self.core.handle_timeout(now);
        self.pump(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.core.poll_transmit()?;
        if is_hello(&t.frame) {
            self.hellos_out.push((self.now, t.to));
        }
        Some(t)
    }
    fn poll_timeout(&mut self) -> Option<Time> {
        self.core.poll_timeout()
    }
}

/// root 0; sub-parents 1..=racks; then `per_rack` leaves per rack.
fn tree(racks: u32, per_rack: u32) -> Arc<Tree> {
    let mut parents = vec![None];
    parents.extend((0..racks).map(|_| Some(0)));
    for r in 0..racks {
        parents.extend((0..per_rack).map(|_| Some(1 + r)));
    }
    let n = parents.len();
    Arc::new(Tree::new(parents, vec![LinkTimers::default(); n]).unwrap())
}

fn echo(t: &Arc<Tree>, id: NodeId, seed: u64, now: Time) -> Echo {
    let cfg = TreeConfig {
        seed,
        version_floor: now.as_millis() as u64 * 16,
        ..TreeConfig::default()
    };
    Echo::new(TreeCore::new(id, t.clone(), cfg, now), now)
}

fn sim(t: &Arc<Tree>, seed: u64, loss: f64) -> Sim<Echo> {
    let cfg = SimConfig {
        seed,
        loss,
        ..SimConfig::default()
    };
    Sim::new(
        cfg,
        (0..t.len() as NodeId)
            .map(|i| echo(t, i, seed, Time::ZERO))
            .collect(),
    )
}

fn leaves(t: &Tree) -> Vec<NodeId> {
    (0..t.len() as NodeId)
        .filter(|&i| t.children(i).is_empty())
        .collect()
}

fn set_all_cfg(s: &mut Sim<Echo>, t: &Tree, tag: &str) {
    let ls = leaves(t);
    s.with(0, |e, now| {
        for &n in &ls {
            e.core
                .publish(now, n, Kind::Cfg, Bytes::from(format!("{tag}-{n}")));
        }
    });
}

fn converged(s: &Sim<Echo>, t: &Tree, tag: &str) -> bool {
    let root = s.get(0).unwrap();
    leaves(t).iter().all(|&n| {
        root.core
            .get(Key {
                node: n,
                kind: Kind::Dsc,
            })
            .is_some_and(|r| r.data == format!("{tag}-{n}").as_bytes())
    })
}

fn run_to(s: &mut Sim<Echo>, t: &Tree, tag: &str, limit: Duration) -> bool {
    let limit = s.now() + limit;
    s.run_while(Duration::from_millis(10), limit, |s| converged(s, t, tag))
}

#[test]
fn a_cfg_change_reaches_every_leaf_and_its_dsc_comes_back() {
    let t = tree(4, 25);
    let mut s = sim(&t, 1, 0.0);
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(5)));
    s.run_until(s.now() + Duration::from_secs(3));
    let t0 = s.now();
    set_all_cfg(&mut s, &t, "b");
    assert!(run_to(&mut s, &t, "b", Duration::from_secs(1)));
    assert!(
        s.now() - t0 < Duration::from_millis(100),
        "triggered updates, not hellos"
    );
    assert!(s.stats.max_datagram_bytes <= overlay::strategy::MAX_DATAGRAM_BYTES);
}

#[test]
fn root_hears_about_one_datagram_per_sub_parent_per_hello_in_steady_state() {
    let t = tree(5, 200);
    let mut s = sim(&t, 2, 0.0);
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(5)));
    s.run_until(s.now() + Duration::from_secs(5));
    let before = s.rx_datagrams(0);
    s.run_until(s.now() + Duration::from_secs(20));
    let per_hello = (s.rx_datagrams(0) - before) as f64 / 20.0 / 5.0;
    assert!(
        per_hello <= 1.1,
        "root rx per sub-parent per hello: {per_hello}"
    );
}

#[test]
fn a_parents_hellos_fall_on_its_grid_and_children_answer_them() {
    // 40 children, hello 1 s: in steady state the sub-parent's hellos to
    // its children leave at no more than HELLO_GRID_SLOTS instants per
    // interval, and a child's hello follows its parent's within a
    // delivery (the answer), not on a timer of its own.
    let t = tree(1, 40);
    let mut s = sim(&t, 11, 0.0);
    s.run_until(Duration::from_secs(30));
    let from = Duration::from_secs(10);
    let sp = s.get(1).unwrap();
    let to_children: Vec<Time> = sp
        .hellos_out
        .iter()
        .filter(|&&(at, to)| at >= from && to >= 2)
        .map(|&(at, _)| at)
        .collect();
    let mut instants = to_children.clone();
    instants.dedup();
    let intervals = 20;
    assert!(
        to_children.len() >= 40 * (intervals - 2),
        "every child gets about one hello per interval: {}",
        to_children.len()
    );
    assert!(
        instants.len() <= (crate::HELLO_GRID_SLOTS as usize + 1) * intervals,
        "{} hellos to children left at {} instants in {intervals} intervals",
        to_children.len(),
        instants.len()
    );
    // Children: nearly every hello to the parent answers one from it.
    let (mut answers, mut own) = (0, 0);
    for leaf in 2..42 {
        let e = s.get(leaf).unwrap();
        for &(at, _) in e
            .hellos_out
            .iter()
            .filter(|&&(at, to)| at >= from && to == 1)
        {
            let answered = e
                .hellos_in
                .iter()
                .any(|&(rx, f)| f == 1 && rx <= at && at - rx < Duration::from_millis(1));
            if answered {
                answers += 1;
            } else {
                own += 1;
            }
        }
    }
    assert!(
        answers >= 40 * (intervals - 2) && own * 50 <= answers,
        "children's hellos: {answers} answers, {own} on their own timer"
    );
    // And the tree still works: a change converges.
    set_all_cfg(&mut s, &t, "grid");
    assert!(run_to(&mut s, &t, "grid", Duration::from_secs(5)));
}

#[test]
fn converges_under_five_percent_loss() {
    let t = tree(3, 50);
    let mut s = sim(&t, 3, 0.05);
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(10)));
    set_all_cfg(&mut s, &t, "b");
    assert!(run_to(&mut s, &t, "b", Duration::from_secs(5)));
}

#[test]
fn a_restarted_sub_parent_is_refilled_from_both_sides() {
    let t = tree(2, 20);
    let mut s = sim(&t, 4, 0.0);
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(5)));
    s.crash(1);
    s.run_until(s.now() + Duration::from_secs(1));
    let now = s.now();
    s.restart(1, echo(&t, 1, 4, now));
    s.run_until(s.now() + Duration::from_secs(10));
    let sp = s.get(1).unwrap();
    assert_eq!(sp.core.held(), 40, "the Cfg and Dsc of its 20 leaves");
    set_all_cfg(&mut s, &t, "b");
    assert!(run_to(&mut s, &t, "b", Duration::from_secs(2)));
}

#[test]
fn a_dead_leaf_is_marked_failed_and_supersedes_the_mark_when_back() {
    let t = tree(1, 5);
    let mut s = sim(&t, 5, 0.0);
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(5)));
    let leaf = 4;
    let dsc = Key {
        node: leaf,
        kind: Kind::Dsc,
    };
    s.crash(leaf);
    s.run_until(s.now() + Duration::from_secs(6));
    assert_eq!(s.get(1).unwrap().failed, vec![leaf]);
    let marked = s.get(0).unwrap().core.get(dsc).unwrap();
    assert_eq!(marked.data, "failed".as_bytes());
    assert_eq!(marked.version % 2, 1);
    let now = s.now();
    s.restart(leaf, echo(&t, leaf, 5, now));
    s.run_until(s.now() + Duration::from_secs(5));
    let back = s.get(0).unwrap().core.get(dsc).unwrap();
    assert_eq!(back.data, format!("a-{leaf}").as_bytes());
    assert!(back.version > marked.version);
}

#[test]
fn a_leaf_whose_parent_died_falls_back_to_its_grandparent_and_returns() {
    let t = tree(1, 5);
    let mut s = sim(&t, 6, 0.0);
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(5)));
    s.crash(1);
    s.run_until(s.now() + Duration::from_secs(10));
    assert_eq!(
        s.get(2).unwrap().core.parent(),
        Some(0),
        "fell back to the root"
    );
    assert_eq!(
        s.get(0).unwrap().core.neighbor(2),
        Some(NeighborState::Full)
    );
    set_all_cfg(&mut s, &t, "b");
    assert!(
        run_to(&mut s, &t, "b", Duration::from_secs(2)),
        "Cfg and Dsc flow through the root meanwhile"
    );
    let now = s.now();
    s.restart(1, echo(&t, 1, 6, now));
    s.run_until(s.now() + Duration::from_secs(6));
    assert_eq!(s.get(2).unwrap().core.parent(), Some(1), "home again");
    assert_eq!(
        s.get(2).unwrap().core.neighbor(1),
        Some(NeighborState::Full)
    );
    set_all_cfg(&mut s, &t, "c");
    assert!(run_to(&mut s, &t, "c", Duration::from_secs(2)));
}

#[test]
fn a_leaf_whose_parent_died_rejoins_by_itself() {
    let t = tree(1, 5);
    let cfg = TreeConfig {
        seed: 6,
        fallback: false,
        ..TreeConfig::default()
    };
    let nodes = (0..t.len() as NodeId)
        .map(|i| Echo::new(TreeCore::new(i, t.clone(), cfg, Time::ZERO), Time::ZERO))
        .collect();
    let mut s = Sim::new(
        SimConfig {
            seed: 6,
            ..SimConfig::default()
        },
        nodes,
    );
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(5)));
    s.crash(1);
    s.run_until(s.now() + Duration::from_secs(10));
    assert_eq!(
        s.get(2).unwrap().core.neighbor(1),
        Some(NeighborState::Down)
    );
    let now = s.now();
    s.restart(1, echo(&t, 1, 6, now));
    s.run_until(s.now() + Duration::from_secs(3));
    assert_eq!(
        s.get(2).unwrap().core.neighbor(1),
        Some(NeighborState::Full)
    );
    set_all_cfg(&mut s, &t, "b");
    assert!(run_to(&mut s, &t, "b", Duration::from_secs(2)));
}

#[test]
fn records_from_the_wrong_direction_are_rejected() {
    let t = tree(1, 2);
    let mut s = sim(&t, 7, 0.0);
    s.run_until(Duration::from_secs(3));
    // Leaf 2 claims a Cfg for its sibling 3 and a Dsc for the root.
    let forged = Frame {
        body: Some(proto::overlay::frame::Body::Update(
            proto::overlay::Update {
                update_seq: 1,
                records: vec![
                    overlay::Record {
                        key: Key {
                            node: 3,
                            kind: Kind::Cfg,
                        },
                        version: 100,
                        data: Bytes::from_static(b"x"),
                    }
                    .to_wire(),
                    overlay::Record {
                        key: Key {
                            node: 0,
                            kind: Kind::Dsc,
                        },
                        version: 100,
                        data: Bytes::from_static(b"x"),
                    }
                    .to_wire(),
                ],
                acks: vec![],
            },
        )),
    };
    s.with(1, |e, now| e.handle_frame(now, 2, forged));
    assert_eq!(s.get(1).unwrap().core.stats().records_rejected, 2);
    assert!(
        s.get(1)
            .unwrap()
            .core
            .get(Key {
                node: 3,
                kind: Kind::Cfg
            })
            .is_none()
    );
}

#[test]
fn one_seed_replays_the_same_run() {
    let run = |seed| {
        let t = tree(3, 30);
        let mut s = sim(&t, seed, 0.02);
        set_all_cfg(&mut s, &t, "a");
        s.run_until(Duration::from_secs(4));
        s.crash(5);
        s.run_until(Duration::from_secs(8));
        (
            s.stats.clone(),
            s.rx_datagrams(0),
            s.get(0).unwrap().core.stats().clone(),
        )
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11).0, run(12).0);
}

/// Gives every instance of group `leader` (and the root) the failover
/// decision, as the sideways strategy would, and hands the acting member
/// the group's records (its sideways replication).
fn fail_over(s: &mut Sim<Echo>, t: &Tree, leader: NodeId, acting: NodeId, epoch: u64) {
    let group: Vec<NodeId> = t.subtree(leader).collect();
    let records: Vec<overlay::Record> = group
        .iter()
        .flat_map(|&n| [Kind::Cfg, Kind::Dsc].map(|kind| Key { node: n, kind }))
        .filter_map(|k| s.get(0).unwrap().core.get(k))
        .collect();
    for &m in &group {
        s.with(m, |e, now| {
            e.core.set_acting(now, leader, acting, epoch);
        });
    }
    s.with(acting, |e, now| {
        for r in records {
            e.core.absorb(now, r);
        }
    });
}

#[test]
fn an_acting_member_takes_over_a_dead_sub_parent_and_the_root_adopts_it() {
    let t = hybrid_tree(2, 20);
    let mut s = sim(&t, 21, 0.0);
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(5)));
    s.crash(1);
    s.run_until(s.now() + Duration::from_secs(1));
    let acting = 3;
    fail_over(&mut s, &t, 1, acting, 1);
    // The root learns of the acting member from its hello's claim.
    s.run_until(s.now() + Duration::from_secs(3));
    assert_eq!(s.get(0).unwrap().core.acting(1), acting);
    assert_eq!(
        s.get(0).unwrap().core.neighbor(acting),
        Some(NeighborState::Full)
    );
    assert_eq!(s.get(4).unwrap().core.parent(), Some(acting));
    set_all_cfg(&mut s, &t, "b");
    assert!(
        run_to(&mut s, &t, "b", Duration::from_secs(2)),
        "every leaf converges through the acting member"
    );
}

#[test]
fn the_original_sub_parent_takes_its_role_back() {
    let t = hybrid_tree(1, 10);
    let mut s = sim(&t, 22, 0.0);
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(5)));
    s.crash(1);
    fail_over(&mut s, &t, 1, 2, 1);
    s.run_until(s.now() + Duration::from_secs(3));
    let now = s.now();
    s.restart(1, echo(&t, 1, 22, now));
    // Retake: the group (and the restarted original) agree on epoch 2.
    fail_over(&mut s, &t, 1, 1, 2);
    s.run_until(s.now() + Duration::from_secs(3));
    assert_eq!(s.get(0).unwrap().core.acting(1), 1);
    assert_eq!(s.get(2).unwrap().core.parent(), Some(1));
    set_all_cfg(&mut s, &t, "b");
    assert!(run_to(&mut s, &t, "b", Duration::from_secs(2)));
}

#[test]
fn a_stale_claim_is_ignored() {
    let t = tree(1, 4);
    let mut s = sim(&t, 23, 0.0);
    s.run_until(Duration::from_secs(3));
    s.with(0, |e, now| assert!(e.core.set_acting(now, 1, 2, 5)));
    s.with(0, |e, now| {
        assert!(!e.core.set_acting(now, 1, 3, 4), "older epoch")
    });
    s.with(0, |e, now| {
        assert!(
            !e.core.set_acting(now, 1, 0, 9),
            "not a member of the group"
        )
    });
    assert_eq!(s.get(0).unwrap().core.acting(1), 2);
}

/// Issue 12, finding 10: a held version near 2^64 (here a child's Dsc that
/// its sub-parent publishes for it, as for a BMC-driven node) made the next
/// publish overflow: a panic in debug builds, a wrap to a stale version in
/// release. It is refused and counted; nothing changes.
#[test]
fn publish_near_u64_max_is_refused_not_wrapped() {
    let t = tree(1, 2);
    let mut sp = TreeCore::new(1, t.clone(), TreeConfig::default(), Time::ZERO);
    let high = overlay::Record {
        key: Key {
            node: 3,
            kind: Kind::Dsc,
        },
        version: u64::MAX - 1,
        data: Bytes::from_static(b"high"),
    };
    let update = Frame {
        body: Some(proto::overlay::frame::Body::Update(
            proto::overlay::Update {
                update_seq: 1,
                records: vec![high.to_wire()],
                acks: vec![],
            },
        )),
    };
    sp.handle_frame(Time::ZERO, 3, update);
    assert_eq!(sp.get(high.key), Some(high.clone()));
    let v = sp.publish(Time::ZERO, 3, Kind::Dsc, Bytes::from_static(b"next"));
    assert_eq!(v, u64::MAX - 1, "the held version, unchanged");
    assert_eq!(sp.get(high.key), Some(high.clone()));
    assert_eq!(sp.stats().versions_exhausted, 1);
    // The failure mark above it still fits (u64::MAX, odd); after it,
    // nothing more does.
    sp.mark_failed(Time::ZERO, 3, Bytes::from_static(b"failed"));
    assert_eq!(sp.get(high.key).map(|r| r.version), Some(u64::MAX));
    sp.publish(Time::ZERO, 3, Kind::Dsc, Bytes::from_static(b"again"));
    assert_eq!(sp.get(high.key).map(|r| r.version), Some(u64::MAX));
    assert_eq!(sp.stats().versions_exhausted, 2);
}

/// `tree(racks, per_rack)` whose groups run a sideways strategy (hybrid).
fn hybrid_tree(racks: u32, per_rack: u32) -> Arc<Tree> {
    let plain = tree(racks, per_rack);
    let parents = (0..plain.len() as NodeId)
        .map(|i| plain.parent(i))
        .collect();
    let t = Tree::new(parents, vec![LinkTimers::default(); plain.len()]).unwrap();
    Arc::new(t.with_sideways(1..=racks))
}

/// A hello from `from` claiming the group `leader` leads at `epoch`.
fn claim(leader: NodeId, epoch: u64) -> Frame {
    Frame {
        body: Some(proto::overlay::frame::Body::Hello(proto::overlay::Hello {
            seen: true,
            claim_leader: leader,
            claim_epoch: epoch,
            ..Default::default()
        })),
    }
}

/// Issue 12, finding 1: in a `tree` cluster a leaf's claim of its own
/// sub-parent's group used to be adopted by every receiver (the root
/// re-routed the group through the leaf; a sibling took it as its parent).
#[test]
fn claim_from_leaf_changes_no_parent() {
    let t = tree(2, 4);
    let mut s = sim(&t, 31, 0.0);
    s.run_until(Duration::from_secs(3));
    for to in [0, 1, 4, 5, 2] {
        s.with(to, |e, now| e.handle_frame(now, 3, claim(1, 7)));
    }
    s.run_until(s.now() + Duration::from_secs(1));
    assert_eq!(s.get(0).unwrap().core.acting(1), 1);
    assert_eq!(s.get(4).unwrap().core.parent(), Some(1));
    assert_eq!(s.get(1).unwrap().core.parent(), Some(0));
    assert!(s.get(0).unwrap().core.stats().claims_rejected >= 1);
}

/// Issue 12, finding 1: a sub-parent claiming the root's place cut the
/// root off the tree.
#[test]
fn claim_of_the_roots_place_is_refused() {
    let t = hybrid_tree(2, 4);
    let mut s = sim(&t, 32, 0.0);
    s.run_until(Duration::from_secs(3));
    for to in [0, 2, 3] {
        s.with(to, |e, now| e.handle_frame(now, 1, claim(0, 1)));
    }
    s.run_until(s.now() + Duration::from_secs(1));
    assert_eq!(s.get(0).unwrap().core.acting(0), 0);
    assert_eq!(s.get(0).unwrap().core.parent(), None);
    assert_eq!(s.get(2).unwrap().core.parent(), Some(0));
    assert_eq!(
        s.get(0).unwrap().core.neighbor(1),
        Some(NeighborState::Full)
    );
    assert_eq!(s.get(0).unwrap().core.stats().claims_rejected, 1);
}

/// In hybrid, a claim counts only from a member of the group, at a member
/// or at the group's parent, and only a bounded step above the known epoch.
#[test]
fn claims_in_hybrid_are_checked_for_membership_and_epoch() {
    let t = hybrid_tree(2, 4);
    let mut s = sim(&t, 33, 0.0);
    s.run_until(Duration::from_secs(3));
    // Leaf 7 of group 2 claims group 1; leaf 3 of group 1 claims at an
    // instance of group 2, which is neither a member nor the parent.
    s.with(0, |e, now| e.handle_frame(now, 7, claim(1, 1)));
    s.with(2, |e, now| e.handle_frame(now, 3, claim(1, 1)));
    s.with(7, |e, now| e.handle_frame(now, 3, claim(1, 1)));
    assert_eq!(s.get(0).unwrap().core.acting(1), 1);
    assert_eq!(s.get(2).unwrap().core.acting(1), 1);
    assert_eq!(s.get(7).unwrap().core.acting(1), 1);
    // An epoch far above the known one, while the group's leader is heard.
    let far = crate::CLAIM_EPOCH_AHEAD_MAX + 1;
    s.with(0, |e, now| e.handle_frame(now, 3, claim(1, far)));
    assert_eq!(s.get(0).unwrap().core.acting(1), 1);
    assert_eq!(s.get(0).unwrap().core.stats().claims_rejected, 2);
    // The election's own step is adopted by the group's parent.
    s.with(0, |e, now| e.handle_frame(now, 3, claim(1, 1)));
    assert_eq!(s.get(0).unwrap().core.acting(1), 3);
}

/// A tree-only cluster ignores claims: none reaches the routes even with
/// a plausible epoch, from a member, at the group's parent.
#[test]
fn a_tree_only_cluster_ignores_claims() {
    let t = tree(1, 3);
    let mut s = sim(&t, 34, 0.0);
    s.run_until(Duration::from_secs(3));
    s.with(0, |e, now| e.handle_frame(now, 2, claim(1, 1)));
    assert_eq!(s.get(0).unwrap().core.acting(1), 1);
    assert_eq!(s.get(0).unwrap().core.stats().claims_rejected, 1);
}

/// Records absorbed from the group's gossip obey the tree's direction
/// rules: no Dsc of the absorbing instance itself, no Cfg outside its
/// subtree and acting groups.
#[test]
fn absorbed_records_obey_the_direction_rules() {
    let t = hybrid_tree(2, 4);
    let mut core = TreeCore::new(3, t, TreeConfig::default(), Time::ZERO);
    let rec = |node, kind| overlay::Record {
        key: Key { node, kind },
        version: 10,
        data: Bytes::from_static(b"x"),
    };
    assert!(!core.absorb(Time::ZERO, rec(3, Kind::Dsc)), "its own Dsc");
    assert!(
        !core.absorb(Time::ZERO, rec(4, Kind::Cfg)),
        "a sibling's Cfg"
    );
    assert!(!core.absorb(Time::ZERO, rec(4, Kind::Dsc)), "not acting");
    assert!(core.absorb(Time::ZERO, rec(3, Kind::Cfg)), "its own Cfg");
    assert_eq!(
        core.stats().records_rejected,
        2,
        "its own Dsc is not counted"
    );
    // Acting for group 1, the group's records are its to serve.
    assert!(core.set_acting(Time::ZERO, 1, 3, 1));
    assert!(core.absorb(Time::ZERO, rec(4, Kind::Cfg)));
    assert!(core.absorb(Time::ZERO, rec(4, Kind::Dsc)));
    assert!(
        core.absorb(Time::ZERO, rec(1, Kind::Dsc)),
        "the demoted leader"
    );
    assert!(!core.absorb(Time::ZERO, rec(8, Kind::Cfg)), "another group");
    assert!(!core.absorb(Time::ZERO, rec(0, Kind::Dsc)), "the root");
}

/// An echo core whose version floor is `floor` (what a clock reading
/// would have given it).
fn echo_with_floor(t: &Arc<Tree>, id: NodeId, seed: u64, now: Time, floor: u64) -> Echo {
    let cfg = TreeConfig {
        seed,
        version_floor: floor,
        ..TreeConfig::default()
    };
    Echo::new(TreeCore::new(id, t.clone(), cfg, now), now)
}

/// Issue 12, finding 2 (the Dsc version floor): a leaf and a sub-parent
/// whose clocks stood far ahead publish high versions, then restart with
/// their clocks stepped back (floor 0). Their new Dsc reaches the root:
/// the parent's hello shows the versions it holds, and a restarted
/// instance publishes above them. On the old code the root kept the
/// previous boot's Dsc until the clock caught up.
#[test]
fn finding2_a_restart_with_the_clock_stepped_back_is_heard() {
    let t = tree(1, 3);
    let mut s = sim(&t, 31, 0.0);
    let future = 1u64 << 50;
    for id in 0..t.len() as NodeId {
        let now = s.now();
        s.crash(id);
        s.restart(id, echo_with_floor(&t, id, 31, now, future));
    }
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(5)));
    for id in [1, 4] {
        s.crash(id);
        s.run_until(s.now() + Duration::from_millis(500));
        let now = s.now();
        s.restart(id, echo_with_floor(&t, id, 32, now, 0));
    }
    // The Cfg reaches the restarted leaf again; its echo must win.
    let dead = t.timers(4).dead;
    s.with(0, |e, now| {
        e.core
            .publish(now, 4, Kind::Cfg, Bytes::from_static(b"b-4"));
    });
    let root_has = |s: &Sim<Echo>| {
        s.get(0)
            .unwrap()
            .core
            .get(Key {
                node: 4,
                kind: Kind::Dsc,
            })
            .is_some_and(|r| r.data == "b-4".as_bytes())
    };
    let limit = s.now() + dead;
    assert!(
        s.run_while(Duration::from_millis(10), limit, root_has),
        "the restarted leaf's Dsc did not reach the root within a dead interval"
    );
    let leaf = s.get(4).unwrap();
    assert!(leaf.core.stats().restamped <= 2, "{:?}", leaf.core.stats());
}

/// Issue 12, finding 10: a BMC node's Dsc has one author, its sub-parent.
/// A Dsc the node itself sends (a forged one, with a high version) is
/// refused by the sub-parent and never reaches the root; the sub-parent's
/// own publishes do.
#[test]
fn finding10_a_bmc_nodes_own_dsc_is_refused() {
    let t = tree(1, 3);
    let mut s = sim(&t, 33, 0.0);
    let bmc_node: NodeId = 3;
    s.with(1, |e, _| e.core.set_authored_elsewhere(bmc_node, true));
    s.run_until(s.now() + Duration::from_secs(3));
    let key = Key {
        node: bmc_node,
        kind: Kind::Dsc,
    };
    s.with(1, |e, now| {
        e.core.publish(
            now,
            bmc_node,
            Kind::Dsc,
            Bytes::from_static(b"by the sub-parent"),
        );
    });
    s.run_until(s.now() + Duration::from_secs(1));
    let rejected = s.get(1).unwrap().core.stats().records_rejected;
    s.crash(bmc_node);
    let now = s.now();
    s.restart(bmc_node, echo_with_floor(&t, bmc_node, 34, now, 1 << 60));
    s.with(bmc_node, |e, now| {
        e.core
            .publish(now, bmc_node, Kind::Dsc, Bytes::from_static(b"forged"));
    });
    s.run_until(s.now() + Duration::from_secs(3));
    let at_root = s.get(0).unwrap().core.get(key).unwrap();
    assert_eq!(at_root.data, "by the sub-parent".as_bytes());
    assert!(s.get(1).unwrap().core.stats().records_rejected > rejected);
}

#[test]
fn a_burst_larger_than_the_window_does_not_wait_for_delayed_acks() {
    // 3,000 leaves under one sub-parent, records of about 200 bytes: the
    // rack's Dsc needs far more updates than the window (256) holds, so
    // the window must move at the round trip, not once per delayed
    // acknowledgement (1.25 hellos).
    let t = tree(1, 3_000);
    let mut s = sim(&t, 4, 0.0);
    set_all_cfg(&mut s, &t, "a");
    assert!(run_to(&mut s, &t, "a", Duration::from_secs(30)));
    s.run_until(s.now() + Duration::from_secs(5));
    let t0 = s.now();
    let big = format!("b{}", "x".repeat(200));
    set_all_cfg(&mut s, &t, &big);
    assert!(run_to(&mut s, &t, &big, Duration::from_secs(30)));
    let took = s.now() - t0;
    let hello = LinkTimers::default().hello;
    eprintln!("a 3,000-record burst took {took:?}");
    assert!(
        took < hello / 4,
        "a 3,000-record burst took {took:?} (hello {hello:?})"
    );
}
