//! [`FlatGossip`]: the `gossip` strategy, one SWIM group for the whole
//! cluster, as an [`overlay::Strategy`].
//!
//! The baseline the tree and hybrid strategies are measured against: no
//! hierarchy, no aggregation. Every instance (the root included) is a
//! member of one [`GossipCore`] in [`Mode::Flat`]; a Cfg the root publishes
//! and a Dsc a node publishes both spread as epidemic broadcasts to every
//! member, and anti-entropy repairs what the epidemic missed. Every member
//! therefore holds every record: memory grows with the square of the
//! cluster and each change costs about `members x max_transmissions`
//! copies, which is what the comparison in `docs/performance.md` shows.

use bytes::Bytes;
use overlay::strategy::{Event, Strategy};
use overlay::{Instance, Key, Kind, NodeId, Record, Time, Transmit};
use proto::overlay::Frame;

use crate::config::{GossipConfig, GroupSpec, Mode};
use crate::core::{GossipCore, GossipEvent, GossipStats};
use crate::error::ConfigError;

/// One instance of the flat `gossip` strategy.
pub struct FlatGossip {
    core: GossipCore,
    /// Least version of a record this instance publishes (a restarted
    /// instance outranks what it published before).
    version_floor: u64,
    events: std::collections::VecDeque<Event>,
    /// Publishes refused because the record's versions were exhausted.
    versions_exhausted: u64,
}

impl FlatGossip {
    /// Member `node` of the flat group `group`, started at `now`; `cfg`'s
    /// mode is forced to [`Mode::Flat`]. `version_floor` is the least
    /// version this instance publishes (e.g. its boot time in ms x 16).
    pub fn new(
        now: Time,
        node: NodeId,
        group: GroupSpec,
        mut cfg: GossipConfig,
        version_floor: u64,
    ) -> Result<FlatGossip, ConfigError> {
        cfg.mode = Mode::Flat;
        Ok(FlatGossip {
            core: GossipCore::new(now, node, group, cfg)?,
            version_floor,
            events: std::collections::VecDeque::new(),
            versions_exhausted: 0,
        })
    }

    /// Records held.
    pub fn records(&self) -> usize {
        self.core.records()
    }

    /// The gossip core's counters.
    pub fn stats(&self) -> GossipStats {
        self.core.stats()
    }

    /// Publishes refused because the record's versions were exhausted (a
    /// held version within 2 of `u64::MAX`; nothing changed).
    pub fn versions_exhausted(&self) -> u64 {
        self.versions_exhausted
    }

    /// Members of the group (the whole cluster).
    pub fn members(&self) -> usize {
        self.core.group().len()
    }

    /// Members this instance believes alive (itself excluded).
    pub fn alive_count(&self) -> usize {
        self.core.alive().count()
    }

    /// Moves the core's events to the strategy's queue.
    fn drain(&mut self) {
        while let Some(e) = self.core.poll_event() {
            match e {
                GossipEvent::Delivered(r) => self.events.push_back(Event::Delivered(r)),
                GossipEvent::MemberUp(n) => self.events.push_back(Event::PeerUp(n)),
                GossipEvent::MemberDown(n) => self.events.push_back(Event::PeerDown(n)),
                GossipEvent::ActingChanged { .. } => {}
            }
        }
    }

    fn put(&mut self, now: Time, record: Record) {
        // Only a stale version is refused, and versions here only rise.
        let _ = self.core.publish(now, record);
        self.drain();
    }
}

impl Instance for FlatGossip {
    fn id(&self) -> NodeId {
        self.core.node()
    }

    fn handle_frame(&mut self, now: Time, from: NodeId, frame: Frame) {
        self.core.handle_frame(now, from, frame);
        self.drain();
    }

    fn handle_timeout(&mut self, now: Time) {
        self.core.handle_timeout(now);
        self.drain();
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.core.poll_transmit()
    }

    fn poll_timeout(&mut self) -> Option<Time> {
        self.core.poll_timeout()
    }
}

impl Strategy for FlatGossip {
    fn publish(&mut self, now: Time, node: NodeId, kind: Kind, data: Bytes) -> u64 {
        let key = Key { node, kind };
        let held = self.core.get(key).map_or(0, |r| r.version);
        // Even versions are published states, odd ones failure marks.
        let Some(next) = held.checked_add(2) else {
            self.versions_exhausted += 1;
            return held;
        };
        let version = (next & !1).max(self.version_floor & !1);
        self.put(now, Record { key, version, data });
        version
    }

    fn mark_failed(&mut self, now: Time, node: NodeId, data: Bytes) {
        let key = Key {
            node,
            kind: Kind::Dsc,
        };
        let held = self.core.get(key).map_or(0, |r| r.version);
        let Some(version) = held.checked_add(1).filter(|_| held.is_multiple_of(2)) else {
            return;
        };
        self.put(now, Record { key, version, data });
    }

    fn get(&self, key: Key) -> Option<Record> {
        self.core.get(key)
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use overlay::sim::{Sim, SimConfig};

    use super::*;

    /// Issue 12, finding 10: a held version near 2^64 made the next
    /// publish overflow; it is refused and counted, nothing changes.
    #[test]
    fn publish_near_u64_max_is_refused_not_wrapped() {
        let spec = GroupSpec::flat(0, vec![0, 1]).expect("spec");
        let cfg = GossipConfig::for_hello(Duration::from_secs(1));
        let mut g = FlatGossip::new(Duration::ZERO, 0, spec, cfg, 0).expect("core");
        let key = Key {
            node: 1,
            kind: Kind::Dsc,
        };
        let high = Record {
            key,
            version: u64::MAX - 1,
            data: Bytes::from_static(b"high"),
        };
        g.core
            .publish(Duration::ZERO, high.clone())
            .expect("stored");
        let v = g.publish(Duration::ZERO, 1, Kind::Dsc, Bytes::from_static(b"next"));
        assert_eq!(v, u64::MAX - 1, "the held version, unchanged");
        assert_eq!(g.get(key), Some(high));
        assert_eq!(g.versions_exhausted(), 1);
        g.mark_failed(Duration::ZERO, 1, Bytes::from_static(b"failed"));
        assert_eq!(g.get(key).map(|r| r.version), Some(u64::MAX));
    }

    /// Every record published anywhere reaches every member.
    #[test]
    fn records_reach_every_member() {
        let n = 40u32;
        let spec = GroupSpec::flat(0, (0..n).collect()).expect("spec");
        let cfg = GossipConfig {
            seed: 7,
            ..GossipConfig::for_hello(Duration::from_secs(1))
        };
        let nodes = (0..n)
            .map(|i| {
                FlatGossip::new(Duration::ZERO, i, spec.clone(), cfg.clone(), 0).expect("core")
            })
            .collect();
        let mut sim = Sim::new(
            SimConfig {
                seed: 3,
                loss: 0.05,
                ..SimConfig::default()
            },
            nodes,
        );
        sim.run_until(Duration::from_secs(5));
        for i in 0..n {
            sim.with(i, |g, now| {
                g.publish(now, i, Kind::Dsc, Bytes::from(vec![i as u8; 20]));
            });
        }
        sim.with(0, |g, now| {
            g.publish(now, 5, Kind::Cfg, Bytes::from_static(b"cfg"));
        });
        sim.run_until(Duration::from_secs(30));
        for m in 0..n {
            let g = sim.get(m).expect("up");
            for i in 0..n {
                let key = Key {
                    node: i,
                    kind: Kind::Dsc,
                };
                assert!(g.get(key).is_some(), "member {m} misses the Dsc of {i}");
            }
            let cfg = Key {
                node: 5,
                kind: Kind::Cfg,
            };
            assert!(g.get(cfg).is_some(), "member {m} misses the Cfg");
        }
    }
}
