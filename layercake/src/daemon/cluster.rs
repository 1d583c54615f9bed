//! The cluster a process serves: the topology (loaded or built for the
//! demo), its flat view and overlay tree, the cluster key, and per-instance
//! facts the application needs (rack and level names).
//!
//! - [`demo_topology`]: the demo's cluster on loopback: nodes `n0001`..,
//!   racks `r01`.. with sub-parents `r01-sp`.., every instance on its own
//!   127.x address and one shared UDP port.
//! - [`Cluster`]: a topology plus everything derived from it once.
//! - [`read_key`]: the cluster key from the topology's `key_file`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use overlay::NodeId;
use overlay::envelope::ClusterKey;
use overlay::tree::Tree;
use topo::{Flat, Group, Level, Member, Role, StrategyKind, SyncSettings, Topology};

use crate::sync::Spec;

/// Most nodes the demo starts (each has its own socket in one process).
pub const DEMO_NODES_MAX: usize = 15_000;

/// A topology and everything derived from it.
pub struct Cluster {
    /// The topology.
    pub topo: Topology,
    /// Its flat view (root = 0, parents before children).
    pub flat: Flat,
    /// The overlay tree shared by every core of the process.
    pub tree: Arc<Tree>,
    /// Per instance id: the rack (group) it belongs to, or "" for the root.
    pub rack: Vec<String>,
    /// The sync composition of every instance (strategies per level).
    pub sync: Spec,
    /// Per instance id: the name of the level of its link to its parent
    /// ("root" for the root), the `level` label of the sync metrics.
    pub level: Vec<String>,
}

impl Cluster {
    /// Derives the flat view, tree, racks and levels of `topo`.
    pub fn new(topo: Topology) -> Result<Cluster> {
        let flat = topo.flatten();
        let tree = Arc::new(Tree::from_flat(&flat).context("building the overlay tree")?);
        let sync = Spec::new(&flat, tree.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let rack = flat
            .instances
            .iter()
            .map(|i| {
                let g = i.group.or(i.leads);
                g.map_or_else(String::new, |g| flat.groups[g as usize].name.clone())
            })
            .collect();
        let last = topo.levels.len().saturating_sub(1);
        let level = flat
            .instances
            .iter()
            .map(|i| match i.role {
                Role::Root => "root".to_string(),
                Role::Leaf => topo.levels[last].name.clone(),
                Role::SubParent => {
                    let d = usize::from(i.depth).saturating_sub(1).min(last);
                    topo.levels[d].name.clone()
                }
            })
            .collect();
        Ok(Cluster {
            topo,
            flat,
            tree,
            rack,
            sync,
            level,
        })
    }

    /// Loads a topology file.
    pub fn load(path: &Path) -> Result<Cluster> {
        let topo = Topology::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        Cluster::new(topo)
    }

    /// Ids of the leaves (the managed nodes).
    pub fn leaves(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.flat
            .instances
            .iter()
            .filter(|i| i.role == Role::Leaf)
            .map(|i| i.id)
    }
}

/// The demo's node name: `n0001` (four digits, more if needed).
pub fn node_name(n: usize, nodes: usize) -> String {
    let w = nodes.to_string().len().max(4);
    format!("n{n:0w$}")
}

/// The demo's rack name: `r01` (two digits, more if needed).
pub fn rack_name(r: usize, racks: usize) -> String {
    let w = racks.to_string().len().max(2);
    format!("r{r:0w$}")
}

fn v4(a: u8, b: usize, c: usize, d: usize, port: u16) -> SocketAddr {
    // Callers keep b, c, d below 256 (checked by `demo_topology`'s bounds).
    let ip = Ipv4Addr::new(a, b as u8, c as u8, d as u8);
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// The demo cluster: `nodes` nodes spread evenly over `racks` racks, all on
/// loopback port `port`, with `hello`/`dead` on every level. `strategy`:
/// `tree` everywhere; `hybrid` in the racks (each rack's first node is its
/// standby) under a `tree` level; `gossip` everywhere.
pub fn demo_topology(
    nodes: usize,
    racks: usize,
    port: u16,
    hello: Duration,
    strategy: StrategyKind,
) -> Result<Topology> {
    if nodes == 0 || racks == 0 || racks > nodes {
        bail!("--nodes must be >= --racks >= 1 (got {nodes} nodes, {racks} racks)");
    }
    if nodes > DEMO_NODES_MAX || racks > 250 {
        bail!("the demo runs at most {DEMO_NODES_MAX} nodes in at most 250 racks");
    }
    let sync = SyncSettings {
        hello,
        dead: hello * 4,
        ..SyncSettings::default()
    };
    let mut groups = Vec::with_capacity(racks);
    let mut next = 1;
    for r in 1..=racks {
        let size = nodes / racks + usize::from(r <= nodes % racks);
        let members: Vec<Member> = (next..next + size)
            .map(|n| Member {
                name: node_name(n, nodes),
                addr: v4(127, n / 62_500 + 1, n / 250 % 250, n % 250 + 1, port),
            })
            .collect();
        let standby = (strategy == StrategyKind::Hybrid)
            .then(|| members.first().cloned())
            .flatten();
        next += size;
        groups.push(Group {
            name: rack_name(r, racks),
            sub_parent: Member {
                name: format!("{}-sp", rack_name(r, racks)),
                addr: v4(127, 0, 0, r + 1, port),
            },
            standby,
            groups: Vec::new(),
            nodes: members,
        });
    }
    let level = |name: &str, strategy| Level {
        name: name.to_string(),
        sync: SyncSettings { strategy, ..sync },
    };
    let (racks_s, nodes_s) = match strategy {
        StrategyKind::Tree => (StrategyKind::Tree, StrategyKind::Tree),
        StrategyKind::Hybrid => (StrategyKind::Tree, StrategyKind::Hybrid),
        StrategyKind::Gossip => (StrategyKind::Gossip, StrategyKind::Gossip),
    };
    Ok(Topology {
        cluster: "demo".to_string(),
        key_file: None,
        defaults: sync,
        levels: vec![level("rack", racks_s), level("node", nodes_s)],
        spans: topo::Spans::default(),
        root: Member {
            name: "root".to_string(),
            addr: v4(127, 0, 0, 1, port),
        },
        groups,
    })
}

/// Reads the cluster key named by the topology's `key_file` (64 hex digits).
pub fn read_key(topo: &Topology) -> Result<ClusterKey> {
    let Some(path) = &topo.key_file else {
        bail!(
            "the topology has no `key_file`; create one with `layercake topo key > cluster.key` \
             and add `key_file: cluster.key` to the topology"
        );
    };
    // Checked on the open file: not a symlink, ours, mode 0600.
    let text = crate::security::secrets::read_private(path)
        .with_context(|| format!("reading the cluster key {}", path.display()))?;
    ClusterKey::from_hex(&text).map_err(|e| anyhow::anyhow!("cluster key {}: {e}", path.display()))
}

/// A fresh random key as 64 hex digits (from the OS's random source).
pub fn new_key_hex() -> Result<String> {
    use std::io::Read;
    let mut k = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .context("reading /dev/urandom")?;
    Ok(k.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_names_and_racks() {
        let t = demo_topology(25, 3, 7000, Duration::from_secs(1), StrategyKind::Tree).unwrap();
        let c = Cluster::new(t).unwrap();
        let names: Vec<_> = c
            .leaves()
            .map(|i| c.flat.instances[i as usize].name.clone())
            .collect();
        assert_eq!(names.len(), 25);
        assert_eq!(names[0], "n0001");
        assert_eq!(names[24], "n0025");
        let first = c.flat.by_name("n0001").unwrap();
        assert_eq!(c.rack[first as usize], "r01");
        assert_eq!(c.level[first as usize], "node");
        let sp = c.flat.by_name("r03-sp").unwrap();
        assert_eq!(c.rack[sp as usize], "r03");
        assert_eq!(c.level[sp as usize], "rack");
        // The generated topology is valid: it survives a YAML round trip.
        let yaml = c.topo.to_yaml();
        assert_eq!(Topology::parse(&yaml, "demo.yaml").unwrap(), c.topo);
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(demo_topology(0, 1, 7000, Duration::from_secs(1), StrategyKind::Tree).is_err());
        assert!(demo_topology(5, 6, 7000, Duration::from_secs(1), StrategyKind::Tree).is_err());
    }
}
