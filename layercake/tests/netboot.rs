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
//! 5. the sub-parent's `/metrics`: boot times, identities served once per
//!    boot.
//!
//! Needs root (namespaces, taps) and Debian's `qemu-system-x86`,
//! `ipxe-qemu`, `linux-image-amd64`, `busybox-static`, `cpio`, `kmod`,
//! `openipmi` and `ipmitool` (`.ci/deps` installs them); it fails, never
//! skips, without them. Run it alone (two TCG machines load both cores):
//! `cargo test -p layercake --test netboot -- --nocapture`;
//! `NETBOOT_KEEP=1` keeps its folder (logs, consoles).

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const NS_PREFIX: &str = "lcboot";
const PORT: u16 = 7400;
const API: &str = "127.0.0.1:7480";
const SP_METRICS: &str = "10.0.0.2:9480";
const ROM: &str = "/usr/lib/ipxe/qemu/pxe-virtio.rom";
const VMS: [(&str, &str, &str); 2] = [
    ("vm1", "52:54:00:4c:42:01", "10.0.0.11/24"),
    ("vm2", "52:54:00:4c:42:02", "10.0.0.12/24"),
];
const STRANGER_MAC: &str = "52:54:00:4c:42:99";
/// Power-on command to Dsc POWER_ON + PXE COMP + RunState SYNC, per VM.
const BOOT_LIMIT: Duration = Duration::from_secs(120);
/// The same after a kill: dead interval, BMC poll, power on, boot.
const REBOOT_LIMIT: Duration = Duration::from_secs(180);
const PXE: &str = "type.googleapis.com/layercake.pxe.Pxe/State";
const POWER: &str = "type.googleapis.com/layercake.power.Power";
const NETWORK: &str = "type.googleapis.com/layercake.network.Network";

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} (bash .ci/deps)"
    );
}

fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Everything the test started; torn down on drop (processes, machines,
/// the namespace, the folder unless `NETBOOT_KEEP` is set or it failed).
struct Lab {
    ns: String,
    dir: PathBuf,
    procs: Vec<(String, Child)>,
}

impl Lab {
    /// Creates the namespace and its bridge and taps, then moves this
    /// thread into it (every socket and child process of the test lives
    /// there from now on).
    fn new() -> Lab {
        let ns = format!("{NS_PREFIX}{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&["ip", "netns", "add", &ns]);
        let n = ns.as_str();
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", n, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", n, "addr", "add", "10.0.0.1/24", "dev", "br0"]);
        sh(&["ip", "-n", n, "addr", "add", "10.0.0.2/24", "dev", "br0"]);
        sh(&["ip", "-n", n, "link", "set", "br0", "up"]);
        for tap in ["tap1", "tap2", "tap3"] {
            sh(&["ip", "-n", n, "tuntap", "add", "dev", tap, "mode", "tap"]);
            sh(&["ip", "-n", n, "link", "set", tap, "master", "br0"]);
            sh(&["ip", "-n", n, "link", "set", tap, "up"]);
        }
        let f = File::open(format!("/run/netns/{ns}")).unwrap();
        // SAFETY: setns on a valid namespace descriptor; it changes only
        // this thread's network namespace, which the test wants to be in.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let dir = std::env::temp_dir().join(format!("lc-netboot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            ns,
            dir,
            procs: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Starts `layercake ARGS` with its log in `NAME.log`.
    fn layercake(&mut self, name: &str, args: &[&str]) {
        let log = File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin())
            .args(args)
            .env("LAYERCAKE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning layercake");
        self.procs.push((name.into(), child));
    }

    /// The VM start script ipmi_sim runs (`startcmd`): its pid is QEMU's.
    fn vm_script(&self, i: usize, mac: &str) -> String {
        let script = format!(
            "#!/bin/sh\n\
             echo $$ > {dir}/vm{n}.pid\n\
             exec qemu-system-x86_64 -machine pc,accel=tcg -m 512 -nographic -monitor none \
             -chardev file,id=con,path={dir}/vm{n}.console,append=on -serial chardev:con \
             -netdev tap,id=n0,ifname=tap{n},script=no,downscript=no \
             -device virtio-net-pci,disable-legacy=on,netdev=n0,mac={mac},romfile={ROM} \
             -boot n\n",
            dir = self.dir.display(),
            n = i + 1,
        );
        let path = self.path(&format!("vm{}.sh", i + 1));
        std::fs::write(&path, script).unwrap();
        path
    }

    /// One ipmi_sim per VM on 127.0.0.1:9600+n, chassis power = its QEMU.
    fn bmc(&mut self, i: usize, mac: &str) {
        let n = i + 1;
        let script = self.vm_script(i, mac);
        let state = self.dir.join(format!("bmc{n}"));
        std::fs::create_dir_all(&state).unwrap();
        let conf = format!(
            "name \"bmc{n}\"\n\
             set_working_mc 0x20\n\
             \x20 startlan 1\n\
             \x20   addr 127.0.0.1 {port}\n\
             \x20   priv_limit admin\n\
             \x20   allowed_auths_callback none md5 straight\n\
             \x20   allowed_auths_user none md5 straight\n\
             \x20   allowed_auths_operator none md5 straight\n\
             \x20   allowed_auths_admin none md5 straight\n\
             \x20   guid a123456789abcdefa123456789abcd0{n}\n\
             \x20 endlan\n\
             \x20 serial kcs 127.0.0.1 {vmport} codec VM ipmb 0x20\n\
             \x20 startcmd \"/bin/sh {script}\"\n\
             \x20 startnow false\n\
             \x20 poweroff_wait 1\n\
             \x20 kill_wait 2\n\
             \x20 user 2 true \"admin\" \"secret\" admin 32 none md5 straight\n",
            port = 9600 + n,
            vmport = 9700 + n,
        );
        let conf_path = state.join("lan.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let emu = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ipmi_sim/bmc.emu");
        let log = File::create(self.dir.join(format!("bmc{n}.log"))).unwrap();
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(&conf_path)
            .arg("-f")
            .arg(emu)
            .arg("-s")
            .arg(&state)
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("ipmi_sim (Debian package openipmi)");
        self.procs.push((format!("bmc{n}"), child));
    }

    /// The machine with a MAC nobody registered, started directly.
    fn stranger(&mut self) {
        let console = self.path("stranger.console");
        let child = Command::new("qemu-system-x86_64")
            .args(["-machine", "pc,accel=tcg", "-m", "128", "-nographic"])
            .args(["-monitor", "none", "-serial", &format!("file:{console}")])
            .args(["-netdev", "tap,id=n0,ifname=tap3,script=no,downscript=no"])
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,disable-legacy=on,netdev=n0,mac={STRANGER_MAC},romfile={ROM}"
            ))
            .args(["-boot", "n"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (Debian package qemu-system-x86)");
        self.procs.push(("stranger".into(), child));
    }

    /// The pid of VM `n`'s QEMU, if it runs.
    fn vm_pid(&self, n: usize) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.dir.join(format!("vm{n}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Path::new(&format!("/proc/{pid}/cmdline"))
            .exists()
            .then_some(pid)
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.contains("qemu"))
            })
    }

    fn tails(&self) -> String {
        let mut out = String::new();
        for f in [
            "root.log",
            "sp.log",
            "vm1.console",
            "vm2.console",
            "stranger.console",
        ] {
            let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            out.push_str(&format!("==> {f} <==\n{}\n", tail.replace('\r', "")));
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in self.procs.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in 1..=VMS.len() {
            if let Some(pid) = self.vm_pid(n) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        if std::env::var_os("NETBOOT_KEEP").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("netboot: kept {}", self.dir.display());
        }
    }
}

fn lc(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "layercake {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ctl_ok(args: &[&str]) {
    let o = ctl(API, args);
    assert!(
        o.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `(PhysState, PXE, RunState)` of each VM's Dsc.
fn dsc_states() -> Vec<(String, String, String)> {
    let o = ctl(API, &["get", "nodes", "vm1,vm2", "-o", "json"]);
    if !o.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("").to_string();
    v["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    let d = &n["dsc"];
                    (s(&d["/PhysState"]), s(&d[PXE]), s(&d["/RunState"]))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn booted(s: &(String, String, String)) -> bool {
    s.0 == "POWER_ON" && s.1 == "COMP" && s.2 == "SYNC"
}

fn sp_metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape(SP_METRICS)
        .and_then(|t| prom_value(&t, name, labels))
        .unwrap_or(0.0)
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

/// Writes the CA, each instance's `--pki` folder, the nodes' identities
/// for the sub-parent, the topology and key, the credentials; builds
/// layer 0 into `boot/`.
fn prepare(lab: &Lab) {
    let d = |s: &str| lab.path(s);
    lc(&["certs", "init", "--dir", &d("ca"), "--cluster", "netboot"]);
    for name in ["root", "sp"] {
        lc(&[
            "certs",
            "issue",
            "--dir",
            &d("ca"),
            "--name",
            name,
            "--out",
            &d(&format!("pki-{name}")),
        ]);
    }
    for (name, _, _) in VMS {
        lc(&[
            "certs",
            "issue",
            "--dir",
            &d("ca"),
            "--name",
            name,
            "--out",
            &d("identities"),
        ]);
    }
    std::fs::write(d("topology.yaml"), topology()).unwrap();
    let key = lc(&["topo", "key"]);
    write_file(&lab.dir, "cluster.key", &key);
    write_file(&lab.dir, "credentials.key", "bmc secret\n");
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/netboot-lab/build-layer0.sh"
        ))
        .args(["-b", bin(), "-o", &d("boot")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-layer0.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("netboot: layer 0 built in {:?}", t0.elapsed());
    std::fs::copy(d("topology.yaml"), d("boot/topology.yaml")).unwrap();
}

fn start_cluster(lab: &mut Lab) {
    let t = lab.path("topology.yaml");
    let (pki_root, pki_sp) = (lab.path("pki-root"), lab.path("pki-sp"));
    let data = lab.path("data");
    lab.layercake(
        "root",
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
    let (creds, boot, ids) = (
        lab.path("credentials.key"),
        lab.path("boot"),
        lab.path("identities"),
    );
    lab.layercake(
        "sp",
        &[
            "run",
            "--topology",
            &t,
            "--id",
            "sp",
            "--pki",
            &pki_sp,
            "--credentials",
            &creds,
            "--bmc-poll",
            "1s",
            "--metrics",
            SP_METRICS,
            "--boot-server",
            "10.0.0.2",
            "--boot-interface",
            "br0",
            "--boot-root",
            &boot,
            "--boot-identities",
            &ids,
            "--boot-kernel-arg",
            "console=ttyS0",
            "--boot-kernel-arg",
            "panic=5",
        ],
    );
    let up = wait_until(60, || {
        ctl(API, &["get", "nodes"]).status.success() && scrape(SP_METRICS).is_some()
    });
    assert!(up, "the cluster did not start\n{}", lab.tails());
}

fn configure_nodes() {
    for (i, (name, mac, addr)) in VMS.iter().enumerate() {
        let bmc = format!("{POWER}/Address=127.0.0.1:{}", 9600 + i + 1);
        ctl_ok(&[
            "set",
            name,
            &format!("{POWER}/Protocol=ipmi"),
            &bmc,
            &format!("{POWER}/User=admin"),
            &format!("{POWER}/Credential=bmc"),
            &format!("{NETWORK}/Mac={mac}"),
            &format!("{NETWORK}/Address={addr}"),
        ]);
    }
}

/// Waits until `pred` holds for VM `i`'s Dsc; the time it took.
fn time_until(
    limit: Duration,
    i: usize,
    pred: impl Fn(&(String, String, String)) -> bool,
) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if dsc_states().get(i).is_some_and(&pred) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

#[test]
fn vms_power_on_through_ipmi_netboot_layer0_and_join() {
    assert_eq!(euid(), 0, "this test needs root (network namespaces, taps)");
    need("/usr/bin/qemu-system-x86_64", "qemu-system-x86");
    need(ROM, "ipxe-qemu");
    need("/usr/bin/ipmi_sim", "openipmi");
    need("/usr/bin/ipmitool", "ipmitool");
    let mut lab = Lab::new();
    prepare(&lab);
    for (i, (_, mac, _)) in VMS.iter().enumerate() {
        lab.bmc(i, mac);
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
    configure_nodes();
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

    // 5. What the sub-parent counted.
    let boots = sp_metric("layercake_boot_seconds_count", &[]);
    let served = sp_metric("layercake_pxe_identity_total", &[("result", "served")]);
    eprintln!("netboot: sub-parent: {boots} boots timed, {served} identities served");
    assert!(
        boots >= 3.0,
        "three boots timed (vm1 twice, vm2)\n{}",
        lab.tails()
    );
    assert!(served >= 3.0, "one identity per boot");
    let offers = sp_metric("layercake_pxe_dhcp_total", &[("result", "offer")]);
    assert!(offers >= 3.0, "a DHCP offer per boot, {offers} counted");
}
