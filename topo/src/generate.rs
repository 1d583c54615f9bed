//! Synthetic topologies of any size, for tests, the simulator and load
//! tests.
//!
//! [`generate`] spreads `nodes` evenly over `racks`; with `levels >= 3` the
//! racks are spread evenly over `ceil(sqrt(racks))` rows (and each further
//! tier above has `ceil(sqrt(count below))` groups). Names: racks `r001`..,
//! rows `row01`.., tiers above `t0g01`.., sub-parents `<group>-sp`, nodes
//! `n00001`.. (zero-padded to the width of `nodes`), root `root`.
//!
//! Standbys only when `sync.strategy` is `hybrid` (the strategy rules
//! require one in every hybrid group with members): a rack's is its first
//! node; a group of a higher tier gets a separate standby `<group>-sb`.
//!
//! Every address is on loopback with the fixed port [`PORT`], so one
//! machine can bind them all:
//! - the root is `127.0.0.1`;
//! - the s-th sub-parent or separate standby (1-based, depth-first order,
//!   a group's standby right after its sub-parent) is
//!   `127.0.{s/250}.{s%250+1}`;
//! - node number n is `127.{n/62500+1}.{n/250%250}.{n%250+1}`, written as
//!   one pattern per rack, so `to_yaml` stays a few lines per rack.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::model::{Group, Level, Member, Spans, Topology};
use crate::parse::LEVELS_MAX;
use crate::sync::{StrategyKind, SyncSettings};

/// The port of every generated address.
pub const PORT: u16 = 7000;
/// Most nodes [`generate`] accepts (keeps the second octet below 256).
pub const NODES_MAX: usize = 15_000_000;
/// Most sub-parents and separate standbys [`generate`] accepts (keeps them
/// inside 127.0.0.0/16).
pub const SUB_PARENTS_MAX: usize = 62_499;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenSpec {
    /// The cluster's name.
    pub cluster: String,
    /// Number of leaf nodes.
    pub nodes: usize,
    /// Number of racks (groups of the tier just above the nodes).
    pub racks: usize,
    /// Tiers below the root including the nodes': 2 = racks + nodes,
    /// 3 = rows + racks + nodes.
    pub levels: usize,
    /// Settings of every level (and the defaults).
    pub sync: SyncSettings,
}

impl Default for GenSpec {
    /// `gen`, 1,000 nodes in 10 racks, 2 levels, default settings.
    fn default() -> Self {
        GenSpec {
            cluster: "gen".to_string(),
            nodes: 1000,
            racks: 10,
            levels: 2,
            sync: SyncSettings::default(),
        }
    }
}

/// Builds the topology described by `spec` (see the module doc).
///
/// # Panics
/// If `levels` is not in `2..=16`, `racks` is 0, `nodes` exceeds
/// [`NODES_MAX`] or the sub-parents and separate standbys exceed
/// [`SUB_PARENTS_MAX`].
pub fn generate(spec: &GenSpec) -> Topology {
    assert!(
        (2..=LEVELS_MAX).contains(&spec.levels),
        "levels must be in 2..=16"
    );
    assert!(spec.racks >= 1, "racks must be at least 1");
    assert!(spec.nodes <= NODES_MAX, "at most {NODES_MAX} nodes");
    let tiers = spec.levels - 1;
    // counts[t]: groups in tier t, top-down; the last tier is the racks.
    let mut counts = vec![spec.racks];
    while counts.len() < tiers {
        counts.insert(0, ceil_sqrt(counts[0]));
    }
    let hybrid = spec.sync.strategy == StrategyKind::Hybrid;
    let separate_standbys = if hybrid {
        counts[..counts.len() - 1].iter().sum()
    } else {
        0
    };
    assert!(
        counts.iter().sum::<usize>() + separate_standbys <= SUB_PARENTS_MAX,
        "too many sub-parents"
    );
    let mut g = Gen {
        spec,
        counts,
        next_sub_parent: 1,
        node_width: digits(spec.nodes),
        hybrid,
    };
    let groups = (0..g.counts[0]).map(|j| g.group(0, j)).collect();
    let levels = (0..tiers)
        .map(|t| tier_name(t, tiers))
        .chain(std::iter::once("node".to_string()))
        .map(|name| Level {
            name,
            sync: spec.sync,
        })
        .collect();
    Topology {
        cluster: spec.cluster.clone(),
        key_file: None,
        defaults: spec.sync,
        levels,
        root: Member {
            name: "root".to_string(),
            addr: v4(127, 0, 0, 1),
        },
        groups,
        spans: Spans::default(),
    }
}

struct Gen<'a> {
    spec: &'a GenSpec,
    counts: Vec<usize>,
    next_sub_parent: usize,
    node_width: usize,
    /// Give every group with members a standby.
    hybrid: bool,
}

impl Gen<'_> {
    /// Group `j` (0-based) of tier `t`.
    fn group(&mut self, t: usize, j: usize) -> Group {
        let count = self.counts[t];
        let name = group_name(t, self.counts.len(), j + 1, count);
        let sub_parent = self.slot(format!("{name}-sp"));
        let upper = t + 1 < self.counts.len();
        let standby = (self.hybrid && upper).then(|| self.slot(format!("{name}-sb")));
        let mut group = Group {
            name,
            sub_parent,
            standby,
            groups: Vec::new(),
            nodes: Vec::new(),
        };
        if upper {
            let below = self.counts[t + 1];
            let (start, end) = (j * below / count, (j + 1) * below / count);
            group.groups = (start..end).map(|k| self.group(t + 1, k)).collect();
        } else {
            let nodes = self.spec.nodes;
            let (start, end) = (j * nodes / count, (j + 1) * nodes / count);
            group.nodes = (start + 1..=end).map(|n| self.node(n)).collect();
            if self.hybrid {
                group.standby = group.nodes.first().cloned();
            }
        }
        group
    }

    /// A member at the next sub-parent address.
    fn slot(&mut self, name: String) -> Member {
        let s = self.next_sub_parent;
        self.next_sub_parent += 1;
        Member {
            name,
            addr: v4(127, 0, (s / 250) as u8, (s % 250 + 1) as u8),
        }
    }

    fn node(&self, n: usize) -> Member {
        let w = self.node_width;
        let addr = v4(
            127,
            (n / 62_500 + 1) as u8,
            (n / 250 % 250) as u8,
            (n % 250 + 1) as u8,
        );
        Member {
            name: format!("n{n:0w$}"),
            addr,
        }
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), PORT)
}

fn tier_name(t: usize, tiers: usize) -> String {
    match tiers - t {
        1 => "rack".to_string(),
        2 => "row".to_string(),
        _ => format!("tier{t}"),
    }
}

fn group_name(t: usize, tiers: usize, number: usize, count: usize) -> String {
    match tiers - t {
        1 => format!("r{number:0w$}", w = digits(count).max(3)),
        2 => format!("row{number:0w$}", w = digits(count).max(2)),
        _ => format!("t{t}g{number:0w$}", w = digits(count).max(2)),
    }
}

fn digits(v: usize) -> usize {
    v.checked_ilog10().map_or(1, |l| l as usize + 1)
}

fn ceil_sqrt(v: usize) -> usize {
    let mut r = (v as f64).sqrt() as usize;
    while r * r < v {
        r += 1;
    }
    while r > 1 && (r - 1) * (r - 1) >= v {
        r -= 1;
    }
    r.max(1)
}
