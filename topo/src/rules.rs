//! The strategy rules: whether a structurally valid topology can run with
//! the strategies its levels ask for. Checked by `parse` after everything
//! else, so that an error here always concerns a file that is otherwise
//! well formed.
//!
//! - **Gossip is all or nothing.** `gossip` is the flat baseline: one SWIM
//!   group of the whole cluster, with no tree. It runs only when every
//!   level says `gossip`; `tree` and `hybrid` mix freely.
//! - **A hybrid group has a standby.** The strategy that governs a group is
//!   that of its members' level (the links between a member and the
//!   group's sub-parent, [`crate::Instance::sync`] of the members): its
//!   nodes and separate standby are on the nodes' tier (the last level),
//!   its nested groups' sub-parents on the level below its own sub-parent.
//!   If any of those levels is `hybrid`, the sub-parent, the standby and
//!   the members form a SWIM group that promotes the standby when the
//!   sub-parent dies, so the group must name a `standby`. A group with no
//!   members forms no SWIM group.

use crate::model::{Group, Level, Topology};
use crate::sync::StrategyKind;
use crate::yaml::Pos;

/// Where the values the rules look at were written.
pub(crate) struct RuleSpans {
    /// The `strategy:` value of the top-level `sync`, if written.
    pub default_strategy: Option<Pos>,
    /// Per level: the `strategy:` value of its `sync`, if written. Empty
    /// when `levels` was not given (every level then has the defaults).
    pub level_strategy: Vec<Option<Pos>>,
    /// Per group, in pre-order (a group, then its nested groups): the start
    /// of its mapping.
    pub groups: Vec<Pos>,
}

/// Checks the rules of the module doc; the error is the position to blame
/// and the message.
pub(crate) fn check(t: &Topology, spans: &RuleSpans) -> Result<(), (Pos, String)> {
    check_gossip(t, spans)?;
    let mut next = 0;
    for g in &t.groups {
        check_standbys(t, g, 0, spans, &mut next)?;
    }
    Ok(())
}

/// Gossip on every level or on none.
fn check_gossip(t: &Topology, spans: &RuleSpans) -> Result<(), (Pos, String)> {
    let is_gossip = |l: &&Level| l.sync.strategy == StrategyKind::Gossip;
    let (Some(gossip), Some(other)) = (
        t.levels.iter().position(|l| is_gossip(&l)),
        t.levels.iter().position(|l| !is_gossip(&l)),
    ) else {
        return Ok(());
    };
    let written = |i: usize| spans.level_strategy.get(i).copied().flatten();
    // Blame the `gossip` a level wrote itself; if it was inherited from the
    // defaults, the other level's own word is what broke the rule.
    let pos = written(gossip)
        .or(written(other))
        .or(spans.default_strategy)
        .unwrap_or(Pos { line: 1, col: 1 });
    let (g, o) = (&t.levels[gossip], &t.levels[other]);
    let msg = format!(
        "strategy `gossip` (level `{}`) cannot be mixed with `{}` (level `{}`): gossip is the flat \
         baseline, one SWIM group of the whole cluster, and must be on every level; \
         otherwise use `tree` or `hybrid`, which mix freely",
        g.name, o.sync.strategy, o.name
    );
    Err((pos, msg))
}

/// Every group governed by a `hybrid` level has a standby (pre-order walk;
/// `next` is the group's index in `spans.groups`).
fn check_standbys(
    t: &Topology,
    g: &Group,
    depth: usize,
    spans: &RuleSpans,
    next: &mut usize,
) -> Result<(), (Pos, String)> {
    let pos = spans.groups.get(*next).copied();
    *next += 1;
    if g.standby.is_none()
        && let Some(level) = hybrid_member_level(t, g, depth)
    {
        let msg = format!(
            "group `{}` has no `standby`, but its members are on level `{}`, whose strategy is \
             `hybrid`: the sub-parent, standby and members form a SWIM group that promotes the \
             standby when the sub-parent dies; add `standby:` with one of its nodes \
             (`standby: NAME`) or a separate member (`standby: {{ name: NAME, addr: \"IP:PORT\" }}`)",
            g.name, level.name
        );
        return Err((pos.unwrap_or(Pos { line: 1, col: 1 }), msg));
    }
    for child in &g.groups {
        check_standbys(t, child, depth + 1, spans, next)?;
    }
    Ok(())
}

/// The first `hybrid` level among those of the members of `g` (a group at
/// nesting depth `depth`): its nodes' (the last level) and its nested
/// groups' sub-parents' (`levels[depth + 1]`).
fn hybrid_member_level<'t>(t: &'t Topology, g: &Group, depth: usize) -> Option<&'t Level> {
    let nodes = t.levels.last().filter(|_| !g.nodes.is_empty());
    let sub_parents = t.levels.get(depth + 1).filter(|_| !g.groups.is_empty());
    [sub_parents, nodes]
        .into_iter()
        .flatten()
        .find(|l| l.sync.strategy == StrategyKind::Hybrid)
}
