//! `--net udp`: every instance on its own real UDP socket on loopback,
//! spread over worker processes (a process may hold at most 20,000 files).
//!
//! The orchestrator (this process) starts the workers, drives the same
//! phases as the simulation (initial sync, steady state, converge) through
//! the root's worker, and computes the report from the workers'
//! `CLOCK_MONOTONIC` timestamps, which are comparable across processes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use topo::duration;

use crate::progress::Progress;
use crate::report::{Percentiles, Report, peak_rss_mb};
use crate::setup::Wire;
use crate::setup::{Cluster, ClusterArgs};
use crate::sim_mode::STEADY_HELLOS;
use crate::worker::{Msg, WorkerReport};

/// Most instances one worker process holds (one socket each).
pub const INSTANCES_PER_WORKER_MAX: usize = 18_000;
/// Socket buffer ceiling the run asks the kernel to allow, bytes.
const SOCKET_BUFFER_MAX_BYTES: u64 = 32 << 20;

/// How long a worker whose output ended may take to exit before it is
/// reported as "closed its output" instead of with its exit status.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long the workers get to quit on their own before they are killed.
const QUIT_GRACE: Duration = Duration::from_secs(5);

struct Worker {
    /// Shared with the thread reading the worker's output, which reaps it
    /// when the output ends.
    child: Arc<Mutex<Child>>,
    stdin: ChildStdin,
}

/// What a worker's output thread hands the orchestrator.
enum Event {
    /// A line: a message, or an error if it did not parse (boxed: a
    /// message is large and `Gone` small).
    Line(Box<Result<Msg>>),
    /// The output ended: the worker exited (its status, if it had one
    /// within [`EXIT_GRACE`]) or closed its standard output.
    Gone(Option<std::process::ExitStatus>),
}

/// `Fleet::wait` ran out of time: the workers live but said nothing that
/// was waited for.
#[derive(Debug)]
pub(crate) struct WaitTimeout;

impl std::fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out waiting for the workers")
    }
}

impl std::error::Error for WaitTimeout {}

/// The worker processes of a run, their input pipes and their output.
///
/// A worker that exits (or closes its output) at any time is an error of
/// the next [`Fleet::wait`], naming it and its exit status (its own error
/// is on standard error, which it shares); dropping the fleet then stops
/// the others.
pub(crate) struct Fleet {
    workers: Vec<Worker>,
    /// `(lo, hi)`: the instances of each worker.
    ranges: Vec<(usize, usize)>,
    rx: Receiver<(usize, Event)>,
}

impl Fleet {
    /// The process id of worker `w` (the root's is worker 0).
    pub(crate) fn pid(&self, w: usize) -> u32 {
        lock(&self.workers[w].child).id()
    }

    /// Workers started.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    fn send(&mut self, w: usize, line: &str) -> Result<()> {
        writeln!(self.workers[w].stdin, "{line}").with_context(|| format!("worker {w} is gone"))
    }

    pub(crate) fn broadcast(&mut self, line: &str) -> Result<()> {
        (0..self.workers.len()).try_for_each(|w| self.send(w, line))
    }

    /// Waits for the next message matching `pick` (others are dropped).
    /// Fails with [`WaitTimeout`] after `limit`, and at once when a worker
    /// exits or sends a line that is not a message.
    pub(crate) fn wait<T>(
        &self,
        limit: Duration,
        mut pick: impl FnMut(usize, Msg) -> Option<T>,
    ) -> Result<T> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let (w, ev) = match self.rx.recv_timeout(left) {
                Ok(x) => x,
                Err(RecvTimeoutError::Timeout) => return Err(WaitTimeout.into()),
                Err(RecvTimeoutError::Disconnected) => bail!("every worker's output has ended"),
            };
            let m = match ev {
                Event::Line(m) => (*m).with_context(|| format!("worker {w}"))?,
                Event::Gone(status) => bail!(self.gone(w, status)),
            };
            if let Some(t) = pick(w, m) {
                return Ok(t);
            }
        }
    }

    /// Keeps the workers up for `d` (`--hold`); fails as soon as one exits.
    pub(crate) fn hold(&self, d: Duration) -> Result<()> {
        match self.wait(d, |_, _| None::<()>) {
            Err(e) if e.is::<WaitTimeout>() => Ok(()),
            other => other,
        }
    }

    /// The message for worker `w` gone with `status`.
    fn gone(&self, w: usize, status: Option<std::process::ExitStatus>) -> String {
        let (lo, hi) = self.ranges[w];
        let how = match status {
            Some(s) => format!("exited ({s})"),
            None => "closed its output".into(),
        };
        format!(
            "worker {w} (pid {}, instances {lo}..{hi}) {how} before the run ended; \
             its error, if it printed one, is above; stopping the other workers",
            self.pid(w)
        )
    }
}

/// The child behind `m` (a panicked holder leaves it usable).
fn lock(m: &Mutex<Child>) -> std::sync::MutexGuard<'_, Child> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = writeln!(w.stdin, "quit");
        }
        // One deadline for all: a fleet of many workers stops in
        // QUIT_GRACE, not QUIT_GRACE each.
        let deadline = Instant::now() + QUIT_GRACE;
        for w in &self.workers {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = lock(&w.child).try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut c = lock(&w.child);
            // A reaped child is not signalled again (std keeps its status).
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads worker `i`'s output into `tx` until it ends, then reaps the
/// worker (for up to [`EXIT_GRACE`]) and sends its status.
fn read_output(
    i: usize,
    stdout: std::process::ChildStdout,
    child: Arc<Mutex<Child>>,
    tx: Sender<(usize, Event)>,
) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let msg = serde_json::from_str::<Msg>(&line).with_context(|| format!("bad line `{line}`"));
        if tx.send((i, Event::Line(Box::new(msg)))).is_err() {
            return;
        }
    }
    let end = Instant::now() + EXIT_GRACE;
    let status = loop {
        match lock(&child).try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < end => {}
            _ => break None,
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = tx.send((i, Event::Gone(status)));
}

/// Lets sockets have large buffers (best effort: needs root).
pub(crate) fn raise_socket_buffer_limits() {
    for f in ["/proc/sys/net/core/rmem_max", "/proc/sys/net/core/wmem_max"] {
        let cur: u64 = std::fs::read_to_string(f)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if cur < SOCKET_BUFFER_MAX_BYTES
            && std::fs::write(f, SOCKET_BUFFER_MAX_BYTES.to_string()).is_err()
        {
            eprintln!(
                "note: could not raise {f} ({cur} bytes); bursts may overflow socket buffers"
            );
        }
    }
}

fn worker_args(a: &ClusterArgs) -> Vec<String> {
    let mut v = vec![
        "--nodes".into(),
        a.nodes.to_string(),
        "--racks".into(),
        a.racks.to_string(),
        "--levels".into(),
        a.levels.to_string(),
        "--seed".into(),
        a.seed.to_string(),
        "--loss".into(),
        a.loss.to_string(),
        "--transport".into(),
        a.transport.clone(),
    ];
    if let Some(s) = &a.strategy {
        v.extend(["--strategy".into(), s.clone()]);
    }
    if let Some(p) = a.port {
        v.extend(["--port".into(), p.to_string()]);
    }
    if let Some(d) = &a.ca_dir {
        v.extend(["--ca-dir".into(), d.display().to_string()]);
    }
    if let Some(t) = &a.topology {
        v.extend(["--topology".into(), t.display().to_string()]);
    }
    if let Some(api) = a.api {
        v.extend(["--api".into(), api.to_string()]);
    }
    if let Some(h) = a.hello {
        v.extend(["--hello".into(), duration::format(h)]);
    }
    if let Some(d) = a.dead {
        v.extend(["--dead".into(), duration::format(d)]);
    }
    if a.engine {
        v.extend([
            "--engine".into(),
            "--engine-fail-rate".into(),
            a.engine_fail_rate.to_string(),
            "--engine-hang-rate".into(),
            a.engine_hang_rate.to_string(),
        ]);
    }
    v
}

/// A folder that is removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes the run's cluster CA and hands its folder to the workers.
fn write_ca(a: &mut ClusterArgs) -> Result<TempDir> {
    let dir = std::env::temp_dir().join(format!("loadtest-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = overlay::quic::Ca::generate("loadtest")?;
    let (cert, key) = ca.to_pem();
    std::fs::write(dir.join("ca.pem"), cert)?;
    std::fs::write(dir.join("ca.key"), key)?;
    a.ca_dir = Some(dir.clone());
    Ok(TempDir(dir))
}

/// Instance ranges: the root alone, then chunks of the rest; by default
/// one chunk per [`INSTANCES_PER_WORKER_MAX`] and at least one per CPU
/// core (with one worker for 10,000 instances the run used one of two
/// cores: converge p99 0.20 s for the tree and 0.48 s for the hybrid,
/// against 0.13 s and 0.21 s with two; docs/performance.md, session 10).
pub(crate) fn ranges(instances: usize, workers: Option<usize>) -> Vec<(usize, usize)> {
    let rest = instances - 1;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = workers
        .map(|w| w.saturating_sub(1).max(1))
        .unwrap_or_else(|| rest.div_ceil(INSTANCES_PER_WORKER_MAX).max(cores));
    let chunk = rest.div_ceil(n).max(1);
    let mut v = vec![(0, 1)];
    let mut lo = 1;
    while lo < instances {
        let hi = (lo + chunk).min(instances);
        v.push((lo, hi));
        lo = hi;
    }
    v
}

/// glibc's settings for the worker processes (unless the user's
/// environment sets `GLIBC_TUNABLES`): the heap on transparent huge pages.
/// A worker touches the state of thousands of instances per hello
/// interval, each a few cache lines in its own 4 KiB pages; with 2 MiB
/// pages far fewer TLB misses: the single-process 100,000-node simulation
/// used 17-20 % less user CPU, and a 100,000-node UDP roll-out's converge
/// p99 was lower in 5 of 6 pairs (median ratio 0.88; docs/performance.md,
/// session 8). The kernel's THP mode `madvise` (the default) is enough;
/// with `never` it does nothing.
pub const WORKER_GLIBC_TUNABLES: &str = "glibc.malloc.hugetlb=1";

/// Starts one worker process per range. If one cannot start, the fleet
/// started so far is dropped (stopped) with the error.
pub(crate) fn spawn(a: &ClusterArgs, ranges: &[(usize, usize)]) -> Result<Fleet> {
    let exe = std::env::current_exe()?;
    let (tx, rx) = channel();
    let mut fleet = Fleet {
        workers: Vec::with_capacity(ranges.len()),
        ranges: ranges.to_vec(),
        rx,
    };
    for (i, &(lo, hi)) in ranges.iter().enumerate() {
        if hi - lo > INSTANCES_PER_WORKER_MAX + 1 {
            bail!(
                "worker {i} would hold {} instances (at most {INSTANCES_PER_WORKER_MAX}): use more --workers",
                hi - lo
            );
        }
        let mut cmd = Command::new(&exe);
        if std::env::var_os("GLIBC_TUNABLES").is_none() {
            cmd.env("GLIBC_TUNABLES", WORKER_GLIBC_TUNABLES);
        }
        let mut child = cmd
            .arg("worker")
            .args(worker_args(a))
            .args(["--lo", &lo.to_string(), "--hi", &hi.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker")?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let child = Arc::new(Mutex::new(child));
        let (tx, reaped) = (tx.clone(), child.clone());
        std::thread::spawn(move || read_output(i, stdout, reaped, tx));
        fleet.workers.push(Worker { child, stdin });
    }
    Ok(fleet)
}

pub(crate) fn wait_reached(
    f: &Fleet,
    generation: u64,
    leaves: usize,
    limit: Duration,
    p: &Progress,
) -> Result<usize> {
    let end = Instant::now() + limit;
    let mut best = 0;
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        let r = f.wait(left, |_, m| match m {
            Msg::Progress {
                generation: g,
                reached,
            } if g == generation => Some(reached),
            _ => None,
        });
        match r {
            Ok(n) => {
                best = n;
                p.set(n, 0);
                if n == leaves {
                    break;
                }
            }
            Err(e) if e.is::<WaitTimeout>() => break,
            Err(e) => return Err(e),
        }
    }
    Ok(best)
}

fn root_rx(f: &mut Fleet) -> Result<(u64, u64)> {
    f.send(0, "rx")?;
    f.wait(Duration::from_secs(10), |_, m| match m {
        Msg::Rx { count, at_ns } => Some((count, at_ns)),
        _ => None,
    })
}

/// Prints what the root and the instances around a few missing leaves
/// hold (a stalled run's evidence).
fn diagnose(f: &mut Fleet, c: &Cluster) {
    let mut missing = Vec::new();
    if f.send(0, "missing").is_err() {
        return;
    }
    let _ = f.wait(Duration::from_secs(10), |_, m| match m {
        Msg::Note(n) if n == "end" => Some(()),
        Msg::Note(n) => {
            eprintln!("{n}");
            if let Some(id) = n.strip_prefix("missing ").and_then(|r| r.split(';').next()) {
                missing.push(id.parse::<u32>().unwrap_or(0));
            }
            None
        }
        _ => None,
    });
    for id in missing.into_iter().take(3) {
        let parent = c.flat.instances[id as usize].parent.unwrap_or(0);
        for who in [id, parent] {
            if f.broadcast(&format!("inspect {who} {id}")).is_ok() {
                let _ = f.wait(Duration::from_secs(5), |_, m| match m {
                    Msg::Note(n) => {
                        eprintln!("{n}");
                        Some(())
                    }
                    _ => None,
                });
            }
        }
    }
}

/// Bytes every worker's instances have sent so far, summed.
fn fleet_tx(f: &mut Fleet) -> Result<u64> {
    f.broadcast("tx")?;
    let n = f.workers.len();
    let (mut got, mut sum) = (0, 0);
    f.wait(Duration::from_secs(10), |_, m| {
        if let Msg::Tx { bytes } = m {
            got += 1;
            sum += bytes;
        }
        (got == n).then_some(sum)
    })
}

pub(crate) fn rollout(f: &mut Fleet, generation: u64) -> Result<u64> {
    f.send(0, &format!("rollout {generation}"))?;
    f.wait(Duration::from_secs(30), |_, m| match m {
        Msg::RolledOut { t0_ns, .. } => Some(t0_ns),
        _ => None,
    })
}

/// Sends `cmd` to every worker and gathers their reports.
pub(crate) fn collect(f: &mut Fleet, n: usize, cmd: &str) -> Result<Vec<WorkerReport>> {
    f.broadcast(cmd)?;
    let mut reports: Vec<WorkerReport> = Vec::new();
    f.wait(Duration::from_secs(60), |_, m| {
        if let Msg::Report(r) = m {
            reports.push(r);
        }
        (reports.len() == n).then_some(())
    })?;
    Ok(reports)
}

/// Fills in the failover figures (see [`crate::failover`]) from the
/// workers' reports; `base` is returned as is without a kill.
fn failover_fields(
    c: &Cluster,
    reports: &[WorkerReport],
    victims: Option<&[u32]>,
    t_kill: Option<u64>,
    lost3: usize,
    base: Report,
) -> Report {
    let (Some(victims), Some(t_kill)) = (victims, t_kill) else {
        return base;
    };
    let fresh: std::collections::HashMap<u32, u64> = reports
        .iter()
        .flat_map(|r| r.fresh_ns.iter().copied())
        .collect();
    let adopted: std::collections::HashMap<u32, u64> = reports
        .iter()
        .flat_map(|r| r.adopted_ns.iter().copied())
        .collect();
    let acting: std::collections::HashMap<u32, u32> = reports
        .iter()
        .flat_map(|r| r.acting.iter().copied())
        .collect();
    let since = |t: u64| Duration::from_nanos(t.saturating_sub(t_kill));
    let groups: Vec<Vec<u32>> = victims
        .iter()
        .map(|&v| {
            c.tree
                .children(v)
                .iter()
                .copied()
                .filter(|&m| c.is_leaf[m as usize])
                .collect()
        })
        .collect();
    let rehome = Percentiles::new(groups.iter().filter_map(|g| {
        g.iter()
            .map(|m| fresh.get(m).map(|&t| since(t)))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }));
    let detect = Percentiles::new(groups.iter().filter_map(|g| {
        g.iter()
            .filter_map(|m| adopted.get(m).map(|&t| since(t)))
            .min()
    }));
    let acting_max = groups
        .iter()
        .map(|g| {
            let mut a: Vec<u32> = g.iter().filter_map(|m| acting.get(m).copied()).collect();
            a.sort_unstable();
            a.dedup();
            a.len()
        })
        .max()
        .unwrap_or(0);
    let got: usize = reports.iter().map(|r| r.downs_ns.len()).sum();
    Report {
        scenario: "failover".into(),
        kill_subparents: Some(victims.len()),
        failover_detect_p99_s: Some(detect.at(0.99)),
        rehome_p99_s: Some(rehome.at(0.99)),
        lost_updates: Some((c.leaves() - got + lost3) as u64),
        acting_per_group_max: Some(acting_max),
        ..base
    }
}

/// Runs the `converge` scenario on real sockets.
pub fn run(
    a: &ClusterArgs,
    c: &Cluster,
    limit: Duration,
    workers: Option<usize>,
    p: &Progress,
    failover: Option<&crate::failover::Kill>,
    hold: bool,
) -> Result<(Report, Option<Fleet>)> {
    let wall = Instant::now();
    let leaves = c.leaves();
    raise_socket_buffer_limits();
    // `auto` binds two sockets per instance: half as many per worker.
    let workers = workers.or_else(|| {
        (c.transport == Wire::Auto)
            .then(|| 1 + (c.flat.instances.len() - 1).div_ceil(INSTANCES_PER_WORKER_MAX / 2))
    });
    let ranges = ranges(c.flat.instances.len(), workers);
    let mut a = a.clone();
    let _ca_dir = match c.transport {
        Wire::Quic | Wire::Auto => Some(write_ca(&mut a)?),
        Wire::Udp => None,
    };
    eprintln!("starting {} worker processes", ranges.len());
    let mut f = spawn(&a, &ranges)?;
    let n = f.workers.len();
    let mut ready = 0;
    f.wait(Duration::from_secs(300), |_, m| {
        ready += matches!(m, Msg::Ready) as usize;
        (ready == n).then_some(())
    })?;
    f.broadcast("start")?;
    let started = Instant::now();

    p.phase("initial sync", leaves);
    rollout(&mut f, 1)?;
    if wait_reached(&f, 1, leaves, limit, p)? < leaves {
        diagnose(&mut f, c);
        bail!("initial sync did not finish within {limit:?}");
    }
    let initial_sync = started.elapsed();

    p.phase("steady state", 0);
    std::thread::sleep(c.root_hello * crate::sim_mode::SETTLE_HELLOS);
    let (rx0, at0) = root_rx(&mut f)?;
    let tx0 = fleet_tx(&mut f)?;
    std::thread::sleep(c.root_hello * STEADY_HELLOS);
    let (rx1, at1) = root_rx(&mut f)?;
    let tx1 = fleet_tx(&mut f)?;
    let hellos = (at1 - at0) as f64 / c.root_hello.as_nanos() as f64;
    let per_hello_total = (rx1 - rx0) as f64 / hellos;
    let steady = crate::sim_mode::Steady {
        per_child: per_hello_total / c.tree.children(0).len().max(1) as f64,
        per_hello_total,
        bytes_per_node_per_s: (tx1 - tx0) as f64
            / c.flat.instances.len() as f64
            / ((at1 - at0) as f64 / 1e9),
        by_kind: Default::default(),
    };

    let victims = failover.map(|k| crate::failover::victims(c, k.subparents));
    let list = victims.as_ref().map(|v| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    });
    let t_kill = match &list {
        Some(list) => {
            p.phase("failover", leaves);
            f.send(0, "watch")?;
            let t = overlay::udp::monotonic_now().as_nanos() as u64;
            f.broadcast(&format!("kill {list}"))?;
            std::thread::sleep(c.node_hello / 2);
            Some(t)
        }
        None => {
            p.phase("converge", leaves);
            None
        }
    };
    let t0 = rollout(&mut f, 2)?;
    wait_reached(&f, 2, leaves, limit, p)?;
    // Let the last progress settle (and, after a kill, the groups agree).
    let settle = if t_kill.is_some() {
        c.node_hello * 3
    } else {
        Duration::from_millis(100)
    };
    std::thread::sleep(settle);
    p.finish();
    let reports = collect(
        &mut f,
        n,
        &match &list {
            Some(list) => format!("report 2 {list}"),
            None => "report 2".into(),
        },
    )?;
    let mut lost3 = 0;
    if let (Some(list), Some(k)) = (&list, failover)
        && k.restore
    {
        p.phase("restore", leaves);
        f.broadcast(&format!("restore {list}"))?;
        std::thread::sleep(c.node_hello * 3);
        rollout(&mut f, 3)?;
        wait_reached(&f, 3, leaves, limit, p)?;
        p.finish();
        let r3 = collect(&mut f, n, "report 3")?;
        lost3 = leaves - r3.iter().map(|r| r.downs_ns.len()).sum::<usize>();
    }
    let virtual_s = started.elapsed().as_secs_f64();
    // `--hold`: the workers (the root's API with them) outlive the report.
    let held = hold.then_some(f);

    let since = |t: &u64| Duration::from_nanos(t.saturating_sub(t0));
    let down = Percentiles::new(reports.iter().flat_map(|r| r.downs_ns.iter().map(since)));
    let conv = Percentiles::new(
        reports
            .iter()
            .flat_map(|r| r.converged_ns.iter().map(since)),
    );
    let reached = reports.iter().map(|r| r.converged_ns.len()).sum();
    let report = Report {
        reached,
        initial_sync_s: initial_sync.as_secs_f64(),
        root_rx_datagrams_per_hello: steady.per_child(),
        root_rx_datagrams_per_hello_total: steady.total(),
        steady_bytes_per_node_per_s: steady.bytes(),
        max_datagram_bytes: reports.iter().map(|r| r.tx_max_bytes).max().unwrap_or(0),
        datagrams_total: reports.iter().map(|r| r.tx_datagrams).sum(),
        bytes_total: reports.iter().map(|r| r.tx_bytes).sum(),
        datagrams_rejected: reports.iter().map(|r| r.rejected).sum(),
        wall_s: wall.elapsed().as_secs_f64(),
        virtual_s,
        peak_rss_mb: peak_rss_mb() + reports.iter().map(|r| r.peak_rss_mb).sum::<f64>(),
        workers: n,
        paths: (c.transport == Wire::Auto).then(|| {
            reports
                .iter()
                .fold(crate::worker::Paths::default(), |mut p, r| {
                    p.udp_tx += r.paths.udp_tx;
                    p.quic_tx += r.paths.quic_tx;
                    p.fallbacks += r.paths.fallbacks;
                    p.returns += r.paths.returns;
                    p
                })
        }),
        ..failover_fields(
            c,
            &reports,
            victims.as_deref(),
            t_kill,
            lost3,
            if a.loss_scenario {
                Report {
                    scenario: "loss".into(),
                    lost_updates: Some((c.leaves() - down.len()) as u64),
                    ..Report::converge(&a, c, "udp", &down, &conv)
                }
            } else {
                Report::converge(&a, c, "udp", &down, &conv)
            },
        )
    };
    Ok((report, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once_with_the_root_alone() {
        for (n, w) in [(2, None), (50_101, None), (1001, Some(3)), (100_201, None)] {
            let r = ranges(n, w);
            assert_eq!(r[0], (0, 1));
            assert_eq!(r.last().unwrap().1, n);
            for pair in r.windows(2) {
                assert_eq!(pair[0].1, pair[1].0);
            }
            assert!(
                r.iter()
                    .all(|(lo, hi)| hi - lo <= INSTANCES_PER_WORKER_MAX + 1)
            );
        }
    }
}
