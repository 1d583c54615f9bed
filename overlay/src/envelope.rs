//! The datagram envelope: header, AEAD sealing, boots, replay window, drop
//! counters.
//!
//! Layout (all integers big-endian), 36 bytes of header then the sealed frame:
//!
//! ```text
//! 0      2    3        4        8          12            20              28             36
//! | "KR" | v2 | key id | sender | receiver | sender boot | receiver boot | sequence (u64) | ciphertext + 16-byte tag
//! ```
//!
//! - **Boot**: 64 random bits an instance draws when it starts (the driver
//!   draws them from the OS, [`Boot`]; the sans-io [`Sealer`] and [`Opener`]
//!   take them as input). The cipher is AES-256-GCM under a key derived per
//!   `(sender, sender boot)` from the cluster key with HKDF-SHA256; the nonce
//!   is `receiver || sequence`, sequences counting from 1 per receiver
//!   within a boot. A key and nonce pair therefore never repeats whatever
//!   the clock says (no clock is involved); a repeat needs two boots of one
//!   sender to draw the same 64 bits. The whole header is the associated
//!   data, so no field can be altered.
//! - **Freshness**: the receiver boot field echoes the boot the sender knows
//!   the receiver by (0 while it knows none). A datagram is delivered only
//!   if it echoes the receiver's current boot, so nothing captured before a
//!   receiver restarted is ever accepted after (the replay window itself is
//!   memory only). An authentic datagram that does not echo it is dropped
//!   ([`DropReason::Unfresh`]) and answered with a **session datagram**
//!   (an empty frame: header and tag, 52 bytes) that tells the sender the
//!   receiver's boot; the sender's next datagram gets through. Session
//!   datagrams are never answered and never reach a core.
//! - **Sender boots in order**: per sender the opener remembers the boots
//!   it has authenticated in the order it first saw them (at most
//!   [`BOOTS_PER_SENDER_MAX`]), delivers from one (the current one, with a
//!   [`REPLAY_WINDOW`]-wide window) and moves to a boot first seen later as
//!   soon as a fresh datagram of it arrives: a restarted sender gets in
//!   within a round trip whatever its clock, and a boot it left behind is
//!   refused ([`DropReason::StaleEpoch`]).
//!
//! A receiver checks, in order: size, magic, version, key id, that it is
//! the addressee, the sender id, and (no allocation, no decryption: garbage
//! is cheap to reject) the replay window and retired boots on the header
//! alone; then the tag; then freshness; then decodes the frame and commits
//! the sequence. Every rejection is a [`DropReason`], counted in
//! [`DropCounters`]; nothing here panics on any input. A [`Sealer`] caches
//! its one derived cipher; an [`Opener`] keeps each sender boot's derived
//! 32-byte key (not the expanded cipher: a kilobyte per sender adds up
//! where an instance hears from hundreds of peers) and expands it per
//! datagram. State is only created for datagrams that authenticate.
//!
//! What a sender needs from its opener: [`Opener::peer_boot`] (the boot to
//! echo when sealing for a peer) and [`Opener::poll_reply`] (session
//! datagrams to send, sealed with [`Sealer::seal_session`]). Drivers poll it
//! after every [`Opener::open`].

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use proto::overlay::Frame;
use proto::prost::Message;
use rustc_hash::FxHashMap as HashMap;
use sha2::Sha256;
use smallvec::SmallVec;
use std::num::NonZeroU64;
use std::sync::{Arc, RwLock};

use crate::record::NodeId;
use crate::strategy::MAX_DATAGRAM_BYTES;

/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 36;
/// Salt of the per-sender key derivation (changes with the format).
const KDF_SALT: &[u8] = b"layercake overlay envelope v2";
/// Bytes of the AEAD tag.
pub const TAG_BYTES: usize = 16;
/// The header's magic.
pub const MAGIC: [u8; 2] = *b"KR";
/// The envelope format version.
pub const VERSION: u8 = 2;
/// Width of the replay window, in sequence numbers: a burst to one peer may
/// be reordered this much and still be accepted.
pub const REPLAY_WINDOW: u64 = 1024;
const WINDOW_WORDS: usize = (REPLAY_WINDOW / 64) as usize;
/// Most senders whose replay state is kept (the topology's size bounds it).
pub const TRACKED_SENDERS_MAX: usize = 1 << 20;
/// Boots of one sender an opener remembers (the current one is always
/// kept; beyond the bound the one seen first is forgotten).
pub const BOOTS_PER_SENDER_MAX: usize = 8;
/// Session replies waiting for the driver to send them.
pub const REPLIES_PENDING_MAX: usize = 1024;

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
    /// From a sender boot that a boot seen after it has replaced (the
    /// sender restarted): a replay or a late straggler.
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
    /// Authentic, but it does not echo this receiver's current boot: sealed
    /// before the sender learned it (either side restarted) or captured
    /// before this receiver restarted. Never delivered; answered with a
    /// session datagram.
    #[error("unfresh")]
    Unfresh,
    /// Came on a QUIC connection whose certificate is not for the
    /// envelope's sender (QUIC and dual drivers, before opening).
    #[error("peer identity mismatch")]
    IdentityMismatch,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 15] = [
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
        DropReason::Unfresh,
        DropReason::IdentityMismatch,
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
            DropReason::Unfresh => "unfresh",
            DropReason::IdentityMismatch => "identity_mismatch",
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
        let c = &mut self.counts[r as usize];
        *c = c.saturating_add(1);
    }

    /// Drops for one reason.
    pub fn get(&self, r: DropReason) -> u64 {
        self.counts[r as usize]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |a, &b| a.saturating_add(b))
    }

    /// Datagrams refused as bad: every reason but [`DropReason::Unfresh`],
    /// which is the freshness handshake of a new link (a first contact or
    /// a restarted peer), answered and then delivered.
    pub fn rejected(&self) -> u64 {
        self.total().saturating_sub(self.get(DropReason::Unfresh))
    }

    /// Adds another set of counters into this one.
    pub fn merge(&mut self, other: &DropCounters) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a = a.saturating_add(b);
        }
    }
}

/// An instance's boot: 64 random bits drawn when it starts, never zero
/// (zero on the wire means "unknown"). Key derivation and freshness rest on
/// it, so it must come from a real random source (the drivers use the
/// operating system's); the simulator draws it from its seeded generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Boot(NonZeroU64);

impl Boot {
    /// The boot made of `bits` (zero, which the wire reserves, becomes one).
    pub fn from_random(bits: u64) -> Boot {
        Boot(NonZeroU64::new(bits).unwrap_or(NonZeroU64::MIN))
    }

    /// The boot as carried in headers.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

/// Sealing could not produce a datagram; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Every sequence number to this receiver has been used in this boot
    /// (after 2^64 - 1 datagrams): the sender must restart with a new boot
    /// rather than reuse a nonce.
    #[error("sequence numbers to instance {0} exhausted")]
    SequenceExhausted(NodeId),
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

/// The cipher of one sender boot under one cluster key.
fn derive(key: &ClusterKey, sender: NodeId, boot: u64) -> Aes256Gcm {
    Aes256Gcm::new(&derive_key(key, sender, boot).into())
}

/// The AES key of one sender boot under one cluster key (HKDF-SHA256).
fn derive_key(key: &ClusterKey, sender: NodeId, boot: u64) -> [u8; 32] {
    let mut info = [0u8; 12];
    info[..4].copy_from_slice(&sender.to_be_bytes());
    info[4..].copy_from_slice(&boot.to_be_bytes());
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(KDF_SALT), &key.0)
        .expand(&info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    okm
}

/// What an opener keeps of a sender boot's derivation: the 32-byte AES
/// key, not the expanded cipher (about 1 KB with its key schedule and
/// GHASH state). A member of a 200-member SWIM group hears from every
/// other member, and 200 expanded ciphers per instance were three
/// quarters of a hybrid run's memory (issue 14); expanding the key again
/// for each datagram costs about as much as decrypting 100 bytes.
struct PeerKey {
    key_id: u8,
    /// The first bytes of the cluster key it was derived from: a key id
    /// reused for another key is noticed (a collision would only make
    /// authentication fail, never accept a forgery).
    key_prefix: [u8; 8],
    boot: u64,
    okm: [u8; 32],
}

impl PeerKey {
    fn new(key_id: u8, key: &ClusterKey, sender: NodeId, boot: u64) -> PeerKey {
        PeerKey {
            key_id,
            key_prefix: key_prefix(key),
            boot,
            okm: derive_key(key, sender, boot),
        }
    }

    fn matches(&self, key_id: u8, key: &ClusterKey, boot: u64) -> bool {
        self.key_id == key_id && self.boot == boot && self.key_prefix == key_prefix(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.okm.into())
    }
}

fn key_prefix(key: &ClusterKey) -> [u8; 8] {
    key.0[..8].try_into().expect("a cluster key has 32 bytes")
}

/// A derived cipher and what it was derived from.
struct Derived {
    key_id: u8,
    key: ClusterKey,
    boot: u64,
    cipher: Aes256Gcm,
}

impl Derived {
    fn matches(&self, key_id: u8, key: &ClusterKey, boot: u64) -> bool {
        self.key_id == key_id && self.boot == boot && self.key == *key
    }
}

/// Seals frames from one sender boot: a sequence counter per receiver and
/// the derived cipher.
pub struct Sealer {
    sender: NodeId,
    boot: Boot,
    seqs: HashMap<NodeId, u64>,
    derived: Option<Derived>,
}

impl Sealer {
    /// A sealer for `sender` in `boot` (fresh random bits on every start:
    /// the same `(sender, boot)` must never seal twice).
    pub fn new(sender: NodeId, boot: Boot) -> Sealer {
        Sealer {
            sender,
            boot,
            seqs: HashMap::default(),
            derived: None,
        }
    }

    /// This sender's boot.
    pub fn boot(&self) -> Boot {
        self.boot
    }

    /// Encodes and seals `frame` for `to` into `out` (cleared first),
    /// echoing `to_boot`, the receiver's boot as this instance knows it
    /// ([`Opener::peer_boot`]; `None` while unknown: that datagram will be
    /// answered, not delivered). On error `out` is empty and nothing
    /// changed.
    pub fn seal(
        &mut self,
        keys: &KeyRing,
        to: NodeId,
        to_boot: Option<Boot>,
        frame: &Frame,
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        self.seal_body(keys, to, to_boot.map_or(0, Boot::get), Some(frame), out)
    }

    /// Seals a session datagram (an empty frame) for `to`, echoing
    /// `to_boot`: it tells `to` this instance's boot. What to send comes
    /// from [`Opener::poll_reply`].
    pub fn seal_session(
        &mut self,
        keys: &KeyRing,
        to: NodeId,
        to_boot: Boot,
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        self.seal_body(keys, to, to_boot.get(), None, out)
    }

    fn seal_body(
        &mut self,
        keys: &KeyRing,
        to: NodeId,
        to_boot: u64,
        frame: Option<&Frame>,
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        out.clear();
        let seq = self.seqs.entry(to).or_insert(0);
        let next = seq.checked_add(1).ok_or(SealError::SequenceExhausted(to))?;
        *seq = next;
        let (primary, key) = keys.primary_key();
        let boot = self.boot.get();
        write_header(out, primary, [self.sender, to], [boot, to_boot], next);
        let header: [u8; HEADER_BYTES] = out[..HEADER_BYTES].try_into().expect("header");
        if let Some(f) = frame {
            f.encode(out).expect("Vec grows");
        }
        if !self
            .derived
            .as_ref()
            .is_some_and(|d| d.matches(primary, &key, boot))
        {
            self.derived = Some(Derived {
                key_id: primary,
                cipher: derive(&key, self.sender, boot),
                key,
                boot,
            });
        }
        let cipher = &self.derived.as_ref().expect("just derived").cipher;
        let tag = cipher
            .encrypt_in_place_detached(&nonce(&header), &header, &mut out[HEADER_BYTES..])
            .expect("a datagram is far below GCM's length limit");
        out.extend_from_slice(&tag);
        Ok(())
    }
}

/// Writes the header: `ids` is `[sender, receiver]`, `boots` is
/// `[sender boot, receiver boot echoed]`.
fn write_header(out: &mut Vec<u8>, key_id: u8, ids: [NodeId; 2], boots: [u64; 2], seq: u64) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(key_id);
    out.extend_from_slice(&ids[0].to_be_bytes());
    out.extend_from_slice(&ids[1].to_be_bytes());
    out.extend_from_slice(&boots[0].to_be_bytes());
    out.extend_from_slice(&boots[1].to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

/// `receiver || sequence`: unique per derived key.
fn nonce(header: &[u8; HEADER_BYTES]) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&header[8..12]);
    n[4..].copy_from_slice(&header[28..36]);
    n.into()
}

/// The header fields of an opened datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The authenticated sender.
    pub sender: NodeId,
    /// The sender's boot.
    pub boot: Boot,
    /// The datagram's sequence.
    pub seq: u64,
    /// A session datagram: it carries no frame and must not be handed to
    /// the instance (its frame is empty).
    pub session: bool,
}

/// Sequences seen from one sender boot: the highest, and a ring bitmap of
/// the last [`REPLAY_WINDOW`] (bit `seq % REPLAY_WINDOW`).
#[derive(Clone, Copy)]
struct Window {
    top: u64,
    bits: [u64; WINDOW_WORDS],
}

impl Window {
    fn fresh(seq: u64) -> Window {
        let mut w = Window {
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
    /// The claimed sender boot.
    pub sender_boot: u64,
    /// The receiver boot the sender echoes (0: it knows none).
    pub receiver_boot: u64,
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
        sender_boot: u64_at(12),
        receiver_boot: u64_at(20),
        seq: u64_at(28),
    })
}

/// What an opener knows of one sender: its boots in order of first sight,
/// the one it delivers from with its replay window, and a cached cipher.
struct Peer {
    /// `(boot, order of first sight)`, at most [`BOOTS_PER_SENDER_MAX`]
    /// (one inline: most senders never restart).
    boots: SmallVec<[(u64, u64); 1]>,
    /// The boot datagrams are delivered from, and its window.
    current: Option<(u64, Window)>,
    /// The boot of the last authentic fresh datagram (proven alive during
    /// this receiver's boot): echoed even before it becomes current.
    fresh: Option<u64>,
    key: Option<PeerKey>,
}

impl Peer {
    fn order(&self, boot: u64) -> Option<u64> {
        self.boots.iter().find(|b| b.0 == boot).map(|b| b.1)
    }

    /// A boot first seen before the current one: the sender has left it.
    fn retired(&self, boot: u64) -> bool {
        let Some((cur, _)) = self.current else {
            return false;
        };
        match (self.order(boot), self.order(cur)) {
            (Some(b), Some(c)) => boot != cur && b < c,
            _ => false,
        }
    }

    /// Records `boot` as seen at `order` unless known; returns whether it
    /// was new. The oldest boot other than the current one makes room.
    fn saw(&mut self, boot: u64, order: u64) -> bool {
        if self.order(boot).is_some() {
            return false;
        }
        if self.boots.len() >= BOOTS_PER_SENDER_MAX {
            let cur = self.current.map(|c| c.0);
            let oldest = (0..self.boots.len())
                .filter(|&i| Some(self.boots[i].0) != cur)
                .min_by_key(|&i| self.boots[i].1);
            if let Some(i) = oldest {
                self.boots.swap_remove(i);
            }
        }
        self.boots.push((boot, order));
        true
    }

    /// The boot to echo to this sender: the last one proven alive by a
    /// fresh datagram if it is newer than the current one, else the
    /// current one, else the newest seen.
    fn target(&self) -> Option<u64> {
        let current = self.current.map(|c| c.0);
        let newer = |f: u64| match current {
            Some(c) => self.order(f) > self.order(c),
            None => true,
        };
        self.fresh
            .filter(|&f| newer(f))
            .or(current)
            .or_else(|| self.boots.iter().max_by_key(|b| b.1).map(|b| b.0))
    }
}

/// Authenticates, de-duplicates and decodes datagrams addressed to one
/// instance, and keeps what it needs to know of each sender's boots.
///
/// Cheap checks run first, on the header alone and without allocating: size,
/// magic, version, key id, addressee, sender id (with
/// [`Opener::with_senders`]), then the replay window and retired boots. Only
/// then is a key derived (once per sender boot) and the tag checked, in a
/// buffer the opener reuses. State is only created for datagrams that
/// authenticate. See the module doc for freshness and boots.
pub struct Opener {
    me: NodeId,
    boot: Boot,
    senders: u32,
    peers: HashMap<NodeId, Peer>,
    /// First-sight counter of sender boots (orders them without a clock).
    sightings: u64,
    replies: Vec<(NodeId, u64)>,
    scratch: Vec<u8>,
    /// Drops so far, by reason.
    pub drops: DropCounters,
}

impl Opener {
    /// A fresh opener for instance `me` in `boot` (the same boot as its
    /// [`Sealer`]), with no replay history.
    pub fn new(me: NodeId, boot: Boot) -> Opener {
        Opener {
            me,
            boot,
            senders: NodeId::MAX,
            peers: HashMap::default(),
            sightings: 0,
            replies: Vec::new(),
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

    /// This receiver's boot.
    pub fn boot(&self) -> Boot {
        self.boot
    }

    /// The boot `peer` is known by (to echo when sealing for it): the boot
    /// datagrams are delivered from, else the newest seen; `None` if none.
    pub fn peer_boot(&self, peer: NodeId) -> Option<Boot> {
        let b = self.peers.get(&peer)?.target()?;
        NonZeroU64::new(b).map(Boot)
    }

    /// The next session datagram to send: `(peer, boot to echo)`, for a
    /// peer whose authentic datagram did not echo this receiver's boot.
    #[must_use]
    pub fn poll_reply(&mut self) -> Option<(NodeId, Boot)> {
        let (peer, boot) = self.replies.pop()?;
        Some((peer, Boot::from_random(boot)))
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
        let key = keys.get(h.key_id).ok_or(DropReason::UnknownKey)?;
        if h.receiver != self.me {
            return Err(DropReason::Misdirected);
        }
        if h.sender >= self.senders {
            return Err(DropReason::UnknownSender);
        }
        let boot = NonZeroU64::new(h.sender_boot).ok_or(DropReason::AuthFailed)?;
        let fresh = h.receiver_boot == self.boot.get();
        self.precheck(&h, fresh)?;
        self.authenticate(&key, &h, d)?;
        let session = self.scratch.is_empty();
        let new = self.saw(h.sender, h.sender_boot)?;
        if !fresh {
            if !session {
                self.queue_reply(h.sender, h.sender_boot);
            }
            return Err(DropReason::Unfresh);
        }
        if let Some(p) = self.peers.get_mut(&h.sender) {
            p.fresh = Some(h.sender_boot);
        }
        if new {
            // Seen first in a fresh datagram (the sender learned our boot
            // from us): learned now, delivered from the next one.
            return Err(DropReason::Unfresh);
        }
        let frame = if session {
            Frame::default()
        } else {
            Frame::decode(self.scratch.as_slice()).map_err(|_| DropReason::Malformed)?
        };
        self.commit(h.sender, h.sender_boot, h.seq)?;
        let opened = Opened {
            sender: h.sender,
            boot: Boot(boot),
            seq: h.seq,
            session,
        };
        Ok((opened, frame))
    }

    /// The checks on the unauthenticated header, changing nothing: what
    /// they reject could never be accepted after authentication either.
    fn precheck(&self, h: &Header, fresh: bool) -> Result<(), DropReason> {
        let Some(p) = self.peers.get(&h.sender) else {
            return Ok(());
        };
        if p.retired(h.sender_boot) {
            return Err(DropReason::StaleEpoch);
        }
        match p.current {
            Some((cur, w)) if fresh && cur == h.sender_boot && !w.would_accept(h.seq) => {
                Err(DropReason::Replayed)
            }
            _ => Ok(()),
        }
    }

    /// Checks the tag, decrypting into the scratch buffer; keeps the
    /// derived key once the datagram is authentic.
    fn authenticate(&mut self, key: &ClusterKey, h: &Header, d: &[u8]) -> Result<(), DropReason> {
        let header: [u8; HEADER_BYTES] = d[..HEADER_BYTES].try_into().expect("length checked");
        let (body, tag) = d[HEADER_BYTES..].split_at(d.len() - HEADER_BYTES - TAG_BYTES);
        self.scratch.clear();
        self.scratch.extend_from_slice(body);
        let cached = self.peers.get(&h.sender).and_then(|p| {
            p.key
                .as_ref()
                .filter(|k| k.matches(h.key_id, key, h.sender_boot))
        });
        let derived = cached
            .is_none()
            .then(|| PeerKey::new(h.key_id, key, h.sender, h.sender_boot));
        let cipher = match (&derived, cached) {
            (Some(k), _) | (None, Some(k)) => k.cipher(),
            (None, None) => unreachable!("derived when not cached"),
        };
        cipher
            .decrypt_in_place_detached(&nonce(&header), &header, &mut self.scratch, tag.into())
            .map_err(|_| DropReason::AuthFailed)?;
        if let (Some(k), Some(p)) = (derived, self.peers.get_mut(&h.sender)) {
            p.key = Some(k);
        }
        Ok(())
    }

    /// Records an authenticated sighting of `boot` from `sender` (creating
    /// the sender's state if there is room); returns whether it was new.
    fn saw(&mut self, sender: NodeId, boot: u64) -> Result<bool, DropReason> {
        if !self.peers.contains_key(&sender) && self.peers.len() >= TRACKED_SENDERS_MAX {
            return Err(DropReason::UnknownSender);
        }
        self.sightings = self.sightings.saturating_add(1);
        let order = self.sightings;
        let p = self.peers.entry(sender).or_insert_with(|| Peer {
            boots: SmallVec::new(),
            current: None,
            fresh: None,
            key: None,
        });
        Ok(p.saw(boot, order))
    }

    fn queue_reply(&mut self, sender: NodeId, boot: u64) {
        if let Some(r) = self.replies.iter_mut().find(|r| r.0 == sender) {
            r.1 = boot;
        } else if self.replies.len() < REPLIES_PENDING_MAX {
            self.replies.push((sender, boot));
        }
    }

    /// Accepts `(sender, boot, seq)` once: the current boot's window, or a
    /// move to a boot first seen after the current one.
    fn commit(&mut self, sender: NodeId, boot: u64, seq: u64) -> Result<(), DropReason> {
        let p = self
            .peers
            .get_mut(&sender)
            .ok_or(DropReason::UnknownSender)?;
        if p.retired(boot) {
            return Err(DropReason::StaleEpoch);
        }
        match &mut p.current {
            Some((cur, w)) if *cur == boot => w.accept(seq),
            _ => {
                p.current = Some((boot, Window::fresh(seq)));
                Ok(())
            }
        }
    }
}

/// Most frames held per peer whose boot is not known yet.
pub const HELD_FRAMES_MAX: usize = 8;
/// Most peers with held frames at once.
pub const HELD_PEERS_MAX: usize = 4096;

/// Frames sealed for a peer whose boot this instance did not know yet:
/// such a datagram echoes no boot, so the peer drops it as `unfresh` and
/// answers with a session datagram. Drivers keep those frames here and
/// send them again as soon as the peer's boot is known, so a new link
/// (a first contact, a takeover after a failover) costs one round trip
/// instead of a hello interval. Bounded per peer and in peers; re-sending
/// is safe because every frame is idempotent for the cores (highest
/// version wins, acknowledgements and hellos repeat).
#[derive(Debug, Default)]
pub struct Held {
    peers: HashMap<NodeId, Vec<Frame>>,
}

impl Held {
    /// Keeps `frame`, just sealed for `to` without an echo.
    pub fn hold(&mut self, to: NodeId, frame: &Frame) {
        if !self.peers.contains_key(&to) && self.peers.len() >= HELD_PEERS_MAX {
            return;
        }
        let q = self.peers.entry(to).or_default();
        if q.len() < HELD_FRAMES_MAX {
            q.push(frame.clone());
        }
    }

    /// The frames held for `peer`, now that `opener` knows its boot.
    pub fn release(&mut self, peer: NodeId, opener: &Opener) -> Vec<Frame> {
        if !self.peers.contains_key(&peer) || opener.peer_boot(peer).is_none() {
            return Vec::new();
        }
        self.peers.remove(&peer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
