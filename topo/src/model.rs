//! The topology as loaded: a tree of groups under the root, with expanded
//! nodes and effective per-level sync settings.
//!
//! - [`Topology`]: the whole file; `load`, `parse`, `to_yaml`, `flatten`.
//! - [`Level`]: one tier below the root; the last one is the nodes' tier.
//! - [`Group`]: a sub-parent, its optional standby, nested groups, nodes.
//! - [`Member`]: a name and a socket address.
//! - [`Spans`]: where the file wrote what later checks point at.

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
    /// written. The file is not read here; [`Topology::check_key_file`]
    /// checks that it is safe to read.
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
    /// Where the file wrote what [`Topology::check_key_file`] points at;
    /// [`Spans::default`] for a topology built in code.
    pub spans: Spans,
}

/// Where a parsed topology's values were written, so that checks made
/// after parsing ([`Topology::check_key_file`]) name the file, line and
/// column too.
///
/// Positions are not part of a topology's value: any two `Spans` are
/// equal, so a topology still equals its round trip through
/// [`Topology::to_yaml`] (which writes things at other lines).
#[derive(Clone, Debug, Default)]
pub struct Spans {
    /// The file name given to [`Topology::parse`] or the path given to
    /// [`Topology::load`]; empty for a topology built in code.
    pub file: String,
    /// 1-based line and column of the `key_file` value, if one was written.
    pub key_file: Option<(usize, usize)>,
}

impl PartialEq for Spans {
    /// Always true: positions are not part of the value (see [`Spans`]).
    fn eq(&self, _: &Spans) -> bool {
        true
    }
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
        Topology::load_all(path).map_err(|mut errs| errs.swap_remove(0))
    }

    /// Like [`Topology::load`], with every error found (see
    /// [`Topology::parse_all`]).
    pub fn load_all(path: &Path) -> Result<Topology, Vec<TopoError>> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![TopoError {
                file: file.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }]
        })?;
        let mut topo = Topology::parse_all(&text, &file)?;
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

    /// Like [`Topology::parse`], but reports every error found (at least
    /// one when it fails), in file order: `topo check` prints them all.
    pub fn parse_all(text: &str, file_name: &str) -> Result<Topology, Vec<TopoError>> {
        crate::parse::parse_all(text, file_name)
    }

    /// Writes the topology as YAML that [`Topology::parse`] reads back to
    /// an equal value. Runs of nodes whose names and addresses follow a
    /// pattern become one hostlist entry; the rest are explicit entries.
    pub fn to_yaml(&self) -> String {
        crate::emit::to_yaml(self)
    }

    /// Checks that the cluster key file is safe to read: when `key_file`
    /// is set, it must exist, be a regular file (not a symbolic link, which
    /// could be pointed elsewhere) and be readable by its owner only (no
    /// permission bits for group or others: `mode & 0o077 == 0`). Nothing
    /// to check without `key_file`. A relative path (from
    /// [`Topology::parse`]) is taken from the current folder.
    ///
    /// Not part of [`Topology::load`]: tools that never read the key (the
    /// load harness, `to_yaml`) load topologies whose key file is absent.
    /// The error points at the `key_file` value and says how to fix it
    /// (`chmod 600 FILE`); its line and column are 0 for a topology built
    /// in code.
    pub fn check_key_file(&self) -> Result<(), TopoError> {
        crate::key_file::check(self)
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
