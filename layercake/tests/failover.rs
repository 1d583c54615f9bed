//! Sub-parent failover in a real cluster (issue 11): separate `layercake
//! run` processes on loopback, a root and three racks (`r1`..`r3`), each
//! rack a sub-parent, a separate standby and one or two node processes;
//! `tree` between the root and the racks, `hybrid` at the nodes' level
//! (every rack is a SWIM group that promotes its standby). Rack `r1` also
//! holds two nodes without a process whose power is driven through
//! `ipmi_sim` BMCs (CHILD context, by whoever acts for the rack). Every
//! process serves its own `/metrics`.
//!
//! It shows, with timings printed:
//! 1. the whole cluster converges (`ctl set` POWER_ON, Dsc follows);
//! 2. SIGKILL of `r1`'s sub-parent: the standby's `/metrics` says it stands
//!    in for `r1` and its failover counter rose, within the dead interval
//!    plus two hellos;
//! 3. a `ctl set` on `r1` (process nodes and a BMC node) converges while
//!    the sub-parent is dead;
//! 4. a BMC powered off behind the system's back (`ipmitool`) is corrected
//!    by the acting standby within two BMC poll intervals plus slack;
//! 5. the sub-parent restarted with the same arguments takes its role back
//!    (`retake`): the standby stops standing in and hands the BMCs back,
//!    and the rack keeps converging;
//! 6. every acknowledged `ctl set` is the Cfg `ctl get` shows at the end,
//!    and every Dsc matches it.
//!
//! `ipmi_sim` and `ipmitool` (Debian package `openipmi`, and `ipmitool`)
//! must be installed: the test fails, never skips, without them.
//!
//! Run: `cargo test -p layercake --test failover -- --nocapture`. Each
//! instance logs to a file of the test's temporary folder
//! (`FAILOVER_LOG` sets the level, default `info`); a failure prints their
//! tails, and `FAILOVER_KEEP=1` keeps the folder after a success.

mod common;
#[path = "support/ipmi_sim.rs"]
mod ipmi_sim_support;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ipmi_sim_support::IpmiSim;

/// Hello and dead interval of every level.
const HELLO: Duration = Duration::from_millis(500);
const DEAD: Duration = Duration::from_secs(2);
/// BMC poll interval of every instance that may drive BMCs.
const POLL: Duration = Duration::from_secs(1);
/// The third octet of every address of this test (other tests use others).
const NET: u8 = 93;

/// Instance name and last address octet, in start order; the metrics are
/// served on TCP at the instance's own address and UDP port. Standbys are
/// up before their sub-parents start, on purpose: a standby's own version
/// floor (its start time) is then below its sub-parent's, so taking over
/// the Dsc of the BMC nodes must not rely on it.
const RACKS: [(&str, &[(&str, u8)]); 3] = [
    (
        "r1",
        &[("r1-sb", 12), ("r1-sp", 11), ("r1n1", 14), ("r1n2", 15)],
    ),
    ("r2", &[("r2-sb", 22), ("r2-sp", 21), ("r2n1", 23)]),
    ("r3", &[("r3-sb", 32), ("r3-sp", 31), ("r3n1", 33)]),
];
/// The nodes of `r1` driven through a BMC (no process).
const BMC_NODES: [&str; 2] = ["r1b1", "r1b2"];
/// Every node the root manages (standbys are nodes too).
const LEAVES: [&str; 9] = [
    "r1-sb", "r1n1", "r1n2", "r1b1", "r1b2", "r2-sb", "r2n1", "r3-sb", "r3n1",
];
const LEAVES_N: usize = LEAVES.len();

const POWER: &str = "type.googleapis.com/layercake.power.Power";

fn topology(port: u16) -> String {
    format!(
        "cluster: failover\n\
         key_file: cluster.key\n\
         sync: {{ hello: {h}ms, dead: {d}ms }}\n\
         levels:\n  \
           - {{ name: rack, sync: {{ strategy: tree }} }}\n  \
           - {{ name: node, sync: {{ strategy: hybrid }} }}\n\
         root: {{ name: root, addr: \"127.0.{NET}.1:{port}\" }}\n\
         groups:\n\
         \x20 - name: r1\n\
         \x20   sub_parent: {{ name: r1-sp, addr: \"127.0.{NET}.11:{port}\" }}\n\
         \x20   standby: {{ name: r1-sb, addr: \"127.0.{NET}.12:{port}\" }}\n\
         \x20   nodes:\n\
         \x20     - {{ hosts: \"r1n[1-2]\", addr: \"127.0.{NET}.{{n+13}}:{port}\" }}\n\
         \x20     - {{ hosts: \"r1b[1-2]\", addr: \"127.0.{NET}.{{n+15}}:{port}\" }}\n\
         \x20 - name: r2\n\
         \x20   sub_parent: {{ name: r2-sp, addr: \"127.0.{NET}.21:{port}\" }}\n\
         \x20   standby: {{ name: r2-sb, addr: \"127.0.{NET}.22:{port}\" }}\n\
         \x20   nodes:\n\
         \x20     - {{ hosts: r2n1, addr: \"127.0.{NET}.23:{port}\" }}\n\
         \x20 - name: r3\n\
         \x20   sub_parent: {{ name: r3-sp, addr: \"127.0.{NET}.31:{port}\" }}\n\
         \x20   standby: {{ name: r3-sb, addr: \"127.0.{NET}.32:{port}\" }}\n\
         \x20   nodes:\n\
         \x20     - {{ hosts: r3n1, addr: \"127.0.{NET}.33:{port}\" }}\n",
        h = HELLO.as_millis(),
        d = DEAD.as_millis(),
    )
}

/// A port free for UDP on this test's root address (every instance binds
/// the same port on its own address, and serves metrics on TCP there).
fn free_port() -> u16 {
    std::net::UdpSocket::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One instance process (not the root), its arguments kept for a restart
/// and its log in a file.
struct Instance {
    args: Vec<String>,
    metrics: String,
    log: PathBuf,
    proc: Option<std::process::Child>,
}

impl Instance {
    fn start(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin())
            .args(&self.args)
            .env(
                "LAYERCAKE_LOG",
                std::env::var("FAILOVER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning layercake");
        self.proc = Some(child);
    }

    /// SIGKILL, as a machine that dies.
    fn kill(&mut self) {
        if let Some(mut c) = self.proc.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        prom_value(&scrape(&self.metrics)?, name, labels)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the test asked for and the root acknowledged: node -> URL -> value.
#[derive(Default)]
struct Acked(BTreeMap<String, BTreeMap<String, String>>);

impl Acked {
    /// `ctl set HOSTS URL=VALUE...`; the write must be acknowledged.
    fn set(&mut self, api: &str, hosts: &[&str], values: &[(&str, &str)]) {
        let mut args = vec!["set".to_string(), hosts.join(",")];
        args.extend(values.iter().map(|(u, v)| format!("{u}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = ctl(api, &args);
        assert!(
            o.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for h in hosts {
            let n = self.0.entry(h.to_string()).or_default();
            for (u, v) in values {
                n.insert(u.to_string(), v.to_string());
            }
        }
    }
}

/// Every node as `ctl get nodes -o json` shows it.
fn nodes(api: &str) -> Vec<serde_json::Value> {
    let o = ctl(api, &["get", "nodes", &LEAVES.join(","), "-o", "json"]);
    assert!(
        o.status.success(),
        "get: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["nodes"].as_array().unwrap().clone()
}

fn node<'a>(all: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    all.iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// True when every named node is converged with Dsc PhysState `phys`.
fn phys_converged(api: &str, names: &[&str], phys: &str) -> bool {
    let all = nodes(api);
    names.iter().all(|n| {
        let v = node(&all, n);
        v["converged"] == true && v["dsc"]["/PhysState"] == phys
    })
}

fn summary(api: &str) -> String {
    nodes(api)
        .iter()
        .map(|n| {
            format!(
                "{} cfg={} dsc={} converged={}\n",
                n["name"], n["cfg"]["/PhysState"], n["dsc"]["/PhysState"], n["converged"]
            )
        })
        .collect()
}

/// Polls `f` every 25 ms until it is true or `limit` passes; returns the
/// time it took.
fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `ipmitool chassis power off` at a BMC: someone else's tool.
fn ipmitool_power_off(addr: SocketAddr) {
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "3", "-H", &addr.ip().to_string()])
        .args(["-p", &addr.port().to_string()])
        .args(["-U", IpmiSim::USER, "-P", IpmiSim::PASSWORD])
        .args(["chassis", "power", "off"])
        .output()
        .expect("running ipmitool (apt-get install -y ipmitool)");
    assert!(
        out.status.success(),
        "ipmitool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The wall clock (UTC, as the instances' logs print it), for reading the
/// logs beside the test's output.
fn wall_clock() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

/// The lines of a log file that contain `what`, without colour codes.
fn log_lines(log: &Path, what: &str) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(what))
        .map(|l| {
            let mut out = String::new();
            let mut esc = false;
            for c in l.chars() {
                match (esc, c) {
                    (false, '\x1b') => esc = true,
                    (true, 'm') => esc = false,
                    (false, c) => out.push(c),
                    _ => {}
                }
            }
            out
        })
        .collect()
}

/// r1's sub-parent.
fn sp(p: &BTreeMap<String, Instance>) -> &Instance {
    &p["r1-sp"]
}

/// r1's standby.
fn sb(p: &BTreeMap<String, Instance>) -> &Instance {
    &p["r1-sb"]
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            out.push_str(&format!("--- {}\n", p.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

#[test]
fn standby_takes_over_a_rack_with_its_bmcs_and_hands_it_back() {
    let ipmi = IpmiSim::start_many(BMC_NODES.len()).expect(
        "starting ipmi_sim (Debian package `openipmi`: apt-get install -y openipmi ipmitool)",
    );
    let dir = temp_dir("failover");
    let port = free_port();
    let key = write_file(&dir, "cluster.key", &"ef".repeat(32));
    let topo = write_file(&dir, "cluster.yaml", &topology(port));
    let creds = write_file(&dir, "credentials", "lab-ipmi 127.0.0.1 secret\n");
    {
        use std::os::unix::fs::PermissionsExt as _;
        for f in [&key, &creds] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let t = topo.display().to_string();
    let data = dir.join("data").display().to_string();
    let root_metrics = format!("127.0.{NET}.1:{port}");
    let common_args = |id: &str, metrics: &str| -> Vec<String> {
        [
            "run",
            "--topology",
            &t,
            "--id",
            id,
            "--metrics",
            metrics,
            "--step-min-ms",
            "50",
            "--step-max-ms",
            "300",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut root_args = common_args("root", &root_metrics);
    root_args.extend(["--data-dir", &data, "--api", "127.0.0.1:0"].map(String::from));
    let root_args: Vec<&str> = root_args.iter().map(String::as_str).collect();
    let root = spawn(&root_args);
    let api = root.api.clone();

    // Every instance may have to drive r1's BMCs (any member of a hybrid
    // group can take over), so all get the credentials.
    let poll = format!("{}ms", POLL.as_millis());
    let c = creds.display().to_string();
    let mut procs: BTreeMap<String, Instance> = BTreeMap::new();
    for (_, members) in RACKS {
        for &(name, octet) in members {
            let metrics = format!("127.0.{NET}.{octet}:{port}");
            let mut args = common_args(name, &metrics);
            args.extend(
                [
                    "--credentials",
                    &c,
                    "--bmc-poll",
                    &poll,
                    "--bmc-timeout",
                    "2s",
                ]
                .map(String::from),
            );
            let mut inst = Instance {
                args,
                metrics,
                log: dir.join(format!("{name}.log")),
                proc: None,
            };
            inst.start();
            if name.ends_with("-sb") {
                // Up (its world started) before its sub-parent starts.
                let up = time_until(Duration::from_secs(30), || scrape(&inst.metrics).is_some());
                assert!(up.is_some(), "{name} did not start\n{}", logs(&dir));
            }
            procs.insert(name.to_string(), inst);
        }
    }
    eprintln!(
        "cluster: root + {} processes on 127.0.{NET}.x:{port}, logs in {}",
        procs.len(),
        dir.display()
    );

    // --- 1. Everything converges.
    let mut acked = Acked::default();
    let addrs = ipmi.addrs();
    for (i, n) in BMC_NODES.iter().enumerate() {
        let addr = addrs[i].to_string();
        acked.set(
            &api,
            &[n],
            &[
                (&format!("{POWER}/Protocol"), "ipmi"),
                (&format!("{POWER}/Address"), &addr),
                (&format!("{POWER}/User"), IpmiSim::USER),
                (&format!("{POWER}/Credential"), "lab-ipmi"),
            ],
        );
    }
    let t0 = Instant::now();
    acked.set(&api, &LEAVES, &[("/PhysState", "POWER_ON")]);
    let took = time_until(Duration::from_secs(60), || {
        converged(&api) == LEAVES_N as u64
            && phys_converged(&api, &["r1n1", "r1b1", "r1b2", "r3n1"], "POWER_ON")
    });
    assert!(
        took.is_some(),
        "the cluster did not converge:\n{}\n{}",
        summary(&api),
        logs(&dir)
    );
    eprintln!(
        "1. {LEAVES_N} nodes POWER_ON and converged in {:?}",
        t0.elapsed()
    );
    assert!(ipmi.power_of(0) && ipmi.power_of(1), "both BMCs on");

    // The sub-parent acts for r1 and drives both BMCs; the standby does
    // not stand in.
    let ready = time_until(Duration::from_secs(20), || {
        sp(&procs).metric("kraken_sync_acting", &[("group", "r1")]) == Some(1.0)
            && sp(&procs).metric("layercake_bmc_children", &[]) == Some(2.0)
            && sb(&procs).metric("kraken_sync_standing_in", &[("group", "r1")]) == Some(0.0)
    });
    assert!(
        ready.is_some(),
        "before the kill: sub-parent acting {:?}, BMC children {:?}; standby standing in {:?}",
        sp(&procs).metric("kraken_sync_acting", &[("group", "r1")]),
        sp(&procs).metric("layercake_bmc_children", &[]),
        sb(&procs).metric("kraken_sync_standing_in", &[("group", "r1")]),
    );
    let failovers0 = sb(&procs)
        .metric("kraken_sync_failovers_total", &[])
        .expect("the standby's failover counter");

    // --- 2. SIGKILL the sub-parent: the standby takes over.
    // Bound: the standby acts at most two hellos after the sub-parent's
    // dead interval ran out, so dead + 2 hellos (3 s) from the kill until
    // its own /metrics says so (measured: the stack takes over 1.2-1.7 s
    // after the kill, see the log line printed beside; /metrics follows
    // within 250 ms).
    let bound = DEAD + 2 * HELLO;
    let killed = Instant::now();
    procs.get_mut("r1-sp").unwrap().kill();
    let killed_at = wall_clock();
    let acting = time_until(bound + Duration::from_secs(10), || {
        let s = sb(&procs);
        s.metric("kraken_sync_standing_in", &[("group", "r1")]) == Some(1.0)
            && s.metric("kraken_sync_failovers_total", &[])
                .is_some_and(|f| f > failovers0)
    });
    let Some(acting) = acting else {
        panic!(
            "the standby is not standing in for r1 {:?} after the kill\n{}",
            killed.elapsed(),
            logs(&dir)
        );
    };
    eprintln!(
        "2. kill -> standby acting (its /metrics): {acting:?} (bound: dead {DEAD:?} + 2 hellos = {bound:?})"
    );
    eprintln!(
        "   (r1-sp killed at {killed_at}; the standby's log: {})",
        log_lines(&sb(&procs).log, "acting for group").join(" | ")
    );
    assert!(
        acting <= bound,
        "the standby took {acting:?} to act for r1; bound {bound:?}"
    );

    // --- 3. A Cfg change in r1 converges while its sub-parent is dead:
    // process nodes, and a BMC node the standby must now drive.
    let t3 = Instant::now();
    acked.set(
        &api,
        &["r1n1", "r1n2", "r1b2"],
        &[("/PhysState", "POWER_OFF")],
    );
    let took = time_until(Duration::from_secs(30), || {
        phys_converged(&api, &["r1n1", "r1n2", "r1b2"], "POWER_OFF")
    });
    assert!(
        took.is_some(),
        "r1 did not converge without its sub-parent (r1b2's BMC on: {}):\n{}\n{}",
        ipmi.power_of(1),
        summary(&api),
        logs(&dir)
    );
    eprintln!(
        "3. ctl set on r1 converged during the failover in {:?}",
        t3.elapsed()
    );
    assert!(!ipmi.power_of(1), "r1b2's BMC powered off by the standby");
    let driven = sb(&procs).metric("layercake_bmc_children", &[]);
    assert!(
        driven.is_some_and(|n| n > 0.0),
        "layercake_bmc_children of the acting standby: {driven:?}"
    );

    // --- 4. A BMC powered off behind the system's back is corrected by
    // the acting standby.
    assert!(ipmi.power_of(0));
    ipmitool_power_off(addrs[0]);
    let t4 = Instant::now();
    assert!(!ipmi.power_of(0), "ipmitool powered r1b1 off");
    let within = 2 * POLL + Duration::from_secs(2);
    let fixed = time_until(within + Duration::from_secs(10), || {
        ipmi.power_of(0) && phys_converged(&api, &["r1b1"], "POWER_ON")
    });
    let Some(fixed) = fixed else {
        panic!(
            "r1b1 not corrected {:?} after the power-off:\n{}\n{}",
            t4.elapsed(),
            summary(&api),
            logs(&dir)
        );
    };
    eprintln!(
        "4. behind-the-back power-off corrected by the standby in {fixed:?} (bound: 2 polls + 2 s = {within:?}); standby drives {driven:?} BMCs"
    );
    assert!(fixed <= within, "corrected in {fixed:?}; bound {within:?}");

    // --- 5. The sub-parent comes back and takes its role back.
    let t5 = Instant::now();
    procs.get_mut("r1-sp").unwrap().start();
    let back = time_until(Duration::from_secs(30), || {
        sb(&procs).metric("kraken_sync_standing_in", &[("group", "r1")]) == Some(0.0)
            && sp(&procs).metric("kraken_sync_acting", &[("group", "r1")]) == Some(1.0)
            && sp(&procs).metric("layercake_bmc_children", &[]) == Some(2.0)
            && sb(&procs).metric("layercake_bmc_children", &[]) == Some(0.0)
    });
    let Some(back) = back else {
        panic!(
            "the restarted sub-parent did not take r1 back: standby standing in {:?}, \
             sub-parent acting {:?}, BMC children sp {:?} sb {:?}\n{}",
            sb(&procs).metric("kraken_sync_standing_in", &[("group", "r1")]),
            sp(&procs).metric("kraken_sync_acting", &[("group", "r1")]),
            sp(&procs).metric("layercake_bmc_children", &[]),
            sb(&procs).metric("layercake_bmc_children", &[]),
            logs(&dir)
        );
    };
    eprintln!("5. restart -> sub-parent acting again, standby handed back: {back:?}");
    let handbacks = sb(&procs).metric("kraken_sync_handbacks_total", &[]);
    assert!(
        handbacks.is_some_and(|h| h >= 1.0),
        "standby handbacks: {handbacks:?}"
    );
    let t5b = Instant::now();
    acked.set(
        &api,
        &["r1n1", "r1n2", "r1b2"],
        &[("/PhysState", "POWER_ON")],
    );
    let took = time_until(Duration::from_secs(30), || {
        phys_converged(&api, &["r1n1", "r1n2", "r1b2"], "POWER_ON")
    });
    assert!(
        took.is_some(),
        "r1 did not converge after the retake:\n{}\n{}",
        summary(&api),
        logs(&dir)
    );
    eprintln!(
        "5. ctl set on r1 after the retake converged in {:?} ({:?} after the restart)",
        t5b.elapsed(),
        t5.elapsed()
    );
    assert!(ipmi.power_of(0) && ipmi.power_of(1), "both BMCs on again");

    // --- 6. No acknowledged Cfg is lost, and every Dsc matches.
    let ok = time_until(Duration::from_secs(20), || {
        converged(&api) == LEAVES_N as u64
    });
    assert!(ok.is_some(), "not all converged:\n{}", summary(&api));
    let all = nodes(&api);
    assert_eq!(all.len(), LEAVES_N);
    for (name, values) in &acked.0 {
        let n = node(&all, name);
        for (url, want) in values {
            assert_eq!(
                n["cfg"][url].as_str(),
                Some(want.as_str()),
                "{name} {url}: the acknowledged Cfg is lost ({n})"
            );
        }
        assert_eq!(n["converged"], true, "{name}: {n}");
        assert_eq!(
            n["dsc"]["/PhysState"], n["cfg"]["/PhysState"],
            "{name}: Dsc does not match Cfg ({n})"
        );
    }
    eprintln!(
        "6. {} acknowledged node Cfgs intact, every Dsc matches",
        acked.0.len()
    );
    drop(procs);
    drop(root);
    if std::env::var_os("FAILOVER_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
