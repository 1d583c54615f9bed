//! Runs OpenIPMI's `ipmi_sim` BMC simulator for tests: one process per
//! simulated BMC, each on its own UDP port of 127.0.0.1, each with its
//! power state in a file that a tiny `chassis_control` script reads and
//! writes (fixtures in `tests/fixtures/ipmi_sim/`).
//!
//! One `ipmi_sim` process is one BMC: its LAN channel takes up to four
//! `addr` lines, but they all reach the same BMC (one power state), and the
//! other MCs a process can emulate sit behind the BMC on IPMB, not on the
//! LAN. So N BMCs are N processes, on N ports of 127.0.0.1. Measured on a
//! 2-core machine: about 1 MB proportional memory (6 MB RSS, mostly shared
//! libraries) and 9 file descriptors per process, no CPU when idle; each
//! power query or command forks a `/bin/sh` (a few ms). 50 BMCs start in
//! 0.9 s (49 MB), 200 in 2.1 s (190 MB, 1,800 descriptors in all).
//!
//! Use: `let sim = IpmiSim::start_many(50)?;` then `sim.addrs()`,
//! `IpmiSim::USER` / `IpmiSim::PASSWORD` (Administrator), and
//! `sim.set_power_behind_back_of(i, on)` for a "button press". Every
//! process is killed and the temporary directory removed on drop.
//! Starting fails (it never skips) when `ipmi_sim` is missing or a BMC does
//! not answer within [`READY_TIMEOUT`].
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the BMCs of one `start_many` call get to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Port collisions with other tests are retried this many times per BMC.
const START_ATTEMPTS_MAX: u32 = 3;

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

struct SimBmc {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

/// A set of running `ipmi_sim` BMCs.
pub struct IpmiSim {
    dir: PathBuf,
    bmcs: Vec<SimBmc>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ipmi_sim")
}

/// A sessionless Get Channel Authentication Capabilities request (IPMI
/// v1.5 framing), built by hand so readiness does not depend on the client
/// under test.
fn probe_packet() -> Vec<u8> {
    let mut msg: Vec<u8> = vec![0x20, 0x06 << 2];
    msg.push(0u8.wrapping_sub(msg[0].wrapping_add(msg[1])));
    let body = [0x81u8, 0x00, 0x38, 0x8e, 0x04];
    msg.extend_from_slice(&body);
    msg.push(
        body.iter()
            .fold(0u8, |a, b| a.wrapping_add(*b))
            .wrapping_neg(),
    );
    let mut p = vec![0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    p.push(msg.len() as u8);
    p.extend_from_slice(&msg);
    p
}

impl IpmiSim {
    /// The Administrator user of every simulated BMC.
    pub const USER: &'static str = "admin";
    /// Its password.
    pub const PASSWORD: &'static str = "secret";
    /// A user limited to Operator privilege.
    pub const OPERATOR_USER: &'static str = "oper";
    /// Its password.
    pub const OPERATOR_PASSWORD: &'static str = "opsecret";

    /// Starts one BMC, powered off.
    pub fn start() -> anyhow::Result<IpmiSim> {
        Self::start_many(1)
    }

    /// Starts `n` BMCs (one `ipmi_sim` process each), all powered off, and
    /// waits until every one answers on its port.
    pub fn start_many(n: usize) -> anyhow::Result<IpmiSim> {
        which_ipmi_sim()?;
        let k = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("layercake-ipmi-sim-{}-{k}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut sim = IpmiSim {
            dir,
            bmcs: Vec::with_capacity(n),
        };
        let mut pending: Vec<usize> = Vec::new();
        for (i, port) in free_ports(n, &HashSet::new())?.into_iter().enumerate() {
            let bmc = sim.spawn(i, port)?;
            sim.bmcs.push(bmc);
            pending.push(i);
        }
        for attempt in 1..=START_ATTEMPTS_MAX {
            let failed = sim.wait_ready(&pending)?;
            if failed.is_empty() {
                return Ok(sim);
            }
            if attempt == START_ATTEMPTS_MAX {
                let i = failed[0];
                bail!(
                    "{} of {n} ipmi_sim BMCs did not start; BMC {i} said: {}",
                    failed.len(),
                    sim.stderr(i)
                );
            }
            // Most likely a port another test grabbed meanwhile: new ports.
            let used: HashSet<u16> = sim.bmcs.iter().map(|b| b.addr.port()).collect();
            for (&i, port) in failed.iter().zip(free_ports(failed.len(), &used)?) {
                sim.bmcs[i] = sim.spawn(i, port)?;
            }
            pending = failed;
        }
        unreachable!()
    }

    /// Writes BMC `i`'s config and starts its process on `port`.
    fn spawn(&self, i: usize, port: u16) -> anyhow::Result<SimBmc> {
        let dir = self.dir.join(format!("bmc{i}"));
        std::fs::create_dir_all(&dir)?;
        if !dir.join("power").exists() {
            std::fs::write(dir.join("power"), "0\n")?;
        }
        let conf = std::fs::read_to_string(fixtures().join("lan.conf.in"))?
            .replace("@NAME@", &format!("bmc{i}"))
            .replace("@PORT@", &port.to_string())
            .replace(
                "@SCRIPT@",
                &fixtures().join("chassis_control.sh").display().to_string(),
            )
            .replace("@STATE@", &dir.display().to_string());
        std::fs::write(dir.join("lan.conf"), conf)?;
        let stderr = std::fs::File::create(dir.join("stderr"))?;
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(fixtures().join("bmc.emu"))
            .arg("-s")
            .arg(&dir)
            .arg("-n")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("spawning ipmi_sim")?;
        Ok(SimBmc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        })
    }

    /// Probes `which` BMCs until each answers; returns those whose process
    /// exited instead. Fails if any is still silent at [`READY_TIMEOUT`].
    fn wait_ready(&mut self, which: &[usize]) -> anyhow::Result<Vec<usize>> {
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        probe.set_read_timeout(Some(Duration::from_millis(50)))?;
        let pkt = probe_packet();
        let mut waiting: HashSet<usize> = which.iter().copied().collect();
        let mut exited = Vec::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = [0u8; 512];
        while !waiting.is_empty() {
            for &i in &waiting {
                let _ = probe.send_to(&pkt, self.bmcs[i].addr);
            }
            let until = Instant::now() + Duration::from_millis(200);
            while Instant::now() < until {
                if let Ok((_, from)) = probe.recv_from(&mut buf) {
                    waiting.retain(|&i| self.bmcs[i].addr != from);
                }
            }
            let mut dead = Vec::new();
            for &i in &waiting {
                if self.bmcs[i].child.try_wait()?.is_some() {
                    dead.push(i);
                }
            }
            for i in dead {
                waiting.remove(&i);
                exited.push(i);
            }
            if Instant::now() > deadline && !waiting.is_empty() {
                let i = *waiting.iter().next().unwrap_or(&0);
                bail!(
                    "{} ipmi_sim BMCs silent after {READY_TIMEOUT:?} (e.g. {}: {})",
                    waiting.len(),
                    self.bmcs[i].addr,
                    self.stderr(i)
                );
            }
        }
        Ok(exited)
    }

    fn stderr(&self, i: usize) -> String {
        std::fs::read_to_string(self.bmcs[i].dir.join("stderr")).unwrap_or_default()
    }

    /// The first BMC's address.
    pub fn addr(&self) -> SocketAddr {
        self.bmcs[0].addr
    }

    /// Every BMC's address, in start order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.bmcs.iter().map(|b| b.addr).collect()
    }

    /// How many BMCs run.
    pub fn len(&self) -> usize {
        self.bmcs.len()
    }

    /// Whether there are no BMCs (never, after a successful start).
    pub fn is_empty(&self) -> bool {
        self.bmcs.is_empty()
    }

    /// Flips the first BMC's power without IPMI (someone at the button).
    pub fn set_power_behind_back(&self, on: bool) {
        self.set_power_behind_back_of(0, on)
    }

    /// Flips BMC `i`'s power without IPMI.
    pub fn set_power_behind_back_of(&self, i: usize, on: bool) {
        let dir = &self.bmcs[i].dir;
        let tmp = dir.join("power.tmp.helper");
        std::fs::write(&tmp, if on { "1\n" } else { "0\n" }).expect("writing the power file");
        std::fs::rename(&tmp, dir.join("power")).expect("replacing the power file");
    }

    /// BMC `i`'s power as its state file says (what the "hardware" is).
    pub fn power_of(&self, i: usize) -> bool {
        std::fs::read_to_string(self.bmcs[i].dir.join("power")).is_ok_and(|s| s.trim() == "1")
    }

    /// How many hard resets BMC `i` was asked for.
    pub fn resets_of(&self, i: usize) -> u32 {
        std::fs::read_to_string(self.bmcs[i].dir.join("resets"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The chassis_control calls BMC `i` made, one per line ("get power",
    /// "set power 1", ...).
    pub fn log_of(&self, i: usize) -> String {
        std::fs::read_to_string(self.bmcs[i].dir.join("log")).unwrap_or_default()
    }

    /// Kills BMC `i` and starts it again on the same port with the same
    /// power state: every session it had is gone.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let port = self.bmcs[i].addr.port();
        let _ = self.bmcs[i].child.kill();
        let _ = self.bmcs[i].child.wait();
        self.bmcs[i] = self.spawn(i, port)?;
        if !self.wait_ready(&[i])?.is_empty() {
            bail!("ipmi_sim BMC {i} did not restart: {}", self.stderr(i));
        }
        Ok(())
    }

    /// Kills BMC `i` (it stops answering; its port closes).
    pub fn kill(&mut self, i: usize) {
        let _ = self.bmcs[i].child.kill();
        let _ = self.bmcs[i].child.wait();
    }

    /// The process IDs, for resource measurements.
    pub fn pids(&self) -> Vec<u32> {
        self.bmcs.iter().map(|b| b.child.id()).collect()
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        for b in &mut self.bmcs {
            let _ = b.child.kill();
        }
        for b in &mut self.bmcs {
            let _ = b.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` distinct free UDP ports of 127.0.0.1 outside `avoid` (the probe
/// sockets stay bound until all are chosen, so no port comes twice).
fn free_ports(n: usize, avoid: &HashSet<u16>) -> anyhow::Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    while held.len() < n {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        if !avoid.contains(&s.local_addr()?.port()) {
            held.push(s);
        }
    }
    held.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

fn which_ipmi_sim() -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("ipmi_sim").is_file()))
        .unwrap_or(false);
    if !found {
        bail!("ipmi_sim not found in PATH: install it with `apt-get install -y openipmi ipmitool`");
    }
    Ok(())
}
