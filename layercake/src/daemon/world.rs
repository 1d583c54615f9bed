//! The overlay world of one process: every instance it hosts, each on its
//! own UDP socket, on a single-threaded tokio `LocalSet`, and the bridge
//! from the (multi-threaded, `Send`) API to the root.
//!
//! - [`start`]: binds the sockets, builds the cores and applications
//!   ([`RootApp`], [`MemberApp`]) and spawns them with the UDP driver.
//! - [`Control`]: the `Send` handle the API uses; it sends [`Command`]s on
//!   a bounded channel to [`control_task`], the one task that owns the
//!   root's handle. Writes are serialised there: prepare, commit to the
//!   database (on the blocking pool, so the overlay keeps running), then
//!   apply and acknowledge.
//! - [`sampler_task`]: flushes the root's node summaries to the event
//!   stream and samples traffic and neighbour metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use engine::virt::VirtualConfig;
use metrics_exporter_prometheus::PrometheusHandle;
use overlay::NodeId;
use overlay::envelope::{ClusterKey, DropReason, KeyRing};
use overlay::udp::{self, Buffers, Handle, Shared, monotonic_now};
use sync_tree::{NeighborState, TreeConfig, TreeCore};
use topo::Role;

use crate::daemon::cluster::Cluster;
use crate::daemon::member::{MemberApp, NodeRuntime};
use crate::daemon::metrics::{self as m, LevelTraffic};
use crate::daemon::model::Model;
use crate::daemon::persist::CfgDb;
use crate::daemon::root::{Bus, RootApp};
use crate::modules::power::setup::ChildPlaces;

/// How often changed node summaries are sent to the event stream.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// How often traffic and neighbour metrics are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);

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
    /// BMC power (sub-parents drive their BMC children); `None` in the demo.
    pub power: Option<crate::modules::power::setup::PowerSetup>,
}

/// The running instances of this process.
pub struct Hosted {
    /// The root, if hosted here.
    pub root: Option<Handle<RootApp>>,
    /// Every other hosted instance.
    pub members: Vec<(NodeId, Handle<MemberApp>)>,
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
pub fn start(cfg: &WorldConfig, model: &Arc<Model>) -> Result<Hosted> {
    let c = &cfg.cluster;
    let mut sockets = Vec::with_capacity(cfg.ids.len());
    for &id in &cfg.ids {
        let inst = &c.flat.instances[id as usize];
        let s = udp::bind(inst.addr, buffers(inst.role))
            .with_context(|| format!("binding {} for {}", inst.addr, inst.name))?;
        sockets.push(s);
    }
    let wall = wall_ms();
    let shared = Arc::new(Shared {
        addrs: c
            .flat
            .instances
            .iter()
            .map(|i| i.addr)
            .collect::<Vec<SocketAddr>>(),
        keys: cfg
            .ring
            .as_ref()
            .map_or_else(|| KeyRing::single(1, &cfg.key), KeyRing::share),
        loss: 0.0,
        epoch: wall.saturating_mul(1_000_000),
    });
    let now = monotonic_now();
    let mut hosted = Hosted {
        root: None,
        members: Vec::new(),
    };
    for (&id, socket) in cfg.ids.iter().zip(sockets) {
        let inst = &c.flat.instances[id as usize];
        let mut tc = TreeConfig {
            seed: mix(cfg.seed ^ u64::from(id)),
            version_floor: wall.saturating_mul(16),
            ..TreeConfig::default()
        };
        match inst.role {
            Role::Root => {
                let db = cfg.db.as_ref().context("the root needs its database")?;
                tc.version_floor = db.epoch() << 32;
                let stored = db.load()?;
                let core = TreeCore::new(id, c.tree.clone(), tc, now);
                let app = RootApp::new(core, model.clone(), c, stored, cfg.bus.clone(), now);
                hosted.root = Some(udp::spawn(app, socket, shared.clone()));
            }
            Role::SubParent => {
                let core = TreeCore::new(id, c.tree.clone(), tc, now);
                let mut app = MemberApp::relay(core);
                if let Some(p) = &cfg.power {
                    let frozen = crate::daemon::model::FROZEN_URL.parse().ok();
                    let host = p.host(model.graph.clone(), model.registry.clone(), frozen)?;
                    app.attach_bmc(host, ChildPlaces::of(&c.flat, id));
                }
                let h = udp::spawn(app, socket, shared.clone());
                if let Some(p) = &cfg.power {
                    crate::daemon::bmc::start_driver(h.clone(), p);
                }
                hosted.members.push((id, h));
            }
            Role::Leaf => {
                let core = TreeCore::new(id, c.tree.clone(), tc, now);
                let seed = mix(cfg.seed ^ mix(u64::from(id)));
                let node = NodeRuntime::new(model.clone(), &inst.name, cfg.modules, seed);
                let app = MemberApp::leaf(core, node, now);
                hosted
                    .members
                    .push((id, udp::spawn(app, socket, shared.clone())));
            }
        }
    }
    Ok(hosted)
}

/// Flushes node summaries and samples metrics forever.
pub async fn sampler_task(
    root: Option<Handle<RootApp>>,
    members: Vec<(NodeId, Handle<MemberApp>)>,
    cluster: Arc<Cluster>,
    prom: Option<PrometheusHandle>,
) {
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    let mut ticks: u64 = 0;
    let per_sample = (SAMPLE_INTERVAL.as_millis() / FLUSH_INTERVAL.as_millis()).max(1) as u64;
    loop {
        flush.tick().await;
        if let Some(r) = &root {
            r.with(|r, _| r.flush());
        }
        ticks += 1;
        if ticks.is_multiple_of(per_sample) {
            sample(root.as_ref(), &members, &cluster);
            if let Some(p) = &prom {
                p.run_upkeep();
            }
        }
    }
}

fn sample(root: Option<&Handle<RootApp>>, members: &[(NodeId, Handle<MemberApp>)], c: &Cluster) {
    let mut levels: Vec<(String, LevelTraffic)> = Vec::new();
    let mut drops = overlay::envelope::DropCounters::default();
    let mut add = |id: NodeId, t: udp::Traffic, core: &TreeCore| {
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
            match core.neighbor(p) {
                Some(NeighborState::Full) => lt.alive += 1,
                Some(NeighborState::Down) => lt.dead += 1,
                _ => {}
            }
        }
        drops.merge(&t.drops);
    };
    if let Some(r) = root {
        r.peek(|app| add(0, r.traffic(), app.core()));
    }
    for (id, h) in members {
        h.peek(|app| add(*id, h.traffic(), app.core()));
    }
    for (level, t) in &levels {
        m::traffic(level, t);
    }
    for reason in DropReason::ALL {
        m::dropped(reason.label(), drops.get(reason));
    }
}
