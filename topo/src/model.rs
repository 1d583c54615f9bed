//! The topology as loaded: a tree of groups under the root, with expanded
//! nodes and effective per-level sync settings.
//!
//! - [`Topology`]: the whole file; `load`, `parse`, `to_yaml`, `flatten`.
//! - [`Level`]: one tier below the root; the last one is the nodes' tier.
//! - [`Group`]: a sub-parent, its optional standby, nested groups, nodes.
//! - [`Member`]: a name and a socket address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::TopoError;
use crate::flat::Flat;
use crate::sync::SyncSettings;

/// A cluster topology.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// The cluster's name.
    pub cluster: String,
    /// The cluster key file. [`Topology::load`] resolves a relative path
    /// against the YAML file's folder; [`Topology::parse`] keeps it as
    /// written. The file is not read here.
    pub key_file: Option<PathBuf>,
    /// The settings every level starts from (the top-level `sync`).
    pub defaults: SyncSettings,
    /// Every tier below the root, top-down; the last is the nodes' tier.
    /// Never empty.
    pub levels: Vec<Level>,
    /// The root: full-state instance, source of truth for Cfg.
    pub root: Member,
    /// The top-level groups (their sub-parents are in `levels[0]`).
    pub groups: Vec<Group>,
}

/// One tier below the root.
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    /// The tier's name (`row`, `rack`, `node`).
    pub name: String,
    /// Settings of the links between an instance of this tier and its
    /// parent, with the defaults merged in.
    pub sync: SyncSettings,
}

/// A group (a row, a rack): its sub-parent, standby, nested groups and
/// nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The group's name, unique among all groups.
    pub name: String,
    /// The aggregator of the group; its parent is the enclosing group's
    /// sub-parent, or the root for a top-level group.
    pub sub_parent: Member,
    /// Who takes over when the sub-parent dies: either one of `nodes`
    /// (same name and address) or a separate member of the group.
    pub standby: Option<Member>,
    /// Nested groups (the next tier).
    pub groups: Vec<Group>,
    /// Leaf nodes of the group, hostlists expanded, in file order.
    pub nodes: Vec<Member>,
}

/// A named instance with its socket address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    /// Unique name across the topology.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Group {
    /// True if the standby is one of this group's nodes rather than a
    /// separate member.
    pub fn standby_is_node(&self) -> bool {
        self.standby
            .as_ref()
            .is_some_and(|s| self.nodes.iter().any(|n| n.name == s.name))
    }
}

impl Topology {
    /// Reads and parses a topology file. Errors name `path`; a read failure
    /// has line and column 0.
    pub fn load(path: &Path) -> Result<Topology, TopoError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TopoError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        let mut topo = Topology::parse(&text, &file)?;
        if let (Some(key), Some(dir)) = (&topo.key_file, path.parent())
            && key.is_relative()
        {
            topo.key_file = Some(dir.join(key));
        }
        Ok(topo)
    }

    /// Parses topology YAML; `file_name` is used in error messages only.
    pub fn parse(text: &str, file_name: &str) -> Result<Topology, TopoError> {
        crate::parse::parse(text, file_name)
    }

    /// Writes the topology as YAML that [`Topology::parse`] reads back to
    /// an equal value. Runs of nodes whose names and addresses follow a
    /// pattern become one hostlist entry; the rest are explicit entries.
    pub fn to_yaml(&self) -> String {
        crate::emit::to_yaml(self)
    }

    /// The flat view used by the overlay (see [`Flat`]).
    pub fn flatten(&self) -> Flat {
        crate::flat::flatten(self)
    }

    /// The settings of the nodes' tier (the last level).
    pub fn node_sync(&self) -> SyncSettings {
        self.levels.last().map_or(self.defaults, |l| l.sync)
    }

    /// Number of leaf nodes in all groups.
    pub fn node_count(&self) -> usize {
        fn count(groups: &[Group]) -> usize {
            groups
                .iter()
                .map(|g| g.nodes.len() + count(&g.groups))
                .sum()
        }
        count(&self.groups)
    }
}
