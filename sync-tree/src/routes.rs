//! Effective routing: the static tree with acting sub-parents applied.
//!
//! When a group's sub-parent `s` is replaced by an acting member `a`
//! (chosen by the sideways strategy, or announced by `a` in its hellos),
//! three things change, and only these:
//!
//! - the other members of the group (and `s` itself, demoted) have `a` as
//!   their parent;
//! - `a` takes `s`'s place under `s`'s parent;
//! - records for nodes below `s` are routed through `a`.
//!
//! [`Routes`] answers parent, children, next hop, subtree and link timers
//! with that applied. With no acting replacement it is the static tree, and
//! the fast path does no lookups.

use std::sync::Arc;

use overlay::NodeId;
use overlay::tree::{LinkTimers, Tree};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

/// Most levels a routing walk climbs (topologies have at most 16 tiers).
const WALK_MAX: usize = 64;

/// The tree plus the acting replacements this instance knows of.
pub(crate) struct Routes {
    tree: Arc<Tree>,
    /// Static sub-parent -> (acting member, epoch).
    acting: HashMap<NodeId, (NodeId, u64)>,
    /// Instances whose parent is dead and that report to the position
    /// above it (their grandparent) until it returns.
    fallback: HashSet<NodeId>,
    /// Moves on every call that may change a route.
    generation: u64,
}

impl Routes {
    pub fn new(tree: Arc<Tree>) -> Routes {
        Routes {
            tree,
            acting: HashMap::default(),
            fallback: HashSet::default(),
            generation: 0,
        }
    }

    /// The static tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// The acting member of the group `leader` leads, if it was replaced.
    pub fn replaced(&self, leader: NodeId) -> Option<NodeId> {
        self.acting
            .get(&leader)
            .map(|&(a, _)| a)
            .filter(|&a| a != leader)
    }

    /// The epoch of the group's acting member (0: never announced).
    pub fn epoch(&self, leader: NodeId) -> u64 {
        self.acting.get(&leader).map_or(0, |&(_, e)| e)
    }

    /// Records `acting` for the group `leader` leads if `epoch` is newer;
    /// returns whether anything changed.
    /// Only a member of a group that is not the root's can act for it (the
    /// root's place is never taken); whether a claim heard from the network
    /// is legitimate at all is the core's check (`TreeCore`).
    pub fn set(&mut self, leader: NodeId, acting: NodeId, epoch: u64) -> bool {
        self.generation = self.generation.wrapping_add(1);
        let valid = self.tree.parent(leader).is_some()
            && !self.tree.children(leader).is_empty()
            && self.tree.in_group(leader, acting);
        if !valid || epoch <= self.epoch(leader) {
            return false;
        }
        let before = self.replaced(leader);
        self.acting.insert(leader, (acting, epoch));
        before != self.replaced(leader)
    }

    /// A counter that moves whenever the routes may have changed (cached
    /// digests over a subtree hold until it moves).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether nothing overrides the static tree.
    fn is_static(&self) -> bool {
        self.acting.is_empty() && self.fallback.is_empty()
    }

    /// Marks `x` as fallen back to its grandparent (or back home);
    /// returns whether anything changed. Only an instance with a
    /// grandparent can fall back.
    pub fn set_fallback(&mut self, x: NodeId, on: bool) -> bool {
        self.generation = self.generation.wrapping_add(1);
        if on {
            self.grandparent(x).is_some() && self.fallback.insert(x)
        } else {
            self.fallback.remove(&x)
        }
    }

    /// Whether any instance has fallen back (the fast path is off).
    pub fn has_fallback(&self) -> bool {
        !self.fallback.is_empty()
    }

    /// Whether `x` has fallen back.
    pub fn is_fallback(&self, x: NodeId) -> bool {
        self.fallback.contains(&x)
    }

    /// The static grandparent of `x`.
    pub fn grandparent(&self, x: NodeId) -> Option<NodeId> {
        self.tree.parent(self.tree.parent(x)?)
    }

    /// The static parent of `x`.
    pub fn static_parent(&self, x: NodeId) -> Option<NodeId> {
        self.tree.parent(x)
    }

    /// Fallen-back instances whose static parent is `p`.
    pub fn fallen_from(&self, p: NodeId) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .fallback
            .iter()
            .copied()
            .filter(|&x| self.tree.parent(x) == Some(p))
            .collect();
        v.sort_unstable();
        v
    }

    /// The effective parent of `x`.
    pub fn parent(&self, x: NodeId) -> Option<NodeId> {
        if self.is_static() {
            return self.tree.parent(x);
        }
        if let Some(a) = self.replaced(x) {
            return Some(a);
        }
        let p = self.tree.parent(x)?;
        if self.fallback.contains(&x) {
            return self.occupant(self.tree.parent(p)?, p, 0);
        }
        self.occupant(p, x, 0)
    }

    /// Who sits in position `pos` as seen from `asker`, a static child of
    /// `pos`: the acting member, unless `asker` is that member, in which
    /// case it is `pos`'s own parent position.
    fn occupant(&self, pos: NodeId, asker: NodeId, depth: usize) -> Option<NodeId> {
        match self.replaced(pos) {
            Some(a) if a == asker && depth < WALK_MAX => {
                self.occupant(self.tree.parent(pos)?, pos, depth + 1)
            }
            Some(a) if a != asker => Some(a),
            _ => Some(pos),
        }
    }

    /// The effective children of `me`.
    pub fn children(&self, me: NodeId) -> Vec<NodeId> {
        if self.is_static() {
            return self.tree.children(me).to_vec();
        }
        let mut cand: Vec<NodeId> = self.tree.children(me).to_vec();
        cand.extend(self.fallback.iter().copied());
        for (&s, &(a, _)) in &self.acting {
            if a == me && s != me {
                cand.push(s);
                cand.extend_from_slice(self.tree.children(s));
            }
        }
        let acting: Vec<NodeId> = cand.iter().filter_map(|&c| self.replaced(c)).collect();
        cand.extend(acting);
        cand.sort_unstable();
        cand.dedup();
        cand.retain(|&y| y != me && self.parent(y) == Some(me));
        cand
    }

    /// The neighbour of `from` on the way down to `target`, if `target` is
    /// below `from`.
    pub fn next_hop(&self, from: NodeId, target: NodeId) -> Option<NodeId> {
        if self.is_static() {
            return self.tree.next_hop(from, target);
        }
        if (target as usize) >= self.tree.len() {
            return None;
        }
        let mut t = target;
        for _ in 0..WALK_MAX {
            let p = self.parent(t)?;
            if p == from {
                return Some(t);
            }
            t = p;
        }
        None
    }

    /// `target` is `top` or below it.
    pub fn within(&self, target: NodeId, top: NodeId) -> bool {
        target == top || self.next_hop(top, target).is_some()
    }

    /// `top` and every instance effectively below it. Without failovers or
    /// fallbacks it borrows the static tree's list (hellos ask for it on
    /// every link: no allocation on that path).
    pub fn subtree(&self, top: NodeId) -> Subtree<'_> {
        if self.is_static() {
            return Subtree {
                head: Some(top),
                below: self.tree.descendants(top).iter(),
                owned: Vec::new().into_iter(),
            };
        }
        Subtree {
            head: None,
            below: [].iter(),
            owned: self.dynamic_subtree(top).into_iter(),
        }
    }

    /// [`Routes::subtree`] after failovers or fallbacks.
    fn dynamic_subtree(&self, top: NodeId) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.tree.subtree(top).collect();
        for (&s, &(a, _)) in &self.acting {
            if a == top && s != top {
                v.extend(self.tree.subtree(s));
            }
        }
        v.sort_unstable();
        v.dedup();
        v.retain(|&x| self.within(x, top));
        v
    }

    /// Timers of the link between `child` and its effective parent: an
    /// acting member uses the timers of the position it fills.
    pub fn timers(&self, child: NodeId) -> LinkTimers {
        for (&s, &(a, _)) in &self.acting {
            if a == child && s != child {
                return self.tree.timers(s);
            }
        }
        self.tree.timers(child)
    }

    /// The group `me` acts for (or leads again after a failover), with
    /// its epoch, if any: what `me` claims in hellos to its parent.
    pub fn acting_for(&self, me: NodeId) -> Option<(NodeId, u64)> {
        self.acting
            .iter()
            .find(|&(_, &(a, _))| a == me)
            .map(|(&s, &(_, e))| (s, e))
    }
}

/// The instances of a subtree ([`Routes::subtree`]): the static tree's
/// borrowed list, or a list computed after failovers.
pub struct Subtree<'a> {
    head: Option<NodeId>,
    below: std::slice::Iter<'a, NodeId>,
    owned: std::vec::IntoIter<NodeId>,
}

impl Iterator for Subtree<'_> {
    type Item = NodeId;

    fn next(&mut self) -> Option<NodeId> {
        self.head
            .take()
            .or_else(|| self.below.next().copied())
            .or_else(|| self.owned.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fallen_back_leaf_reports_to_its_grandparent() {
        let mut r = routes();
        assert!(r.set_fallback(3, true));
        assert!(
            !r.set_fallback(1, true),
            "a sub-parent under the root has no grandparent"
        );
        assert_eq!(r.parent(3), Some(0));
        assert_eq!(r.children(0), vec![1, 2, 3]);
        assert_eq!(r.children(1), vec![4, 5]);
        assert_eq!(r.next_hop(0, 3), Some(3));
        assert_eq!(r.subtree(1).collect::<Vec<_>>(), vec![1, 4, 5]);
        assert_eq!(r.fallen_from(1), vec![3]);
        assert!(r.set_fallback(3, false));
        assert_eq!(r.parent(3), Some(1));
    }

    /// root 0 -> sub-parents 1, 2; 1 -> leaves 3, 4, 5; 2 -> leaves 6, 7.
    fn routes() -> Routes {
        let parents = vec![
            None,
            Some(0),
            Some(0),
            Some(1),
            Some(1),
            Some(1),
            Some(2),
            Some(2),
        ];
        Routes::new(Arc::new(
            Tree::new(parents, vec![LinkTimers::default(); 8]).unwrap(),
        ))
    }

    #[test]
    fn static_routes_without_replacements() {
        let r = routes();
        assert_eq!(r.parent(3), Some(1));
        assert_eq!(r.children(1), vec![3, 4, 5]);
        assert_eq!(r.next_hop(0, 4), Some(1));
    }

    #[test]
    fn an_acting_member_takes_the_sub_parents_place() {
        let mut r = routes();
        assert!(r.set(1, 4, 1));
        assert_eq!(
            r.parent(4),
            Some(0),
            "the acting member reports to the root"
        );
        assert_eq!(r.parent(3), Some(4));
        assert_eq!(r.parent(1), Some(4), "the old sub-parent is demoted");
        assert_eq!(r.children(0), vec![2, 4]);
        assert_eq!(r.children(4), vec![1, 3, 5]);
        assert!(r.children(1).is_empty());
        assert_eq!(r.next_hop(0, 3), Some(4));
        assert_eq!(r.next_hop(0, 1), Some(4));
        assert_eq!(r.next_hop(4, 3), Some(3));
        assert_eq!(r.subtree(4).collect::<Vec<_>>(), vec![1, 3, 4, 5]);
        assert!(r.within(5, 4) && !r.within(6, 4));
        assert_eq!(r.acting_for(4), Some((1, 1)));
    }

    #[test]
    fn stale_epochs_and_strangers_are_refused_and_the_original_can_return() {
        let mut r = routes();
        assert!(r.set(1, 4, 2));
        assert!(!r.set(1, 5, 1), "older epoch");
        assert!(!r.set(1, 6, 3), "not a member of the group");
        assert!(!r.set(0, 1, 4), "the root's place is never taken");
        assert!(!r.set(3, 3, 4), "a leaf leads no group");
        assert!(r.set(1, 1, 3), "the original takes its role back");
        assert_eq!(r.parent(3), Some(1));
        assert_eq!(r.children(0), vec![1, 2]);
        assert_eq!(r.epoch(1), 3);
    }
}
