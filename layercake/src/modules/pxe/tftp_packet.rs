//! The TFTP wire format (RFC 1350, with RFC 2347's option extension).
//!
//! - [`Packet::decode`]: borrowed view of one datagram; every malformed
//!   input is a [`PacketError`], never a panic.
//! - `encode_*`: the packets a read-only server sends (DATA, OACK, ERROR)
//!   and, for tests and tools, the ones a client sends (RRQ, ACK).
//!
//! Hand-written because no maintained crate offers a codec without a
//! server attached (`async-tftp` keeps its packet type private and brings
//! its own executor). It is small, bounded and fuzzed (`fuzz/run 10 tftp`).

/// Largest request accepted: RFC 2347 limits a request with options to
/// 512 bytes.
pub const REQUEST_BYTES_MAX: usize = 512;

/// Longest file name accepted in a request.
pub const FILENAME_BYTES_MAX: usize = 255;

/// Most option pairs read from one request; more is malformed.
pub const REQUEST_OPTIONS_MAX: usize = 8;

/// Longest ERROR message sent or read.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 128;

/// The DATA, ACK and ERROR header: opcode and block number (or code).
pub const HEADER_BYTES: usize = 4;

/// Opcodes (RFC 1350 section 5, RFC 2347).
const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// ERROR codes (RFC 1350 appendix, RFC 2347).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    Undefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTransferId,
    /// 8: option negotiation refused.
    OptionRefused,
    /// Any other code.
    Other(u16),
}

impl ErrorCode {
    fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Undefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Other(n) => n,
        }
    }

    fn from_u16(n: u16) -> Self {
        match n {
            0 => ErrorCode::Undefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            8 => ErrorCode::OptionRefused,
            n => ErrorCode::Other(n),
        }
    }
}

/// A read or write request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The file name as sent.
    pub filename: &'a str,
    /// The transfer mode (`octet`, `netascii`, `mail`), any case.
    pub mode: &'a str,
    /// RFC 2347 option pairs, as sent (names any case).
    pub options: Vec<(&'a str, &'a str)>,
}

/// One decoded TFTP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request.
    Rrq(Request<'a>),
    /// Write request.
    Wrq(Request<'a>),
    /// A block of data.
    Data {
        /// Block number.
        block: u16,
        /// Its bytes.
        data: &'a [u8],
    },
    /// Acknowledgement of a block (0: of an OACK).
    Ack {
        /// Block number.
        block: u16,
    },
    /// An error; ends the transfer.
    Error {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: &'a str,
    },
    /// Option acknowledgement.
    Oack(Vec<(&'a str, &'a str)>),
}

/// Why a datagram is not a TFTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than its fixed fields.
    #[error("truncated packet")]
    Truncated,
    /// Larger than the packet type allows.
    #[error("packet too large")]
    TooLarge,
    /// An opcode outside 1-6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A string without its NUL, not UTF-8, too long, or bytes after the
    /// last one; an option without a value; too many options.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

impl<'a> Packet<'a> {
    /// Decodes one datagram. Never panics; allocates only the option list
    /// (at most [`REQUEST_OPTIONS_MAX`] entries).
    pub fn decode(bytes: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        let (op, rest) = split_u16(bytes)?;
        match op {
            RRQ | WRQ => {
                if bytes.len() > REQUEST_BYTES_MAX {
                    return Err(PacketError::TooLarge);
                }
                let request = decode_request(rest)?;
                Ok(if op == RRQ {
                    Packet::Rrq(request)
                } else {
                    Packet::Wrq(request)
                })
            }
            DATA => {
                let (block, data) = split_u16(rest)?;
                Ok(Packet::Data { block, data })
            }
            ACK => {
                let (block, rest) = split_u16(rest)?;
                if !rest.is_empty() {
                    return Err(PacketError::Malformed("bytes after an ACK"));
                }
                Ok(Packet::Ack { block })
            }
            ERROR => {
                let (code, rest) = split_u16(rest)?;
                let mut strings = Strings(rest);
                let message = strings.next_str(ERROR_MESSAGE_BYTES_MAX)?;
                strings.finish()?;
                Ok(Packet::Error {
                    code: ErrorCode::from_u16(code),
                    message,
                })
            }
            OACK => {
                if bytes.len() > REQUEST_BYTES_MAX {
                    return Err(PacketError::TooLarge);
                }
                Ok(Packet::Oack(decode_options(Strings(rest))?))
            }
            other => Err(PacketError::UnknownOpcode(other)),
        }
    }
}

fn split_u16(bytes: &[u8]) -> Result<(u16, &[u8]), PacketError> {
    match bytes {
        [a, b, rest @ ..] => Ok((u16::from_be_bytes([*a, *b]), rest)),
        _ => Err(PacketError::Truncated),
    }
}

fn decode_request(rest: &[u8]) -> Result<Request<'_>, PacketError> {
    let mut strings = Strings(rest);
    let filename = strings.next_str(FILENAME_BYTES_MAX)?;
    let mode = strings.next_str(16)?;
    let options = decode_options(strings)?;
    Ok(Request {
        filename,
        mode,
        options,
    })
}

fn decode_options(mut strings: Strings<'_>) -> Result<Vec<(&str, &str)>, PacketError> {
    let mut options = Vec::new();
    while !strings.0.is_empty() {
        if options.len() >= REQUEST_OPTIONS_MAX {
            return Err(PacketError::Malformed("too many options"));
        }
        let name = strings.next_str(REQUEST_BYTES_MAX)?;
        let value = strings.next_str(REQUEST_BYTES_MAX)?;
        options.push((name, value));
    }
    Ok(options)
}

/// NUL-terminated UTF-8 strings, one after the other.
struct Strings<'a>(&'a [u8]);

impl<'a> Strings<'a> {
    fn next_str(&mut self, max_bytes: usize) -> Result<&'a str, PacketError> {
        let nul = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or(PacketError::Malformed("string without its NUL"))?;
        if nul > max_bytes {
            return Err(PacketError::Malformed("string too long"));
        }
        let (s, rest) = self.0.split_at(nul);
        self.0 = rest.get(1..).unwrap_or_default();
        std::str::from_utf8(s).map_err(|_| PacketError::Malformed("string not UTF-8"))
    }

    fn finish(self) -> Result<(), PacketError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(PacketError::Malformed("bytes after the last string"))
        }
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// A DATA packet into `out` (cleared first).
pub fn encode_data(out: &mut Vec<u8>, block: u16, data: &[u8]) {
    out.clear();
    out.extend_from_slice(&DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(data);
}

/// An ACK packet.
pub fn encode_ack(block: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(&ACK.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out
}

/// An ERROR packet; the message is cut to [`ERROR_MESSAGE_BYTES_MAX`]
/// bytes at a character boundary and may not contain NUL (cut there).
pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let message = message.split('\0').next().unwrap_or_default();
    let mut end = message.len().min(ERROR_MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + end + 1);
    out.extend_from_slice(&ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_u16().to_be_bytes());
    push_str(&mut out, &message[..end]);
    out
}

/// An OACK packet with the accepted options.
pub fn encode_oack(options: &[(&str, String)]) -> Vec<u8> {
    let mut out = OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        push_str(&mut out, name);
        push_str(&mut out, value);
    }
    out
}

/// A read request (for clients and tests).
pub fn encode_rrq(filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    encode_request(RRQ, filename, mode, options)
}

/// A write request (for tests: this server refuses them).
pub fn encode_wrq(filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    encode_request(WRQ, filename, mode, options)
}

fn encode_request(op: u16, filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = op.to_be_bytes().to_vec();
    push_str(&mut out, filename);
    push_str(&mut out, mode);
    for (name, value) in options {
        push_str(&mut out, name);
        push_str(&mut out, value);
    }
    out
}
