//! The group's replicated state, shared by the core and foca's broadcast
//! handler.
//!
//! - [`Replica`]: the group's records (highest version wins), the digest
//!   buckets kept up to date with them, the followed acting claim, and
//!   what arrived since the core last looked.
//! - [`Handler`]: foca's [`foca::BroadcastHandler`]. foca calls it for every
//!   custom broadcast in a packet; it decides whether the item is news
//!   (then foca keeps re-sending it) or stale (then foca drops it).
//! - [`ItemKey`]: how foca tells that a queued broadcast is superseded: a
//!   newer version of the same record, or a better claim.
//!
//! Why shared: foca owns its handler and offers no way to reach it, yet the
//! core must read what the handler stored. The two share one
//! `Arc<Mutex<Replica>>`; only one thread ever drives a core and no lock is
//! held across a call into foca, so the lock is never contended.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use overlay::record::{Applied, record_hash};
use overlay::{Key, Kind, NodeId, Record, Store};

use crate::config::GroupSpec;
use crate::election::{self, Acting};
use crate::identity::MemberId;
use crate::wire::{DIGEST_BUCKETS, Item, WireError, bucket_of};

/// Most delivered records waiting for the core; the core drains them after
/// every call into foca, and one packet carries far fewer.
pub const DELIVERED_MAX: usize = 4096;

/// The group's replicated state.
#[derive(Debug)]
pub struct Replica {
    group: Arc<GroupSpec>,
    store: Store,
    buckets: [u64; DIGEST_BUCKETS],
    acting: Acting,
    claim_heard: bool,
    delivered: VecDeque<Record>,
    /// Items naming a node outside the group, dropped.
    pub rejected: u64,
    /// Delivered records whose event was lost to [`DELIVERED_MAX`] (the
    /// records themselves are held).
    pub delivered_dropped: u64,
}

impl Replica {
    /// Empty state; the topology's sub-parent acts at epoch 0.
    pub fn new(group: Arc<GroupSpec>) -> Replica {
        let acting = Acting {
            member: group.sub_parent(),
            epoch: 0,
        };
        Replica {
            group,
            store: Store::new(),
            buckets: [0; DIGEST_BUCKETS],
            acting,
            claim_heard: false,
            delivered: VecDeque::new(),
            rejected: 0,
            delivered_dropped: 0,
        }
    }

    /// Keeps `r` if newer, updating its digest bucket.
    pub fn apply(&mut self, r: &Record) -> Applied {
        let held = self.store.version(r.key);
        let applied = self.store.apply(r);
        if applied == Applied::Newer {
            let b = &mut self.buckets[bucket_of(r.key)];
            if let Some(v) = held {
                *b ^= record_hash(r.key, v);
            }
            *b ^= record_hash(r.key, r.version);
        }
        applied
    }

    /// Keeps `r` if newer and queues it for a `Delivered` event.
    pub fn apply_remote(&mut self, r: Record) -> Applied {
        let applied = self.apply(&r);
        if applied == Applied::Newer {
            if self.delivered.len() < DELIVERED_MAX {
                self.delivered.push_back(r);
            } else {
                self.delivered_dropped += 1;
            }
        }
        applied
    }

    /// The next delivered record.
    pub fn pop_delivered(&mut self) -> Option<Record> {
        self.delivered.pop_front()
    }

    /// The held record for `key`.
    pub fn get(&self, key: Key) -> Option<Record> {
        self.store.get(key)
    }

    /// The held version of `key`.
    pub fn version(&self, key: Key) -> Option<u64> {
        self.store.version(key)
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Forgets every record but `node`'s own (a member that stopped
    /// holding the group's records); returns how many were dropped.
    pub fn keep_only(&mut self, node: NodeId) -> usize {
        let keep: Vec<Record> = [Kind::Cfg, Kind::Dsc]
            .into_iter()
            .filter_map(|kind| self.store.get(Key { node, kind }))
            .collect();
        let dropped = self.store.len() - keep.len();
        self.store = Store::new();
        self.buckets = [0; DIGEST_BUCKETS];
        for r in &keep {
            self.apply(r);
        }
        dropped
    }

    /// The digest buckets.
    pub fn buckets(&self) -> [u64; DIGEST_BUCKETS] {
        self.buckets
    }

    /// Held records whose bucket is flagged in `differ`, in key order.
    pub fn records_in(&self, differ: &[bool; DIGEST_BUCKETS]) -> Vec<Record> {
        let keys = self
            .group
            .ranked()
            .iter()
            .flat_map(|&node| [Kind::Cfg, Kind::Dsc].map(|kind| Key { node, kind }));
        let mut keys: Vec<Key> = keys.filter(|k| differ[bucket_of(*k)]).collect();
        keys.sort_unstable();
        keys.into_iter().filter_map(|k| self.store.get(k)).collect()
    }

    /// The followed claim.
    pub fn acting(&self) -> Acting {
        self.acting
    }

    /// Follows `a` if it beats the followed claim; says whether it did.
    pub fn follow(&mut self, a: Acting) -> bool {
        if !self.group.contains(a.member) || !election::better(&self.group, a, self.acting) {
            return false;
        }
        self.acting = a;
        self.claim_heard = true;
        true
    }

    /// Whether the followed claim changed since the last call.
    pub fn take_claim_heard(&mut self) -> bool {
        std::mem::take(&mut self.claim_heard)
    }
}

/// The shared handle to a [`Replica`].
#[derive(Clone, Debug)]
pub struct Shared(Arc<Mutex<Replica>>);

impl Shared {
    /// Shares `r`.
    pub fn new(r: Replica) -> Shared {
        Shared(Arc::new(Mutex::new(r)))
    }

    /// Locks the replica (a poisoned lock is taken over: the replica's
    /// invariants hold between its methods).
    pub fn lock(&self) -> MutexGuard<'_, Replica> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What foca compares to drop superseded broadcasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKey {
    /// A record at a version.
    Record {
        /// Which record.
        key: Key,
        /// Its version.
        version: u64,
    },
    /// A claim, with the claimer's rank for ties.
    Acting {
        /// The claim's epoch.
        epoch: u64,
        /// The claimer's rank.
        rank: u32,
    },
}

impl foca::Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (*self, *other) {
            (ItemKey::Record { key, version }, ItemKey::Record { key: k, version: v }) => {
                key == k && version >= v
            }
            (ItemKey::Acting { epoch, rank }, ItemKey::Acting { epoch: e, rank: r }) => {
                epoch > e || (epoch == e && rank <= r)
            }
            _ => false,
        }
    }
}

/// foca's broadcast handler: decides which items are news.
#[derive(Debug)]
pub struct Handler {
    shared: Shared,
}

impl Handler {
    /// A handler over `shared`.
    pub fn new(shared: Shared) -> Handler {
        Handler { shared }
    }
}

impl foca::BroadcastHandler<MemberId> for Handler {
    type Key = ItemKey;
    type Error = WireError;

    /// Items added locally (`sender` is `None`) were applied by the core
    /// already and are always news; items from the network are news when
    /// they are newer than what is held.
    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&MemberId>,
    ) -> Result<Option<ItemKey>, WireError> {
        let item = Item::decode(data)?;
        let mut r = self.shared.lock();
        let (node, key) = match &item {
            Item::Record(rec) => (
                rec.key.node,
                ItemKey::Record {
                    key: rec.key,
                    version: rec.version,
                },
            ),
            Item::Acting(a) => {
                let rank = r.group.rank(a.member).unwrap_or(u32::MAX);
                (
                    a.member,
                    ItemKey::Acting {
                        epoch: a.epoch,
                        rank,
                    },
                )
            }
        };
        if !r.group.contains(node) {
            r.rejected += 1;
            return Ok(None);
        }
        if sender.is_none() {
            return Ok(Some(key));
        }
        let news = match item {
            Item::Record(rec) => r.apply_remote(rec) == Applied::Newer,
            Item::Acting(a) => r.follow(a),
        };
        Ok(news.then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use foca::{BroadcastHandler, Invalidates};

    fn rec(node: u32, version: u64) -> Record {
        Record {
            key: Key {
                node,
                kind: Kind::Dsc,
            },
            version,
            data: Bytes::from_static(b"d"),
        }
    }

    fn handler() -> (Handler, Shared) {
        let g = Arc::new(GroupSpec::new(0, vec![1, 2, 3]).expect("valid"));
        let shared = Shared::new(Replica::new(g));
        (Handler::new(shared.clone()), shared)
    }

    #[test]
    fn only_newer_items_are_news() {
        let (mut h, shared) = handler();
        let from = MemberId {
            node: 2,
            incarnation: 0,
        };
        let enc = |r: &Record| Item::Record(r.clone()).encode();
        assert!(
            h.receive_item(&enc(&rec(2, 4)), Some(&from))
                .expect("ok")
                .is_some()
        );
        assert!(
            h.receive_item(&enc(&rec(2, 4)), Some(&from))
                .expect("ok")
                .is_none()
        );
        assert!(
            h.receive_item(&enc(&rec(2, 2)), Some(&from))
                .expect("ok")
                .is_none()
        );
        assert!(
            h.receive_item(&enc(&rec(9, 2)), Some(&from))
                .expect("ok")
                .is_none()
        );
        let mut r = shared.lock();
        assert_eq!(r.pop_delivered(), Some(rec(2, 4)));
        assert_eq!(r.pop_delivered(), None);
        assert_eq!(r.rejected, 1);
    }

    #[test]
    fn a_better_claim_is_followed_and_supersedes() {
        let (mut h, shared) = handler();
        let from = MemberId {
            node: 3,
            incarnation: 0,
        };
        let claim = |member, epoch| Item::Acting(Acting { member, epoch }).encode();
        assert!(
            h.receive_item(&claim(3, 0), Some(&from))
                .expect("ok")
                .is_none()
        );
        assert!(
            h.receive_item(&claim(3, 1), Some(&from))
                .expect("ok")
                .is_some()
        );
        assert_eq!(
            shared.lock().acting(),
            Acting {
                member: 3,
                epoch: 1
            }
        );
        let newer = ItemKey::Acting { epoch: 2, rank: 2 };
        assert!(newer.invalidates(&ItemKey::Acting { epoch: 1, rank: 0 }));
        assert!(!ItemKey::Acting { epoch: 1, rank: 0 }.invalidates(&newer));
    }

    #[test]
    fn buckets_track_the_store() {
        let (_, shared) = handler();
        let mut a = shared.lock();
        a.apply(&rec(1, 2));
        a.apply(&rec(1, 4));
        let g = Arc::new(GroupSpec::new(0, vec![1, 2, 3]).expect("valid"));
        let mut b = Replica::new(g);
        b.apply(&rec(1, 4));
        assert_eq!(a.buckets(), b.buckets());
    }
}
