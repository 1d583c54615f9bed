//! [`Spec`]: what the topology says each instance's sync composition is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use overlay::dual::PathPolicy;
use overlay::tree::Tree;
use overlay::{NodeId, Time};
use sync_gossip::{FlatGossip, GossipConfig, GossipCore, GroupSpec};
use sync_tree::{TreeConfig, TreeCore};
use topo::{Flat, StrategyKind, Transport};

use super::stack::{Core, Side, Stack};

/// Why a topology cannot be composed.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `gossip` on some levels only: the flat baseline is one group of the
    /// whole cluster and cannot sit beside a tree.
    #[error(
        "strategy `gossip` is on some levels only: it is one flat group of the whole cluster, so every level must say `gossip` (or none)"
    )]
    MixedGossip,
    /// A `hybrid` group has no standby to take over.
    #[error("group `{0}` runs `hybrid` but has no `standby`")]
    NoStandby(String),
    /// The gossip layer refused a group.
    #[error("group `{group}`: {source}")]
    Group {
        /// The group's name.
        group: String,
        /// What the gossip layer said.
        source: sync_gossip::ConfigError,
    },
}

/// One group that runs a SWIM group beside the tree (`hybrid`).
#[derive(Clone, Debug)]
pub struct GroupPlan {
    /// Members in rank order (sub-parent, standby, the rest).
    pub spec: GroupSpec,
    /// Hello of the members' links (sets the SWIM timers).
    pub hello: Duration,
    /// The original sub-parent takes its role back when it returns.
    pub retake: bool,
}

/// The sync composition of a whole cluster, per instance.
#[derive(Clone, Debug)]
pub struct Spec {
    tree: Arc<Tree>,
    /// Per flat group: `Some` when it runs `hybrid`.
    groups: Vec<Option<GroupPlan>>,
    /// Per instance: the groups it has a SWIM core for (the group it is a
    /// member of and the group it leads, when they run `hybrid`).
    sides: Vec<Vec<u32>>,
    /// Per instance: fall back to the grandparent when the parent dies
    /// (its level runs `tree`).
    fallback: Vec<bool>,
    /// Per instance: its link to its parent is `transport: quic`.
    pinned: Vec<bool>,
    /// Per instance: its link's hello (the UDP probe interval while fallen
    /// back) and dead interval (the fallback's patience).
    timers: Vec<(Duration, Duration)>,
    /// `gossip`: the one flat group, and the nodes' hello.
    flat: Option<(GroupSpec, Duration)>,
}

/// The QUIC address of an instance: its UDP port plus one.
pub fn quic_addr(udp: SocketAddr) -> SocketAddr {
    let mut a = udp;
    a.set_port(udp.port().wrapping_add(1));
    a
}

/// The level setting that governs group `g`: its members' (the links
/// between a member and the group's sub-parent).
fn group_strategy(flat: &Flat, g: usize) -> StrategyKind {
    let grp = &flat.groups[g];
    grp.members
        .iter()
        .copied()
        .find(|&m| m != grp.sub_parent)
        .map_or(StrategyKind::Tree, |m| {
            flat.instances[m as usize].sync.strategy
        })
}

impl Spec {
    /// The composition `flat` describes; `tree` is its overlay tree.
    pub fn new(flat: &Flat, tree: Arc<Tree>) -> Result<Spec, SpecError> {
        let n = flat.instances.len();
        let strategies: Vec<StrategyKind> = flat
            .instances
            .iter()
            .skip(1)
            .map(|i| i.sync.strategy)
            .collect();
        let gossip = strategies
            .iter()
            .filter(|s| **s == StrategyKind::Gossip)
            .count();
        let flat_group = if gossip == 0 {
            None
        } else if gossip == strategies.len() {
            let spec = GroupSpec::flat(0, (0..n as NodeId).collect()).map_err(|source| {
                SpecError::Group {
                    group: "(flat)".into(),
                    source,
                }
            })?;
            let hello = flat
                .instances
                .last()
                .map_or(Duration::from_secs(2), |i| i.sync.hello);
            Some((spec, hello))
        } else {
            return Err(SpecError::MixedGossip);
        };
        let mut groups = Vec::with_capacity(flat.groups.len());
        let mut sides = vec![Vec::new(); n];
        for (g, grp) in flat.groups.iter().enumerate() {
            if flat_group.is_some() || group_strategy(flat, g) != StrategyKind::Hybrid {
                groups.push(None);
                continue;
            }
            if grp.standby.is_none() {
                return Err(SpecError::NoStandby(grp.name.clone()));
            }
            let spec = GroupSpec::from_flat(flat, g as u32).map_err(|source| SpecError::Group {
                group: grp.name.clone(),
                source,
            })?;
            let member = *spec.ranked().last().expect("a group has members");
            let sync = flat.instances[member as usize].sync;
            for &m in spec.ranked() {
                sides[m as usize].push(g as u32);
            }
            groups.push(Some(GroupPlan {
                spec,
                hello: sync.hello,
                retake: sync.retake,
            }));
        }
        let fallback = flat
            .instances
            .iter()
            .map(|i| i.sync.strategy == StrategyKind::Tree)
            .collect();
        let pinned = flat
            .instances
            .iter()
            .map(|i| i.sync.transport == Transport::Quic)
            .collect();
        let timers = flat
            .instances
            .iter()
            .map(|i| (i.sync.hello, i.sync.dead))
            .collect();
        Ok(Spec {
            tree,
            groups,
            sides,
            fallback,
            pinned,
            timers,
            flat: flat_group,
        })
    }

    /// The overlay tree.
    pub fn tree(&self) -> &Arc<Tree> {
        &self.tree
    }

    /// Instances of the cluster.
    pub fn len(&self) -> usize {
        self.fallback.len()
    }

    /// True for an empty cluster (never, for a loaded topology).
    pub fn is_empty(&self) -> bool {
        self.fallback.is_empty()
    }

    /// True when the cluster runs the flat `gossip` baseline.
    pub fn is_flat(&self) -> bool {
        self.flat.is_some()
    }

    /// The `hybrid` groups: `(group index, plan)`.
    pub fn hybrid_groups(&self) -> impl Iterator<Item = (u32, &GroupPlan)> {
        self.groups
            .iter()
            .enumerate()
            .filter_map(|(g, p)| Some((g as u32, p.as_ref()?)))
    }

    /// True when some group runs `hybrid`.
    pub fn has_hybrid(&self) -> bool {
        self.hybrid_groups().next().is_some()
    }

    /// The groups instance `id` has a SWIM core for.
    pub fn groups_of(&self, id: NodeId) -> &[u32] {
        self.sides.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The plan of group `g`, if it runs `hybrid`.
    pub fn group(&self, g: u32) -> Option<&GroupPlan> {
        self.groups.get(g as usize)?.as_ref()
    }

    /// Instance `id`'s stack, started at `now`; `seed` drives every random
    /// choice, `version_floor` is the least version it publishes (a boot
    /// epoch, so a restarted source of truth never reuses a version).
    pub fn stack(&self, id: NodeId, seed: u64, now: Time, version_floor: u64) -> Stack {
        let incarnation = now.as_micros() as u64 + 1;
        if let Some((spec, hello)) = &self.flat {
            let mut cfg = GossipConfig::for_hello(*hello);
            cfg.incarnation = incarnation;
            cfg.seed = seed ^ u64::from(id) << 20;
            let core = FlatGossip::new(now, id, spec.clone(), cfg, version_floor)
                .expect("every instance is a member of the flat group");
            return Stack::new(Core::Flat(Box::new(core)), Vec::new());
        }
        let cfg = TreeConfig {
            seed,
            version_floor,
            fallback: self.fallback[id as usize],
            ..TreeConfig::default()
        };
        let core = TreeCore::new(id, self.tree.clone(), cfg, now);
        let sides = self.sides[id as usize]
            .iter()
            .filter_map(|&g| {
                let plan = self.group(g)?;
                let mut cfg = GossipConfig::for_group(plan.hello, plan.spec.len());
                cfg.incarnation = incarnation;
                cfg.seed = seed ^ u64::from(id) << 20 ^ u64::from(g);
                cfg.retake = plan.retake;
                let core = GossipCore::new(now, id, plan.spec.clone(), cfg).ok()?;
                Some(Side::new(g, plan.spec.sub_parent(), id, core))
            })
            .collect();
        Stack::new(Core::Tree(core), sides)
    }

    /// True when the link between `a` and `b` (parent and child, either
    /// way round) is configured `transport: quic`: a link follows its
    /// deeper end's level.
    pub fn link_is_quic(&self, a: NodeId, b: NodeId) -> bool {
        let deeper = if self.tree.depth(a) >= self.tree.depth(b) {
            a
        } else {
            b
        };
        self.pinned.get(deeper as usize).copied().unwrap_or(false)
    }

    /// True when any link of instance `id` is pinned to QUIC.
    pub fn needs_quic(&self, id: NodeId) -> bool {
        let up = self.pinned.get(id as usize).copied().unwrap_or(false);
        up || self
            .tree
            .children(id)
            .iter()
            .any(|&c| self.pinned[c as usize])
    }

    /// How the dual driver of instance `id` picks UDP or QUIC per peer:
    /// QUIC on pinned links, UDP elsewhere with fallback after a dead
    /// interval of silence, probed once per hello; `addrs` are every
    /// instance's UDP addresses.
    pub fn path_policy(&self, id: NodeId, addrs: &[SocketAddr]) -> PathPolicy {
        let (hello, dead) = self.timers[id as usize];
        PathPolicy {
            quic_addrs: addrs.iter().map(|&a| quic_addr(a)).collect(),
            pinned: (0..addrs.len() as NodeId)
                .map(|p| p != id && self.link_is_quic(id, p))
                .collect(),
            dead,
            probe: hello,
        }
    }
}
