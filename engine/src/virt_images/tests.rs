//! The virtual image module driven by a real [`Driver`]: the states, the
//! Busy gate, the flip to UPDATE, power off stopping the images first.

use std::sync::Arc;

use super::*;
use crate::executor::Relation;
use crate::virt::VirtualConfig;

const START: (u64, u64) = (300, 600);

struct Rig {
    d: Driver,
    v: VirtualImages,
    reg: Arc<Registry>,
    now: u64,
    calls: u32,
}

fn rig() -> Rig {
    let (reg, g) = build(60_000).unwrap();
    let (reg, g) = (Arc::new(reg), Arc::new(g));
    let cfg = VirtualConfig {
        delay_min_ms: 5,
        delay_max_ms: 50,
        ..VirtualConfig::default()
    };
    let mut d = Driver::new(g, reg.clone(), Relation::All, "n1", cfg, 3);
    d.set_external(&["image"]);
    Rig {
        d,
        v: VirtualImages::new(START.0, START.1, 9),
        reg,
        now: 0,
        calls: 0,
    }
}

impl Rig {
    /// Booted, running image `app` of `version`.
    fn cfg(&self, version: u64) -> Node {
        let mut n = self.reg.new_node("n1");
        n.phys_state = 2;
        n.run_state = 2;
        let set = |n: &mut Node, u: &str, v: &str| {
            let p: Path = u.parse().unwrap();
            let v = self.reg.parse_value(&p, v).unwrap();
            self.reg.set(n, &p, &v).unwrap();
        };
        set(&mut n, virt::PXE_URL, "COMP");
        set(&mut n, STATE_URL, "ACTIVE");
        let img = |f: &str| format!("{TYPE_URL}/Image/app/{f}");
        set(&mut n, &img("Source"), &format!("app-v{version}.tar"));
        set(&mut n, &img("Digest"), &digest(version));
        set(&mut n, &img("Command"), "/bin/app");
        set(&mut n, &img("State"), "ACTIVE");
        n
    }

    fn set_cfg(&mut self, cfg: Node) {
        self.calls += self.v.set_cfg(&mut self.d, cfg, self.now).unwrap();
    }

    fn busy(&mut self, busy: bool) {
        let v = Value::Enum(if busy { 2 } else { 1 });
        let p: Path = "/Busy".parse().unwrap();
        self.d.set_dsc_values(&[(p, v)], self.now).unwrap();
        self.calls += self.v.pump(&mut self.d, self.now);
    }

    /// Runs until `until` (or nothing is due).
    fn run(&mut self, until: u64) {
        for _ in 0..100_000 {
            let next = [self.d.poll_timeout(), self.v.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = t.max(self.now);
                    self.calls += self.v.pump(&mut self.d, self.now);
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn app(&self) -> Option<&Container> {
        self.v.running().get("app")
    }
}

fn digest(version: u64) -> String {
    format!("sha256:{version:064x}")
}

#[test]
fn a_booted_node_starts_its_image_and_a_free_node_rolls_within_a_start_time() {
    let mut r = rig();
    let c = r.cfg(1);
    r.set_cfg(c);
    r.run(10_000);
    assert!(r.d.is_converged(), "chain: {:?}", r.d.chain_names());
    assert_eq!(r.app().unwrap().digest, digest(1));
    let t0 = r.now;
    let c = r.cfg(2);
    r.set_cfg(c);
    assert!(!r.d.is_converged(), "the flip to UPDATE makes a roll due");
    assert_eq!(r.d.chain_names(), ["image_update"]);
    r.run(t0 + 10_000);
    let app = r.app().unwrap().clone();
    assert_eq!(app.digest, digest(2));
    let took = app.started_ms - t0;
    assert!((START.0..=START.1).contains(&took), "took {took} ms");
    assert!(r.d.is_converged());
}

#[test]
fn a_busy_node_keeps_its_container_until_free_then_rolls() {
    let mut r = rig();
    let c = r.cfg(1);
    r.set_cfg(c);
    r.run(10_000);
    let before = r.app().unwrap().clone();
    r.busy(true);
    let calls = r.calls;
    let c = r.cfg(2);
    r.set_cfg(c);
    let (m, why) = r.d.waiting().expect("the roll waits");
    assert_eq!(
        (m.as_str(), why.as_str()),
        ("image_update", "excludes Dsc /Busy=BUSY")
    );
    r.run(r.now + 3_600_000);
    assert_eq!(r.calls, calls, "no image step is handed out while busy");
    assert_eq!(r.app(), Some(&before), "same digest, same start time");
    let freed = r.now;
    r.busy(false);
    assert_eq!(r.calls, calls + 1, "the step starts in the call that frees");
    r.run(freed + 10_000);
    assert_eq!(r.app().unwrap().digest, digest(2));
    assert!(r.app().unwrap().started_ms - freed <= START.1);
    assert!(r.d.is_converged());
}

#[test]
fn power_off_stops_the_images_first_and_waits_while_busy() {
    let mut r = rig();
    let c = r.cfg(1);
    r.set_cfg(c);
    r.run(10_000);
    r.busy(true);
    let mut off = r.cfg(1);
    off.phys_state = 1;
    off.run_state = 0;
    let p: Path = virt::PXE_URL.parse().unwrap();
    r.reg.set(&mut off, &p, &Value::Enum(0)).unwrap();
    let p: Path = STATE_URL.parse().unwrap();
    r.reg.set(&mut off, &p, &Value::Enum(0)).unwrap();
    r.set_cfg(off);
    assert_eq!(r.d.waiting().map(|w| w.0), Some("image_stop_active".into()));
    r.run(r.now + 60_000);
    assert!(r.app().is_some(), "still running while busy");
    r.busy(false);
    r.run(r.now + 60_000);
    assert!(r.app().is_none(), "stopped before the power went");
    assert_eq!(r.d.dsc().phys_state, 1);
    assert!(r.d.is_converged(), "chain: {:?}", r.d.chain_names());
}

#[test]
fn discovery_reports_what_runs() {
    let mut v = VirtualImages::new(10, 10, 1);
    let (reg, _) = build(60_000).unwrap();
    let mut cfg = reg.new_node("n");
    let p = |u: String| u.parse::<Path>().unwrap();
    let img = |f: &str| p(format!("{TYPE_URL}/Image/a/{f}"));
    reg.set(&mut cfg, &img("Digest"), &Value::Str(digest(1)))
        .unwrap();
    reg.set(&mut cfg, &img("State"), &Value::Enum(2)).unwrap();
    assert!(v.handle_cfg(&cfg).is_empty(), "nothing runs: no flip");
    v.handle_call("image_discover", 1, 0);
    let r = v.poll_report(QUICK_STEP_MS).unwrap();
    assert_eq!(r.token, 1);
    assert_eq!(
        r.values.unwrap(),
        vec![(p(STATE_URL.into()), Value::Enum(ImageState::Idle as i32))]
    );
    v.handle_call("image_start", 2, 100);
    assert_eq!(v.poll_timeout(), Some(110));
    assert!(v.poll_report(109).is_none());
    assert!(v.poll_report(110).unwrap().values.is_some());
    assert_eq!(v.running()["a"].started_ms, 110);
    v.handle_call("image_frobnicate", 3, 200);
    let r = v.poll_report(200 + QUICK_STEP_MS).unwrap();
    assert_eq!((r.token, r.values), (3, None), "an unknown step fails");
}
