//! Byte layouts of everything this crate puts in a `Frame::Gossip` payload.
//!
//! - The payload's first byte says what follows ([`Payload`]): a foca packet
//!   (SWIM probes, membership updates and custom broadcasts), an
//!   anti-entropy [`Digest`], a push of records, or a down hint.
//! - [`WireCodec`]: foca's [`foca::Codec`] for [`MemberId`] headers and
//!   members (varints; a member is 4 to 20 bytes).
//! - [`Item`]: one custom broadcast (a record or an acting announcement).
//!
//! Integers are LEB128 varints. Every decoder checks lengths and tags and
//! returns [`WireError`]; nothing panics on input from the network.

use bytes::{Buf, BufMut, Bytes};
use foca::{Header, Member, Message, State};
use overlay::{Key, Kind, NodeId, Record};

use crate::identity::MemberId;

/// Number of buckets of the anti-entropy digest (one XOR each).
pub const DIGEST_BUCKETS: usize = 32;

/// Largest `data` of a record that travels in gossip; larger records must
/// take another path (the QUIC fallback).
pub const RECORD_DATA_MAX_BYTES: usize = 1100;

/// Payload tag: a foca packet follows.
const TAG_FOCA: u8 = 0;
/// Payload tag: a [`Digest`] follows.
const TAG_DIGEST: u8 = 1;
/// Payload tag: records pushed by anti-entropy follow.
const TAG_RECORDS: u8 = 2;
/// Payload tag: a down hint follows.
const TAG_DOWN: u8 = 3;
/// Payload tag: a watch ping (a candidate checking the acting member).
const TAG_WATCH: u8 = 4;
/// Payload tag: the answer to a watch ping.
const TAG_WATCH_ACK: u8 = 5;
/// Payload tag: an acting claim sent straight to a member.
const TAG_CLAIM: u8 = 6;
/// Payload tag: an anti-entropy [`Summary`].
const TAG_SUMMARY: u8 = 7;
/// Payload tag: a member's [`Own`] Dsc version, to a holder.
const TAG_OWN: u8 = 8;
/// Payload tag: a holder's answer to [`TAG_OWN`].
const TAG_OWN_HELD: u8 = 9;
/// Item tag: a record.
const ITEM_RECORD: u8 = 1;
/// Item tag: an acting announcement.
const ITEM_ACTING: u8 = 2;

/// What went wrong decoding bytes from the network. Decoding never changes
/// any state: the input is dropped and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended in the middle of a field.
    #[error("truncated input")]
    Truncated,
    /// A tag byte has no meaning here.
    #[error("unknown tag {0}")]
    BadTag(u8),
    /// A varint is longer than its type or a value is out of range.
    #[error("value out of range")]
    Range,
    /// A foca member or header did not fit the buffer (encoding only; the
    /// buffer was left untouched).
    #[error("no room in the output buffer")]
    NoRoom,
}

/// An acting sub-parent claim: `member` acts for the group since `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Acting {
    /// The acting member.
    pub member: NodeId,
    /// Increases on every change of acting member.
    pub epoch: u64,
}

/// One custom broadcast carried by foca.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A record of one of the group's nodes.
    Record(Record),
    /// An acting sub-parent announcement.
    Acting(Acting),
}

/// An anti-entropy summary: what the sender holds and whom it follows.
#[derive(Clone, Debug, PartialEq)]
pub struct Digest {
    /// Whether the receiver should answer with its own digest when they
    /// differ (push-pull); answers never ask for an answer.
    pub reply: bool,
    /// The sender's acting claim.
    pub acting: Acting,
    /// XOR of record hashes per bucket (see [`bucket_of`]).
    pub buckets: [u64; DIGEST_BUCKETS],
}

/// Anti-entropy's first message: the sender's claim and one hash of its
/// digest buckets. Equal on both sides: nothing more is sent; else the
/// receiver starts the full exchange with a [`Digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The sender's acting claim.
    pub acting: Acting,
    /// [`buckets_hash`] of the sender's digest buckets.
    pub hash: u64,
}

/// What a member that does not hold the group's records says to a
/// holder (its own Dsc's version) and what the holder answers (the
/// version it holds of that Dsc), each with the sender's claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Own {
    /// The sender's acting claim.
    pub acting: Acting,
    /// A version of the member's Dsc (0: none).
    pub version: u64,
}

/// One hash of all digest buckets (order matters).
pub fn buckets_hash(buckets: &[u64; DIGEST_BUCKETS]) -> u64 {
    buckets.iter().fold(0x5375_6d6d_6172_7921, |h, &b| {
        overlay::rng::splitmix64(h ^ b)
    })
}

/// A decoded `Frame::Gossip` payload.
#[derive(Debug)]
pub enum Payload<'a> {
    /// A foca packet, to hand to `Foca::handle_data`.
    Foca(&'a [u8]),
    /// An anti-entropy digest (boxed: it is the largest variant).
    Digest(Box<Digest>),
    /// Records pushed by anti-entropy.
    Records(Vec<Record>),
    /// "The acting member (this identity) is down": sent to the next
    /// candidate so that it learns at once (foca's own dissemination of
    /// the same fact is random and can miss it for seconds).
    Down(MemberId),
    /// A watch ping with its sequence number: answer with a watch ack.
    Watch(u64),
    /// The answer to the watch ping of that sequence number.
    WatchAck(u64),
    /// An acting claim sent straight to every member by the new acting
    /// one, so that the group re-homes without waiting for foca's rounds.
    Claim(Acting),
    /// An anti-entropy summary.
    Summary(Summary),
    /// A member's own Dsc version, to a holder.
    Own(Own),
    /// A holder's answer: the version it holds of the member's Dsc.
    OwnHeld(Own),
}

/// The digest bucket of `key`.
pub fn bucket_of(key: Key) -> usize {
    let k = (key.node as u64) << 1 | matches!(key.kind, Kind::Dsc) as u64;
    (overlay::rng::splitmix64(k) % DIGEST_BUCKETS as u64) as usize
}

// ---------------------------------------------------------------- varints

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn get_u8(buf: &mut impl Buf) -> Result<u8, WireError> {
    if !buf.has_remaining() {
        return Err(WireError::Truncated);
    }
    Ok(buf.get_u8())
}

fn get_varint(buf: &mut impl Buf) -> Result<u64, WireError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = get_u8(buf)?;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(WireError::Range)
}

fn get_u32(buf: &mut impl Buf) -> Result<u32, WireError> {
    u32::try_from(get_varint(buf)?).map_err(|_| WireError::Range)
}

fn get_u16(buf: &mut impl Buf) -> Result<u16, WireError> {
    u16::try_from(get_varint(buf)?).map_err(|_| WireError::Range)
}

// ---------------------------------------------------------- foca's codec

/// foca's codec for [`MemberId`]: compact varints, no serde.
#[derive(Clone, Copy, Debug, Default)]
pub struct WireCodec;

fn id_len(id: &MemberId) -> usize {
    varint_len(id.node.into()) + varint_len(id.incarnation)
}

fn put_id(out: &mut impl BufMut, id: &MemberId) {
    put_varint(out, id.node.into());
    put_varint(out, id.incarnation);
}

fn get_id(buf: &mut impl Buf) -> Result<MemberId, WireError> {
    Ok(MemberId {
        node: get_u32(buf)?,
        incarnation: get_varint(buf)?,
    })
}

/// Tag, target identity (if any) and probe number of a foca message.
fn message_parts(m: &Message<MemberId>) -> (u8, Option<&MemberId>, Option<u8>) {
    match m {
        Message::Ping(n) => (0, None, Some(*n)),
        Message::Ack(n) => (1, None, Some(*n)),
        Message::PingReq {
            target,
            probe_number,
        } => (2, Some(target), Some(*probe_number)),
        Message::IndirectPing {
            origin,
            probe_number,
        } => (3, Some(origin), Some(*probe_number)),
        Message::IndirectAck {
            target,
            probe_number,
        } => (4, Some(target), Some(*probe_number)),
        Message::ForwardedAck {
            origin,
            probe_number,
        } => (5, Some(origin), Some(*probe_number)),
        Message::Announce => (6, None, None),
        Message::Feed => (7, None, None),
        Message::Gossip => (8, None, None),
        Message::Broadcast => (9, None, None),
        Message::TurnUndead => (10, None, None),
    }
}

fn get_message(buf: &mut impl Buf) -> Result<Message<MemberId>, WireError> {
    let tag = get_u8(buf)?;
    let m = match tag {
        0 => Message::Ping(get_u8(buf)?),
        1 => Message::Ack(get_u8(buf)?),
        2..=5 => {
            let id = get_id(buf)?;
            let n = get_u8(buf)?;
            match tag {
                2 => Message::PingReq {
                    target: id,
                    probe_number: n,
                },
                3 => Message::IndirectPing {
                    origin: id,
                    probe_number: n,
                },
                4 => Message::IndirectAck {
                    target: id,
                    probe_number: n,
                },
                _ => Message::ForwardedAck {
                    origin: id,
                    probe_number: n,
                },
            }
        }
        6 => Message::Announce,
        7 => Message::Feed,
        8 => Message::Gossip,
        9 => Message::Broadcast,
        10 => Message::TurnUndead,
        t => return Err(WireError::BadTag(t)),
    };
    Ok(m)
}

fn state_tag(s: State) -> u8 {
    match s {
        State::Alive => 0,
        State::Suspect => 1,
        State::Down => 2,
    }
}

impl foca::Codec<MemberId> for WireCodec {
    type Error = WireError;

    fn encode_header(
        &mut self,
        h: &Header<MemberId>,
        mut buf: impl BufMut,
    ) -> Result<(), WireError> {
        let (tag, id, n) = message_parts(&h.message);
        let need = id_len(&h.src)
            + varint_len(h.src_incarnation.into())
            + id_len(&h.dst)
            + 1
            + id.map_or(0, id_len)
            + usize::from(n.is_some());
        if buf.remaining_mut() < need {
            return Err(WireError::NoRoom);
        }
        put_id(&mut buf, &h.src);
        put_varint(&mut buf, h.src_incarnation.into());
        put_id(&mut buf, &h.dst);
        buf.put_u8(tag);
        if let Some(id) = id {
            put_id(&mut buf, id);
        }
        if let Some(n) = n {
            buf.put_u8(n);
        }
        Ok(())
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<MemberId>, WireError> {
        Ok(Header {
            src: get_id(&mut buf)?,
            src_incarnation: get_u16(&mut buf)?,
            dst: get_id(&mut buf)?,
            message: get_message(&mut buf)?,
        })
    }

    fn encode_member(
        &mut self,
        m: &Member<MemberId>,
        mut buf: impl BufMut,
    ) -> Result<(), WireError> {
        let need = id_len(m.id()) + varint_len(m.incarnation().into()) + 1;
        if buf.remaining_mut() < need {
            return Err(WireError::NoRoom);
        }
        put_id(&mut buf, m.id());
        put_varint(&mut buf, m.incarnation().into());
        buf.put_u8(state_tag(m.state()));
        Ok(())
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<MemberId>, WireError> {
        let id = get_id(&mut buf)?;
        let incarnation = get_u16(&mut buf)?;
        let state = match get_u8(&mut buf)? {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            t => return Err(WireError::BadTag(t)),
        };
        Ok(Member::new(id, incarnation, state))
    }
}

// ------------------------------------------------------ items and payloads

fn put_record(out: &mut Vec<u8>, r: &Record) {
    put_varint(out, r.key.node.into());
    out.put_u8(matches!(r.key.kind, Kind::Dsc) as u8);
    put_varint(out, r.version);
    put_varint(out, r.data.len() as u64);
    out.put_slice(&r.data);
}

/// Bytes [`put_record`] writes for `r`.
pub fn record_len(r: &Record) -> usize {
    varint_len(r.key.node.into())
        + 1
        + varint_len(r.version)
        + varint_len(r.data.len() as u64)
        + r.data.len()
}

fn get_record(buf: &mut &[u8]) -> Result<Record, WireError> {
    let node = get_u32(buf)?;
    let kind = match get_u8(buf)? {
        0 => Kind::Cfg,
        1 => Kind::Dsc,
        t => return Err(WireError::BadTag(t)),
    };
    let version = get_varint(buf)?;
    let len = usize::try_from(get_varint(buf)?).map_err(|_| WireError::Range)?;
    if len > RECORD_DATA_MAX_BYTES {
        return Err(WireError::Range);
    }
    if buf.len() < len {
        return Err(WireError::Truncated);
    }
    let data = Bytes::copy_from_slice(&buf[..len]);
    buf.advance(len);
    Ok(Record {
        key: Key { node, kind },
        version,
        data,
    })
}

impl Item {
    /// The item's bytes, as handed to `Foca::add_broadcast`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Item::Record(r) => {
                out.put_u8(ITEM_RECORD);
                put_record(&mut out, r);
            }
            Item::Acting(a) => {
                out.put_u8(ITEM_ACTING);
                put_varint(&mut out, a.member.into());
                put_varint(&mut out, a.epoch);
            }
        }
        out
    }

    /// Parses one item; trailing bytes are an error.
    pub fn decode(mut buf: &[u8]) -> Result<Item, WireError> {
        let item = match get_u8(&mut buf)? {
            ITEM_RECORD => Item::Record(get_record(&mut buf)?),
            ITEM_ACTING => Item::Acting(Acting {
                member: get_u32(&mut buf)?,
                epoch: get_varint(&mut buf)?,
            }),
            t => return Err(WireError::BadTag(t)),
        };
        if buf.has_remaining() {
            return Err(WireError::Range);
        }
        Ok(item)
    }
}

/// Wraps a foca packet into a payload.
pub fn foca_payload(packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packet.len() + 1);
    out.put_u8(TAG_FOCA);
    out.put_slice(packet);
    out
}

/// Encodes a digest payload.
pub fn digest_payload(d: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 8 * DIGEST_BUCKETS);
    out.put_u8(TAG_DIGEST);
    out.put_u8(d.reply as u8);
    put_varint(&mut out, d.acting.member.into());
    put_varint(&mut out, d.acting.epoch);
    for b in d.buckets {
        out.put_u64_le(b);
    }
    out
}

/// Encodes a payload of pushed records (the caller keeps it within bounds).
pub fn records_payload(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u8(TAG_RECORDS);
    for r in records {
        put_record(&mut out, r);
    }
    out
}

/// Encodes a down hint payload.
pub fn down_payload(id: &MemberId) -> Vec<u8> {
    let mut out = vec![TAG_DOWN];
    put_id(&mut out, id);
    out
}

/// A watch ping (`ack` false) or its answer (`ack` true).
pub fn watch_payload(seq: u64, ack: bool) -> Vec<u8> {
    let mut out = vec![if ack { TAG_WATCH_ACK } else { TAG_WATCH }];
    put_varint(&mut out, seq);
    out
}

/// Encodes a summary payload.
pub fn summary_payload(s: &Summary) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.put_u8(TAG_SUMMARY);
    put_varint(&mut out, s.acting.member.into());
    put_varint(&mut out, s.acting.epoch);
    out.put_u64_le(s.hash);
    out
}

/// Encodes an [`Own`] payload: a member's (`held` false) or a holder's
/// answer (`held` true).
pub fn own_payload(o: &Own, held: bool) -> Vec<u8> {
    let mut out = vec![if held { TAG_OWN_HELD } else { TAG_OWN }];
    put_varint(&mut out, o.acting.member.into());
    put_varint(&mut out, o.acting.epoch);
    put_varint(&mut out, o.version);
    out
}

/// An acting claim for one member.
pub fn claim_payload(a: &Acting) -> Vec<u8> {
    let mut out = vec![TAG_CLAIM];
    put_varint(&mut out, a.member.into());
    put_varint(&mut out, a.epoch);
    out
}

/// Bytes of a records payload before its first record.
pub const RECORDS_PAYLOAD_HEADER_BYTES: usize = 1;

fn get_digest(mut buf: &[u8]) -> Result<Digest, WireError> {
    let reply = match get_u8(&mut buf)? {
        0 => false,
        1 => true,
        t => return Err(WireError::BadTag(t)),
    };
    let acting = Acting {
        member: get_u32(&mut buf)?,
        epoch: get_varint(&mut buf)?,
    };
    if buf.len() != 8 * DIGEST_BUCKETS {
        return Err(WireError::Truncated);
    }
    let mut buckets = [0u64; DIGEST_BUCKETS];
    for b in &mut buckets {
        *b = buf.get_u64_le();
    }
    Ok(Digest {
        reply,
        acting,
        buckets,
    })
}

/// Parses a `Frame::Gossip` payload.
pub fn decode_payload(payload: &[u8]) -> Result<Payload<'_>, WireError> {
    let (&tag, rest) = payload.split_first().ok_or(WireError::Truncated)?;
    match tag {
        TAG_FOCA => Ok(Payload::Foca(rest)),
        TAG_DIGEST => get_digest(rest).map(|d| Payload::Digest(Box::new(d))),
        TAG_RECORDS => {
            let mut buf = rest;
            let mut records = Vec::new();
            while !buf.is_empty() {
                records.push(get_record(&mut buf)?);
            }
            Ok(Payload::Records(records))
        }
        TAG_DOWN => {
            let mut buf = rest;
            let id = get_id(&mut buf)?;
            if buf.has_remaining() {
                return Err(WireError::Range);
            }
            Ok(Payload::Down(id))
        }
        TAG_SUMMARY => {
            let mut buf = rest;
            let acting = Acting {
                member: get_u32(&mut buf)?,
                epoch: get_varint(&mut buf)?,
            };
            if buf.len() != 8 {
                return Err(WireError::Truncated);
            }
            Ok(Payload::Summary(Summary {
                acting,
                hash: buf.get_u64_le(),
            }))
        }
        TAG_OWN | TAG_OWN_HELD => {
            let mut buf = rest;
            let o = Own {
                acting: Acting {
                    member: get_u32(&mut buf)?,
                    epoch: get_varint(&mut buf)?,
                },
                version: get_varint(&mut buf)?,
            };
            if buf.has_remaining() {
                return Err(WireError::Range);
            }
            Ok(if tag == TAG_OWN {
                Payload::Own(o)
            } else {
                Payload::OwnHeld(o)
            })
        }
        TAG_WATCH | TAG_WATCH_ACK | TAG_CLAIM => {
            let mut buf = rest;
            let p = match tag {
                TAG_WATCH => Payload::Watch(get_varint(&mut buf)?),
                TAG_WATCH_ACK => Payload::WatchAck(get_varint(&mut buf)?),
                _ => Payload::Claim(Acting {
                    member: get_u32(&mut buf)?,
                    epoch: get_varint(&mut buf)?,
                }),
            };
            if buf.has_remaining() {
                return Err(WireError::Range);
            }
            Ok(p)
        }
        t => Err(WireError::BadTag(t)),
    }
}

/// Names what a `Frame::Gossip` payload carries, for traffic accounting
/// (the simulator's bytes by kind): our own payloads by tag, a foca packet
/// by its message, with `+upd` when it piggybacks membership updates and
/// `+bc` when it carries custom broadcasts (records, claims). Never fails:
/// what does not decode is `gossip malformed`.
pub fn payload_kind(payload: &[u8]) -> &'static str {
    let Some((&tag, rest)) = payload.split_first() else {
        return "gossip malformed";
    };
    match tag {
        TAG_FOCA => foca_kind(rest).unwrap_or("gossip malformed"),
        TAG_DIGEST => "gossip digest",
        TAG_RECORDS => "gossip records push",
        TAG_DOWN => "gossip down hint",
        TAG_WATCH | TAG_WATCH_ACK => "gossip watch ping/ack",
        TAG_CLAIM => "gossip direct claim",
        TAG_SUMMARY => "gossip summary",
        TAG_OWN | TAG_OWN_HELD => "gossip own version",
        _ => "gossip malformed",
    }
}

fn foca_kind(mut buf: &[u8]) -> Option<&'static str> {
    use foca::Codec;
    let mut codec = WireCodec;
    let h = codec.decode_header(&mut buf).ok()?;
    let mut updates = 0u16;
    if buf.len() >= 2 {
        updates = buf.get_u16();
        for _ in 0..updates {
            codec.decode_member(&mut buf).ok()?;
        }
    }
    let bc = buf.has_remaining();
    let base = match h.message {
        Message::Ping(_) => 0,
        Message::Ack(_) => 1,
        Message::PingReq { .. }
        | Message::IndirectPing { .. }
        | Message::IndirectAck { .. }
        | Message::ForwardedAck { .. } => 2,
        Message::Announce | Message::Feed => 3,
        Message::Gossip | Message::Broadcast => 4,
        Message::TurnUndead => 5,
    };
    const NAMES: [[&str; 4]; 6] = [
        [
            "swim ping",
            "swim ping +upd",
            "swim ping +bc",
            "swim ping +upd +bc",
        ],
        [
            "swim ack",
            "swim ack +upd",
            "swim ack +bc",
            "swim ack +upd +bc",
        ],
        [
            "swim indirect",
            "swim indirect +upd",
            "swim indirect +bc",
            "swim indirect +upd +bc",
        ],
        [
            "swim announce/feed",
            "swim announce/feed +upd",
            "swim announce/feed +bc",
            "swim announce/feed +upd +bc",
        ],
        [
            "swim gossip",
            "swim gossip +upd",
            "swim gossip +bc",
            "swim gossip +upd +bc",
        ],
        [
            "swim turn-undead",
            "swim turn-undead +upd",
            "swim turn-undead +bc",
            "swim turn-undead +upd +bc",
        ],
    ];
    Some(NAMES[base][usize::from(updates > 0) + 2 * usize::from(bc)])
}

#[cfg(test)]
mod tests;
