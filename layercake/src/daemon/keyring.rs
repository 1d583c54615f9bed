//! The cluster keyring and its rotation without downtime.
//!
//! - [`KeyService`] (the root, when it runs with `--pki`): the keyring
//!   lives in the root's redb file (table `keys`: id -> 32 bytes, and the
//!   primary id in `meta`), seeded on first start from the topology's
//!   `key_file` (as id 1) or a fresh random key. The overlay seals with a
//!   shared handle on the same [`KeyRing`], so a change applies at once.
//!   Instances fetch the ring over QUIC with mutual TLS ([`crate::daemon::join`]);
//!   every fetch reports the ids the instance holds and its primary, which
//!   is the acknowledgement the rotation waits for.
//! - Rotation: `install` adds a key everywhere as receive-only; `use`
//!   makes it the sending key only once every instance holds it; `remove`
//!   retires a key only once no instance still sends with it. A node
//!   therefore never receives a key id it does not hold, and the overlay
//!   keeps converging throughout. `--force` skips the wait (an instance
//!   that is down then re-joins with the new ring when it comes back).
//! - API (`/api/v1/keys`, [`routes`]): status (ids, primary, which
//!   instances lack an acknowledgement; never key material), install, use,
//!   remove. A key in a request body is accepted only when the API is
//!   served over TLS or on loopback.
//! - CLI (`layercake keys generate|install|use|remove|list`, [`main`]).

// The closures given to `CfgDb::with` return `redb::Error`, which is large;
// it is boxed in `PersistError` as soon as it leaves them.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use overlay::envelope::{ClusterKey, KeyRing};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::daemon::control::ApiError;
use crate::daemon::persist::CfgDb;
use crate::security::secrets;

const KEYS: TableDefinition<u8, &[u8]> = TableDefinition::new("keys");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PRIMARY_KEY: &str = "primary_key";
/// Most keys a ring holds at once (a rotation needs two).
pub const KEYS_MAX: usize = 8;
/// Instance names listed in a "not acknowledged" message.
const MISSING_SHOWN_MAX: usize = 10;

/// One key on the wire inside the QUIC join (never on the REST API).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireKey {
    /// Key id (the envelope's key id byte).
    pub id: u8,
    /// 64 hex digits.
    pub key: String,
}

/// The ring as the join hands it out.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireRing {
    /// Every accepted key.
    pub keys: Vec<WireKey>,
    /// The sending key's id.
    pub primary: u8,
}

impl WireRing {
    /// Builds a ring (primary first) from the wire form.
    pub fn to_ring(&self) -> Result<KeyRing, String> {
        let key = |k: &WireKey| ClusterKey::from_hex(&k.key).map_err(|e| e.to_string());
        let p = self
            .keys
            .iter()
            .find(|k| k.id == self.primary)
            .ok_or("the primary key is missing from the ring")?;
        let mut ring = KeyRing::single(p.id, &key(p)?);
        for k in &self.keys {
            ring.insert(k.id, &key(k)?);
        }
        Ok(ring)
    }

    /// Makes `ring` equal to this one: adds new keys, switches the
    /// primary, then retires the others. True if anything changed.
    pub fn apply(&self, ring: &mut KeyRing) -> Result<bool, String> {
        let before = (ring.ids(), ring.primary());
        for k in &self.keys {
            if ring.get(k.id).is_none() {
                let key = ClusterKey::from_hex(&k.key).map_err(|e| e.to_string())?;
                ring.insert(k.id, &key);
            }
        }
        if !ring.set_primary(self.primary) {
            return Err(format!("primary key {} is not in the ring", self.primary));
        }
        for id in ring.ids() {
            if !self.keys.iter().any(|k| k.id == id) {
                ring.remove(id);
            }
        }
        Ok(before != (ring.ids(), ring.primary()))
    }
}

/// What an instance reported holding at its last fetch.
#[derive(Clone, Debug)]
struct Ack {
    have: Vec<u8>,
    primary: u8,
}

/// The root's keyring, its store, and the instances' acknowledgements.
pub struct KeyService {
    db: Arc<CfgDb>,
    ring: Mutex<KeyRing>,
    acks: Mutex<HashMap<String, Ack>>,
    instances: Vec<String>,
    upload_ok: bool,
}

fn db_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("keyring store: {e}")
}

/// A 409: the request conflicts with the ring's state.
pub fn conflict(message: String) -> ApiError {
    ApiError {
        status: 409,
        code: "conflict",
        message,
    }
}

impl KeyService {
    /// Loads (or seeds with `seed`, else a random key) the root's ring.
    /// `instances`: every instance but the root; `upload_ok`: the API is
    /// on TLS or loopback, so a key may travel in a request body.
    pub fn open(
        db: Arc<CfgDb>,
        seed: Option<ClusterKey>,
        instances: Vec<String>,
        upload_ok: bool,
    ) -> Result<KeyService> {
        let (mut keys, primary) = load(&db)?;
        if keys.is_empty() {
            let key = match seed {
                Some(k) => k,
                None => ClusterKey::from_hex(&secrets::random_hex(32)?)?,
            };
            store(&db, &[(1, key.clone())], &[], Some(1))?;
            keys.push((1, key));
        }
        let primary = primary.filter(|p| keys.iter().any(|(i, _)| i == p));
        let primary = primary.unwrap_or(keys[0].0);
        let first = keys.iter().find(|(i, _)| *i == primary).expect("found");
        let mut ring = KeyRing::single(primary, &first.1);
        for (id, k) in &keys {
            ring.insert(*id, k);
        }
        Ok(KeyService {
            db,
            ring: Mutex::new(ring),
            acks: Mutex::new(HashMap::new()),
            instances,
            upload_ok,
        })
    }

    /// A handle on the ring for the overlay.
    pub fn ring(&self) -> KeyRing {
        self.lock_ring().share()
    }

    fn lock_ring(&self) -> std::sync::MutexGuard<'_, KeyRing> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ack>> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ring in wire form (for the QUIC join only).
    pub fn wire(&self) -> WireRing {
        let ring = self.lock_ring();
        let keys = ring
            .ids()
            .into_iter()
            .filter_map(|id| {
                ring.get(id).map(|k| WireKey {
                    id,
                    key: secrets::hex(&k.0),
                })
            })
            .collect();
        WireRing {
            keys,
            primary: ring.primary(),
        }
    }

    /// True if `name` is an instance that may fetch the ring.
    pub fn knows(&self, name: &str) -> bool {
        self.instances.iter().any(|i| i == name)
    }

    /// Records what `name` holds (its acknowledgement).
    pub fn acknowledge(&self, name: &str, have: Vec<u8>, primary: u8) {
        self.lock_acks()
            .insert(name.to_string(), Ack { have, primary });
    }

    fn missing(&self, ok: impl Fn(&Ack) -> bool) -> Vec<String> {
        let acks = self.lock_acks();
        self.instances
            .iter()
            .filter(|n| !acks.get(*n).is_some_and(&ok))
            .cloned()
            .collect()
    }

    /// The status shown by the API: ids, primary, acknowledgements.
    pub fn status(&self) -> serde_json::Value {
        let (ids, primary) = {
            let r = self.lock_ring();
            (r.ids(), r.primary())
        };
        let keys: Vec<_> = ids
            .iter()
            .map(|&id| {
                let holding = self.missing(|a| a.have.contains(&id));
                let sending = self.missing(|a| a.primary == id);
                json!({
                    "id": id,
                    "primary": id == primary,
                    "held_by": self.instances.len() - holding.len(),
                    "sent_by": self.instances.len() - sending.len(),
                    "not_held_by": shown(&holding),
                })
            })
            .collect();
        json!({ "primary": primary, "instances": self.instances.len(), "keys": keys })
    }

    /// Adds a key as receive-only; returns its id.
    pub fn install(&self, id: Option<u8>, key: Option<ClusterKey>) -> Result<u8, ApiError> {
        if key.is_some() && !self.upload_ok {
            return Err(ApiError::bad(
                "a key may be uploaded only to an API served over TLS or on loopback; \
                 let the root generate it (`layercake keys install` without --key-file)",
            ));
        }
        let mut ring = self.lock_ring();
        let ids = ring.ids();
        if ids.len() >= KEYS_MAX {
            return Err(conflict(format!(
                "the ring already holds {KEYS_MAX} keys; remove one first"
            )));
        }
        let id = match id {
            Some(0) => return Err(ApiError::bad("key id 0 is reserved")),
            Some(i) if ids.contains(&i) => {
                return Err(conflict(format!("key {i} is already in the ring")));
            }
            Some(i) => i,
            None => (1..=255u8)
                .find(|i| !ids.contains(i) && *i > ids.iter().copied().max().unwrap_or(0))
                .or_else(|| (1..=255u8).find(|i| !ids.contains(i)))
                .ok_or_else(|| conflict("no free key id".into()))?,
        };
        let key = match key {
            Some(k) => k,
            None => {
                let hex = secrets::random_hex(32).map_err(|e| ApiError::internal(e.to_string()))?;
                ClusterKey::from_hex(&hex).map_err(|e| ApiError::internal(e.to_string()))?
            }
        };
        store(&self.db, &[(id, key.clone())], &[], None)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        ring.insert(id, &key);
        tracing::info!("keyring: key {id} installed (receive-only)");
        Ok(id)
    }

    /// Makes `id` the sending key once every instance holds it.
    pub fn use_key(&self, id: u8, force: bool) -> Result<(), ApiError> {
        let mut ring = self.lock_ring();
        if ring.get(id).is_none() {
            return Err(ApiError::not_found(format!("no key {id} in the ring")));
        }
        let missing = self.missing(|a| a.have.contains(&id));
        if !missing.is_empty() && !force {
            return Err(conflict(format!(
                "key {id} is not yet held by {} instance(s): {} (wait for them, or --force)",
                missing.len(),
                shown(&missing).join(", ")
            )));
        }
        store(&self.db, &[], &[], Some(id)).map_err(|e| ApiError::internal(e.to_string()))?;
        ring.set_primary(id);
        tracing::info!("keyring: key {id} is now the sending key");
        Ok(())
    }

    /// Retires `id` once no instance still sends with it.
    pub fn remove(&self, id: u8, force: bool) -> Result<(), ApiError> {
        let mut ring = self.lock_ring();
        if ring.get(id).is_none() {
            return Err(ApiError::not_found(format!("no key {id} in the ring")));
        }
        if ring.primary() == id {
            return Err(conflict(format!(
                "key {id} is the sending key; `keys use` another one first"
            )));
        }
        let senders = self.missing(|a| a.primary != id);
        if !senders.is_empty() && !force {
            return Err(conflict(format!(
                "{} instance(s) may still send with key {id}: {} (wait for them, or --force)",
                senders.len(),
                shown(&senders).join(", ")
            )));
        }
        store(&self.db, &[], &[id], None).map_err(|e| ApiError::internal(e.to_string()))?;
        ring.remove(id);
        tracing::info!("keyring: key {id} retired");
        Ok(())
    }
}

fn shown(names: &[String]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().take(MISSING_SHOWN_MAX).cloned().collect();
    if names.len() > MISSING_SHOWN_MAX {
        v.push(format!("and {} more", names.len() - MISSING_SHOWN_MAX));
    }
    v
}

type Stored = (Vec<(u8, ClusterKey)>, Option<u8>);

fn load(db: &CfgDb) -> Result<Stored> {
    let stored = db.with(|db| {
        let tx = db.begin_read()?;
        let mut keys = Vec::new();
        match tx.open_table(KEYS) {
            Ok(t) => {
                for row in t.iter()? {
                    let (k, v) = row?;
                    let bytes: [u8; 32] = v.value().try_into().map_err(|_| {
                        redb::Error::Corrupted(format!("key {} is not 32 bytes", k.value()))
                    })?;
                    keys.push((k.value(), ClusterKey(bytes)));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let primary = match tx.open_table(META) {
            Ok(m) => m.get(PRIMARY_KEY)?.map(|v| v.value() as u8),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok((keys, primary))
    });
    stored.map_err(db_err)
}

/// One durable transaction: add keys, remove ids, set the primary. On an
/// error (a full disk) nothing of it is stored; the database is usable
/// again once the cause is gone ([`CfgDb::with`]).
fn store(db: &CfgDb, add: &[(u8, ClusterKey)], remove: &[u8], primary: Option<u8>) -> Result<()> {
    db.with(|db| {
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(KEYS)?;
            for (id, k) in add {
                t.insert(*id, k.0.as_slice())?;
            }
            for id in remove {
                t.remove(*id)?;
            }
            if let Some(p) = primary {
                let mut m = tx.open_table(META)?;
                m.insert(PRIMARY_KEY, u64::from(p))?;
            }
        }
        tx.commit()?;
        Ok(())
    })
    .map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_rings_apply_in_a_safe_order() {
        let k = |s: u64| ClusterKey::from_seed(s);
        let wire = |ids: &[u8], primary| WireRing {
            keys: ids
                .iter()
                .map(|&id| WireKey {
                    id,
                    key: secrets::hex(&k(u64::from(id)).0),
                })
                .collect(),
            primary,
        };
        let mut ring = wire(&[1], 1).to_ring().unwrap();
        assert!(wire(&[1, 2], 1).apply(&mut ring).unwrap());
        assert_eq!((ring.ids(), ring.primary()), (vec![1, 2], 1));
        assert!(!wire(&[1, 2], 1).apply(&mut ring).unwrap());
        assert!(wire(&[2], 2).apply(&mut ring).unwrap());
        assert_eq!((ring.ids(), ring.primary()), (vec![2], 2));
        assert!(wire(&[3], 9).apply(&mut ring).is_err());
    }
}
