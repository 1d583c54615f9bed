//! End to end: `layercake run` on the worked example
//! (`examples/bmc-cluster`: two Redfish nodes on sushy-tools' emulator, two
//! IPMI nodes on `ipmi_sim`), BMCs configured with `ctl apply`, powered on
//! with `ctl set HOSTLIST /PhysState=POWER_ON`, `ctl get nodes` showing Dsc
//! POWER_ON, and a power-off behind the system's back corrected within two
//! poll intervals. The emulators must be installed (`bash .ci/run`).

mod common;
#[path = "support/ipmi_sim.rs"]
mod ipmi_sim_support;
#[path = "support/sushy.rs"]
mod sushy;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use ipmi_sim_support::IpmiSim;
use sushy::Sushy;

/// The sub-parent's BMC poll interval in this test.
const POLL: Duration = Duration::from_secs(2);
const NODES: [&str; 4] = ["rf01", "rf02", "bmc01", "bmc02"];

fn example(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/bmc-cluster")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Dsc PhysState of every node, from `ctl get nodes` (the table).
fn dsc_phys(api: &str) -> Vec<(String, String)> {
    let out = ctl(api, &["get", "nodes", "rf[01-02],bmc[01-02]"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // NAME RACK CFG-PHYS DSC-PHYS ...
            (cols.len() >= 4).then(|| (cols[0].to_string(), cols[3].to_string()))
        })
        .collect()
}

fn all_on(api: &str) -> bool {
    let rows = dsc_phys(api);
    rows.len() == NODES.len() && rows.iter().all(|(_, p)| p == "POWER_ON")
}

#[test]
fn bmc_nodes_power_on_and_heal() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rf = Sushy::start(2);
    let ipmi = IpmiSim::start_many(2).expect("starting ipmi_sim");
    let dir = temp_dir("bmc-cluster");
    let port = free_udp_port();
    write_file(&dir, "cluster.key", &"cd".repeat(32));
    let topo = example("cluster.yaml")
        .replace(":7300", &format!(":{port}"))
        .replace("127.0.81.", "127.0.82.");
    let topo = write_file(&dir, "cluster.yaml", &topo);
    // The example's file, pointed at this test's emulators: Redfish through
    // the pattern as written, IPMI through an explicit map.
    let mut apply = example("bmc.yaml").replace("127.0.0.1:8000", &rf.addr().to_string());
    for (i, name) in ["bmc01", "bmc02"].iter().enumerate() {
        apply.push_str(&format!(
            "  - hosts: {name}\n    values:\n      \
             type.googleapis.com/layercake.power.Power/Address: \"{}\"\n",
            ipmi.addrs()[i]
        ));
    }
    let apply = write_file(&dir, "bmc.yaml", &apply);
    let creds = write_file(&dir, "credentials", &example("credentials"));
    let t = topo.display().to_string();
    let data = dir.join("data").display().to_string();
    let root = spawn(&[
        "run",
        "--topology",
        &t,
        "--id",
        "admin",
        "--data-dir",
        &data,
        "--api",
        "127.0.0.1:0",
    ]);
    // Group-readable credentials are refused with a clear message.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = std::process::Command::new(bin())
            .args(["run", "--topology", &t, "--id", "r01-sp", "--credentials"])
            .arg(&creds)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let poll = format!("{}ms", POLL.as_millis());
    let c = creds.display().to_string();
    let _sp = spawn_quiet(&[
        "run",
        "--topology",
        &t,
        "--id",
        "r01-sp",
        "--credentials",
        &c,
        "--bmc-poll",
        &poll,
        "--bmc-timeout",
        "2s",
    ]);
    let api = root.api.clone();
    let a = ctl(&api, &["apply", "-f", &apply.display().to_string()]);
    assert!(
        a.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&a.stderr)
    );
    let t0 = Instant::now();
    let s = ctl(
        &api,
        &["set", "rf[01-02],bmc[01-02]", "/PhysState=POWER_ON"],
    );
    assert!(
        s.status.success(),
        "set: {}",
        String::from_utf8_lossy(&s.stderr)
    );
    assert!(
        wait_until(60, || all_on(&api)),
        "Dsc not POWER_ON everywhere: {:?}",
        dsc_phys(&api)
    );
    eprintln!("4 BMC nodes POWER_ON in {:?}", t0.elapsed());
    rt.block_on(async {
        assert!(rf.is_on(1).await && rf.is_on(2).await, "Redfish systems on");
    });
    assert!(ipmi.power_of(0) && ipmi.power_of(1), "IPMI BMCs on");

    // Behind the system's back: one BMC of each kind powered off.
    rt.block_on(rf.set_power_behind_back(1, false));
    ipmi.set_power_behind_back_of(0, false);
    let t1 = Instant::now();
    let within = 2 * POLL;
    loop {
        let on = rt.block_on(rf.is_on(1)) && ipmi.power_of(0);
        if on {
            break;
        }
        assert!(
            t1.elapsed() < within,
            "not corrected within two poll intervals ({within:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("behind-the-back power off corrected in {:?}", t1.elapsed());
    assert!(wait_until(10, || all_on(&api)), "{:?}", dsc_phys(&api));
}
