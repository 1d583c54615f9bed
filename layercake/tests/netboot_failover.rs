//! Network boot follows a failover (issue 16): in a `hybrid` rack, the
//! standby that acts for a dead sub-parent adopts its BMC nodes' boot as
//! well as their power.
//!
//! The lab of `netboot.rs` (`support/netlab.rs`) with a standby `sb` in a
//! second namespace plugged into the same bridge (10.0.0.3, its own boot
//! servers on its own port), BMCs reachable by both on 10.0.0.1. It shows,
//! with the times printed:
//! 1. vm1 is powered on and booted by the sub-parent (its boot counted
//!    there);
//! 2. SIGKILL of the sub-parent: the standby stands in for the rack and
//!    vm1 stays (or comes back to) Dsc POWER_ON, PXE COMP, RunState SYNC,
//!    now authored by the standby;
//! 3. vm1's QEMU killed: the standby sees it off through the BMC, powers
//!    it on and boots it through its own servers (its boot and identity
//!    counters), back to SYNC unattended.
//!
//! Needs what `netboot.rs` needs. Run:
//! `cargo test -p layercake --test netboot_failover -- --nocapture`.

mod common;
#[path = "support/netlab.rs"]
mod netlab;

use std::time::{Duration, Instant};

use common::*;
use netlab::*;

const PORT: u16 = 7410;
const SP_METRICS: &str = "10.0.0.2:9480";
const SB_METRICS: &str = "10.0.0.3:9481";
const LIMIT: Duration = Duration::from_secs(180);

fn topology() -> String {
    format!(
        "cluster: netboot\n\
         key_file: cluster.key\n\
         sync: {{ hello: 1s, dead: 4s }}\n\
         levels:\n  \
           - {{ name: rack, sync: {{ strategy: tree }} }}\n  \
           - {{ name: node, sync: {{ strategy: hybrid }} }}\n\
         root: {{ name: root, addr: \"10.0.0.1:{PORT}\" }}\n\
         groups:\n\
         \x20 - name: rack1\n\
         \x20   sub_parent: {{ name: sp, addr: \"10.0.0.2:{PORT}\" }}\n\
         \x20   standby: {{ name: sb, addr: \"10.0.0.3:{PORT}\" }}\n\
         \x20   nodes:\n\
         \x20     - {{ hosts: \"vm[1-2]\", addr: \"10.0.0.{{n+10}}:{PORT}\" }}\n"
    )
}

#[test]
fn the_acting_standby_boots_the_rack_after_a_failover() {
    assert_eq!(euid(), 0, "this test needs root (network namespaces, taps)");
    need("/usr/bin/qemu-system-x86_64", "qemu-system-x86");
    need(ROM, "ipxe-qemu");
    need("/usr/bin/ipmi_sim", "openipmi");
    let mut lab = Lab::new("lcbootfo");
    let peer = lab.peer_ns("10.0.0.3/24");
    prepare(&lab, &topology(), &["root", "sp", "sb"]);
    for (i, (_, mac, _)) in VMS.iter().enumerate() {
        lab.bmc(i, mac, "10.0.0.1");
    }
    let (t, pki, data) = (
        lab.path("topology.yaml"),
        lab.path("pki-root"),
        lab.path("data"),
    );
    let root = [
        "run",
        "--topology",
        &t,
        "--id",
        "root",
        "--pki",
        &pki,
        "--data-dir",
        &data,
        "--api",
        API,
    ];
    lab.layercake("root", None, &root);
    let sb = sub_parent_args(&lab, "sb", "10.0.0.3", "vb0", SB_METRICS);
    let sb: Vec<&str> = sb.iter().map(String::as_str).collect();
    lab.layercake("sb", Some(&peer), &sb);
    let sp = sub_parent_args(&lab, "sp", "10.0.0.2", "br0", SP_METRICS);
    let sp: Vec<&str> = sp.iter().map(String::as_str).collect();
    lab.layercake("sp", None, &sp);
    let up = wait_until(60, || {
        ctl(API, &["get", "nodes"]).status.success()
            && scrape(SP_METRICS).is_some()
            && scrape(SB_METRICS).is_some()
    });
    assert!(up, "the cluster did not start\n{}", lab.tails());
    configure_nodes("10.0.0.1");

    // 1. Booted by the sub-parent.
    ctl_ok(&["set", "vm1", "/PhysState=POWER_ON", "/RunState=SYNC"]);
    let first = time_until(LIMIT, 0, booted);
    assert!(
        first.is_some(),
        "vm1 not booted: {:?}\n{}",
        dsc_states(),
        lab.tails()
    );
    let sp_boots = metric(SP_METRICS, "layercake_boot_seconds_count", &[]);
    assert!(
        sp_boots >= 1.0,
        "the sub-parent booted vm1\n{}",
        lab.tails()
    );
    eprintln!(
        "netboot failover: vm1 booted by the sub-parent in {:.1} s",
        first.unwrap().as_secs_f64()
    );

    // 2. The sub-parent dies; the standby stands in and keeps vm1 booted.
    let k0 = Instant::now();
    lab.kill("sp");
    let standing = wait_until(60, || {
        metric(SB_METRICS, "kraken_sync_standing_in", &[("group", "rack1")]) == 1.0
    });
    assert!(standing, "the standby did not stand in\n{}", lab.tails());
    eprintln!(
        "netboot failover: standby standing in {:.1} s after the kill",
        k0.elapsed().as_secs_f64()
    );
    // The standby drives (and authors) the rack's BMC nodes now.
    let adopted = wait_until(30, || {
        metric(SB_METRICS, "layercake_bmc_children", &[("instance", "sb")]) >= 2.0
    });
    assert!(
        adopted,
        "the standby did not adopt the BMC nodes\n{}",
        lab.tails()
    );
    let still = time_until(LIMIT, 0, booted);
    assert!(
        still.is_some(),
        "vm1 not SYNC under the standby: {:?}\n{}",
        dsc_states(),
        lab.tails()
    );
    eprintln!(
        "netboot failover: vm1 SYNC under the standby {:.1} s after the kill",
        k0.elapsed().as_secs_f64()
    );

    // 3. vm1 dies; the standby powers it on and boots it.
    let pid = lab.vm_pid(1).expect("vm1's QEMU runs");
    let v0 = Instant::now();
    sh(&["kill", "-9", &pid.to_string()]);
    let dead = time_until(Duration::from_secs(30), 0, |s| !booted(s));
    assert!(dead.is_some(), "vm1 not seen dead\n{}", lab.tails());
    let back = time_until(LIMIT, 0, booted);
    assert!(
        back.is_some(),
        "vm1 not booted again: {:?}\n{}",
        dsc_states(),
        lab.tails()
    );
    assert!(
        lab.vm_pid(1).is_some_and(|p| p != pid),
        "a new QEMU runs vm1"
    );
    let sb_boots = metric(SB_METRICS, "layercake_boot_seconds_count", &[]);
    let sb_ids = metric(
        SB_METRICS,
        "layercake_pxe_identity_total",
        &[("result", "served")],
    );
    eprintln!(
        "netboot failover: vm1 killed, booted again by the standby {:.1} s after the kill \
         (standby: {sb_boots} boots timed, {sb_ids} identities served)",
        v0.elapsed().as_secs_f64()
    );
    assert!(
        sb_boots >= 1.0,
        "the standby timed the boot\n{}",
        lab.tails()
    );
    assert!(
        sb_ids >= 1.0,
        "the standby served the identity\n{}",
        lab.tails()
    );
}
