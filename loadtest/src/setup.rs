//! From command-line settings to a topology, a tree and sync cores.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use overlay::tree::Tree;
use sync_tree::{TreeConfig, TreeCore};
use topo::{Flat, Role, StrategyKind, SyncSettings, Topology, duration};

use crate::app::{Core, EngineRole, LoadNode, Side};
use crate::engine_leaf::EngineShared;
use sync_gossip::{FlatGossip, GossipConfig, GossipCore};

/// How instances reach each other on `--net udp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Plain UDP datagrams (`overlay::udp`).
    Udp,
    /// QUIC on every link (`overlay::quic`).
    Quic,
    /// UDP with per-link QUIC and fallback (`overlay::dual`).
    Auto,
}

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wire::Udp => "udp",
            Wire::Quic => "quic",
            Wire::Auto => "auto",
        })
    }
}

/// The QUIC port of an instance in `auto` mode: its UDP port plus one.
pub fn quic_addr(udp: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut a = udp;
    a.set_port(udp.port().wrapping_add(1));
    a
}

/// What the cluster looks like (shared by `run` and the UDP workers).
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Leaf nodes of a generated topology.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Racks (sub-parents above the nodes) of a generated topology.
    #[arg(long, default_value_t = 10)]
    pub racks: usize,
    /// Tiers below the root, nodes included (2 = racks + nodes).
    #[arg(long, default_value_t = 2)]
    pub levels: usize,
    /// Use this topology file instead of generating one.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Sync strategy: `tree` (hellos only; orphans fall back to their
    /// grandparent), `hybrid` (tree plus SWIM groups per rack that elect
    /// an acting sub-parent) or `gossip` (the whole cluster as one flat
    /// SWIM group: the baseline, expected to lose at scale).
    #[arg(long, default_value = "tree")]
    pub strategy: String,
    /// Hello interval of every level (overrides the topology).
    #[arg(long, value_parser = duration::parse_flag)]
    pub hello: Option<Duration>,
    /// Dead interval of every level (default: 4 hellos).
    #[arg(long, value_parser = duration::parse_flag)]
    pub dead: Option<Duration>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Probability that a datagram is lost.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Transport on `--net udp`: `udp` (plain datagrams, no fallback: the
    /// load baseline), `quic` (every link over QUIC with mutual TLS, a
    /// cluster CA made for the run) or `auto` (the product's behaviour:
    /// UDP, QUIC on links whose topology level says `transport: quic` and
    /// wherever UDP goes unanswered for a dead interval, back to UDP when
    /// it works again; two sockets per instance).
    #[arg(long, default_value = "udp")]
    pub transport: String,
    /// Listen on this port instead of the topology's (every instance keeps
    /// its own address), so that runs can share a machine.
    #[arg(long)]
    pub port: Option<u16>,
    /// Folder holding the run's CA (`ca.pem`, `ca.key`), for workers.
    #[arg(long, hide = true)]
    pub ca_dir: Option<PathBuf>,
    /// Run the state engine with virtual power and boot modules on every
    /// leaf; `converge` then measures real mutation chains.
    #[arg(long)]
    pub engine: bool,
    /// Scenario `loss` (set by `run`): in simulation the initial sync runs
    /// without loss and `--loss` applies from the measured change on; on
    /// UDP it applies throughout. The report counts `lost_updates`.
    #[arg(skip)]
    pub loss_scenario: bool,
    /// With `--engine`: probability that a module step reports an error.
    #[arg(long, default_value_t = 0.0, requires = "engine")]
    pub engine_fail_rate: f64,
    /// With `--engine`: probability that a module step never answers (the
    /// step times out after its declared timeout, seconds to minutes).
    #[arg(long, default_value_t = 0.0, requires = "engine")]
    pub engine_hang_rate: f64,
}

/// The cluster a run works on.
pub struct Cluster {
    /// The topology, flattened.
    pub flat: Flat,
    /// Its tree, shared by every core.
    pub tree: Arc<Tree>,
    /// Which ids are leaves.
    pub is_leaf: Vec<bool>,
    /// Hello interval of the root's links (for load per hello).
    pub root_hello: Duration,
    /// Hello interval of the nodes' tier.
    pub node_hello: Duration,
    /// With `--engine`: the module set shared by every engine.
    pub engine: Option<Arc<EngineShared>>,
    /// The transport of the links.
    pub transport: Wire,
    /// The sync strategy.
    pub strategy: StrategyKind,
    /// Hybrid: every group's members in rank order.
    pub groups: Vec<sync_gossip::GroupSpec>,
    /// Gossip: the one flat group (every instance, the root first).
    pub flat_group: Option<sync_gossip::GroupSpec>,
}

impl Cluster {
    /// Leaves.
    pub fn leaves(&self) -> usize {
        self.is_leaf.iter().filter(|l| **l).count()
    }

    /// Aggregators other than the root.
    pub fn sub_parents(&self) -> usize {
        self.flat
            .instances
            .iter()
            .filter(|i| i.role == Role::SubParent)
            .count()
    }

    /// The loadtest instance `id`, started at `now`.
    pub fn node(&self, id: u32, seed: u64, now: Duration) -> LoadNode {
        let floor = now.as_millis() as u64 * 16;
        if let Some(spec) = &self.flat_group {
            let mut cfg = GossipConfig::for_hello(self.node_hello);
            cfg.incarnation = now.as_micros() as u64 + 1;
            cfg.seed = seed ^ (id as u64) << 20;
            let core = FlatGossip::new(now, id, spec.clone(), cfg, floor)
                .expect("every instance is a member of the flat group");
            return self.node_with(id, Core::Flat(Box::new(core)), now);
        }
        let cfg = TreeConfig {
            seed,
            version_floor: floor,
            // In hybrid the group elects an acting sub-parent instead.
            fallback: self.strategy != StrategyKind::Hybrid,
            ..TreeConfig::default()
        };
        let core = TreeCore::new(id, self.tree.clone(), cfg, now);
        self.node_with(id, Core::Tree(core), now)
            .with_sides(self.sides(id, seed, now))
    }

    /// Hybrid: the gossip cores of instance `id` (the group it is a member
    /// of and the group it leads).
    fn sides(&self, id: u32, seed: u64, now: Duration) -> Vec<Side> {
        if self.groups.is_empty() {
            return Vec::new();
        }
        let inst = &self.flat.instances[id as usize];
        [inst.group, inst.leads]
            .into_iter()
            .flatten()
            .filter_map(|g| {
                let spec = self.groups[g as usize].clone();
                let leader = spec.sub_parent();
                let member = *spec.ranked().last().expect("a group has members");
                let mut cfg = GossipConfig::for_hello(self.tree.timers(member).hello);
                cfg.incarnation = now.as_micros() as u64 + 1;
                cfg.seed = seed ^ (id as u64) << 20 ^ g as u64;
                cfg.retake = self.flat.instances[member as usize].sync.retake;
                let core = GossipCore::new(now, id, spec, cfg).ok()?;
                Some(Side { leader, core })
            })
            .collect()
    }

    fn node_with(&self, id: u32, core: Core, _now: Duration) -> LoadNode {
        let Some(shared) = &self.engine else {
            return LoadNode::new(core);
        };
        let inst = &self.flat.instances[id as usize];
        let role = match inst.role {
            Role::Root => EngineRole::Root(shared.clone()),
            Role::Leaf => EngineRole::Leaf(Box::new(shared.leaf(id, &inst.name))),
            Role::SubParent => EngineRole::Off,
        };
        LoadNode::with_engine(core, role)
    }
}

/// Builds the cluster from the arguments.
pub fn cluster(a: &ClusterArgs) -> Result<Cluster> {
    let strategy: StrategyKind = a
        .strategy
        .parse()
        .map_err(|e| anyhow::anyhow!("--strategy: {e}"))?;
    if !(0.0..1.0).contains(&a.loss) {
        bail!("--loss must be in [0, 1), got {}", a.loss);
    }
    let mut topo = match &a.topology {
        Some(p) => Topology::load(p).with_context(|| format!("loading {}", p.display()))?,
        None => {
            if a.nodes == 0 || a.racks == 0 || a.racks > a.nodes {
                bail!(
                    "--nodes must be >= --racks >= 1 (got {} nodes, {} racks)",
                    a.nodes,
                    a.racks
                );
            }
            if !(2..=topo::LEVELS_MAX).contains(&a.levels) {
                bail!("--levels must be in 2..={}", topo::LEVELS_MAX);
            }
            topo::generate::generate(&topo::generate::GenSpec {
                cluster: "loadtest".into(),
                nodes: a.nodes,
                racks: a.racks,
                levels: a.levels,
                sync: SyncSettings::default(),
            })
        }
    };
    override_timers(&mut topo, a.hello, a.dead)?;
    let transport = match a.transport.as_str() {
        "udp" => Wire::Udp,
        "quic" => Wire::Quic,
        "auto" => Wire::Auto,
        other => bail!("--transport {other}: use `udp`, `quic` or `auto`"),
    };
    let mut flat = topo.flatten();
    if let Some(port) = a.port {
        for i in &mut flat.instances {
            i.addr.set_port(port);
        }
    }
    let tree = Arc::new(Tree::from_flat(&flat).context("building the overlay tree")?);
    let is_leaf = flat
        .instances
        .iter()
        .map(|i| i.role == Role::Leaf)
        .collect();
    let root_hello = flat
        .root_children()
        .first()
        .map_or(Duration::from_secs(1), |&c| {
            flat.instances[c as usize].sync.hello
        });
    let node_hello = topo.node_sync().hello;
    let groups = match strategy {
        StrategyKind::Hybrid => (0..flat.groups.len() as u32)
            .map(|g| sync_gossip::GroupSpec::from_flat(&flat, g))
            .collect::<Result<Vec<_>, _>>()
            .context("building the SWIM groups")?,
        _ => Vec::new(),
    };
    let flat_group = match strategy {
        StrategyKind::Gossip => Some(
            sync_gossip::GroupSpec::flat(0, (0..flat.instances.len() as u32).collect())
                .context("building the flat SWIM group")?,
        ),
        _ => None,
    };
    let engine = if a.engine {
        let e = EngineShared::new(a.engine_fail_rate, a.engine_hang_rate, a.seed)?;
        Some(Arc::new(e))
    } else {
        None
    };
    Ok(Cluster {
        flat,
        tree,
        is_leaf,
        root_hello,
        node_hello,
        engine,
        transport,
        strategy,
        groups,
        flat_group,
    })
}

fn override_timers(
    t: &mut Topology,
    hello: Option<Duration>,
    dead: Option<Duration>,
) -> Result<()> {
    let set = |s: &mut SyncSettings| -> Result<()> {
        if let Some(h) = hello {
            s.hello = h;
            s.dead = dead.unwrap_or(h * 4);
        } else if let Some(d) = dead {
            s.dead = d;
        }
        if s.hello >= s.dead {
            bail!(
                "hello ({:?}) must be shorter than dead ({:?})",
                s.hello,
                s.dead
            );
        }
        Ok(())
    };
    set(&mut t.defaults)?;
    for l in &mut t.levels {
        set(&mut l.sync)?;
    }
    Ok(())
}
