//! Who a member is on the SWIM layer.
//!
//! - [`MemberId`]: a topology [`NodeId`] plus an `incarnation` chosen by the
//!   member at boot. foca keys its membership by [`foca::Identity::addr`]
//!   (the node id), so a restarted member, booting with a higher
//!   incarnation, replaces its old identity at once instead of waiting for
//!   the group to forget it.
//! - When foca learns that the group declared this member down (a false
//!   suspicion, or a partition that healed), [`foca::Identity::renew`]
//!   returns the same node with `incarnation + 1`, which wins the conflict,
//!   so the member rejoins by itself.

use overlay::NodeId;

/// A member's identity on the SWIM layer: node id and boot incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    /// The member's topology id (its address on the overlay).
    pub node: NodeId,
    /// Chosen at boot (higher than any earlier boot's, e.g. a boot time in
    /// microseconds) and bumped by one at each automatic rejoin.
    pub incarnation: u64,
}

impl foca::Identity for MemberId {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            node: self.node,
            incarnation: self.incarnation.wrapping_add(1),
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // The later boot (or the later rejoin) is the live one.
        self.incarnation > adversary.incarnation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn renewed_identity_wins_the_conflict() {
        let a = MemberId {
            node: 3,
            incarnation: 7,
        };
        let b = a.renew().expect("always renews");
        assert_eq!(b.addr(), a.addr());
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }
}
