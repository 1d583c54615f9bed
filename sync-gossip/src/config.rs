//! What a group is and how its SWIM layer is tuned.
//!
//! - [`GroupSpec`]: the group's index and its members in rank order (the
//!   topology's sub-parent first, then its standby, then the other members
//!   by id). Rank is the election's order and also picks the join seeds.
//! - [`GossipConfig`]: boot incarnation, seed, the `retake` rule, and the
//!   timers handed to foca ([`GossipConfig::foca_config`]).
//!
//! # The foca settings, and why
//!
//! [`GossipConfig::for_hello`] derives a small group's settings from the
//! level's hello (hello 1 s gives the values in brackets);
//! [`GossipConfig::for_group`] sizes the probe period and the suspicion
//! for a rack (see its doc) and keeps every other value:
//!
//! | setting | value | why |
//! | --- | --- | --- |
//! | `probe_period` | hello / 2 (500 ms); `for_group`: `log2(n / 4)` halves of a hello in hello / 2 ..= 4 hellos (2.8 s for 200) | every member probes one member per period; the watchers, not probing, catch the acting member's death, so the period only bounds how fast other deaths are seen |
//! | `probe_rtt` | hello / 10 (100 ms) | LAN round trips are well under 1 ms; the rest of the period is left for the indirect probes |
//! | `num_indirect_probes` | 3 | a probe fails falsely only if the direct and all three indirect paths fail: about 6e-4 at 5 % loss |
//! | `suspect_to_down_after` | 2 hellos; `for_group`: `(1 + log10 n)` hellos, at least 2 | time for a falsely suspected member to hear of it and refute; shorter made loaded real-UDP runs flap |
//! | `max_transmissions` | 4 log10(n+1), 8..=15 (11 for 500) | how many times each update is piggybacked; enough to reach every member of a rack with high probability, anti-entropy repairs the rest |
//! | `periodic_gossip` | every hello / 2, 3 members | spreads suspicions, downs and claims without waiting for probes (only when there is news) |
//! | `periodic_announce` | none (rack); every 5 hellos, 1 member (flat) | a rack's core announces itself every `feed_interval` only while its view is incomplete |
//! | `periodic_announce_to_down_members` | every 5 hellos, 2 members | finds members on the other side of a healed partition |
//! | `notify_down_members` | true | a member declared down learns it and rejoins with a renewed identity |
//! | `remove_down_after` | `None` | membership is keyed by node id, so memory stays bounded by the group |
//! | `max_packet_size` | [`FOCA_PACKET_MAX_BYTES`] | a foca packet plus the `Frame::Gossip` wrapping fits `MAX_FRAME_BYTES` |

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use overlay::NodeId;

use crate::error::ConfigError;

/// Most members of one group (a rack has up to ~500).
pub const GROUP_MEMBERS_MAX: usize = 1024;

/// Most members of the flat group of the `gossip` strategy (the whole
/// cluster in one SWIM group; every member holds every record, so memory
/// grows with the square of the cluster and the baseline stops far below
/// this).
pub const FLAT_MEMBERS_MAX: usize = 1 << 20;

/// Bytes `Frame { gossip: Gossip { group, payload } }` adds around a foca
/// packet: frame tag and length (1 + 2), group tag and varint (1 + 5),
/// payload tag and length (1 + 2), our payload tag (1), and headroom.
pub const GOSSIP_FRAME_OVERHEAD_BYTES: usize = 16;

/// Largest foca packet: what is left of a frame after the wrapping.
pub const FOCA_PACKET_MAX_BYTES: usize =
    overlay::strategy::MAX_FRAME_BYTES - GOSSIP_FRAME_OVERHEAD_BYTES;

/// One group: its index and its members in rank order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    group: u32,
    ranked: Vec<NodeId>,
    /// `(node, rank)` sorted by node, for lookups.
    index: Vec<(NodeId, u32)>,
}

impl GroupSpec {
    /// A group whose members are `ranked`, best rank first (the first is
    /// the topology's sub-parent).
    pub fn new(group: u32, ranked: Vec<NodeId>) -> Result<GroupSpec, ConfigError> {
        GroupSpec::with_limit(group, ranked, GROUP_MEMBERS_MAX)
    }

    /// The one group of the flat `gossip` strategy: every instance of the
    /// cluster, the root first (up to [`FLAT_MEMBERS_MAX`]).
    pub fn flat(group: u32, ranked: Vec<NodeId>) -> Result<GroupSpec, ConfigError> {
        GroupSpec::with_limit(group, ranked, FLAT_MEMBERS_MAX)
    }

    fn with_limit(group: u32, ranked: Vec<NodeId>, max: usize) -> Result<GroupSpec, ConfigError> {
        if ranked.is_empty() {
            return Err(ConfigError::EmptyGroup(group));
        }
        if ranked.len() > max {
            return Err(ConfigError::GroupTooLarge {
                members: ranked.len(),
                max,
            });
        }
        let mut index: Vec<(NodeId, u32)> = ranked
            .iter()
            .enumerate()
            .map(|(r, &n)| (n, r as u32))
            .collect();
        index.sort_unstable();
        if let Some(w) = index.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ConfigError::Duplicate(w[0].0));
        }
        Ok(GroupSpec {
            group,
            ranked,
            index,
        })
    }

    /// Group `group` of a flattened topology: its sub-parent, then its
    /// standby, then the sub-parent's other direct children by id.
    pub fn from_flat(flat: &topo::Flat, group: u32) -> Result<GroupSpec, ConfigError> {
        let g = flat
            .groups
            .get(group as usize)
            .ok_or(ConfigError::NoSuchGroup(group))?;
        let mut ranked = vec![g.sub_parent];
        ranked.extend(g.standby);
        let mut rest: Vec<NodeId> = g
            .members
            .iter()
            .copied()
            .filter(|m| Some(*m) != g.standby && *m != g.sub_parent)
            .collect();
        rest.sort_unstable();
        ranked.extend(rest);
        GroupSpec::new(group, ranked)
    }

    /// The group's index (in the topology's flat list of groups).
    pub fn group(&self) -> u32 {
        self.group
    }

    /// Members, best rank first.
    pub fn ranked(&self) -> &[NodeId] {
        &self.ranked
    }

    /// The topology's sub-parent (rank 0).
    pub fn sub_parent(&self) -> NodeId {
        self.ranked[0]
    }

    /// The rank of `node` (0 is best), if it is a member.
    pub fn rank(&self, node: NodeId) -> Option<u32> {
        let i = self.index.binary_search_by_key(&node, |&(n, _)| n).ok()?;
        Some(self.index[i].1)
    }

    /// Whether `node` is a member.
    pub fn contains(&self, node: NodeId) -> bool {
        self.rank(node).is_some()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.ranked.len()
    }

    /// Always false: a group has at least one member.
    pub fn is_empty(&self) -> bool {
        self.ranked.is_empty()
    }
}

/// Settings of one [`crate::GossipCore`].
#[derive(Clone, Debug, PartialEq)]
pub struct GossipConfig {
    /// This boot's incarnation: higher than any earlier boot's of this
    /// node (e.g. the boot time in microseconds, the envelope epoch).
    pub incarnation: u64,
    /// Seeds every random choice of the core (and of foca).
    pub seed: u64,
    /// Whether the topology's sub-parent takes the acting role back when it
    /// returns (topology `SyncSettings::retake`).
    pub retake: bool,
    /// SWIM probe period.
    pub probe_period: Duration,
    /// Wait for a direct ack before probing indirectly (< `probe_period`).
    pub probe_rtt: Duration,
    /// How long a suspect stays suspect before it is declared down.
    pub suspect_to_down_after: Duration,
    /// Interval of foca's periodic gossip (only sent when there is news).
    pub gossip_interval: Duration,
    /// Interval of foca's announces to down members (healing
    /// partitions); also how long a member must have been in the group
    /// before it watches or judges the acting member.
    pub announce_interval: Duration,
    /// Interval of the announce that completes an incomplete view (rack
    /// mode): a member that knows fewer than all other members announces itself
    /// to a random one (the answer, foca's feed, lists up to about 100
    /// members). Nothing is sent once the view is complete.
    pub feed_interval: Duration,
    /// Interval between anti-entropy digests to one random live member.
    pub anti_entropy_interval: Duration,
    /// Least time between two claims of the acting role by this member, and
    /// between boot and its first claim (time to learn the group's claim).
    pub claim_holdoff: Duration,
    /// How records spread and whether the group elects an acting member.
    pub mode: Mode,
    /// Members that watch the acting one directly (rack mode): the best
    /// ranked live members after it, i.e. its likely successors. 0 leaves
    /// the detection of its death to SWIM's random probing alone.
    pub watchers: usize,
    /// Interval of a watcher's pings to the acting member.
    pub watch_interval: Duration,
    /// A watcher declares the acting member down after this long without
    /// an answer.
    pub watch_timeout: Duration,
}

/// How a group spreads records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// A rack beside the tree (`hybrid`): fresh records go straight to the
    /// best-ranked members, the rest catch up by anti-entropy, and the
    /// group elects an acting sub-parent.
    #[default]
    Rack,
    /// The whole cluster as one group (`gossip`, the baseline): every record
    /// is an epidemic broadcast piggybacked on SWIM's messages (each member
    /// re-sends news `max_transmissions` times), anti-entropy repairs what
    /// the epidemic missed, and nobody is elected.
    Flat,
}

impl GossipConfig {
    /// Settings for a level whose hello is `hello`, for a small group (see
    /// the module doc); [`GossipConfig::for_group`] sizes them for a rack.
    pub fn for_hello(hello: Duration) -> GossipConfig {
        // The watchers, not random probing, catch the acting member's
        // death (about one hello), so the period only bounds how fast other
        // members' deaths are seen; hello / 4 doubled the SWIM traffic and
        // saturated 5,000 UDP nodes on two cores. Anti-entropy every 8
        // periods (4 hellos).
        let period = (hello / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        GossipConfig {
            incarnation: 0,
            seed: 0,
            retake: true,
            probe_period: period,
            probe_rtt: period / 5,
            suspect_to_down_after: period * 4,
            gossip_interval: period,
            announce_interval: period * 10,
            feed_interval: period * 10,
            anti_entropy_interval: period * 8,
            claim_holdoff: period * 4,
            mode: Mode::Rack,
            watchers: 2,
            watch_interval: hello / 8,
            watch_timeout: hello,
        }
    }

    /// Settings for a group of `members` whose level's hello is `hello`:
    /// [`GossipConfig::for_hello`] with SWIM's probing sized for the group
    /// (issue 14). Each member probes one member per period and meets
    /// every other member in time (a first contact costs an envelope
    /// handshake), so with a fixed period a rack's SWIM traffic per member
    /// was four times the tree's. The acting member is watched directly, so
    /// the period only bounds how fast the death of another member is seen:
    /// it grows with `log2(members / 4)` halves of a hello, from hello / 2
    /// (8 members or fewer) to 4 hellos (1,024), about 2.8 hellos for 200.
    /// Suspicion grows with `log10(members)` as memberlist's does (news
    /// takes more rounds to reach a bigger group): `(1 + log10 n)` hellos.
    /// Every other timer keeps its absolute value.
    pub fn for_group(hello: Duration, members: usize) -> GossipConfig {
        let base = GossipConfig::for_hello(hello);
        let n = members.max(1) as f64;
        let halves = (n / 4.0).log2().clamp(1.0, 8.0);
        let period = (hello.mul_f64(halves / 2.0))
            .clamp(Duration::from_millis(100), Duration::from_secs(20));
        let suspect = hello.mul_f64(1.0 + n.log10());
        GossipConfig {
            probe_period: period.max(base.probe_period),
            probe_rtt: base.probe_rtt,
            suspect_to_down_after: suspect.max(base.suspect_to_down_after),
            feed_interval: base.announce_interval * 6,
            ..base
        }
    }

    /// Checks the timers.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = [
            (self.probe_rtt, "probe_rtt is zero"),
            (self.suspect_to_down_after, "suspect_to_down_after is zero"),
            (self.gossip_interval, "gossip_interval is zero"),
            (self.announce_interval, "announce_interval is zero"),
            (self.feed_interval, "feed_interval is zero"),
            (self.anti_entropy_interval, "anti_entropy_interval is zero"),
            (self.watch_interval, "watch_interval is zero"),
        ];
        if let Some((_, why)) = zero.iter().find(|(d, _)| d.is_zero()) {
            return Err(ConfigError::Timers(why));
        }
        if self.probe_rtt >= self.probe_period {
            return Err(ConfigError::Timers("probe_rtt must be below probe_period"));
        }
        if self.watchers > 0 && self.watch_timeout <= self.watch_interval {
            return Err(ConfigError::Timers(
                "watch_timeout must be longer than watch_interval",
            ));
        }
        Ok(())
    }

    /// foca's configuration for a group of `members` (see the module doc).
    pub fn foca_config(&self, members: usize) -> foca::Config {
        let periodic = |frequency, n| {
            Some(foca::PeriodicParams {
                frequency,
                num_members: NonZeroUsize::new(n).expect("n > 0"),
            })
        };
        foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: NonZeroUsize::new(3).expect("3 > 0"),
            max_transmissions: max_transmissions(members),
            suspect_to_down_after: self.suspect_to_down_after,
            remove_down_after: None,
            max_packet_size: NonZeroUsize::new(FOCA_PACKET_MAX_BYTES).expect("positive"),
            notify_down_members: true,
            // A rack's core announces itself only while its view is
            // incomplete (`feed_interval`); foca's periodic announce sends
            // a feed of ~1,300 bytes every interval whether needed or not.
            // The flat baseline keeps it, as measured.
            periodic_announce: match self.mode {
                Mode::Rack => None,
                Mode::Flat => periodic(self.announce_interval, 1),
            },
            periodic_announce_to_down_members: periodic(self.announce_interval, 2),
            periodic_gossip: periodic(self.gossip_interval, 3),
        }
    }
}

/// `4 log10(n + 1)`, rounded up (memberlist's rule), kept in `8..=15`: below 8, a small group sometimes misses an update for seconds (a member then learns a death only by probing the dead one itself, once per round of the group).
fn max_transmissions(members: usize) -> NonZeroU8 {
    let tx = (4.0 * ((members + 1) as f64).log10())
        .ceil()
        .clamp(8.0, 15.0) as u8;
    NonZeroU8::new(tx).expect("at least 8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_follows_the_topology_order() {
        let spec = topo::generate::GenSpec {
            nodes: 20,
            racks: 2,
            ..Default::default()
        };
        let flat = topo::generate::generate(&spec).flatten();
        let g = GroupSpec::from_flat(&flat, 1).expect("group 1");
        assert_eq!(g.sub_parent(), flat.groups[1].sub_parent);
        assert_eq!(g.len(), 1 + flat.groups[1].members.len());
        assert!(g.ranked()[1..].windows(2).all(|w| w[0] < w[1]));
        assert_eq!(g.rank(g.ranked()[3]), Some(3));
        assert_eq!(
            GroupSpec::from_flat(&flat, 9),
            Err(ConfigError::NoSuchGroup(9))
        );
        assert_eq!(
            GroupSpec::new(0, vec![1, 2, 1]),
            Err(ConfigError::Duplicate(1))
        );
    }

    #[test]
    fn probing_is_sized_for_the_group() {
        let hello = Duration::from_secs(1);
        let small = GossipConfig::for_group(hello, 8);
        assert_eq!(
            small,
            GossipConfig {
                feed_interval: small.feed_interval,
                ..GossipConfig::for_hello(hello)
            }
        );
        let rack = GossipConfig::for_group(hello, 200);
        rack.validate().expect("valid");
        let p = rack.probe_period.as_millis();
        assert!((2700..2900).contains(&p), "period {p} ms for 200 members");
        assert_eq!(rack.probe_rtt, small.probe_rtt, "round trips do not grow");
        assert_eq!(rack.watch_timeout, hello, "the acting member is watched");
        assert!(rack.suspect_to_down_after > small.suspect_to_down_after);
        let big = GossipConfig::for_group(hello, 1024);
        assert_eq!(big.probe_period, Duration::from_secs(4));
    }

    #[test]
    fn defaults_are_valid_and_fit_a_frame() {
        let c = GossipConfig::for_hello(Duration::from_secs(1));
        c.validate().expect("valid");
        let f = c.foca_config(500);
        assert_eq!(f.max_transmissions.get(), 11);
        assert!(
            f.max_packet_size.get() + GOSSIP_FRAME_OVERHEAD_BYTES
                <= overlay::strategy::MAX_FRAME_BYTES
        );
    }
}
