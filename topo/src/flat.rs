//! The flat view of a topology that the overlay runs on: every instance
//! with a dense `u32` id, its role, parent, depth and link settings, and
//! every group with its members.
//!
//! Order is a depth-first pre-order: the root is instance 0; each group
//! contributes its sub-parent, then its separate standby (if any), then its
//! nodes, then its nested groups. Parents therefore come before children.
//!
//! **Standby:** when a group's standby names one of its nodes, `standby`
//! points at that leaf; otherwise the standby is a separate instance with
//! [`Role::Leaf`], a member of the group whose parent is the sub-parent and
//! whose link settings are the nodes' tier's.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::model::{Group, Topology};
use crate::sync::SyncSettings;

/// What an instance does in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The full-state instance, source of truth for Cfg.
    Root,
    /// The aggregator of a group.
    SubParent,
    /// A single-state node (also a separate standby).
    Leaf,
}

/// One instance of the flat view.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// Index in [`Flat::instances`].
    pub id: u32,
    /// Unique name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its role.
    pub role: Role,
    /// The parent's id; `None` for the root only.
    pub parent: Option<u32>,
    /// For a sub-parent: its standby's id.
    pub standby: Option<u32>,
    /// Tree depth: root 0, top-level sub-parents 1, their nodes 2.
    pub depth: u8,
    /// Index in [`Flat::groups`] of the group this instance is a member
    /// of: `None` for the root and for top-level sub-parents (whose parent
    /// is the root).
    pub group: Option<u32>,
    /// For a sub-parent: index in [`Flat::groups`] of the group it leads.
    pub leads: Option<u32>,
    /// Settings of the link to its parent; for the root, the defaults.
    pub sync: SyncSettings,
}

/// One group of the flat view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatGroup {
    /// The group's name.
    pub name: String,
    /// Id of its sub-parent.
    pub sub_parent: u32,
    /// Id of its standby (a leaf of the group).
    pub standby: Option<u32>,
    /// Direct children of the sub-parent, in instance order: the separate
    /// standby, leaves, nested groups' sub-parents.
    pub members: Vec<u32>,
    /// Index of the enclosing group; `None` at the top level.
    pub parent_group: Option<u32>,
    /// Nesting depth: 0 for top-level groups.
    pub depth: u8,
}

/// Flat view used by the overlay: instance 0 is the root; parents before
/// children (depth-first pre-order).
#[derive(Clone, Debug, Default)]
pub struct Flat {
    /// All instances; `instances[k].id == k`.
    pub instances: Vec<Instance>,
    /// All groups, in the order their sub-parents appear.
    pub groups: Vec<FlatGroup>,
    by_name: HashMap<String, u32>,
}

impl Flat {
    /// The id of the instance called `name`.
    pub fn by_name(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The instance with id `id`.
    pub fn get(&self, id: u32) -> Option<&Instance> {
        self.instances.get(id as usize)
    }

    /// Ids of the root's direct children (the top-level sub-parents).
    pub fn root_children(&self) -> Vec<u32> {
        self.instances
            .iter()
            .filter(|i| i.parent == Some(0))
            .map(|i| i.id)
            .collect()
    }
}

struct Builder<'t> {
    topo: &'t Topology,
    flat: Flat,
}

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        name: &str,
        addr: SocketAddr,
        role: Role,
        parent: Option<u32>,
        depth: usize,
        group: Option<u32>,
        sync: SyncSettings,
    ) -> u32 {
        let id = self.flat.instances.len() as u32;
        self.flat.instances.push(Instance {
            id,
            name: name.to_string(),
            addr,
            role,
            parent,
            standby: None,
            depth: depth as u8,
            group,
            leads: None,
            sync,
        });
        self.flat.by_name.insert(name.to_string(), id);
        if let Some(g) = group {
            self.flat.groups[g as usize].members.push(id);
        }
        id
    }

    fn group(&mut self, g: &Group, parent: u32, parent_group: Option<u32>, depth: usize) {
        let levels = &self.topo.levels;
        let sp_sync = levels[depth.min(levels.len() - 1)].sync;
        let leaf_sync = self.topo.node_sync();
        let index = self.flat.groups.len() as u32;
        let sp_name = &g.sub_parent.name;
        let sp = self.push(
            sp_name,
            g.sub_parent.addr,
            Role::SubParent,
            Some(parent),
            depth + 1,
            parent_group,
            sp_sync,
        );
        self.flat.groups.push(FlatGroup {
            name: g.name.clone(),
            sub_parent: sp,
            standby: None,
            members: Vec::with_capacity(g.nodes.len() + g.groups.len() + 1),
            parent_group,
            depth: depth as u8,
        });
        self.flat.instances[sp as usize].leads = Some(index);
        let separate = g.standby.as_ref().filter(|_| !g.standby_is_node());
        if let Some(s) = separate {
            self.push(
                &s.name,
                s.addr,
                Role::Leaf,
                Some(sp),
                depth + 2,
                Some(index),
                leaf_sync,
            );
        }
        for n in &g.nodes {
            self.push(
                &n.name,
                n.addr,
                Role::Leaf,
                Some(sp),
                depth + 2,
                Some(index),
                leaf_sync,
            );
        }
        let standby = g.standby.as_ref().and_then(|s| self.flat.by_name(&s.name));
        self.flat.groups[index as usize].standby = standby;
        self.flat.instances[sp as usize].standby = standby;
        for child in &g.groups {
            self.group(child, sp, Some(index), depth + 1);
        }
    }
}

/// Builds the flat view (see [`Topology::flatten`]).
pub(crate) fn flatten(topo: &Topology) -> Flat {
    let mut b = Builder {
        topo,
        flat: Flat::default(),
    };
    let total = 1 + topo.node_count() + 2 * count_groups(&topo.groups);
    b.flat.instances.reserve(total);
    b.flat.by_name.reserve(total);
    let root = &topo.root;
    b.push(
        &root.name,
        root.addr,
        Role::Root,
        None,
        0,
        None,
        topo.defaults,
    );
    for g in &topo.groups {
        b.group(g, 0, None, 0);
    }
    b.flat
}

fn count_groups(groups: &[Group]) -> usize {
    groups.iter().map(|g| 1 + count_groups(&g.groups)).sum()
}
