//! The acting sub-parent rule, as pure functions.
//!
//! - A claim ([`Acting`]) names a member and an epoch. Of two claims the
//!   [`better`] one has the higher epoch; at equal epochs, the better rank.
//!   Every core follows the best claim it has heard; a claim only ever
//!   replaces a worse one, so a stale acting member yields as soon as it
//!   hears a newer claim.
//! - [`candidate`]: who should act, in this core's view of who is alive:
//!   with `retake`, the best-ranked live member; without it, the current
//!   acting member while it is alive, else the best-ranked live member.
//! - Only the candidate itself claims, with the followed claim's epoch plus
//!   one (so the epoch rises on every change of acting member).
//!
//! Why it converges: once faults stop, foca gives every live member of a
//! connected group the same view, so they agree on one candidate; it claims
//! (if it does not act already) and the claim, better than every earlier
//! one, reaches everyone by broadcast and anti-entropy. Two members that
//! claim at once with one epoch are ordered by rank.

use overlay::NodeId;

use crate::config::GroupSpec;
pub use crate::wire::Acting;

/// Whether claim `a` beats claim `b`: higher epoch, then better rank.
pub fn better(group: &GroupSpec, a: Acting, b: Acting) -> bool {
    let rank = |n| group.rank(n).unwrap_or(u32::MAX);
    a.epoch > b.epoch || (a.epoch == b.epoch && rank(a.member) < rank(b.member))
}

/// Who should act, given the followed claim and who is believed alive.
pub fn candidate(
    group: &GroupSpec,
    current: Acting,
    retake: bool,
    alive: impl Fn(NodeId) -> bool,
) -> Option<NodeId> {
    if !retake && alive(current.member) {
        return Some(current.member);
    }
    group.ranked().iter().copied().find(|&n| alive(n))
}

/// The claim this member makes if it is the candidate and does not act
/// yet: one epoch above the followed claim.
pub fn claim(me: NodeId, current: Acting) -> Option<Acting> {
    (current.member != me).then_some(Acting {
        member: me,
        epoch: current.epoch + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> GroupSpec {
        GroupSpec::new(0, vec![10, 11, 12, 13]).expect("valid")
    }

    fn at(member: NodeId, epoch: u64) -> Acting {
        Acting { member, epoch }
    }

    #[test]
    fn higher_epoch_wins_then_rank() {
        let g = group();
        assert!(better(&g, at(13, 2), at(10, 1)));
        assert!(better(&g, at(11, 2), at(12, 2)));
        assert!(!better(&g, at(12, 2), at(12, 2)));
    }

    #[test]
    fn retake_prefers_rank_and_no_retake_prefers_the_incumbent() {
        let g = group();
        let all = |_| true;
        assert_eq!(candidate(&g, at(12, 3), true, all), Some(10));
        assert_eq!(candidate(&g, at(12, 3), false, all), Some(12));
        let not_10_12 = |n| n != 10 && n != 12;
        assert_eq!(candidate(&g, at(12, 3), false, not_10_12), Some(11));
        assert_eq!(candidate(&g, at(12, 3), true, |_| false), None);
    }

    #[test]
    fn only_a_new_member_claims() {
        assert_eq!(claim(11, at(10, 4)), Some(at(11, 5)));
        assert_eq!(claim(10, at(10, 4)), None);
    }
}
