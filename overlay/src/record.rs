//! Records: the unit of replication.
//!
//! - [`Record`]: `(node, kind, version, bytes)`; versions are monotonic per
//!   source of truth (the root for Cfg, the node itself for Dsc).
//! - [`Store`]: the records one instance holds; a write with a version not
//!   above the held one is ignored (highest version wins).
//! - [`record_hash`]: the per-record hash whose XOR over a set is the digest
//!   carried in hellos, so unchanged state is never re-sent.
//!
//! Version parity: sources of truth publish even versions; an aggregator may
//! mark a node it has lost as failed with the odd version just above the
//! node's last one, which the node's next (even) version supersedes.

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;

use crate::rng::splitmix64;

/// A node's id: its index in the topology's flat list (the root is 0).
pub type NodeId = u32;

/// Which copy of a node's state a record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Configured state: flows down from the root.
    Cfg,
    /// Discovered state: flows up from the node.
    Dsc,
}

impl Kind {
    /// The wire value (`layercake.overlay.RecordKind`).
    pub fn to_wire(self) -> i32 {
        match self {
            Kind::Cfg => proto::overlay::RecordKind::Cfg as i32,
            Kind::Dsc => proto::overlay::RecordKind::Dsc as i32,
        }
    }

    /// Parses the wire value; `None` for anything else.
    pub fn from_wire(v: i32) -> Option<Kind> {
        match proto::overlay::RecordKind::try_from(v).ok()? {
            proto::overlay::RecordKind::Cfg => Some(Kind::Cfg),
            proto::overlay::RecordKind::Dsc => Some(Kind::Dsc),
            proto::overlay::RecordKind::Unspecified => None,
        }
    }
}

/// The identity of a record: one node's Cfg or Dsc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The node the record describes.
    pub node: NodeId,
    /// Cfg or Dsc.
    pub kind: Kind,
}

/// One node's Cfg or Dsc at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Which record this is.
    pub key: Key,
    /// Monotonic per source of truth; the highest wins.
    pub version: u64,
    /// The opaque state bytes (an encoded `Node` for layercake).
    pub data: Bytes,
}

impl Record {
    /// Converts to the wire message.
    pub fn to_wire(&self) -> proto::overlay::Record {
        proto::overlay::Record {
            node: self.key.node,
            kind: self.key.kind.to_wire(),
            version: self.version,
            data: self.data.clone(),
        }
    }

    /// Converts from the wire message; `None` if the kind is invalid.
    pub fn from_wire(r: proto::overlay::Record) -> Option<Record> {
        Some(Record {
            key: Key {
                node: r.node,
                kind: Kind::from_wire(r.kind)?,
            },
            version: r.version,
            data: r.data,
        })
    }
}

/// Hash of one `(key, version)`; the XOR over a set is its digest.
pub fn record_hash(key: Key, version: u64) -> u64 {
    let k = (key.node as u64) << 1 | matches!(key.kind, Kind::Dsc) as u64;
    splitmix64(splitmix64(k) ^ version.rotate_left(17))
}

/// What [`Store::apply`] did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The record was newer and replaced (or created) the held one.
    Newer,
    /// The held version is equal or higher; nothing changed.
    Stale,
}

/// The records one instance holds, highest version wins.
#[derive(Default, Debug)]
pub struct Store {
    records: HashMap<Key, (u64, Bytes)>,
    /// Moves on every change (see [`Store::changes`]).
    changes: u64,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `r` if its version is above the held one.
    pub fn apply(&mut self, r: &Record) -> Applied {
        match self.records.get_mut(&r.key) {
            Some((v, _)) if *v >= r.version => return Applied::Stale,
            Some(slot) => *slot = (r.version, r.data.clone()),
            None => {
                self.records.insert(r.key, (r.version, r.data.clone()));
            }
        }
        self.changes = self.changes.wrapping_add(1);
        Applied::Newer
    }

    /// A counter that moves whenever a record is created or replaced: a
    /// digest computed at one value holds until it moves (hellos cache
    /// theirs instead of looking up a subtree's records every interval).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The held version of `key`.
    pub fn version(&self, key: Key) -> Option<u64> {
        self.records.get(&key).map(|(v, _)| *v)
    }

    /// The held record for `key`.
    pub fn get(&self, key: Key) -> Option<Record> {
        self.records.get(&key).map(|(v, d)| Record {
            key,
            version: *v,
            data: d.clone(),
        })
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Digest and count of the held records among `keys`.
    pub fn digest(&self, keys: impl Iterator<Item = Key>) -> (u64, u32) {
        let mut d = 0u64;
        let mut n = 0u32;
        for k in keys {
            if let Some(v) = self.version(k) {
                d ^= record_hash(k, v);
                n += 1;
            }
        }
        (d, n)
    }

    /// The highest version held among `keys` (0 when none is held).
    pub fn version_max(&self, keys: impl Iterator<Item = Key>) -> u64 {
        keys.filter_map(|k| self.version(k)).max().unwrap_or(0)
    }

    /// The next even version a source of truth should publish for `key`,
    /// never below `floor` (a boot epoch keeps versions monotonic across
    /// restarts that lost the store). `None` when the record's versions are
    /// exhausted (the held one is within 2 of `u64::MAX`): the caller must
    /// refuse the publish rather than wrap to an older version.
    pub fn next_version(&self, key: Key, floor: u64) -> Option<u64> {
        let held = self.version(key).unwrap_or(0);
        let next = held.checked_add(2)? & !1;
        Some(next.max(floor & !1))
    }

    /// The odd version that marks `key`'s node failed just above the held
    /// (even) version; `None` if the held version is already a mark (odd),
    /// or there is none above it.
    pub fn failure_mark(&self, key: Key) -> Option<u64> {
        let held = self.version(key).unwrap_or(0);
        if held % 2 == 1 {
            return None;
        }
        held.checked_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(node: NodeId, v: u64) -> Record {
        Record {
            key: Key {
                node,
                kind: Kind::Dsc,
            },
            version: v,
            data: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn highest_version_wins() {
        let mut s = Store::new();
        assert_eq!(s.apply(&rec(1, 4)), Applied::Newer);
        assert_eq!(s.apply(&rec(1, 2)), Applied::Stale);
        assert_eq!(s.apply(&rec(1, 4)), Applied::Stale);
        assert_eq!(s.apply(&rec(1, 5)), Applied::Newer);
        assert_eq!(s.version(rec(1, 0).key), Some(5));
    }

    #[test]
    fn changes_move_only_when_a_record_changes() {
        let mut s = Store::new();
        let c0 = s.changes();
        s.apply(&rec(1, 4));
        let c1 = s.changes();
        assert_ne!(c0, c1, "a new record");
        s.apply(&rec(1, 3));
        s.apply(&rec(1, 4));
        assert_eq!(s.changes(), c1, "stale records change nothing");
        s.apply(&rec(1, 6));
        assert_ne!(s.changes(), c1, "a replaced record");
    }

    #[test]
    fn next_version_is_even_and_supersedes_a_failure_mark() {
        let mut s = Store::new();
        let k = rec(1, 0).key;
        assert_eq!(s.next_version(k, 0), Some(2));
        assert_eq!(s.failure_mark(k), Some(1));
        s.apply(&rec(1, 5));
        assert_eq!(s.next_version(k, 0), Some(6));
        assert_eq!(s.next_version(k, 1001), Some(1000));
        assert_eq!(s.failure_mark(k), None, "already marked");
    }

    #[test]
    fn versions_near_u64_max_are_exhausted_not_wrapped() {
        let mut s = Store::new();
        let k = rec(1, 0).key;
        s.apply(&rec(1, u64::MAX - 3));
        assert_eq!(s.next_version(k, 0), Some(u64::MAX - 1));
        s.apply(&rec(1, u64::MAX - 1));
        assert_eq!(s.next_version(k, 0), None);
        assert_eq!(s.failure_mark(k), Some(u64::MAX));
        s.apply(&rec(1, u64::MAX));
        assert_eq!((s.next_version(k, 0), s.failure_mark(k)), (None, None));
    }

    #[test]
    fn digest_changes_with_any_version() {
        let mut a = Store::new();
        let mut b = Store::new();
        for n in 0..10 {
            a.apply(&rec(n, 2));
            b.apply(&rec(n, 2));
        }
        let keys = || (0..10).map(|n| rec(n, 0).key);
        assert_eq!(a.digest(keys()), b.digest(keys()));
        b.apply(&rec(3, 4));
        assert_ne!(a.digest(keys()), b.digest(keys()));
    }
}
