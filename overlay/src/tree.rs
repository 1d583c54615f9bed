//! The static shape of the overlay: who is whose parent, and link timers.
//!
//! - [`Tree`]: parents, children, depths and subtrees of every instance,
//!   built once from the topology and shared (behind an `Arc`) by every core
//!   of a process. Routing a record is a walk up from its node.
//! - [`LinkTimers`]: hello, dead and jitter of the link between an instance
//!   and its parent (a per-level setting in the topology).
//! - Groups: a sub-parent and its static children form a group
//!   ([`Tree::in_group`]); [`Tree::sideways`] says whether the group runs a
//!   sideways strategy (`hybrid`), the only case where a member may claim
//!   the sub-parent's place. [`Tree::from_flat`] takes it from the
//!   topology: a group is hybrid when the level that governs it, its
//!   members' level (every member's `sync.strategy`), says `hybrid`.
//!
//! **Invariant:** ids are dense (`0..len`), the root is 0, and a parent's id
//! is lower than its children's, so one pass builds depths and subtrees.
//! Ids reach here from the network (claims in hellos, senders): an id
//! outside the tree has no parent, no children, no descendants, depth 0
//! and default timers, so no query panics.

use std::time::Duration;

use crate::record::NodeId;

/// Timers of the link between an instance and its parent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkTimers {
    /// Interval between hellos.
    pub hello: Duration,
    /// Silence after which the neighbour is declared down (> hello).
    pub dead: Duration,
    /// Random spread of each hello, as a fraction of `hello` (0..=0.5).
    pub jitter: f64,
}

impl Default for LinkTimers {
    fn default() -> Self {
        LinkTimers {
            hello: Duration::from_secs(1),
            dead: Duration::from_secs(4),
            jitter: 0.1,
        }
    }
}

/// Errors in the shape handed to [`Tree::new`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TreeError {
    /// Instance 0 must be the root (no parent) and the only one.
    #[error("instance {0} has no parent but is not instance 0")]
    SecondRoot(NodeId),
    /// A parent id at or above its child's id, or out of range.
    #[error("instance {child} names parent {parent}, which is not an earlier instance")]
    BadParent {
        /// The child.
        child: NodeId,
        /// Its parent.
        parent: NodeId,
    },
    /// A hello interval not below the dead interval.
    #[error("instance {0}: hello must be shorter than dead")]
    Timers(NodeId),
}

/// The overlay's tree of instances.
#[derive(Debug)]
pub struct Tree {
    parent: Vec<Option<NodeId>>,
    depth: Vec<u8>,
    children: Vec<Vec<NodeId>>,
    descendants: Vec<Vec<NodeId>>,
    timers: Vec<LinkTimers>,
    /// Per instance: leads a group that runs a sideways strategy.
    sideways: Vec<bool>,
}

impl Tree {
    /// Builds the tree from each instance's parent and link timers.
    pub fn new(parent: Vec<Option<NodeId>>, timers: Vec<LinkTimers>) -> Result<Tree, TreeError> {
        assert_eq!(parent.len(), timers.len(), "one timer set per instance");
        let n = parent.len();
        let mut depth = vec![0u8; n];
        let mut children = vec![Vec::new(); n];
        for (i, p) in parent.iter().enumerate() {
            let id = i as NodeId;
            if timers[i].hello >= timers[i].dead {
                return Err(TreeError::Timers(id));
            }
            match *p {
                None if i == 0 => {}
                None => return Err(TreeError::SecondRoot(id)),
                Some(p) if (p as usize) >= i => {
                    return Err(TreeError::BadParent {
                        child: id,
                        parent: p,
                    });
                }
                Some(p) => {
                    depth[i] = depth[p as usize] + 1;
                    children[p as usize].push(id);
                }
            }
        }
        let mut descendants = vec![Vec::new(); n];
        for i in (1..n).rev() {
            let mut mine = std::mem::take(&mut descendants[i]);
            let p = parent[i].expect("non-root") as usize;
            descendants[p].push(i as NodeId);
            descendants[p].append(&mut mine.clone());
            mine.shrink_to_fit();
            descendants[i] = mine;
        }
        Ok(Tree {
            sideways: vec![false; parent.len()],
            parent,
            depth,
            children,
            descendants,
            timers,
        })
    }

    /// Marks the groups led by `leaders` as running a sideways strategy
    /// (ids that lead no group, and the root, are ignored).
    pub fn with_sideways(mut self, leaders: impl IntoIterator<Item = NodeId>) -> Tree {
        for l in leaders {
            let leads = self.parent(l).is_some() && !self.children(l).is_empty();
            if leads && let Some(s) = self.sideways.get_mut(l as usize) {
                *s = true;
            }
        }
        self
    }

    /// Builds the tree of a flattened topology (its ids are already dense,
    /// root first, parents before children).
    pub fn from_flat(flat: &topo::Flat) -> Result<Tree, TreeError> {
        let parents = flat.instances.iter().map(|i| i.parent).collect();
        let timers = flat
            .instances
            .iter()
            .map(|i| LinkTimers {
                hello: i.sync.hello,
                dead: i.sync.dead,
                jitter: i.sync.jitter,
            })
            .collect();
        let hybrid = flat.groups.iter().filter_map(|g| {
            let mut members = g.members.iter().filter_map(|&m| flat.get(m));
            let all = members.all(|m| m.sync.strategy == topo::StrategyKind::Hybrid);
            (all && !g.members.is_empty()).then_some(g.sub_parent)
        });
        let hybrid: Vec<NodeId> = hybrid.collect();
        Ok(Tree::new(parents, timers)?.with_sideways(hybrid))
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// True for a tree without instances (never built by [`Tree::new`]).
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// The parent of `id` (`None` for the root).
    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        self.parent.get(id as usize).copied().flatten()
    }

    /// The children of `id`.
    pub fn children(&self, id: NodeId) -> &[NodeId] {
        self.children.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Depth of `id` (root 0).
    pub fn depth(&self, id: NodeId) -> u8 {
        self.depth.get(id as usize).copied().unwrap_or(0)
    }

    /// `id` and every instance below it.
    pub fn subtree(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        let below = self
            .descendants
            .get(id as usize)
            .map_or(&[][..], Vec::as_slice);
        std::iter::once(id).chain(below.iter().copied())
    }

    /// The instances below `id` (its subtree without itself), as a slice.
    pub fn descendants(&self, id: NodeId) -> &[NodeId] {
        self.descendants
            .get(id as usize)
            .map_or(&[][..], Vec::as_slice)
    }

    /// Number of instances in `id`'s subtree, itself included.
    pub fn subtree_len(&self, id: NodeId) -> usize {
        1 + self.descendants.get(id as usize).map_or(0, Vec::len)
    }

    /// Timers of the link between `id` and its parent.
    pub fn timers(&self, id: NodeId) -> LinkTimers {
        self.timers.get(id as usize).copied().unwrap_or_default()
    }

    /// The child of `from` whose subtree holds `target`, if any.
    pub fn next_hop(&self, from: NodeId, target: NodeId) -> Option<NodeId> {
        if (target as usize) >= self.len() || (from as usize) >= self.len() {
            return None;
        }
        let stop = self.depth[from as usize];
        let mut t = target;
        while self.depth[t as usize] > stop + 1 {
            t = self.parent[t as usize]?;
        }
        (self.depth[t as usize] == stop + 1 && self.parent[t as usize] == Some(from)).then_some(t)
    }

    /// True when `target` is `top` or below it.
    pub fn within(&self, target: NodeId, top: NodeId) -> bool {
        target == top || self.next_hop(top, target).is_some()
    }

    /// Whether the group `leader` leads runs a sideways strategy (false for
    /// the root, for instances that lead no group, and outside the tree).
    pub fn sideways(&self, leader: NodeId) -> bool {
        self.sideways.get(leader as usize).copied().unwrap_or(false)
    }

    /// Whether `x` is a member of the group `leader` leads: `leader`
    /// itself or one of its static children (its standby among them).
    pub fn in_group(&self, leader: NodeId, x: NodeId) -> bool {
        (x == leader && (leader as usize) < self.len()) || self.parent(x) == Some(leader)
    }

    /// The instances with children (the root and sub-parents).
    pub fn aggregators(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.len() as NodeId).filter(|&i| !self.children[i as usize].is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_outside_the_tree_are_answered_without_panic() {
        let t = sample();
        for id in [7, 65, NodeId::MAX] {
            assert_eq!(t.parent(id), None);
            assert!(t.children(id).is_empty());
            assert_eq!(t.depth(id), 0);
            assert_eq!(t.subtree(id).collect::<Vec<_>>(), vec![id]);
            assert_eq!(t.subtree_len(id), 1);
            assert_eq!(t.timers(id), LinkTimers::default());
            assert_eq!(t.next_hop(id, 3), None);
            assert_eq!(t.next_hop(0, id), None);
        }
    }

    /// root 0 -> {1, 2}; 1 -> {3, 4}; 2 -> {5}; 3 -> {6}
    fn sample() -> Tree {
        let parents = vec![None, Some(0), Some(0), Some(1), Some(1), Some(2), Some(3)];
        Tree::new(parents, vec![LinkTimers::default(); 7]).unwrap()
    }

    #[test]
    fn routing_walks_up() {
        let t = sample();
        assert_eq!(t.next_hop(0, 6), Some(1));
        assert_eq!(t.next_hop(1, 6), Some(3));
        assert_eq!(t.next_hop(3, 6), Some(6));
        assert_eq!(t.next_hop(2, 6), None);
        assert_eq!(t.next_hop(6, 6), None);
        assert_eq!(t.next_hop(0, 99), None);
        assert!(t.within(6, 1) && t.within(1, 1) && !t.within(5, 1));
    }

    #[test]
    fn subtrees_and_depths() {
        let t = sample();
        let mut s: Vec<_> = t.subtree(1).collect();
        s.sort();
        assert_eq!(s, vec![1, 3, 4, 6]);
        assert_eq!(t.subtree_len(0), 7);
        assert_eq!(t.depth(6), 3);
        assert_eq!(t.aggregators().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_generated_topology_makes_a_tree() {
        let spec = topo::generate::GenSpec {
            nodes: 100,
            racks: 4,
            ..Default::default()
        };
        let flat = topo::generate::generate(&spec).flatten();
        let t = Tree::from_flat(&flat).unwrap();
        assert_eq!(t.len(), 105);
        assert_eq!(t.children(0).len(), 4);
        assert_eq!(t.subtree_len(0), 105);
    }

    #[test]
    fn groups_are_hybrid_only_where_the_topology_says_so() {
        let mut spec = topo::generate::GenSpec {
            nodes: 20,
            racks: 2,
            ..Default::default()
        };
        let t = Tree::from_flat(&topo::generate::generate(&spec).flatten()).unwrap();
        assert!(!t.sideways(1) && !t.sideways(0));
        spec.sync.strategy = topo::StrategyKind::Hybrid;
        let t = Tree::from_flat(&topo::generate::generate(&spec).flatten()).unwrap();
        let leaders: Vec<NodeId> = t.aggregators().filter(|&a| a != 0).collect();
        assert_eq!(leaders.len(), 2);
        assert!(leaders.iter().all(|&l| t.sideways(l)));
        assert!(!t.sideways(0), "the root leads no group");
        assert!(!t.sideways(leaders[0] + 1), "a leaf leads no group");
        assert!(t.in_group(leaders[0], leaders[0] + 1));
        assert!(!t.in_group(leaders[0], leaders[1]));
        let manual = sample().with_sideways([0, 1, 5, 99]);
        assert_eq!((manual.sideways(0), manual.sideways(1)), (false, true));
        assert!(!manual.sideways(5) && !manual.sideways(99));
    }

    #[test]
    fn bad_shapes_are_rejected() {
        let two_roots = Tree::new(vec![None, None], vec![LinkTimers::default(); 2]);
        assert_eq!(two_roots.err(), Some(TreeError::SecondRoot(1)));
        let forward = Tree::new(vec![None, Some(2), Some(0)], vec![LinkTimers::default(); 3]);
        assert!(matches!(forward, Err(TreeError::BadParent { .. })));
        let timers = LinkTimers {
            hello: Duration::from_secs(4),
            ..LinkTimers::default()
        };
        assert_eq!(
            Tree::new(vec![None], vec![timers]).err(),
            Some(TreeError::Timers(0))
        );
    }
}
