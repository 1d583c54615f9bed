//! One UDP worker process: a range of instances, each on its own socket.
//!
//! Started by `loadtest run --net udp` with the same cluster arguments and
//! an instance range. It binds every socket, says `ready`, and on `start`
//! creates the cores on `CLOCK_MONOTONIC` (shared by all processes, so the
//! orchestrator can subtract timestamps from different workers). Commands
//! arrive as lines on stdin; replies are JSON lines on stdout.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use overlay::envelope::{ClusterKey, KeyRing};
use overlay::udp::{self, Buffers, Handle, Shared, monotonic_now};
use overlay::{dual, quic};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use topo::Role;

use crate::app::{LoadNode, Probing};
use crate::report::peak_rss_mb;
use crate::setup::{Cluster, ClusterArgs, Wire, cluster, quic_addr};

/// Arguments of a worker.
#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// First instance id of this worker.
    #[arg(long)]
    pub lo: u32,
    /// One past the last instance id.
    #[arg(long)]
    pub hi: u32,
}

/// A message from a worker to the orchestrator.
// One JSON line per message, a handful per run: the report's size is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Msg {
    /// Every socket is bound.
    Ready,
    /// Root worker: leaves whose matching Dsc the root holds.
    Progress {
        /// The generation tracked.
        generation: u64,
        /// Leaves reached.
        reached: usize,
    },
    /// Root worker: a generation was published at `t0_ns`.
    RolledOut {
        /// The generation.
        generation: u64,
        /// `CLOCK_MONOTONIC` at publication, nanoseconds.
        t0_ns: u64,
    },
    /// Root worker: datagrams the root has received so far.
    Rx {
        /// The count.
        count: u64,
        /// When it was read, nanoseconds.
        at_ns: u64,
    },
    /// Free text for a person diagnosing a run.
    Note(String),
    /// Bytes this worker's instances have sent so far.
    Tx {
        /// The sum over the worker's sockets.
        bytes: u64,
    },
    /// The worker's measurements.
    Report(WorkerReport),
}

/// `--transport auto`: what the dual driver did, summed over instances.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
pub struct Paths {
    /// Frames sent by UDP.
    pub udp_tx: u64,
    /// Frames sent by QUIC (pinned links and fallbacks).
    pub quic_tx: u64,
    /// Peers that fell back to QUIC.
    pub fallbacks: u64,
    /// Peers that returned to UDP.
    pub returns: u64,
}

/// What one worker measured.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct WorkerReport {
    /// For each leaf: when its Cfg of the asked generation arrived (ns).
    pub downs_ns: Vec<u64>,
    /// Root worker: when the root held each leaf's matching Dsc (ns).
    pub converged_ns: Vec<u64>,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// `--transport auto`: frames per path and path changes.
    pub paths: Paths,
    /// Largest datagram sent.
    pub tx_max_bytes: usize,
    /// Datagrams the envelope rejected.
    pub rejected: u64,
    /// Failed sends.
    pub tx_errors: u64,
    /// Peak resident memory, MiB.
    pub peak_rss_mb: f64,
    /// Failover: `(member, acting)` as each asked member believes.
    pub acting: Vec<(u32, u32)>,
    /// Failover, root worker: `(member, ns)` when the root first held a
    /// Dsc newer than at the kill.
    pub fresh_ns: Vec<(u32, u64)>,
    /// Failover, root worker: `(member, ns)` when the root adopted it.
    pub adopted_ns: Vec<(u32, u64)>,
    /// Dropped datagrams by reason (`DropReason::label`), summed over the
    /// worker's instances; reasons with no drop are left out.
    #[serde(default)]
    pub drops: Vec<(String, u64)>,
}

fn say(m: &Msg) {
    println!("{}", serde_json::to_string(m).expect("serializable"));
}

/// Raises the open-file soft limit to the hard limit.
fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is a valid rlimit; the calls only read and write it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn buffers(role: Role) -> Buffers {
    match role {
        Role::Root => Buffers {
            recv_bytes: 32 << 20,
            send_bytes: 8 << 20,
        },
        Role::SubParent => Buffers {
            recv_bytes: 8 << 20,
            send_bytes: 4 << 20,
        },
        Role::Leaf => Buffers {
            recv_bytes: 256 << 10,
            send_bytes: 256 << 10,
        },
    }
}

/// The path policy of instance `id` in `auto` mode: a link follows the
/// settings of its deeper end (a tier's settings govern the links to its
/// parents, and among its siblings), so it is pinned to QUIC when that
/// tier says `transport: quic`; UDP falls back after the instance's dead
/// interval and is probed once per hello.
fn policy(c: &Cluster, id: u32) -> dual::PathPolicy {
    let quic_tier = |i: &topo::Instance| i.sync.transport == topo::Transport::Quic;
    let me = &c.flat.instances[id as usize];
    dual::PathPolicy {
        quic_addrs: c.flat.instances.iter().map(|i| quic_addr(i.addr)).collect(),
        pinned: c
            .flat
            .instances
            .iter()
            .map(|i| quic_tier(if i.depth >= me.depth { i } else { me }))
            .collect(),
        dead: me.sync.dead,
        probe: me.sync.hello,
    }
}

/// Runs a worker until `quit` or end of input.
pub fn main(a: WorkerArgs) -> Result<()> {
    raise_nofile();
    let c = cluster(&a.cluster)?;
    if a.lo >= a.hi || a.hi as usize > c.flat.instances.len() {
        bail!("bad instance range {}..{}", a.lo, a.hi);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let lanes = Lanes::default();
    let serve = lanes
        .leaves
        .run_until(serve(a, c, lanes.aggregators.clone()));
    rt.block_on(lanes.aggregators.run_until(serve))
}

/// The two task sets of a worker: the instances with children (the root,
/// sub-parents) run in `aggregators`, which the runtime serves between
/// every turn of at most 61 tasks of `leaves` (tokio's `LocalSet` tick;
/// with plain UDP each set holds one pool, which yields after 64 members,
/// `udp::TURNS_PER_POLL`); leaves and the worker's own tasks run in
/// `leaves`.
///
/// Why: one set is one first-in-first-out queue. A roll-out makes every
/// leaf of a worker (about 16,700) ready at once, and a sub-parent woken
/// by its leaves' Dsc waited behind all of them: in a 100,000-node run
/// the hop from leaf to sub-parent took 0.6 s at the median and the root
/// got most Dsc in one burst at the end (converge p50 0.4-0.8 s after
/// down p50). In their own lane, sub-parents relay within milliseconds,
/// as they would on their own CPUs: converge p50 1.21 / 1.76 s and
/// 1.20 / 1.49 s in two pairs against one queue; p99, bound by the
/// roll-out's CPU work, 0.93x and 1.01x (docs/performance.md, session 9).
#[derive(Default)]
struct Lanes {
    aggregators: Rc<tokio::task::LocalSet>,
    leaves: tokio::task::LocalSet,
}

/// A bound transport waiting for its instance.
enum Bound {
    Udp(tokio::net::UdpSocket),
    Quic(quinn::Endpoint),
    Dual(tokio::net::UdpSocket, quinn::Endpoint),
}

fn bind_all(a: &WorkerArgs, c: &Cluster) -> Result<Vec<Bound>> {
    let ca = match c.transport {
        Wire::Udp => None,
        Wire::Quic | Wire::Auto => {
            let dir = a
                .cluster
                .ca_dir
                .as_ref()
                .context("--transport quic needs --ca-dir")?;
            let cert = std::fs::read_to_string(dir.join("ca.pem"))?;
            let key = std::fs::read_to_string(dir.join("ca.key"))?;
            Some(quic::Ca::from_pem("loadtest", &cert, &key)?)
        }
    };
    let mut bound = Vec::new();
    for id in a.lo..a.hi {
        let inst = &c.flat.instances[id as usize];
        let what = || format!("binding {} for {}", inst.addr, inst.name);
        let bufs = buffers(inst.role);
        bound.push(match (&ca, c.transport) {
            (Some(ca), Wire::Auto) => {
                let id = ca.issue(&inst.name)?;
                let q = quic_addr(inst.addr);
                Bound::Dual(
                    udp::bind(inst.addr, bufs).with_context(what)?,
                    quic::endpoint(q, ca.cert(), &id, bufs)
                        .with_context(|| format!("binding {q} (QUIC) for {}", inst.name))?,
                )
            }
            (Some(ca), _) => {
                let id = ca.issue(&inst.name)?;
                Bound::Quic(quic::endpoint(inst.addr, ca.cert(), &id, bufs).with_context(what)?)
            }
            (None, _) => Bound::Udp(udp::bind(inst.addr, bufs).with_context(what)?),
        });
    }
    Ok(bound)
}

async fn serve(a: WorkerArgs, c: Cluster, aggregators: Rc<tokio::task::LocalSet>) -> Result<()> {
    let mut sockets = bind_all(&a, &c)?;
    say(&Msg::Ready);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let shared = Arc::new(Shared {
        names: c.flat.instances.iter().map(|i| i.name.clone()).collect(),
        addrs: c.flat.instances.iter().map(|i| i.addr).collect(),
        keys: KeyRing::single(1, &ClusterKey::from_seed(a.cluster.seed)),
        loss: a.cluster.loss,
        epoch: monotonic_now().as_nanos() as u64,
    });
    let mut handles: Vec<Handle<LoadNode>> = Vec::new();
    let mut views: Vec<dual::DualView> = Vec::new();
    let c = Rc::new(c);
    // `--api`: the API thread, its stop switch and the database folder.
    let mut api: Option<ApiRun> = None;
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["start"] => {
                let now = monotonic_now();
                if c.transport == Wire::Udp {
                    let pools = start_pools(&a, &c, &mut sockets, &shared, &aggregators, now)?;
                    handles.extend(pools);
                }
                for (id, s) in (a.lo..a.hi).zip(sockets.drain(..)) {
                    let node = c.node(id, a.cluster.seed, now);
                    // The driver spawns its task in the current set.
                    let _lane = (c.flat.instances[id as usize].role != Role::Leaf)
                        .then(|| aggregators.enter());
                    handles.push(match s {
                        Bound::Udp(s) => udp::spawn(node, s, shared.clone())
                            .with_context(|| format!("starting instance {id}"))?,
                        Bound::Quic(ep) => quic::spawn(node, ep, shared.clone())
                            .with_context(|| format!("starting instance {id}"))?,
                        Bound::Dual(s, ep) => {
                            let (h, v) = dual::spawn(node, s, ep, shared.clone(), policy(&c, id))
                                .with_context(|| format!("starting instance {id}"))?;
                            views.push(v);
                            h
                        }
                    });
                }
                if a.lo == 0 {
                    tokio::task::spawn_local(progress(handles[0].clone()));
                    if let Some(addr) = a.cluster.api {
                        api = Some(start_api(&c, handles[0].clone(), addr)?);
                    }
                }
            }
            ["rollout", g] if a.lo == 0 => {
                let g: u64 = g.parse()?;
                let t0 = handles[0].with(|r, now| {
                    r.roll_out(now, g, &c.is_leaf);
                    now
                });
                say(&Msg::RolledOut {
                    generation: g,
                    t0_ns: t0.as_nanos() as u64,
                });
            }
            ["rx"] if a.lo == 0 => say(&Msg::Rx {
                count: handles[0].traffic().rx_datagrams,
                at_ns: monotonic_now().as_nanos() as u64,
            }),
            ["missing"] if a.lo == 0 => {
                let ids = handles[0].peek(|r| r.missing(8));
                for id in ids {
                    let root = handles[0].peek(|r| r.diag(id));
                    say(&Msg::Note(format!("missing {id}; root: {root}")));
                }
                say(&Msg::Note("end".into()));
            }
            ["inspect", id, about] => {
                let (id, about): (u32, u32) = (id.parse()?, about.parse()?);
                if let Some(h) = mine(&handles, a.lo, id) {
                    say(&Msg::Note(h.peek(|n| n.diag(about))));
                }
            }
            ["tx"] => say(&Msg::Tx {
                bytes: handles.iter().map(|h| h.traffic().tx_bytes).sum(),
            }),
            ["report", g] => say(&Msg::Report(report(&handles, &views, g.parse()?))),
            ["report", g, victims] => {
                let mut r = report(&handles, &views, g.parse()?);
                failover_report(&mut r, &handles, a.lo, &c, &ids(victims)?);
                say(&Msg::Report(r));
            }
            ["watch"] if a.lo == 0 => handles[0].with(|r, _| r.watch_failover()),
            ["kill", victims] => {
                for id in ids(victims)? {
                    if let Some(h) = mine(&handles, a.lo, id) {
                        h.with(|n, _| n.kill());
                    }
                }
            }
            ["restore", victims] => {
                for id in ids(victims)? {
                    if let Some(h) = mine(&handles, a.lo, id) {
                        h.with(|n, now| *n = c.node(id, a.cluster.seed, now));
                    }
                }
            }
            ["quit"] => break,
            _ => bail!("worker: unknown command `{line}`"),
        }
    }
    drop(api);
    Ok(())
}

/// Plain UDP: starts the worker's instances in two pools
/// ([`udp::spawn_pool`]), the aggregators' in their lane and the leaves'
/// in theirs (see [`Lanes`]); their handles, in id order.
///
/// Why pools: a task per instance cost a runtime readiness, a task wake
/// and a timer-wheel entry per datagram; a pool serves its sockets
/// straight from its own `epoll` set (docs/performance.md, session 10).
fn start_pools(
    a: &WorkerArgs,
    c: &Cluster,
    sockets: &mut Vec<Bound>,
    shared: &Arc<Shared>,
    aggregators: &tokio::task::LocalSet,
    now: overlay::Time,
) -> Result<Vec<Handle<LoadNode>>> {
    let mut lanes: [Vec<_>; 2] = [Vec::new(), Vec::new()];
    let mut place = Vec::new();
    for (id, s) in (a.lo..a.hi).zip(sockets.drain(..)) {
        let Bound::Udp(s) = s else {
            bail!("instance {id}: plain UDP expected");
        };
        let lane = usize::from(c.flat.instances[id as usize].role != Role::Leaf);
        place.push((lane, lanes[lane].len()));
        lanes[lane].push((c.node(id, a.cluster.seed, now), s));
    }
    let [leaves, aggs] = lanes;
    if place.is_empty() {
        return Ok(Vec::new());
    }
    let what = || format!("starting instances {}..{}", a.lo, a.hi);
    let leaves = udp::spawn_pool(leaves, shared.clone()).with_context(what)?;
    let aggs = {
        let _lane = aggregators.enter();
        udp::spawn_pool(aggs, shared.clone()).with_context(what)?
    };
    let by_lane = [leaves, aggs];
    Ok(place
        .into_iter()
        .map(|(lane, k)| by_lane[lane][k].clone())
        .collect())
}

/// The product root's API of a root worker (`--api`).
struct ApiRun {
    stop: tokio::sync::watch::Sender<bool>,
    dir: std::path::PathBuf,
}

impl Drop for ApiRun {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves the product root's REST API, event stream, dashboard and
/// `/metrics` on `addr`, as `layercake run` does (its database in a
/// temporary folder, removed at the end).
fn start_api(c: &Cluster, root: Handle<LoadNode>, addr: std::net::SocketAddr) -> Result<ApiRun> {
    let parts = c.api.as_ref().context("--api without the product root")?;
    let dir = std::env::temp_dir().join(format!("loadtest-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = Arc::new(
        layercake::daemon::persist::CfgDb::open(&dir)
            .with_context(|| format!("opening the root's database in {}", dir.display()))?,
    );
    let prom = layercake::daemon::metrics::install().ok();
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("binding --api {addr}"))?;
    listener.set_nonblocking(true)?;
    // The root's node summaries and state gauges, as `layercake run`'s
    // sampler flushes them.
    let flusher = root.clone();
    tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(layercake::daemon::world::FLUSH_INTERVAL);
        loop {
            tick.tick().await;
            flusher.with(|n, _| {
                n.with_app(|p| {
                    if let Some(r) = p.product.as_deref_mut() {
                        r.flush();
                    }
                })
            });
        }
    });
    let (_thread, stop) = layercake::serve::start_root_api(
        root,
        db,
        parts.bus.clone(),
        parts.model.clone(),
        prom,
        listener,
    )?;
    say(&Msg::Note(format!("api: http://{addr}/api/v1")));
    Ok(ApiRun { stop, dir })
}

async fn progress(root: Handle<LoadNode>) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some((generation, reached)) =
            root.peek(|r| r.app().track.as_ref().map(|t| (t.generation, t.reached)))
        {
            say(&Msg::Progress {
                generation,
                reached,
            });
        }
    }
}

/// Parses a comma-separated list of instance ids.
fn ids(list: &str) -> Result<Vec<u32>> {
    list.split(',').map(|x| Ok(x.parse::<u32>()?)).collect()
}

/// The handle of instance `id` if this worker runs it.
fn mine(handles: &[Handle<LoadNode>], lo: u32, id: u32) -> Option<&Handle<LoadNode>> {
    handles.get(id.checked_sub(lo)? as usize)
}

/// Adds what the failover scenario needs about the victims' groups.
fn failover_report(
    r: &mut WorkerReport,
    handles: &[Handle<LoadNode>],
    lo: u32,
    c: &Cluster,
    victims: &[u32],
) {
    for &v in victims {
        for &m in c.tree.children(v) {
            if let Some(h) = mine(handles, lo, m) {
                r.acting.push((m, h.peek(|n| n.acting(v))));
            }
            if let Some(root) = mine(handles, lo, 0) {
                root.peek(|n| {
                    let Some(w) = n.app().watch.as_ref() else {
                        return;
                    };
                    if let Some(t) = w.fresh_at[m as usize] {
                        r.fresh_ns.push((m, t.as_nanos() as u64));
                    }
                    if let Some(t) = w.adopted_at[m as usize] {
                        r.adopted_ns.push((m, t.as_nanos() as u64));
                    }
                });
            }
        }
    }
}

fn report(handles: &[Handle<LoadNode>], views: &[dual::DualView], generation: u64) -> WorkerReport {
    let mut r = WorkerReport {
        peak_rss_mb: peak_rss_mb(),
        ..Default::default()
    };
    for v in views {
        let c = v.counters();
        r.paths.quic_tx += c.quic_tx;
        r.paths.udp_tx += c.udp_tx;
        r.paths.fallbacks += c.fallbacks;
        r.paths.returns += c.returns;
    }
    let mut drops = overlay::envelope::DropCounters::default();
    for h in handles {
        let t = h.traffic();
        r.tx_datagrams += t.tx_datagrams;
        r.tx_bytes += t.tx_bytes;
        r.tx_max_bytes = r.tx_max_bytes.max(t.tx_max_bytes);
        r.rejected += t.drops.rejected();
        drops.merge(&t.drops);
        r.tx_errors += t.tx_errors;
        h.peek(|n| {
            let arrivals = n
                .app()
                .cfg_arrivals
                .iter()
                .filter(|(g, _)| *g == generation);
            r.downs_ns
                .extend(arrivals.map(|(_, t)| t.as_nanos() as u64));
            if let Some(track) = n
                .app()
                .track
                .as_ref()
                .filter(|t| t.generation == generation)
            {
                r.converged_ns.extend(
                    track
                        .converged
                        .iter()
                        .flatten()
                        .map(|t| t.as_nanos() as u64),
                );
            }
        });
    }
    r.drops = overlay::envelope::DropReason::ALL
        .iter()
        .filter(|&&k| drops.get(k) > 0)
        .map(|&k| (k.label().to_string(), drops.get(k)))
        .collect();
    r
}
