//! The overlay world of one process: every instance it hosts, on a
//! single-threaded tokio `LocalSet`.
//!
//! - [`start`]: binds each instance's UDP socket (and, with a certificate,
//!   its QUIC endpoint on the port above), builds its sync stack through
//!   [`crate::sync::Spec`] with its application ([`RootApp`],
//!   [`MemberApp`]) and spawns it with the dual driver (UDP, QUIC on links
//!   the topology pins and as the fallback) or, without a certificate, the
//!   UDP driver.
//! - [`sampler_task`]: flushes the root's node summaries to the event
//!   stream and samples traffic, neighbour, failover and BMC metrics of
//!   every hosted instance.
//!
//! The API reaches the root only through [`crate::daemon::control`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use engine::virt::VirtualConfig;
use metrics_exporter_prometheus::PrometheusHandle;
use overlay::NodeId;
use overlay::dual::{self, DualView};
use overlay::envelope::{ClusterKey, DropReason, KeyRing};
use overlay::quic::{self, Identity};
use overlay::udp::{self, Buffers, Handle, Shared, monotonic_now};
use rustls::pki_types::CertificateDer;
use sync_tree::NeighborState;
use topo::Role;

use crate::daemon::cluster::Cluster;
use crate::daemon::member::{MemberApp, NodeRuntime};
use crate::daemon::metrics::{self as m, LevelTraffic};
use crate::daemon::model::Model;
use crate::daemon::persist::CfgDb;
use crate::daemon::root::{Bus, RootApp};
use crate::sync::{App, Node, Stack, quic_addr};

/// The root's instance: its application on its sync stack.
pub type RootNode = Node<RootApp>;
/// Any other instance.
pub type MemberNode = Node<MemberApp>;
use crate::modules::power::setup::ChildPlaces;

/// How often changed node summaries are sent to the event stream.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// How often traffic and neighbour metrics are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);

/// What an instance presents and trusts on QUIC (the dual driver's
/// links).
pub struct QuicSetup {
    /// The cluster CA.
    pub ca: CertificateDer<'static>,
    /// Per hosted instance: its certificate and key.
    pub ids: HashMap<NodeId, Identity>,
}

/// What a process hosts and how.
pub struct WorldConfig {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// The cluster key.
    pub key: ClusterKey,
    /// The keyring to seal and open with (shared with whoever rotates it);
    /// `None`: `key` alone, id 1.
    pub ring: Option<KeyRing>,
    /// Instance ids hosted here.
    pub ids: Vec<NodeId>,
    /// The virtual modules' delays and fault rates.
    pub modules: VirtualConfig,
    /// Seed of the virtual machines.
    pub seed: u64,
    /// The root's database (required when the root is hosted here).
    pub db: Option<Arc<CfgDb>>,
    /// The event stream.
    pub bus: Bus,
    /// BMC power (instances that may drive BMC children); `None` in the
    /// demo.
    pub power: Option<crate::modules::power::setup::PowerSetup>,
    /// QUIC identities: with them, instances run the dual driver.
    pub quic: Option<QuicSetup>,
    /// A node's agent socket (`run` of a node only).
    pub agent_socket: Option<std::path::PathBuf>,
    /// Image sets (`run --images`): nodes run them, parents serve them.
    pub images: Option<crate::modules::image::ImageOptions>,
    /// Network boot (instances that drive BMC children): `None`, off.
    pub boot: Option<crate::daemon::boot::BootOptions>,
}

/// One running instance.
pub struct Hosted<A> {
    /// Its id.
    pub id: NodeId,
    /// The driver's handle.
    pub handle: Handle<Node<A>>,
    /// The dual driver's path view (`None` on plain UDP).
    pub paths: Option<DualView>,
}

impl<A> Clone for Hosted<A> {
    fn clone(&self) -> Self {
        Hosted {
            id: self.id,
            handle: self.handle.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// The running instances of this process.
pub struct World {
    /// The root, if hosted here.
    pub root: Option<Hosted<RootApp>>,
    /// Every other hosted instance.
    pub members: Vec<Hosted<MemberApp>>,
}

fn buffers(role: Role) -> Buffers {
    match role {
        Role::Root => Buffers {
            recv_bytes: 16 << 20,
            send_bytes: 4 << 20,
        },
        Role::SubParent => Buffers {
            recv_bytes: 4 << 20,
            send_bytes: 2 << 20,
        },
        Role::Leaf => Buffers {
            recv_bytes: 256 << 10,
            send_bytes: 256 << 10,
        },
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// SplitMix64 finaliser: spreads related seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Binds and starts every hosted instance; call inside a `LocalSet`.
pub fn start(cfg: &WorldConfig, model: &Arc<Model>) -> Result<World> {
    let c = &cfg.cluster;
    let mut sockets = Vec::with_capacity(cfg.ids.len());
    for &id in &cfg.ids {
        let inst = &c.flat.instances[id as usize];
        let s = udp::bind(inst.addr, buffers(inst.role))
            .with_context(|| format!("binding {} for {}", inst.addr, inst.name))?;
        let ep = match &cfg.quic {
            Some(q) => {
                let ident = q
                    .ids
                    .get(&id)
                    .with_context(|| format!("no QUIC identity for {}", inst.name))?;
                let addr = quic_addr(inst.addr);
                let ep = quic::endpoint(addr, &q.ca, ident, buffers(inst.role))
                    .with_context(|| format!("binding QUIC {addr} for {}", inst.name))?;
                Some(ep)
            }
            None if c.sync.needs_quic(id) => bail!(
                "{}: the topology pins a link of this instance to `transport: quic`, \
                 which needs a certificate (--pki DIR, see `layercake certs`)",
                inst.name
            ),
            None => None,
        };
        sockets.push((s, ep));
    }
    if cfg.quic.is_none() {
        tracing::info!("no certificate: plain UDP, without the QUIC fallback");
    }
    let wall = wall_ms();
    let addrs: Vec<SocketAddr> = c.flat.instances.iter().map(|i| i.addr).collect();
    let shared = Arc::new(Shared {
        addrs: addrs.clone(),
        names: c.flat.instances.iter().map(|i| i.name.clone()).collect(),
        keys: cfg
            .ring
            .as_ref()
            .map_or_else(|| KeyRing::single(1, &cfg.key), KeyRing::share),
        loss: 0.0,
        epoch: wall.saturating_mul(1_000_000),
    });
    let now = monotonic_now();
    let mut world = World {
        root: None,
        members: Vec::new(),
    };
    for (&id, (socket, ep)) in cfg.ids.iter().zip(sockets) {
        let inst = &c.flat.instances[id as usize];
        let seed = mix(cfg.seed ^ u64::from(id));
        let run = |stack: Stack| (stack, socket, ep, c.sync.path_policy(id, &addrs));
        // The image servers above this instance: parent first, root last.
        let mut ups = Vec::new();
        let mut up = inst.parent;
        while let Some(p) = up.filter(|_| ups.len() < 16) {
            ups.push(c.flat.instances[p as usize].addr);
            up = c.flat.instances[p as usize].parent;
        }
        if let Some(opts) = cfg.images.as_ref().filter(|_| inst.role != Role::Leaf) {
            crate::daemon::images::start_server(inst.addr, opts, &ups)?;
        }
        match inst.role {
            Role::Root => {
                let db = cfg.db.as_ref().context("the root needs its database")?;
                let stored = db.load()?;
                let stack = c.sync.stack(id, seed, now, db.epoch() << 32);
                let app = RootApp::new(model.clone(), c, stored, cfg.bus.clone());
                world.root = Some(spawn(id, app, run(stack), &shared, now)?);
            }
            Role::SubParent | Role::Leaf => {
                // No clock in the version floor of the tree: a restarted
                // instance learns its previous boot's versions from its
                // parent (`Hello.stale`). The flat baseline has no parent
                // to learn from and keeps the clock.
                let floor = if c.sync.is_flat() {
                    wall.saturating_mul(16)
                } else {
                    0
                };
                let stack = c.sync.stack(id, seed, now, floor);
                let mut app = if inst.role == Role::Leaf {
                    let vseed = mix(cfg.seed ^ mix(u64::from(id)));
                    MemberApp::leaf(NodeRuntime::new(
                        model.clone(),
                        &inst.name,
                        cfg.modules,
                        vseed,
                    ))
                } else {
                    MemberApp::relay()
                };
                if let Some(p) = &cfg.power {
                    let places = places_of(c, id);
                    if !places.is_empty() {
                        let frozen = crate::daemon::model::FROZEN_URL.parse().ok();
                        let mut host =
                            p.host(model.graph.clone(), model.registry.clone(), frozen)?;
                        if cfg.boot.is_some() {
                            host.enable_boot()?;
                        }
                        app.attach_bmc(host, places);
                    }
                }
                let driven = app.has_bmc();
                let leaf = inst.role == Role::Leaf;
                let h = spawn(id, app, run(stack), &shared, now)?;
                if let Some(sock) = cfg.agent_socket.as_ref().filter(|_| leaf) {
                    // Why not fatal: a node without its agent still runs; it
                    // only cannot say it is busy (e.g. not root for /run).
                    if let Err(e) = crate::daemon::agent::start(h.handle.clone(), sock) {
                        tracing::warn!(
                            "{}: no agent, `layercake busy` will not reach this node: {e:#}",
                            inst.name
                        );
                    }
                }
                if let (Some(opts), true) = (&cfg.images, leaf && !ups.is_empty()) {
                    crate::daemon::images::start_node(h.handle.clone(), opts, &inst.name, &ups)?;
                }
                if let Some(p) = cfg.power.as_ref().filter(|_| driven) {
                    crate::daemon::bmc::start_driver(h.handle.clone(), p);
                }
                world.members.push(h);
            }
        }
    }
    Ok(world)
}

/// The BMC children instance `id` may drive: those of the group it leads
/// and, in `hybrid` groups it is a member of, those of the group's
/// sub-parent (taken over after a failover).
fn places_of(c: &Cluster, id: NodeId) -> ChildPlaces {
    let mut places = ChildPlaces::of(&c.flat, id);
    for &g in c.sync.groups_of(id) {
        let leader = c.flat.groups[g as usize].sub_parent;
        if leader != id {
            places.merge(ChildPlaces::of(&c.flat, leader), id);
        }
    }
    places
}

type Wiring = (
    Stack,
    tokio::net::UdpSocket,
    Option<quinn::Endpoint>,
    dual::PathPolicy,
);

/// Spawns `app` on its stack with the dual driver (with an endpoint) or
/// the UDP driver; fails if the driver cannot register its socket or draw
/// its boot.
fn spawn<A: App + 'static>(
    id: NodeId,
    app: A,
    (stack, socket, ep, policy): Wiring,
    shared: &Arc<Shared>,
    now: overlay::Time,
) -> Result<Hosted<A>> {
    let node = Node::new(stack, app, now);
    let what = || format!("starting the sync driver of instance {id}");
    Ok(match ep {
        Some(ep) => {
            let (handle, view) =
                dual::spawn(node, socket, ep, shared.clone(), policy).with_context(what)?;
            Hosted {
                id,
                handle,
                paths: Some(view),
            }
        }
        None => Hosted {
            id,
            handle: udp::spawn(node, socket, shared.clone()).with_context(what)?,
            paths: None,
        },
    })
}

/// Flushes node summaries and samples metrics forever: every
/// [`FLUSH_INTERVAL`] the hosted instances' sync state (acting, standing
/// in, failovers, BMC children; set only when it changed), every
/// [`SAMPLE_INTERVAL`] traffic, neighbours and paths.
pub async fn sampler_task(world: World, cluster: Arc<Cluster>, prom: Option<PrometheusHandle>) {
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    let mut ticks: u64 = 0;
    let per_sample = (SAMPLE_INTERVAL.as_millis() / FLUSH_INTERVAL.as_millis()).max(1) as u64;
    let mut states = vec![None; world.members.len()];
    loop {
        flush.tick().await;
        if let Some(r) = &world.root {
            r.handle.with(|n, _| n.with_app(RootApp::flush));
        }
        for (h, last) in world.members.iter().zip(&mut states) {
            h.handle.peek(|n| sync_state(&cluster, h, n, last));
        }
        ticks += 1;
        if ticks.is_multiple_of(per_sample) {
            sample(&world, &cluster);
            m::process();
            if let Some(p) = &prom {
                p.run_upkeep();
            }
        }
    }
}

fn sample(world: &World, c: &Cluster) {
    let mut levels: Vec<(String, LevelTraffic)> = Vec::new();
    let mut drops = overlay::envelope::DropCounters::default();
    let mut rejected = (0u64, 0u64);
    let mut add = |id: NodeId, t: udp::Traffic, stack: &Stack| {
        if let Some(ts) = stack.tree_stats() {
            rejected.0 = rejected.0.saturating_add(ts.claims_rejected);
            rejected.1 = rejected.1.saturating_add(ts.records_rejected);
        }
        let level = &c.level[id as usize];
        let i = match levels.iter().position(|(l, _)| l == level) {
            Some(i) => i,
            None => {
                levels.push((level.clone(), LevelTraffic::default()));
                levels.len() - 1
            }
        };
        let lt = &mut levels[i].1;
        lt.tx_datagrams += t.tx_datagrams;
        lt.tx_bytes += t.tx_bytes;
        lt.rx_datagrams += t.rx_datagrams;
        lt.rx_bytes += t.rx_bytes;
        let peers = c
            .tree
            .parent(id)
            .into_iter()
            .chain(c.tree.children(id).iter().copied());
        for p in peers {
            match stack.neighbor(p) {
                Some(NeighborState::Full) => lt.alive += 1,
                Some(NeighborState::Down) => lt.dead += 1,
                _ => {}
            }
        }
        drops.merge(&t.drops);
    };
    if let Some(r) = &world.root {
        r.handle.peek(|n| add(r.id, r.handle.traffic(), n.stack()));
    }
    for h in &world.members {
        h.handle.peek(|n| add(h.id, h.handle.traffic(), n.stack()));
        if let Some(p) = &h.paths {
            m::paths(&c.flat.instances[h.id as usize].name, &p.counters());
        }
    }
    for (level, t) in &levels {
        m::traffic(level, t);
    }
    for reason in DropReason::ALL {
        m::dropped(reason.label(), drops.get(reason));
    }
    m::rejected(rejected.0, rejected.1);
}

/// What the per-instance sync metrics show of one hosted instance.
#[derive(Clone, PartialEq)]
struct SyncState {
    failovers: u64,
    handbacks: u64,
    /// `(group, acting, standing in)` per group of the instance.
    groups: Vec<(u32, bool, bool)>,
    bmc_children: Option<usize>,
}

/// Sets the per-instance sync metrics of `h` when they changed since
/// `last`: a failover shows in `/metrics` within a flush interval.
fn sync_state(c: &Cluster, h: &Hosted<MemberApp>, n: &MemberNode, last: &mut Option<SyncState>) {
    let stack = n.stack();
    let stats = stack.stats();
    let now = SyncState {
        failovers: stats.failovers,
        handbacks: stats.handbacks,
        groups: stack
            .groups()
            .map(|(g, leader)| {
                let acting = stack.acting_for(g);
                (g, acting, acting && leader != h.id)
            })
            .collect(),
        bmc_children: n.app().has_bmc().then(|| n.app().bmc_children()),
    };
    if last.as_ref() == Some(&now) {
        return;
    }
    m::instance(&m::InstanceSample {
        name: &c.flat.instances[h.id as usize].name,
        failovers: now.failovers,
        handbacks: now.handbacks,
        groups: now
            .groups
            .iter()
            .map(|&(g, acting, standing_in)| {
                (c.flat.groups[g as usize].name.as_str(), acting, standing_in)
            })
            .collect(),
        bmc_children: now.bmc_children,
    });
    *last = Some(now);
}
