//! Network boot end to end (issue 16): real virtual machines behind real
//! BMCs power on, boot layer 0 from the network and join the cluster.
//!
//! In a fresh network namespace: a bridge `br0` (10.0.0.1 the root, 10.0.0.2
//! the sub-parent `sp`, which runs the boot servers on it), and three QEMU
//! (TCG) machines on tap ports whose NIC boots Debian's iPXE ROM. `vm1` and
//! `vm2` sit behind one `ipmi_sim` each, whose chassis power starts and
//! stops the QEMU process (`startcmd`); a third machine with a MAC nobody
//! registered is started directly. Layer 0 is built from Debian's kernel
//! and busybox around this build's binary (`build-layer0.sh`); every
//! instance runs with a certificate from a cluster CA made here, and the
//! nodes' certificates are served by the sub-parent once per boot window.
//!
//! It shows, with the measured times printed:
//! 1. the stranger's DHCP requests get no answer and are counted
//!    (`ignored_unknown_mac`);
//! 2. `ctl set 'vm[1-2]' /PhysState=POWER_ON /RunState=SYNC`: both machines
//!    are powered on through IPMI, PXE-boot layer 0 and join: Dsc POWER_ON,
//!    PXE COMP, RunState SYNC, each within [`BOOT_LIMIT`];
//! 3. vm1's QEMU killed behind the system's back: seen dead, powered on
//!    again and booted back to SYNC with nobody typing anything;
//! 4. `ctl set vm1 /PhysState=POWER_OFF`: powered off through its BMC (its
//!    QEMU process is gone);
//! 5. vm2 hung (its QEMU stopped, the BMC still says on): seen dead by the
//!    dead timer, its boot window reopened, `pxe_init` times out to
//!    PHYS_HANG, power-cycled through the BMC, booted again;
//! 6. the sub-parent's `/metrics`: boot times, identities served once per
//!    boot.
//!
//! Needs root (namespaces, taps) and Debian's `qemu-system-x86`,
//! `ipxe-qemu`, `linux-image-amd64`, `busybox-static`, `cpio`, `kmod`,
//! `openipmi` and `ipmitool` (`.ci/deps` installs them); it fails, never
//! skips, without them. Run it alone (two TCG machines load both cores):
//! `cargo test -p layercake --test netboot -- --nocapture`;
//! `NETBOOT_KEEP=1` keeps its folder (logs, consoles).

mod common;
#[path = "support/netlab.rs"]
mod netlab;

use std::time::{Duration, Instant};

use common::*;
use netlab::*;

const PORT: u16 = 7400;
const SP_METRICS: &str = "10.0.0.2:9480";
/// Power-on command to Dsc POWER_ON + PXE COMP + RunState SYNC, per VM.
const BOOT_LIMIT: Duration = Duration::from_secs(120);
/// The same after a kill: dead interval, BMC poll, power on, boot.
const REBOOT_LIMIT: Duration = Duration::from_secs(180);
/// After a hang: dead interval, `pxe_init`'s timeout (90 s), the power
/// cycle, a boot.
const HANG_LIMIT: Duration = Duration::from_secs(300);

fn sp_metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(SP_METRICS, name, labels)
}

fn topology() -> String {
    format!(
        "cluster: netboot\n\
         key_file: cluster.key\n\
         sync: {{ hello: 1s, dead: 4s }}\n\
         root: {{ name: root, addr: \"10.0.0.1:{PORT}\" }}\n\
         groups:\n\
         \x20 - name: rack1\n\
         \x20   sub_parent: {{ name: sp, addr: \"10.0.0.2:{PORT}\" }}\n\
         \x20   nodes:\n\
         \x20     - {{ hosts: \"vm[1-2]\", addr: \"10.0.0.{{n+10}}:{PORT}\" }}\n"
    )
}

fn start_cluster(lab: &mut Lab) {
    let t = lab.path("topology.yaml");
    let pki_root = lab.path("pki-root");
    let data = lab.path("data");
    lab.layercake(
        "root",
        None,
        &[
            "run",
            "--topology",
            &t,
            "--id",
            "root",
            "--pki",
            &pki_root,
            "--data-dir",
            &data,
            "--api",
            API,
        ],
    );
    let args = sub_parent_args(lab, "sp", "10.0.0.2", "br0", SP_METRICS);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.layercake("sp", None, &args);
    let up = wait_until(60, || {
        ctl(API, &["get", "nodes"]).status.success() && scrape(SP_METRICS).is_some()
    });
    assert!(up, "the cluster did not start\n{}", lab.tails());
}

#[test]
fn vms_power_on_through_ipmi_netboot_layer0_and_join() {
    assert_eq!(euid(), 0, "this test needs root (network namespaces, taps)");
    need("/usr/bin/qemu-system-x86_64", "qemu-system-x86");
    need(ROM, "ipxe-qemu");
    need("/usr/bin/ipmi_sim", "openipmi");
    need("/usr/bin/ipmitool", "ipmitool");
    let mut lab = Lab::new("lcboot");
    prepare(&lab, &topology(), &["root", "sp"]);
    for (i, (_, mac, _)) in VMS.iter().enumerate() {
        lab.bmc(i, mac, "127.0.0.1");
    }
    start_cluster(&mut lab);

    // 1. A MAC nobody registered: counted, never answered.
    lab.stranger();
    let unknown = || {
        sp_metric(
            "layercake_pxe_dhcp_total",
            &[("result", "ignored_unknown_mac")],
        )
    };
    assert!(
        wait_until(90, || unknown() >= 1.0),
        "the stranger's DHCP requests were not counted\n{}",
        lab.tails()
    );
    let offers_before = sp_metric("layercake_pxe_dhcp_total", &[("result", "offer")]);
    assert_eq!(offers_before, 0.0, "nothing was offered to the stranger");

    // 2. Power on and boot both VMs.
    configure_nodes("127.0.0.1");
    let t0 = Instant::now();
    ctl_ok(&["set", "vm[1-2]", "/PhysState=POWER_ON", "/RunState=SYNC"]);
    let mut took = [None, None];
    while t0.elapsed() < BOOT_LIMIT && took.iter().any(Option::is_none) {
        for (i, s) in dsc_states().iter().enumerate() {
            if booted(s) && took[i].is_none() {
                took[i] = Some(t0.elapsed());
                eprintln!(
                    "netboot: {} POWER_ON/COMP/SYNC {:.1} s after the command",
                    VMS[i].0,
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        took.iter().all(Option::is_some),
        "not booted within {BOOT_LIMIT:?}: {:?}\n{}",
        dsc_states(),
        lab.tails()
    );
    assert!(
        !std::fs::read_to_string(lab.dir.join("stranger.console"))
            .unwrap_or_default()
            .contains("layercake: booting")
    );

    // 3. vm1's QEMU killed behind the system's back.
    let pid = lab.vm_pid(1).expect("vm1's QEMU runs");
    let k0 = Instant::now();
    sh(&["kill", "-9", &pid.to_string()]);
    let dead = time_until(Duration::from_secs(30), 0, |s| !booted(s));
    assert!(dead.is_some(), "vm1 not seen dead\n{}", lab.tails());
    let back = time_until(REBOOT_LIMIT, 0, booted);
    assert!(
        back.is_some(),
        "vm1 not booted again: {:?}\n{}",
        dsc_states(),
        lab.tails()
    );
    eprintln!(
        "netboot: vm1 killed: seen dead after {:.1} s, booted to SYNC again {:.1} s after the kill",
        dead.unwrap().as_secs_f64(),
        k0.elapsed().as_secs_f64()
    );
    assert!(
        lab.vm_pid(1).is_some_and(|p| p != pid),
        "a new QEMU runs vm1"
    );

    // 4. Powered off through its BMC.
    let p0 = Instant::now();
    ctl_ok(&["set", "vm1", "/PhysState=POWER_OFF"]);
    let off = time_until(Duration::from_secs(60), 0, |s| s.0 == "POWER_OFF");
    assert!(
        off.is_some(),
        "vm1 not off: {:?}\n{}",
        dsc_states(),
        lab.tails()
    );
    assert!(
        wait_until(20, || lab.vm_pid(1).is_none()),
        "vm1's QEMU still runs"
    );
    eprintln!(
        "netboot: vm1 powered off through IPMI in {:.1} s",
        p0.elapsed().as_secs_f64()
    );
    assert!(
        booted(&dsc_states()[1]),
        "vm2 untouched: {:?}",
        dsc_states()
    );

    // 5. vm2 hangs (its QEMU stopped: the BMC still says on). Its agent
    // goes silent: seen dead by the dead timer, a new boot window opens,
    // nothing answers in it, pxe_init times out to PHYS_HANG, the BMC
    // power-cycles it and it boots again.
    let pid2 = lab.vm_pid(2).expect("vm2's QEMU runs");
    let h0 = Instant::now();
    sh(&["kill", "-STOP", &pid2.to_string()]);
    let silent = time_until(Duration::from_secs(30), 1, |s| !booted(s));
    assert!(silent.is_some(), "vm2 not seen dead\n{}", lab.tails());
    let healed = time_until(HANG_LIMIT, 1, booted);
    assert!(
        healed.is_some(),
        "vm2 not healed: {:?}\n{}",
        dsc_states(),
        lab.tails()
    );
    assert!(
        lab.vm_pid(2).is_some_and(|p| p != pid2),
        "vm2 was power-cycled"
    );
    eprintln!(
        "netboot: vm2 hung: seen dead after {:.1} s, power-cycled and booted to SYNC {:.1} s after the hang",
        silent.unwrap().as_secs_f64(),
        h0.elapsed().as_secs_f64()
    );

    // 6. What the sub-parent counted.
    let boots = sp_metric("layercake_boot_seconds_count", &[]);
    let served = sp_metric("layercake_pxe_identity_total", &[("result", "served")]);
    eprintln!("netboot: sub-parent: {boots} boots timed, {served} identities served");
    assert!(
        boots >= 4.0,
        "four boots timed (vm1 and vm2 twice each)\n{}",
        lab.tails()
    );
    assert!(served >= 4.0, "one identity per boot");
    let offers = sp_metric("layercake_pxe_dhcp_total", &[("result", "offer")]);
    assert!(offers >= 3.0, "a DHCP offer per boot, {offers} counted");
}
