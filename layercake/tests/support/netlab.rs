//! The network boot lab of the end-to-end tests (`netboot.rs`,
//! `netboot_failover.rs`): a network namespace with a bridge (10.0.0.1,
//! 10.0.0.2) and tap ports, QEMU (TCG) machines booting Debian's iPXE ROM
//! behind `ipmi_sim` BMCs whose chassis power starts and stops them, the
//! layercake processes, and the helpers that read what the cluster shows.
//! Everything is torn down on drop (`NETBOOT_KEEP=1` keeps the folder).
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The root's API (inside the namespace).
pub const API: &str = "127.0.0.1:7480";
/// Debian's iPXE ROM for virtio-net.
pub const ROM: &str = "/usr/lib/ipxe/qemu/pxe-virtio.rom";
/// The VMs: name, MAC, address.
pub const VMS: [(&str, &str, &str); 2] = [
    ("vm1", "52:54:00:4c:42:01", "10.0.0.11/24"),
    ("vm2", "52:54:00:4c:42:02", "10.0.0.12/24"),
];
/// The MAC nobody registers.
pub const STRANGER_MAC: &str = "52:54:00:4c:42:99";
/// The PXE state URL.
pub const PXE: &str = "type.googleapis.com/layercake.pxe.Pxe/State";
/// The power extension's URL.
pub const POWER: &str = "type.googleapis.com/layercake.power.Power";
/// The network extension's URL.
pub const NETWORK: &str = "type.googleapis.com/layercake.network.Network";

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} (bash .ci/deps)"
    );
}

pub fn euid() -> u32 {
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
pub struct Lab {
    /// The namespace this thread lives in.
    pub ns: String,
    /// A second namespace on the same bridge (`peer_ns`), if made.
    pub peer: Option<String>,
    /// The test's folder.
    pub dir: PathBuf,
    procs: Vec<(String, Child)>,
}

impl Lab {
    /// Creates the namespace (`PREFIX` and this process's id) and its bridge and taps, then moves this
    /// thread into it (every socket and child process of the test lives
    /// there from now on).
    pub fn new(prefix: &str) -> Lab {
        let ns = format!("{prefix}{}", std::process::id());
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
        let dir = std::env::temp_dir().join(format!("lc-{ns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            ns,
            peer: None,
            dir,
            procs: Vec::new(),
        }
    }

    /// A second namespace whose `vb0` (address `cidr`) is a port of the
    /// bridge (another machine on the boot network).
    pub fn peer_ns(&mut self, cidr: &str) -> String {
        let peer = format!("{}b", self.ns);
        let _ = Command::new("ip").args(["netns", "del", &peer]).output();
        sh(&["ip", "netns", "add", &peer]);
        self.peer = Some(peer.clone());
        let pid_path = format!("/run/netns/{peer}");
        sh(&[
            "ip", "link", "add", "vbp", "type", "veth", "peer", "name", "vb0", "netns", &pid_path,
        ]);
        sh(&["ip", "link", "set", "vbp", "master", "br0"]);
        sh(&["ip", "link", "set", "vbp", "up"]);
        sh(&["ip", "-n", &peer, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &peer, "addr", "add", cidr, "dev", "vb0"]);
        sh(&["ip", "-n", &peer, "link", "set", "vb0", "up"]);
        peer
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Starts `layercake ARGS` with its log in `NAME.log`, in this
    /// thread's namespace or (`ns`) another one.
    pub fn layercake(&mut self, name: &str, ns: Option<&str>, args: &[&str]) {
        let log = File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin()]);
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
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

    /// The process started as `name`, killed (SIGKILL, as a machine dies).
    pub fn kill(&mut self, name: &str) {
        for (n, c) in &mut self.procs {
            if n == name {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// One ipmi_sim per VM on `ip`:9600+n, chassis power = its QEMU.
    pub fn bmc(&mut self, i: usize, mac: &str, ip: &str) {
        let n = i + 1;
        let script = self.vm_script(i, mac);
        let state = self.dir.join(format!("bmc{n}"));
        std::fs::create_dir_all(&state).unwrap();
        let conf = format!(
            "name \"bmc{n}\"\n\
             set_working_mc 0x20\n\
             \x20 startlan 1\n\
             \x20   addr {ip} {port}\n\
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
    pub fn stranger(&mut self) {
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
    pub fn vm_pid(&self, n: usize) -> Option<i32> {
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

    /// The last lines of every log and console of the folder.
    pub fn tails(&self) -> String {
        let mut files: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|f| f.ends_with(".log") || f.ends_with(".console"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let mut out = String::new();
        for f in files {
            let text = std::fs::read_to_string(self.dir.join(&f)).unwrap_or_default();
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
        if let Some(p) = &self.peer {
            let _ = Command::new("ip").args(["netns", "del", p]).output();
        }
        if std::env::var_os("NETBOOT_KEEP").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("netboot: kept {}", self.dir.display());
        }
    }
}

pub fn lc(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "layercake {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ctl ARGS` against [`API`]; it must succeed.
pub fn ctl_ok(args: &[&str]) {
    let o = ctl(API, args);
    assert!(
        o.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `(PhysState, PXE, RunState)` of each VM's Dsc.
pub fn dsc_states() -> Vec<(String, String, String)> {
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

pub fn booted(s: &(String, String, String)) -> bool {
    s.0 == "POWER_ON" && s.1 == "COMP" && s.2 == "SYNC"
}

/// A sample of the instance serving metrics at `addr` (0 when absent).
pub fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape(addr)
        .and_then(|t| prom_value(&t, name, labels))
        .unwrap_or(0.0)
}

/// Writes the CA, a `--pki` folder per instance of `instances`, the VMs'
/// identities (`identities/`), `topology`, the key, the credentials;
/// builds layer 0 into `boot/` (with the topology).
pub fn prepare(lab: &Lab, topology: &str, instances: &[&str]) {
    let d = |s: &str| lab.path(s);
    lc(&["certs", "init", "--dir", &d("ca"), "--cluster", "netboot"]);
    let issue = |name: &str, out: &str| {
        lc(&[
            "certs",
            "issue",
            "--dir",
            &d("ca"),
            "--name",
            name,
            "--out",
            out,
        ]);
    };
    for name in instances {
        issue(name, &d(&format!("pki-{name}")));
    }
    for (name, _, _) in VMS {
        issue(name, &d("identities"));
    }
    std::fs::write(d("topology.yaml"), topology).unwrap();
    let key = lc(&["topo", "key"]);
    write_file(&lab.dir, "cluster.key", &key);
    write_file(
        &lab.dir,
        "credentials.key",
        "bmc 127.0.0.1,10.0.0.* secret\n",
    );
    let t0 = Instant::now();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/netboot-lab/build-layer0.sh"
    );
    let out = Command::new("bash")
        .arg(script)
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

/// `run` arguments of an instance that drives the VMs' BMCs and boots
/// them: `--boot-server ip` on `iface`, metrics at `metrics`.
pub fn sub_parent_args(lab: &Lab, id: &str, ip: &str, iface: &str, metrics: &str) -> Vec<String> {
    let p = |s: &str| lab.path(s);
    [
        "run",
        "--topology",
        &p("topology.yaml"),
        "--id",
        id,
        "--pki",
        &p(&format!("pki-{id}")),
        "--credentials",
        &p("credentials.key"),
        "--bmc-poll",
        "1s",
        "--metrics",
        metrics,
        "--boot-server",
        ip,
        "--boot-interface",
        iface,
        "--boot-root",
        &p("boot"),
        "--boot-identities",
        &p("identities"),
        "--boot-kernel-arg",
        "console=ttyS0",
        "--boot-kernel-arg",
        "panic=5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Writes each VM's BMC (IPMI at `bmc_ip`:9600+n) and boot network into
/// its Cfg.
pub fn configure_nodes(bmc_ip: &str) {
    for (i, (name, mac, addr)) in VMS.iter().enumerate() {
        let bmc = format!("{POWER}/Address={bmc_ip}:{}", 9600 + i + 1);
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
pub fn time_until(
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
