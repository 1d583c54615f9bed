//! `loadtest flood`: a real-UDP cluster converges while its root is flooded
//! with garbage datagrams.
//!
//! The cluster runs as in `run --net udp` (the root alone in worker 0, see
//! [`crate::udp_mode`]). After the initial sync, a flooder thread in this
//! process sends `--flood` garbage datagrams to the root's socket at
//! `--rate` per second from `--sources` loopback addresses, mixing every kind
//! of garbage ([`Garbage`]): random bytes, truncated, oversized, bad version,
//! unknown key id, forged headers naming real senders, unknown sender ids.
//! Shortly into the flood the root changes every Cfg and the legitimate
//! convergence is timed, as in the `converge` scenario.
//!
//! Reported: the root process's resident memory before the flood, at its
//! peak and after it; legitimate converge p50/p99 during the flood; garbage
//! sent by kind; the root's drops by reason; and datagrams the kernel
//! dropped because the root's socket buffer was full.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use overlay::envelope::{HEADER_BYTES, MAGIC, TAG_BYTES, VERSION};
use overlay::rng::Rng;
use serde::Serialize;
use topo::duration;

use crate::progress::Progress;
use crate::report::Percentiles;
use crate::setup::ClusterArgs;
use crate::udp_mode;
use crate::worker::{Msg, WorkerReport};

/// Arguments of `loadtest flood`.
#[derive(clap::Args, Clone, Debug)]
pub struct FloodArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Garbage datagrams sent at the root.
    #[arg(long, default_value_t = 1_000_000)]
    flood: u64,
    /// Garbage datagrams per second.
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    /// Loopback source addresses the garbage comes from.
    #[arg(long, default_value_t = 16)]
    sources: usize,
    /// Give up on a phase after this long.
    #[arg(long, default_value = "60s", value_parser = duration::parse_flag)]
    timeout: Duration,
    /// UDP worker processes (default as in `run`).
    #[arg(long)]
    workers: Option<usize>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The kinds of garbage, in report order.
#[derive(Clone, Copy, Debug)]
enum Garbage {
    /// Random bytes of random length.
    Random,
    /// The magic and a few bytes.
    Truncated,
    /// Longer than a datagram may be.
    Oversized,
    /// An envelope version nobody speaks.
    BadVersion,
    /// A key id the ring does not hold.
    UnknownKey,
    /// A well-formed header naming a real sender, random body.
    Forged,
    /// A well-formed header naming a sender outside the cluster.
    UnknownSender,
}

const KINDS: [Garbage; 7] = [
    Garbage::Random,
    Garbage::Truncated,
    Garbage::Oversized,
    Garbage::BadVersion,
    Garbage::UnknownKey,
    Garbage::Forged,
    Garbage::UnknownSender,
];

/// Distinct datagrams prepared per kind (the flood cycles through them).
const POOL_PER_KIND: usize = 64;

impl Garbage {
    fn label(self) -> &'static str {
        match self {
            Garbage::Random => "random",
            Garbage::Truncated => "truncated",
            Garbage::Oversized => "oversized",
            Garbage::BadVersion => "bad_version",
            Garbage::UnknownKey => "unknown_key",
            Garbage::Forged => "forged",
            Garbage::UnknownSender => "unknown_sender",
        }
    }

    /// One datagram of this kind addressed to the root (id 0).
    fn make(self, r: &mut Rng, instances: u32) -> Vec<u8> {
        let header = |key: u8, version: u8, sender: u32, r: &mut Rng| {
            let mut h = Vec::with_capacity(HEADER_BYTES);
            h.extend_from_slice(&MAGIC);
            h.extend_from_slice(&[version, key]);
            h.extend_from_slice(&sender.to_be_bytes());
            h.extend_from_slice(&0u32.to_be_bytes());
            // Sender boot (never zero), receiver boot, sequence.
            h.extend_from_slice(&(r.next_u64() | 1).to_be_bytes());
            h.extend_from_slice(&r.next_u64().to_be_bytes());
            h.extend_from_slice(&r.next_u64().to_be_bytes());
            debug_assert_eq!(h.len(), HEADER_BYTES);
            h
        };
        let body = 64 + (r.below(1200) as usize);
        let mut d = match self {
            Garbage::Random => {
                let n = 1 + r.below(1400) as usize;
                random_bytes(r, n)
            }
            Garbage::Truncated => {
                let mut d = MAGIC.to_vec();
                let n = r.below((HEADER_BYTES + TAG_BYTES - 2) as u64) as usize;
                d.extend(random_bytes(r, n));
                d
            }
            Garbage::Oversized => {
                let mut d = header(1, VERSION, 1, r);
                d.resize(1401 + r.below(60) as usize, 0xab);
                d
            }
            Garbage::BadVersion => header(1, VERSION + 1 + r.below(200) as u8, 1, r),
            Garbage::UnknownKey => header(200, VERSION, 1, r),
            Garbage::Forged => header(1, VERSION, 1 + r.below(instances as u64 - 1) as u32, r),
            Garbage::UnknownSender => header(1, VERSION, instances + r.below(1 << 20) as u32, r),
        };
        let with_body = matches!(
            self,
            Garbage::BadVersion | Garbage::UnknownKey | Garbage::Forged | Garbage::UnknownSender
        );
        if with_body {
            d.extend(random_bytes(r, body));
        }
        d
    }
}

fn random_bytes(r: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| r.next_u64() as u8).collect()
}

/// What the flood measured (the JSON report).
#[derive(Debug, Default, Serialize)]
pub struct FloodReport {
    /// Leaf nodes.
    pub nodes: usize,
    /// Leaves whose matching Dsc the root held by the end.
    pub reached: usize,
    /// Initial sync (before the flood), seconds.
    pub initial_sync_s: f64,
    /// Cfg change until the root holds the matching Dsc, during the flood.
    pub converge_p50_s: f64,
    /// Same, 99th percentile.
    pub converge_p99_s: f64,
    /// Same, slowest node.
    pub converge_max_s: f64,
    /// Garbage datagrams sent.
    pub flood_sent: u64,
    /// Sends that failed (the flooder's own buffer was full).
    pub flood_send_errors: u64,
    /// Seconds the flood lasted.
    pub flood_s: f64,
    /// Garbage sent by kind.
    pub flood_sent_by_kind: Vec<(String, u64)>,
    /// The root's drops by reason (everything it read and rejected).
    pub root_drops_by_reason: Vec<(String, u64)>,
    /// Datagrams the kernel dropped at the root's socket (buffer full).
    pub root_kernel_drops: u64,
    /// Root process resident memory before the flood, MiB.
    pub root_rss_before_mb: f64,
    /// Its peak during the flood (sampled every 50 ms), MiB.
    pub root_rss_peak_mb: f64,
    /// After the flood, MiB.
    pub root_rss_after_mb: f64,
    /// Wall-clock duration of the run.
    pub wall_s: f64,
}

impl FloodReport {
    fn table(&self) -> String {
        let by = |v: &[(String, u64)]| {
            v.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        [
            ("reached", format!("{} of {}", self.reached, self.nodes)),
            ("initial sync", format!("{:.3} s", self.initial_sync_s)),
            (
                "converge during flood p50 / p99 / max",
                format!(
                    "{:.3} s / {:.3} s / {:.3} s",
                    self.converge_p50_s, self.converge_p99_s, self.converge_max_s
                ),
            ),
            (
                "flood sent / send errors / seconds",
                format!(
                    "{} / {} / {:.2} s",
                    self.flood_sent, self.flood_send_errors, self.flood_s
                ),
            ),
            ("flood by kind", by(&self.flood_sent_by_kind)),
            ("root drops by reason", by(&self.root_drops_by_reason)),
            ("root kernel drops", self.root_kernel_drops.to_string()),
            (
                "root RSS before / peak / after",
                format!(
                    "{:.1} / {:.1} / {:.1} MiB",
                    self.root_rss_before_mb, self.root_rss_peak_mb, self.root_rss_after_mb
                ),
            ),
            ("wall", format!("{:.1} s", self.wall_s)),
        ]
        .iter()
        .map(|(k, v)| format!("  {k:<40} {v}\n"))
        .collect()
    }
}

/// Resident memory of process `pid` (VmRSS), MiB.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Kernel drops of the IPv4 UDP socket bound at `addr` (`/proc/net/udp`).
fn kernel_drops(addr: SocketAddr) -> u64 {
    let SocketAddr::V4(a) = addr else { return 0 };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    );
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// Counts the flooder keeps.
#[derive(Default)]
struct Sent {
    by_kind: [u64; KINDS.len()],
    errors: u64,
    seconds: f64,
}

/// Sends `total` garbage datagrams to `to` at `rate` per second.
fn flood(to: SocketAddr, a: &FloodArgs, instances: u32) -> Result<Sent> {
    let mut r = Rng::new(a.cluster.seed ^ 0x0066_6c6f_6f64);
    let pool: Vec<Vec<Vec<u8>>> = KINDS
        .iter()
        .map(|k| {
            (0..POOL_PER_KIND)
                .map(|_| k.make(&mut r, instances))
                .collect()
        })
        .collect();
    let sockets = (0..a.sources.max(1))
        .map(|i| UdpSocket::bind(("127.254.0.".to_string() + &(1 + i % 250).to_string(), 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding the flood's sources")?;
    let mut sent = Sent::default();
    let start = Instant::now();
    let per_ms = (a.rate / 1000).max(1);
    let mut n = 0u64;
    while n < a.flood {
        // Paced in 1 ms slices: `per_ms` datagrams, then wait for the clock.
        let due = start + Duration::from_micros(n * 1000 / per_ms);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for _ in 0..per_ms.min(a.flood - n) {
            let k = r.below(KINDS.len() as u64) as usize;
            let d = &pool[k][r.below(POOL_PER_KIND as u64) as usize];
            let s = &sockets[(n as usize) % sockets.len()];
            match s.send_to(d, to) {
                Ok(_) => sent.by_kind[k] += 1,
                Err(_) => sent.errors += 1,
            }
            n += 1;
        }
    }
    sent.seconds = start.elapsed().as_secs_f64();
    Ok(sent)
}

/// Samples the RSS of `pid` every 50 ms until `stop`; returns the peak.
fn sample_peak(pid: u32, stop: &AtomicBool, peak_kb: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        let kb = (rss_mb(pid) * 1024.0) as u64;
        peak_kb.fetch_max(kb, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The reports of every worker, by worker index.
fn reports(f: &mut udp_mode::Fleet, generation: u64) -> Result<Vec<Option<WorkerReport>>> {
    let n = f.len();
    f.broadcast(&format!("report {generation}"))?;
    let mut got: Vec<Option<WorkerReport>> = (0..n).map(|_| None).collect();
    let mut left = n;
    f.wait(Duration::from_secs(60), |w, m| {
        if let Msg::Report(r) = m
            && got[w].is_none()
        {
            got[w] = Some(r);
            left -= 1;
        }
        (left == 0).then_some(())
    })?;
    Ok(got)
}

/// Runs the flood scenario.
pub fn run(a: &FloodArgs) -> Result<()> {
    let wall = Instant::now();
    let c = crate::setup::cluster(&a.cluster)?;
    if c.transport != crate::setup::Wire::Udp {
        bail!("loadtest flood runs with --transport udp");
    }
    if a.rate == 0 {
        bail!("--rate must be at least 1");
    }
    let leaves = c.leaves();
    let root_addr = c.flat.instances[0].addr;
    let p = Progress::new(a.quiet, None)?;
    udp_mode::raise_socket_buffer_limits();
    let ranges = udp_mode::ranges(c.flat.instances.len(), a.workers);
    eprintln!(
        "flood: {leaves} nodes on {} workers, {} garbage datagrams at {}/s at the root ({root_addr})",
        ranges.len(),
        a.flood,
        a.rate
    );
    let mut f = udp_mode::spawn(&a.cluster, &ranges)?;
    let n = f.len();
    let mut ready = 0;
    f.wait(Duration::from_secs(300), |_, m| {
        ready += matches!(m, Msg::Ready) as usize;
        (ready == n).then_some(())
    })?;
    f.broadcast("start")?;
    let started = Instant::now();
    p.phase("initial sync", leaves);
    udp_mode::rollout(&mut f, 1)?;
    if udp_mode::wait_reached(&f, 1, leaves, a.timeout, &p)? < leaves {
        bail!("initial sync did not finish within {:?}", a.timeout);
    }
    let initial_sync = started.elapsed();
    std::thread::sleep(c.root_hello * 2);
    let pid = f.pid(0);
    let rss_before = rss_mb(pid);
    let drops_before = kernel_drops(root_addr);

    let stop = AtomicBool::new(false);
    let peak_kb = AtomicU64::new((rss_before * 1024.0) as u64);
    let instances = c.flat.instances.len() as u32;
    let (sent, t0, reached) = std::thread::scope(|s| -> Result<_> {
        s.spawn(|| sample_peak(pid, &stop, &peak_kb));
        let flooder = s.spawn(|| flood(root_addr, a, instances));
        // Let the flood build up, then change every Cfg under it.
        std::thread::sleep(Duration::from_millis(500));
        p.phase("converge under flood", leaves);
        let t0 = udp_mode::rollout(&mut f, 2)?;
        let reached = udp_mode::wait_reached(&f, 2, leaves, a.timeout, &p)?;
        let sent = flooder.join().expect("the flooder does not panic");
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        Ok((sent?, t0, reached))
    })?;
    p.finish();
    let rss_after = rss_mb(pid);
    let reps = reports(&mut f, 2)?;
    drop(f);
    let root = reps[0].as_ref().context("the root's worker reported")?;
    let since = |t: &u64| Duration::from_nanos(t.saturating_sub(t0));
    let conv = Percentiles::new(root.converged_ns.iter().map(since));
    let report = FloodReport {
        nodes: leaves,
        reached: root.converged_ns.len().max(reached),
        initial_sync_s: initial_sync.as_secs_f64(),
        converge_p50_s: conv.at(0.5),
        converge_p99_s: conv.at(0.99),
        converge_max_s: conv.max(),
        flood_sent: sent.by_kind.iter().sum(),
        flood_send_errors: sent.errors,
        flood_s: sent.seconds,
        flood_sent_by_kind: KINDS
            .iter()
            .zip(sent.by_kind)
            .map(|(k, n)| (k.label().to_string(), n))
            .collect(),
        root_drops_by_reason: root.drops.clone(),
        root_kernel_drops: kernel_drops(root_addr).saturating_sub(drops_before),
        root_rss_before_mb: rss_before,
        root_rss_peak_mb: peak_kb.load(Ordering::Relaxed) as f64 / 1024.0,
        root_rss_after_mb: rss_after,
        wall_s: wall.elapsed().as_secs_f64(),
    };
    println!("{}", report.table());
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!("report written to {}", path.display());
    }
    if report.reached < leaves {
        bail!(
            "only {} of {leaves} nodes converged under the flood",
            report.reached
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay::envelope::{ClusterKey, KeyRing, Opener};

    #[test]
    fn every_kind_of_garbage_is_rejected_by_the_envelope() {
        let keys = KeyRing::single(1, &ClusterKey::from_seed(1));
        let mut r = Rng::new(5);
        let mut o = Opener::new(0, overlay::envelope::Boot::from_random(1)).with_senders(100);
        for k in KINDS {
            for _ in 0..50 {
                let d = k.make(&mut r, 100);
                assert!(o.open(&keys, &d).is_err(), "{k:?} was accepted");
            }
        }
        assert_eq!(o.drops.total(), 50 * KINDS.len() as u64);
    }

    #[test]
    fn kernel_drop_lookup_reads_a_bound_socket() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(kernel_drops(s.local_addr().unwrap()), 0);
    }
}
