//! Datagram framing: the RMCP header, the IPMI v1.5 session wrapper (only
//! its sessionless form, for Get Channel Authentication Capabilities), the
//! IPMI v2.0 / RMCP+ session wrapper with its integrity trailer and
//! encrypted payloads, and the IPMI LAN request/response message inside.
//!
//! - [`encode_v2`] / [`decode_v2`]: RMCP+ packets, sealed with
//!   [`SessionKeys`] once a session is active.
//! - [`encode_v15_sessionless`] / [`decode_v15_sessionless`].
//! - [`encode_request`] / [`decode_response`]: the IPMI message (addresses,
//!   NetFn, sequence, command, checksums).
//! - [`route_session_id`]: the cheap peek the dispatcher routes on.
//!
//! Every decoder takes hostile bytes and returns [`DecodeError`]; none
//! indexes past a bound or panics.

use super::crypto::{AES_BLOCK_BYTES, SessionKeys};

/// RMCP version 1.0, reserved, sequence 0xFF (no RMCP ACK), class IPMI.
pub const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xff, 0x07];
/// The RMCP+ "auth type" that marks an IPMI v2.0 session header.
pub const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
/// The IPMI v1.5 auth type "none".
pub const AUTH_TYPE_NONE: u8 = 0x00;

/// Payload type: an IPMI message.
pub const PAYLOAD_IPMI: u8 = 0x00;
/// Payload type: RMCP+ Open Session Request.
pub const PAYLOAD_OPEN_SESSION_REQUEST: u8 = 0x10;
/// Payload type: RMCP+ Open Session Response.
pub const PAYLOAD_OPEN_SESSION_RESPONSE: u8 = 0x11;
/// Payload type: RAKP Message 1.
pub const PAYLOAD_RAKP1: u8 = 0x12;
/// Payload type: RAKP Message 2.
pub const PAYLOAD_RAKP2: u8 = 0x13;
/// Payload type: RAKP Message 3.
pub const PAYLOAD_RAKP3: u8 = 0x14;
/// Payload type: RAKP Message 4.
pub const PAYLOAD_RAKP4: u8 = 0x15;

const PAYLOAD_ENCRYPTED: u8 = 0x80;
const PAYLOAD_AUTHENTICATED: u8 = 0x40;
const PAYLOAD_TYPE_MASK: u8 = 0x3f;
/// RMCP header plus the v2.0 session header.
const V2_HEADER_BYTES: usize = 16;
/// The "next header" byte of the integrity trailer (always IPMI).
const NEXT_HEADER: u8 = 0x07;

/// The BMC's IPMB slave address.
pub const BMC_SLAVE_ADDR: u8 = 0x20;
/// The remote console's software ID (the first one for system software).
pub const REMOTE_SWID: u8 = 0x81;

/// Why a datagram could not be decoded; it is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A decoded RMCP+ packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V2Packet {
    /// The payload type without the encrypted/authenticated bits.
    pub payload_type: u8,
    /// Whether the packet carried an AuthCode (verified by `decode_v2`).
    pub authenticated: bool,
    /// Whether the payload was encrypted (decrypted by `decode_v2`).
    pub encrypted: bool,
    /// The session ID in the header (the receiver's ID for the session).
    pub session_id: u32,
    /// The session sequence number.
    pub seq: u32,
    /// The payload, in clear.
    pub payload: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn check_rmcp(d: &[u8]) -> Result<(), DecodeError> {
    match d.get(..4) {
        Some([0x06, _, _, class]) if class & 0x1f == 0x07 => Ok(()),
        Some(_) => Err(DecodeError("not an RMCP IPMI-class datagram")),
        None => Err(DecodeError("shorter than the RMCP header")),
    }
}

/// Builds an RMCP+ packet. With `keys`, the payload is encrypted (if the
/// session has confidentiality, using `iv`) and an integrity trailer is
/// appended (if it has integrity); without, the packet goes in clear (the
/// session setup messages).
pub fn encode_v2(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    keys: Option<&SessionKeys>,
    iv: &[u8; AES_BLOCK_BYTES],
) -> Vec<u8> {
    let mut ptype = payload_type & PAYLOAD_TYPE_MASK;
    let body = match keys {
        Some(k) if k.conf != super::crypto::ConfAlg::None => {
            ptype |= PAYLOAD_ENCRYPTED;
            k.encrypt(payload, iv)
        }
        _ => payload.to_vec(),
    };
    let integrity = keys.filter(|k| k.integrity.auth_code_len() > 0);
    if integrity.is_some() {
        ptype |= PAYLOAD_AUTHENTICATED;
    }
    let body_len = u16::try_from(body.len()).expect("IPMI payloads are far below 64 KiB");
    let mut out = Vec::with_capacity(V2_HEADER_BYTES + body.len() + 24);
    out.extend_from_slice(&RMCP_HEADER);
    out.push(AUTH_TYPE_RMCP_PLUS);
    out.push(ptype);
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&body);
    if let Some(k) = integrity {
        // Pad so that auth type .. next header is a whole number of DWORDs.
        let covered = out.len() - RMCP_HEADER.len() + 2;
        let pad = (4 - covered % 4) % 4;
        out.extend(std::iter::repeat_n(0xff, pad));
        out.push(pad as u8);
        out.push(NEXT_HEADER);
        let code = k.auth_code(&out[RMCP_HEADER.len()..]);
        out.extend_from_slice(&code);
    }
    out
}

/// Decodes an RMCP+ packet. With `keys` (an active session), the packet
/// must carry a valid AuthCode if the session has integrity and an
/// encrypted payload if it has confidentiality; without `keys`, only clear,
/// unauthenticated packets (session setup) are accepted.
pub fn decode_v2(d: &[u8], keys: Option<&SessionKeys>) -> Result<V2Packet, DecodeError> {
    check_rmcp(d)?;
    if d.get(4) != Some(&AUTH_TYPE_RMCP_PLUS) {
        return Err(DecodeError("not an RMCP+ session header"));
    }
    let ptype = *d.get(5).ok_or(DecodeError("truncated session header"))?;
    let session_id = u32_at(d, 6).ok_or(DecodeError("truncated session header"))?;
    let seq = u32_at(d, 10).ok_or(DecodeError("truncated session header"))?;
    let len = u16_at(d, 14).ok_or(DecodeError("truncated session header"))? as usize;
    let payload_end = V2_HEADER_BYTES + len;
    let body = d
        .get(V2_HEADER_BYTES..payload_end)
        .ok_or(DecodeError("payload length beyond the datagram"))?;
    let authenticated = ptype & PAYLOAD_AUTHENTICATED != 0;
    let encrypted = ptype & PAYLOAD_ENCRYPTED != 0;
    let code_len = keys.map_or(0, |k| k.integrity.auth_code_len());
    if authenticated {
        let k = keys.filter(|_| code_len > 0).ok_or(DecodeError(
            "authenticated packet outside an integrity session",
        ))?;
        check_trailer(d, payload_end, k, code_len)?;
    } else if code_len > 0 {
        return Err(DecodeError(
            "unauthenticated packet in an integrity session",
        ));
    } else if d.len() != payload_end {
        return Err(DecodeError("trailing bytes after the payload"));
    }
    let conf = keys.is_some_and(|k| k.conf != super::crypto::ConfAlg::None);
    let payload = match (encrypted, keys) {
        (true, Some(k)) if conf => k.decrypt(body).map_err(DecodeError)?,
        (true, _) => return Err(DecodeError("encrypted packet outside an encrypted session")),
        (false, _) if conf => return Err(DecodeError("clear payload in an encrypted session")),
        (false, _) => body.to_vec(),
    };
    Ok(V2Packet {
        payload_type: ptype & PAYLOAD_TYPE_MASK,
        authenticated,
        encrypted,
        session_id,
        seq,
        payload,
    })
}

/// Checks the integrity trailer: pad, pad length, next header, AuthCode.
fn check_trailer(
    d: &[u8],
    payload_end: usize,
    keys: &SessionKeys,
    code_len: usize,
) -> Result<(), DecodeError> {
    let short = DecodeError("truncated integrity trailer");
    let code_at = d.len().checked_sub(code_len).ok_or(short)?;
    let next_at = code_at.checked_sub(1).ok_or(short)?;
    let pad_len_at = next_at.checked_sub(1).ok_or(short)?;
    if pad_len_at < payload_end {
        return Err(short);
    }
    if d.get(next_at) != Some(&NEXT_HEADER) {
        return Err(DecodeError("bad next-header byte in integrity trailer"));
    }
    let pad_len = *d.get(pad_len_at).ok_or(short)? as usize;
    if payload_end + pad_len != pad_len_at {
        return Err(DecodeError(
            "integrity pad length does not match the packet",
        ));
    }
    let covered = d.get(RMCP_HEADER.len()..code_at).ok_or(short)?;
    let code = d.get(code_at..).ok_or(short)?;
    if !keys.verify_auth_code(covered, code) {
        return Err(DecodeError("bad AuthCode"));
    }
    Ok(())
}

/// Builds an IPMI v1.5 sessionless packet (auth type none, session 0).
pub fn encode_v15_sessionless(msg: &[u8]) -> Vec<u8> {
    let len = u8::try_from(msg.len()).expect("sessionless messages are short");
    let mut out = Vec::with_capacity(14 + msg.len());
    out.extend_from_slice(&RMCP_HEADER);
    out.push(AUTH_TYPE_NONE);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(len);
    out.extend_from_slice(msg);
    out
}

/// Decodes an IPMI v1.5 packet with auth type none and returns its IPMI
/// message (legacy trailing pad bytes are ignored).
pub fn decode_v15_sessionless(d: &[u8]) -> Result<Vec<u8>, DecodeError> {
    check_rmcp(d)?;
    if d.get(4) != Some(&AUTH_TYPE_NONE) {
        return Err(DecodeError(
            "not an IPMI v1.5 packet without authentication",
        ));
    }
    let len = *d
        .get(13)
        .ok_or(DecodeError("truncated v1.5 session header"))? as usize;
    let msg = d
        .get(14..14 + len)
        .ok_or(DecodeError("v1.5 message length beyond the datagram"))?;
    Ok(msg.to_vec())
}

/// The session ID a datagram is addressed to, for routing: the header's
/// session ID (0 for sessionless replies and for session-setup replies,
/// which cannot be told apart by payload: a BMC's error reply may be as
/// short as tag and status). `None` for datagrams that cannot be routed.
pub fn route_session_id(d: &[u8]) -> Option<u32> {
    check_rmcp(d).ok()?;
    match *d.get(4)? {
        AUTH_TYPE_RMCP_PLUS => u32_at(d, 6),
        // v1.5: auth type, sequence (4), session ID (4).
        0x00..=0x05 => u32_at(d, 9),
        _ => None,
    }
}

/// The two's-complement checksum IPMI messages use.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds an IPMI request message from the remote console (SWID 0x81,
/// LUN 0) to the BMC (0x20, LUN 0). `rq_seq` uses its low 6 bits.
pub fn encode_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(7 + data.len());
    m.push(BMC_SLAVE_ADDR);
    m.push((netfn & 0x3f) << 2);
    m.push(checksum(&m[0..2]));
    m.push(REMOTE_SWID);
    m.push((rq_seq & 0x3f) << 2);
    m.push(cmd);
    m.extend_from_slice(data);
    let c = checksum(&m[3..]);
    m.push(c);
    m
}

/// A decoded IPMI response message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpmiResponse {
    /// The response NetFn (the request's + 1).
    pub netfn: u8,
    /// The command.
    pub cmd: u8,
    /// The request sequence number echoed back (6 bits).
    pub rq_seq: u8,
    /// The completion code.
    pub cc: u8,
    /// The response data after the completion code.
    pub data: Vec<u8>,
}

/// Decodes an IPMI response message addressed to the remote console,
/// checking both checksums.
pub fn decode_response(m: &[u8]) -> Result<IpmiResponse, DecodeError> {
    if m.len() < 8 {
        return Err(DecodeError("IPMI response shorter than 8 bytes"));
    }
    let (head, rest) = m.split_at(3);
    if checksum(&head[..2]) != head[2] {
        return Err(DecodeError("bad IPMI header checksum"));
    }
    let (body, last) = rest.split_at(rest.len() - 1);
    if checksum(body) != last[0] {
        return Err(DecodeError("bad IPMI data checksum"));
    }
    if head[0] != REMOTE_SWID {
        return Err(DecodeError(
            "IPMI response not addressed to the remote console",
        ));
    }
    // body: rsAddr, rqSeq/LUN, cmd, cc, data...
    Ok(IpmiResponse {
        netfn: head[1] >> 2,
        rq_seq: body[1] >> 2,
        cmd: body[2],
        cc: body[3],
        data: body[4..].to_vec(),
    })
}
