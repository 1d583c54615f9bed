//! The stack in the simulator (a hybrid takeover and its hand-back, seen
//! through the `App` seam) and the seam's absence rule (no application
//! names a core).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use overlay::sim::{Sim, SimConfig};
use overlay::tree::Tree;
use overlay::{NodeId, Time};
use topo::Topology;

use super::{App, Node, Spec, Stack, StackEvent};

/// Records what the stack tells it.
#[derive(Default)]
struct Log {
    acting: Vec<(u32, bool)>,
    children_down: Vec<NodeId>,
}

impl App for Log {
    fn on_event(&mut self, _stack: &mut Stack, _now: Time, event: StackEvent) {
        match event {
            StackEvent::Acting { group, on, .. } => self.acting.push((group, on)),
            StackEvent::ChildDown(c) => self.children_down.push(c),
            _ => {}
        }
    }
}

const HYBRID: &str = r#"
cluster: t
sync: { hello: 500ms, dead: 2s }
levels:
  - name: rack
  - name: node
    sync: { strategy: hybrid }
root: { name: root, addr: "127.0.0.1:7000" }
groups:
  - name: r1
    sub_parent: { name: r1-sp, addr: "127.0.0.2:7000" }
    standby: { name: r1-sb, addr: "127.0.0.3:7000" }
    nodes:
      - { hosts: "n[1-4]", addr: "127.0.1.{n}:7000" }
"#;

fn spec(text: &str) -> Spec {
    let t = Topology::parse(text, "t.yaml").unwrap();
    let flat = t.flatten();
    let tree = Arc::new(Tree::from_flat(&flat).unwrap());
    Spec::new(&flat, tree).unwrap()
}

#[test]
fn the_standby_takes_the_group_over_and_hands_it_back() {
    let s = spec(HYBRID);
    let (sp, sb) = (1, 2);
    let nodes: Vec<Node<Log>> = (0..s.len() as NodeId)
        .map(|i| Node::new(s.stack(i, 7, Time::ZERO, 0), Log::default(), Time::ZERO))
        .collect();
    let mut sim = Sim::new(SimConfig::default(), nodes);
    sim.run_until(Duration::from_secs(5));
    let member = 3;
    assert!(sim.get(sp).unwrap().stack().is_child(member));
    assert!(!sim.get(sb).unwrap().stack().is_child(member));
    sim.crash(sp);
    sim.run_until(Duration::from_secs(10));
    let standby = sim.get(sb).unwrap();
    assert!(standby.stack().acting_for(0), "the standby acts for r1");
    assert_eq!(standby.stack().standing_in().collect::<Vec<_>>(), [0]);
    assert!(
        standby.stack().is_child(member),
        "r1's nodes are in its care"
    );
    assert!(standby.app().acting.contains(&(0, true)));
    assert_eq!(standby.stack().stats().failovers, 1);
    assert_eq!(sim.get(0).unwrap().stack().acting_of(sp), sb);
    // The sub-parent returns and takes its role back (retake).
    let now = sim.now();
    sim.restart(sp, Node::new(s.stack(sp, 8, now, 0), Log::default(), now));
    sim.run_until(now + Duration::from_secs(8));
    let standby = sim.get(sb).unwrap();
    assert!(!standby.stack().acting_for(0));
    assert!(standby.app().acting.contains(&(0, false)));
    assert!(sim.get(sp).unwrap().stack().is_child(member));
    assert_eq!(sim.get(0).unwrap().stack().acting_of(sp), sp);
}

#[test]
fn a_tree_only_cluster_has_no_groups() {
    let s = spec(&HYBRID.replace("sync: { strategy: hybrid }", "sync: { strategy: tree }"));
    assert!(!s.has_hybrid());
    let stack = s.stack(1, 7, Time::ZERO, 0);
    assert_eq!(stack.groups().count(), 0);
}

/// Words that name a strategy's core.
const CORES: [&str; 3] = ["TreeCore", "GossipCore", "FlatGossip"];

fn scan(dir: &Path, skip: &Path, found: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.starts_with(skip) {
            continue;
        }
        if p.is_dir() {
            scan(&p, skip, found);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            for w in CORES.iter().filter(|w| text.contains(*w)) {
                found.push(format!("{} names {w}", p.display()));
            }
        }
    }
}

#[test]
fn no_application_names_a_strategy_core() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let sync = root.join("src/sync");
    scan(&root.join("src"), &sync, &mut found);
    let loadtest = root.join("../loadtest/src");
    scan(&loadtest, &sync, &mut found);
    assert!(found.is_empty(), "{found:#?}");
}
