//! From command-line settings to a topology and the product's sync stack
//! (`layercake::sync::Spec`): no strategy composition lives here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use layercake::daemon::cluster::Cluster as ProductCluster;
use layercake::daemon::model::Model;
use layercake::daemon::root::{BUS_CAPACITY, Bus, RootApp};
use topo::{Role, StrategyKind, SyncSettings, Topology, duration};

use crate::app::{EngineRole, LoadNode, Probe};
use crate::engine_leaf::EngineShared;

pub use layercake::sync::quic_addr;

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
    /// Sync strategy of every level: `tree` (hellos only; orphans fall
    /// back to their grandparent), `hybrid` (tree plus SWIM groups per rack
    /// that elect an acting sub-parent; the racks' level only, the levels
    /// above stay `tree`) or `gossip` (the whole cluster as one flat SWIM
    /// group: the baseline, expected to lose at scale). Default: the
    /// topology's per-level strategies with `--topology`, else `tree`.
    #[arg(long)]
    pub strategy: Option<String>,
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
    /// Scenario `roll` (set by `run`): the leaves' engines also run the
    /// virtual image module.
    #[arg(skip)]
    pub images: bool,
    /// Scenario `roll`: the longest simulated container start; each start
    /// takes a seeded time between half of it and all of it.
    #[arg(long, default_value = "1s", value_parser = duration::parse_flag)]
    pub image_start: Duration,
    /// `--net udp`: the root is the product's root (`layercake run`'s
    /// application, its store, REST API, event stream and dashboard on
    /// this loopback address) instead of the probe's; the probe still
    /// measures on the side.
    #[arg(long)]
    pub api: Option<std::net::SocketAddr>,
}

/// What the product's root needs besides the cluster (`--api`).
pub struct ApiParts {
    /// The module set.
    pub model: Arc<Model>,
    /// The event stream.
    pub bus: Bus,
}

/// The cluster a run works on: the product's cluster (`layercake`'s own
/// `Cluster`: topology, flat view, tree, sync `Spec`; reached through
/// `Deref`) and what the harness adds.
pub struct Cluster {
    /// With `--api`: the product root's module set and event stream.
    pub api: Option<ApiParts>,
    /// The cluster as `layercake` loads it.
    pub product: ProductCluster,
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
    /// The strategy named in reports (`mixed` when levels differ).
    pub strategy: String,
}

impl std::ops::Deref for Cluster {
    type Target = ProductCluster;
    fn deref(&self) -> &ProductCluster {
        &self.product
    }
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
        let stack = self.sync.stack(id, seed, now, floor);
        let mut probe = Probe::new(self.engine_role(id));
        if let (Some(api), Role::Root) = (&self.api, self.flat.instances[id as usize].role) {
            probe.product = Some(Box::new(RootApp::new(
                api.model.clone(),
                &self.product,
                Vec::new(),
                api.bus.clone(),
            )));
        }
        LoadNode::new(stack, probe, now)
    }

    fn engine_role(&self, id: u32) -> EngineRole {
        let Some(shared) = &self.engine else {
            return EngineRole::Off;
        };
        let inst = &self.flat.instances[id as usize];
        match inst.role {
            Role::Root => EngineRole::Root(shared.clone()),
            Role::Leaf => EngineRole::Leaf(Box::new(shared.leaf(id, &inst.name))),
            Role::SubParent => EngineRole::Off,
        }
    }
}

/// Sets the strategy of every level of `t` (the `--strategy` override):
/// `hybrid` applies to the racks' level (the groups of nodes) and keeps
/// `tree` above it, as the product's demo does.
fn override_strategy(t: &mut Topology, s: StrategyKind) {
    let last = t.levels.len().saturating_sub(1);
    t.defaults.strategy = s;
    for (i, l) in t.levels.iter_mut().enumerate() {
        l.sync.strategy = match s {
            StrategyKind::Hybrid if i < last => StrategyKind::Tree,
            other => other,
        };
    }
}

/// The strategy a report names: the one every level runs, or `mixed`.
fn strategy_name(t: &Topology) -> String {
    let mut kinds: Vec<StrategyKind> = t.levels.iter().map(|l| l.sync.strategy).collect();
    kinds.dedup();
    match kinds.as_slice() {
        [one] => one.to_string(),
        [StrategyKind::Tree, StrategyKind::Hybrid] if t.levels.len() >= 2 => {
            let last = t.levels.last().map(|l| l.sync.strategy);
            let tree_above = t.levels[..t.levels.len() - 1]
                .iter()
                .all(|l| l.sync.strategy == StrategyKind::Tree);
            if last == Some(StrategyKind::Hybrid) && tree_above {
                "hybrid".into()
            } else {
                "mixed".into()
            }
        }
        _ => "mixed".into(),
    }
}

/// Builds the cluster from the arguments.
pub fn cluster(a: &ClusterArgs) -> Result<Cluster> {
    let strategy: Option<StrategyKind> = match &a.strategy {
        Some(s) => Some(s.parse().map_err(|e| anyhow::anyhow!("--strategy: {e}"))?),
        None => None,
    };
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
                // A hybrid topology is generated with standbys.
                sync: SyncSettings {
                    strategy: strategy.unwrap_or_default(),
                    ..SyncSettings::default()
                },
            })
        }
    };
    if let Some(s) = strategy.or(a.topology.is_none().then_some(StrategyKind::Tree)) {
        override_strategy(&mut topo, s);
    }
    override_timers(&mut topo, a.hello, a.dead)?;
    let transport = match a.transport.as_str() {
        "udp" => Wire::Udp,
        "quic" => Wire::Quic,
        "auto" => Wire::Auto,
        other => bail!("--transport {other}: use `udp`, `quic` or `auto`"),
    };
    if let Some(port) = a.port {
        set_port(&mut topo, port);
    }
    let strategy = strategy_name(&topo);
    let product = ProductCluster::new(topo)?;
    let flat = &product.flat;
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
    let node_hello = product.topo.node_sync().hello;
    let engine = if a.engine {
        let image_start_ms = a.images.then_some(a.image_start.as_millis() as u64);
        let e = EngineShared::new(
            a.engine_fail_rate,
            a.engine_hang_rate,
            a.seed,
            image_start_ms,
        )?;
        Some(Arc::new(e))
    } else {
        None
    };
    let api = a.api.map(|_| -> Result<ApiParts> {
        Ok(ApiParts {
            model: Arc::new(Model::new().context("the module set")?),
            bus: tokio::sync::broadcast::channel(BUS_CAPACITY).0,
        })
    });
    Ok(Cluster {
        api: api.transpose()?,
        product,
        is_leaf,
        root_hello,
        node_hello,
        engine,
        transport,
        strategy,
    })
}

/// Every instance listens on `port` (each keeps its own address).
fn set_port(t: &mut Topology, port: u16) {
    fn group(g: &mut topo::Group, port: u16) {
        g.sub_parent.addr.set_port(port);
        if let Some(s) = &mut g.standby {
            s.addr.set_port(port);
        }
        for n in &mut g.nodes {
            n.addr.set_port(port);
        }
        for sub in &mut g.groups {
            group(sub, port);
        }
    }
    t.root.addr.set_port(port);
    for g in &mut t.groups {
        group(g, port);
    }
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
