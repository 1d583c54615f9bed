//! The datagram envelope: header, AEAD sealing, replay window, drop counters.
//!
//! Layout (all integers big-endian), 28 bytes of header then the sealed frame:
//!
//! ```text
//! 0      2    3        4        8          12            20             28
//! | "KR" | v1 | key id | sender | receiver | epoch (u64) | sequence (u64) | ciphertext + 16-byte tag
//! ```
//!
//! The cipher is AES-256-GCM (hardware-accelerated where the CPU has AES-NI)
//! under a key derived per `(sender, epoch)` from the cluster key with
//! HKDF-SHA256; the nonce is `receiver || sequence`, unique because the
//! sequence counts per `(sender, receiver)` within an epoch and a restarted
//! sender uses a higher epoch (hence a fresh key). The whole header is the
//! associated data, so no field can be altered. A receiver checks, in order:
//! size, magic, version, key id, that it is the addressee, the sender id, and
//! the per-sender replay window on the header alone (no allocation, no
//! decryption: garbage is cheap to reject), then the tag, then decodes the
//! frame and commits the sequence to the replay window. Every rejection is a
//! [`DropReason`], counted in [`DropCounters`]; nothing here panics on any
//! input. Derived ciphers are cached: one per key id in a [`Sealer`], one per
//! sender in an [`Opener`] (inserted only after a datagram authenticates).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use proto::overlay::Frame;
use proto::prost::Message;
use rustc_hash::FxHashMap as HashMap;
use sha2::Sha256;
use std::sync::{Arc, RwLock};

use crate::record::NodeId;
use crate::strategy::MAX_DATAGRAM_BYTES;

/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 28;
/// Salt of the per-sender key derivation (changes with the format).
const KDF_SALT: &[u8] = b"layercake overlay envelope v1";
/// Bytes of the AEAD tag.
pub const TAG_BYTES: usize = 16;
/// The header's magic.
pub const MAGIC: [u8; 2] = *b"KR";
/// The envelope format version.
pub const VERSION: u8 = 1;
/// Width of the replay window, in sequence numbers: a burst to one peer may
/// be reordered this much and still be accepted.
pub const REPLAY_WINDOW: u64 = 1024;
const WINDOW_WORDS: usize = (REPLAY_WINDOW / 64) as usize;
/// Most senders whose replay state is kept (the topology's size bounds it).
pub const TRACKED_SENDERS_MAX: usize = 1 << 20;

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Shorter than a header and a tag.
    #[error("truncated")]
    Truncated,
    /// Longer than [`MAX_DATAGRAM_BYTES`].
    #[error("oversized")]
    Oversized,
    /// Wrong magic bytes: not ours.
    #[error("bad magic")]
    BadMagic,
    /// An envelope version this build does not speak.
    #[error("unsupported version")]
    BadVersion,
    /// A key id not in the keyring.
    #[error("unknown key id")]
    UnknownKey,
    /// The tag did not verify: forged or tampered.
    #[error("authentication failed")]
    AuthFailed,
    /// A sequence already seen, or too old for the window.
    #[error("replayed")]
    Replayed,
    /// An epoch older than the sender's current one.
    #[error("stale epoch")]
    StaleEpoch,
    /// Authentic but the frame did not decode.
    #[error("malformed frame")]
    Malformed,
    /// Authentic but from a sender this instance does not talk to.
    #[error("unknown sender")]
    UnknownSender,
    /// Addressed to another instance (a reflection); checked on the
    /// header, before any decryption.
    #[error("misdirected")]
    Misdirected,
    /// Over the claimed sender's rate limit (UDP driver, before opening).
    #[error("rate limited")]
    RateLimited,
    /// Came from an address other than the claimed sender's (UDP driver,
    /// before opening).
    #[error("source address mismatch")]
    SourceMismatch,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 13] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::BadMagic,
        DropReason::BadVersion,
        DropReason::UnknownKey,
        DropReason::AuthFailed,
        DropReason::Replayed,
        DropReason::StaleEpoch,
        DropReason::Malformed,
        DropReason::UnknownSender,
        DropReason::Misdirected,
        DropReason::RateLimited,
        DropReason::SourceMismatch,
    ];

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::BadMagic => "bad_magic",
            DropReason::BadVersion => "bad_version",
            DropReason::UnknownKey => "unknown_key",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replayed => "replayed",
            DropReason::StaleEpoch => "stale_epoch",
            DropReason::Malformed => "malformed",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::Misdirected => "misdirected",
            DropReason::RateLimited => "rate_limited",
            DropReason::SourceMismatch => "source_mismatch",
        }
    }
}

/// Counts of dropped datagrams by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::ALL.len()],
}

impl DropCounters {
    /// Adds one drop.
    pub fn count(&mut self, r: DropReason) {
        self.counts[r as usize] += 1;
    }

    /// Drops for one reason.
    pub fn get(&self, r: DropReason) -> u64 {
        self.counts[r as usize]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another set of counters into this one.
    pub fn merge(&mut self, other: &DropCounters) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
    }
}

/// A 256-bit cluster key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub [u8; 32]);

impl ClusterKey {
    /// Parses 64 hex digits (surrounding white space ignored). Works on
    /// bytes, so no input (non-ASCII, signs) can make it panic or pass.
    pub fn from_hex(text: &str) -> Result<ClusterKey, KeyError> {
        let t = text.trim().as_bytes();
        if t.len() != 64 {
            return Err(KeyError::Length(t.len()));
        }
        let digit = |b: u8| char::from(b).to_digit(16).ok_or(KeyError::NotHex);
        let mut k = [0u8; 32];
        for (b, pair) in k.iter_mut().zip(t.chunks_exact(2)) {
            // Two digits below 16 each: the value fits a byte.
            *b = u8::try_from(digit(pair[0])? << 4 | digit(pair[1])?)
                .map_err(|_| KeyError::NotHex)?;
        }
        Ok(ClusterKey(k))
    }

    /// Derives a key from a seed (tests and the loadtest only).
    pub fn from_seed(seed: u64) -> ClusterKey {
        let mut r = crate::rng::Rng::new(seed ^ 0x6b65_795f_7365_6564);
        let mut k = [0u8; 32];
        for c in k.chunks_mut(8) {
            c.copy_from_slice(&r.next_u64().to_le_bytes());
        }
        ClusterKey(k)
    }
}

/// A key file that does not hold a key.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KeyError {
    /// Not 64 hex digits long.
    #[error("a cluster key is 64 hex digits, found {0} characters")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("a cluster key holds only hex digits")]
    NotHex,
}

/// The keys an instance accepts; one of them is used for sending.
///
/// Handles made with [`KeyRing::share`] see one ring: the application keeps
/// one to rotate keys at run time while the drivers seal and open with
/// another (each datagram reads the ring once, under a read lock).
pub struct KeyRing {
    inner: Arc<RwLock<Ring>>,
}

struct Ring {
    keys: Vec<(u8, ClusterKey)>,
    primary: u8,
}

impl KeyRing {
    /// A ring holding one key, which is the primary.
    pub fn single(id: u8, key: &ClusterKey) -> KeyRing {
        let ring = Ring {
            keys: vec![(id, key.clone())],
            primary: id,
        };
        KeyRing {
            inner: Arc::new(RwLock::new(ring)),
        }
    }

    /// Another handle on the same ring.
    pub fn share(&self) -> KeyRing {
        KeyRing {
            inner: self.inner.clone(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        // A writer cannot leave the ring half-changed: keep serving it.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&mut self) -> std::sync::RwLockWriteGuard<'_, Ring> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a key accepted for receiving.
    pub fn insert(&mut self, id: u8, key: &ClusterKey) {
        let mut r = self.write();
        r.keys.retain(|(k, _)| *k != id);
        r.keys.push((id, key.clone()));
    }

    /// Makes `id` the sending key; false if it is not in the ring.
    pub fn set_primary(&mut self, id: u8) -> bool {
        let mut r = self.write();
        let known = r.keys.iter().any(|(k, _)| *k == id);
        if known {
            r.primary = id;
        }
        known
    }

    /// Retires a key; false (and nothing changes) if it is the primary or
    /// not in the ring.
    pub fn remove(&mut self, id: u8) -> bool {
        let mut r = self.write();
        let known = r.keys.iter().any(|(k, _)| *k == id);
        if !known || r.primary == id {
            return false;
        }
        r.keys.retain(|(k, _)| *k != id);
        true
    }

    /// The sending key's id.
    pub fn primary(&self) -> u8 {
        self.read().primary
    }

    /// Ids of every key accepted, in insertion order.
    pub fn ids(&self) -> Vec<u8> {
        self.read().keys.iter().map(|(k, _)| *k).collect()
    }

    /// The key with id `id`.
    pub fn get(&self, id: u8) -> Option<ClusterKey> {
        let r = self.read();
        r.keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, c)| c.clone())
    }

    fn primary_key(&self) -> (u8, ClusterKey) {
        let r = self.read();
        let key = r.keys.iter().find(|(k, _)| *k == r.primary);
        let key = key.expect("the primary key is in the ring (remove refuses it)");
        (r.primary, key.1.clone())
    }
}

/// The cipher of one sender in one epoch under one cluster key.
fn derive(key: &ClusterKey, sender: NodeId, epoch: u64) -> Aes256Gcm {
    let mut info = [0u8; 12];
    info[..4].copy_from_slice(&sender.to_be_bytes());
    info[4..].copy_from_slice(&epoch.to_be_bytes());
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(KDF_SALT), &key.0)
        .expand(&info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    Aes256Gcm::new(&okm.into())
}

/// A derived cipher and what it was derived from.
struct Derived {
    key_id: u8,
    key: ClusterKey,
    epoch: u64,
    cipher: Aes256Gcm,
}

impl Derived {
    fn matches(&self, key_id: u8, key: &ClusterKey, epoch: u64) -> bool {
        self.key_id == key_id && self.epoch == epoch && self.key == *key
    }
}

/// Seals frames from one sender: owns its epoch, a sequence counter per
/// receiver, and its derived cipher.
pub struct Sealer {
    sender: NodeId,
    epoch: u64,
    seqs: HashMap<NodeId, u64>,
    derived: Option<Derived>,
}

impl Sealer {
    /// A sealer for `sender` in `epoch` (must grow across restarts).
    pub fn new(sender: NodeId, epoch: u64) -> Sealer {
        Sealer {
            sender,
            epoch,
            seqs: HashMap::default(),
            derived: None,
        }
    }

    /// Encodes and seals `frame` for `to` into `out` (cleared first).
    pub fn seal(&mut self, keys: &KeyRing, to: NodeId, frame: &Frame, out: &mut Vec<u8>) {
        let seq = self.seqs.entry(to).or_insert(0);
        *seq += 1;
        let (primary, key) = keys.primary_key();
        write_header(out, primary, self.sender, to, self.epoch, *seq);
        let header: [u8; HEADER_BYTES] = out[..HEADER_BYTES].try_into().expect("header");
        frame.encode(out).expect("Vec grows");
        if !self
            .derived
            .as_ref()
            .is_some_and(|d| d.matches(primary, &key, self.epoch))
        {
            self.derived = Some(Derived {
                key_id: primary,
                cipher: derive(&key, self.sender, self.epoch),
                key,
                epoch: self.epoch,
            });
        }
        let cipher = &self.derived.as_ref().expect("just derived").cipher;
        let tag = cipher
            .encrypt_in_place_detached(&nonce(&header), &header, &mut out[HEADER_BYTES..])
            .expect("a datagram is far below GCM's length limit");
        out.extend_from_slice(&tag);
    }
}

fn write_header(out: &mut Vec<u8>, key_id: u8, from: NodeId, to: NodeId, epoch: u64, seq: u64) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(key_id);
    out.extend_from_slice(&from.to_be_bytes());
    out.extend_from_slice(&to.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

/// `receiver || sequence`: unique per derived key.
fn nonce(header: &[u8; HEADER_BYTES]) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&header[8..12]);
    n[4..].copy_from_slice(&header[20..28]);
    n.into()
}

/// The header fields of an opened datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The authenticated sender.
    pub sender: NodeId,
    /// The sender's epoch.
    pub epoch: u64,
    /// The datagram's sequence.
    pub seq: u64,
}

/// Sequences seen from one sender: the highest, and a ring bitmap of the
/// last [`REPLAY_WINDOW`] (bit `seq % REPLAY_WINDOW`).
#[derive(Clone, Copy)]
struct Window {
    epoch: u64,
    top: u64,
    bits: [u64; WINDOW_WORDS],
}

impl Window {
    fn fresh(epoch: u64, seq: u64) -> Window {
        let mut w = Window {
            epoch,
            top: seq,
            bits: [0; WINDOW_WORDS],
        };
        w.set(seq);
        w
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % REPLAY_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn set(&mut self, seq: u64) {
        let (w, b) = Window::slot(seq);
        self.bits[w] |= b;
    }

    fn is_set(&self, seq: u64) -> bool {
        let (w, b) = Window::slot(seq);
        self.bits[w] & b != 0
    }

    /// Whether [`Window::accept`] would take `seq` (changes nothing).
    fn would_accept(&self, seq: u64) -> bool {
        seq > self.top || (self.top - seq < REPLAY_WINDOW && !self.is_set(seq))
    }

    /// Accepts `seq` once within the window.
    fn accept(&mut self, seq: u64) -> Result<(), DropReason> {
        if seq > self.top {
            if seq - self.top >= REPLAY_WINDOW {
                self.bits = [0; WINDOW_WORDS];
            } else {
                for s in self.top + 1..seq {
                    let (w, b) = Window::slot(s);
                    self.bits[w] &= !b;
                }
            }
            self.top = seq;
            self.set(seq);
            return Ok(());
        }
        if self.top - seq >= REPLAY_WINDOW || self.is_set(seq) {
            return Err(DropReason::Replayed);
        }
        self.set(seq);
        Ok(())
    }
}

/// The header fields of a datagram, read before anything is authenticated
/// (so trusted by nobody: for cheap rejection only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Id of the key the datagram claims to be sealed with.
    pub key_id: u8,
    /// The claimed sender.
    pub sender: NodeId,
    /// The addressee.
    pub receiver: NodeId,
    /// The claimed sender epoch.
    pub epoch: u64,
    /// The claimed sequence.
    pub seq: u64,
}

/// Checks size, magic and version and reads the header; allocates nothing,
/// decrypts nothing.
pub fn peek_header(d: &[u8]) -> Result<Header, DropReason> {
    if d.len() > MAX_DATAGRAM_BYTES {
        return Err(DropReason::Oversized);
    }
    if d.len() < HEADER_BYTES + TAG_BYTES {
        return Err(DropReason::Truncated);
    }
    if d[0..2] != MAGIC {
        return Err(DropReason::BadMagic);
    }
    if d[2] != VERSION {
        return Err(DropReason::BadVersion);
    }
    let u32_at = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    let u64_at = |i: usize| (u32_at(i) as u64) << 32 | u32_at(i + 4) as u64;
    Ok(Header {
        key_id: d[3],
        sender: u32_at(4),
        receiver: u32_at(8),
        epoch: u64_at(12),
        seq: u64_at(20),
    })
}

/// Authenticates, de-duplicates and decodes datagrams addressed to one
/// instance.
///
/// Cheap checks run first, on the header alone and without allocating: size,
/// magic, version, key id, addressee, sender id (with
/// [`Opener::with_senders`]), then the replay window (a sequence already seen
/// or an epoch older than the sender's current one). Only then is a key
/// derived (once per sender and epoch) and the tag checked, in a buffer the
/// opener reuses. State is only created for datagrams that authenticate.
pub struct Opener {
    me: NodeId,
    senders: u32,
    windows: HashMap<NodeId, Window>,
    ciphers: HashMap<NodeId, Derived>,
    scratch: Vec<u8>,
    /// Drops so far, by reason.
    pub drops: DropCounters,
}

impl Opener {
    /// A fresh opener for instance `me`, with no replay history.
    pub fn new(me: NodeId) -> Opener {
        Opener {
            me,
            senders: NodeId::MAX,
            windows: HashMap::default(),
            ciphers: HashMap::default(),
            scratch: Vec::new(),
            drops: DropCounters::default(),
        }
    }

    /// Rejects, before decryption, senders with an id of `senders` or more
    /// (the cluster's size) as [`DropReason::UnknownSender`].
    pub fn with_senders(mut self, senders: u32) -> Opener {
        self.senders = senders;
        self
    }

    /// Opens one datagram; on error the reason has been counted.
    pub fn open(&mut self, keys: &KeyRing, datagram: &[u8]) -> Result<(Opened, Frame), DropReason> {
        let r = self.open_inner(keys, datagram);
        if let Err(reason) = r {
            self.drops.count(reason);
        }
        r
    }

    fn open_inner(&mut self, keys: &KeyRing, d: &[u8]) -> Result<(Opened, Frame), DropReason> {
        let h = peek_header(d)?;
        let key_id = h.key_id;
        let key = keys.get(key_id).ok_or(DropReason::UnknownKey)?;
        let key = &key;
        if h.receiver != self.me {
            return Err(DropReason::Misdirected);
        }
        if h.sender >= self.senders {
            return Err(DropReason::UnknownSender);
        }
        let opened = Opened {
            sender: h.sender,
            epoch: h.epoch,
            seq: h.seq,
        };
        self.precheck_replay(opened)?;
        let header: [u8; HEADER_BYTES] = d[..HEADER_BYTES].try_into().expect("length checked");
        let (body, tag) = d[HEADER_BYTES..].split_at(d.len() - HEADER_BYTES - TAG_BYTES);
        let body_buf = &mut self.scratch;
        body_buf.clear();
        body_buf.extend_from_slice(body);
        let cached = self
            .ciphers
            .get(&opened.sender)
            .is_some_and(|c| c.matches(key_id, key, opened.epoch));
        let fresh = (!cached).then(|| derive(key, opened.sender, opened.epoch));
        let cipher = match &fresh {
            Some(c) => c,
            None => &self.ciphers[&opened.sender].cipher,
        };
        cipher
            .decrypt_in_place_detached(&nonce(&header), &header, body_buf, tag.into())
            .map_err(|_| DropReason::AuthFailed)?;
        let room =
            self.ciphers.len() < TRACKED_SENDERS_MAX || self.ciphers.contains_key(&opened.sender);
        if let Some(cipher) = fresh.filter(|_| room) {
            let derived = Derived {
                key_id,
                key: key.clone(),
                epoch: opened.epoch,
                cipher,
            };
            self.ciphers.insert(opened.sender, derived);
        }
        let frame = Frame::decode(self.scratch.as_slice()).map_err(|_| DropReason::Malformed)?;
        self.check_replay(opened)?;
        Ok((opened, frame))
    }

    /// The replay check on the unauthenticated header, changing nothing:
    /// what it rejects could never be accepted after authentication either.
    fn precheck_replay(&self, o: Opened) -> Result<(), DropReason> {
        let Some(w) = self.windows.get(&o.sender) else {
            return Ok(());
        };
        if o.epoch < w.epoch {
            return Err(DropReason::StaleEpoch);
        }
        if o.epoch == w.epoch && !w.would_accept(o.seq) {
            return Err(DropReason::Replayed);
        }
        Ok(())
    }

    /// Accepts each `(sender, epoch, seq)` once; a higher epoch resets.
    fn check_replay(&mut self, o: Opened) -> Result<(), DropReason> {
        let Some(w) = self.windows.get_mut(&o.sender) else {
            if self.windows.len() >= TRACKED_SENDERS_MAX {
                return Err(DropReason::UnknownSender);
            }
            self.windows.insert(o.sender, Window::fresh(o.epoch, o.seq));
            return Ok(());
        };
        if o.epoch < w.epoch {
            return Err(DropReason::StaleEpoch);
        }
        if o.epoch > w.epoch {
            *w = Window::fresh(o.epoch, o.seq);
            return Ok(());
        }
        w.accept(o.seq)
    }
}

#[cfg(test)]
mod tests;
