//! The read-only TFTP server core (sans-io): RFC 1350 with the option
//! extension (RFC 2347), `blksize` (RFC 2348), `timeout` and `tsize`
//! (RFC 2349).
//!
//! - [`TftpServer::accept`]: one datagram on the listening port ->
//!   [`Accept`]: a new [`Transfer`], an ERROR to send back (write
//!   requests, missing files, refused paths), or a silent drop (garbage,
//!   which is never answered so the server cannot be used as a reflector).
//!   The file is opened through a closure, so tests serve memory and the
//!   shell serves [`super::files::FileRoot`].
//! - [`Transfer`]: one read transfer. Feed it [`Transfer::handle_datagram`]
//!   (datagrams from the client's transfer id) and
//!   [`Transfer::handle_timeout`]; after each call drain
//!   [`Transfer::poll_transmit`] until `None`, then read
//!   [`Transfer::status`] and re-arm [`Transfer::poll_timeout`].
//! - [`TftpResult`]: every outcome, one counter each.
//!
//! Retransmission is on timeout only, never on a duplicate ACK (RFC 1123
//! section 4.2.3.1: that would start the Sorcerer's Apprentice), at most
//! [`TftpLimits::retries_max`] times. Block numbers roll over past 65535.
//! The number of concurrent transfers is bounded by the shell
//! ([`TRANSFERS_MAX`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::Time;
use super::files::FileError;
use super::tftp_packet::{self as packet, ErrorCode, Packet, Request};

/// Most transfers running at once per server; a request beyond is
/// answered with an ERROR ("busy") and counted.
pub const TRANSFERS_MAX: usize = 64;

/// Default and largest block size: an Ethernet MTU less the IP, UDP and
/// TFTP headers (1500 - 20 - 8 - 4), so no block is fragmented.
pub const BLOCK_BYTES_MAX: u16 = 1468;

/// RFC 1350's block size, used when the client asks for none.
pub const BLOCK_BYTES_DEFAULT: u16 = 512;

/// Smallest block size RFC 2348 allows.
pub const BLOCK_BYTES_MIN: u16 = 8;

/// Largest file served (boot loaders are small; kernels go over HTTP).
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Largest datagram read from a client; longer ones are dropped.
pub const DATAGRAM_BYTES_MAX: usize = 1500;

/// Limits of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TftpLimits {
    /// Largest block size granted (clamped to [`BLOCK_BYTES_MAX`]).
    pub block_bytes_max: u16,
    /// Retransmission timeout when the client asks for none.
    pub timeout: Duration,
    /// Retransmissions of one packet before the transfer fails.
    pub retries_max: u8,
    /// Largest file served.
    pub file_bytes_max: u64,
}

impl Default for TftpLimits {
    fn default() -> Self {
        TftpLimits {
            block_bytes_max: BLOCK_BYTES_MAX,
            timeout: Duration::from_secs(1),
            retries_max: 5,
            file_bytes_max: FILE_BYTES_MAX,
        }
    }
}

/// Every outcome of a request or a transfer, one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TftpResult {
    /// A read request was accepted: a transfer started.
    Started,
    /// A transfer's last block was acknowledged.
    Completed,
    /// A write request: refused with ERROR 2 (the server is read-only).
    RefusedWrite,
    /// A path with `..`, absolute, NUL, ... or a link out of the root.
    RefusedTraversal,
    /// No such file (or not a regular file).
    RefusedNotFound,
    /// A file larger than [`TftpLimits::file_bytes_max`].
    RefusedTooLarge,
    /// A transfer mode other than `octet`.
    RefusedMode,
    /// [`TRANSFERS_MAX`] transfers were running.
    RefusedBusy,
    /// The file could not be read.
    ReadError,
    /// Not a TFTP packet, or a request that does not parse.
    IgnoredMalformed,
    /// Larger than [`DATAGRAM_BYTES_MAX`].
    IgnoredOversized,
    /// DATA, ACK, ERROR or OACK sent to the listening port.
    IgnoredNotRequest,
    /// A datagram to a transfer's port from another address (answered
    /// with ERROR 5, the transfer goes on).
    UnknownTransferId,
    /// The client did not acknowledge within the retries.
    TimedOut,
    /// The client sent an ERROR (for example refusing the options).
    AbortedByClient,
}

impl TftpResult {
    /// Every value, in declaration order.
    pub const ALL: [TftpResult; 15] = [
        TftpResult::Started,
        TftpResult::Completed,
        TftpResult::RefusedWrite,
        TftpResult::RefusedTraversal,
        TftpResult::RefusedNotFound,
        TftpResult::RefusedTooLarge,
        TftpResult::RefusedMode,
        TftpResult::RefusedBusy,
        TftpResult::ReadError,
        TftpResult::IgnoredMalformed,
        TftpResult::IgnoredOversized,
        TftpResult::IgnoredNotRequest,
        TftpResult::UnknownTransferId,
        TftpResult::TimedOut,
        TftpResult::AbortedByClient,
    ];

    /// The metric label: the `result` of `layercake_pxe_tftp_transfers_total`
    /// for [`TftpResult::Started`] and [`TftpResult::Completed`], else the
    /// `reason` of `layercake_pxe_tftp_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            TftpResult::Started => "started",
            TftpResult::Completed => "completed",
            TftpResult::RefusedWrite => "refused_write",
            TftpResult::RefusedTraversal => "refused_traversal",
            TftpResult::RefusedNotFound => "refused_not_found",
            TftpResult::RefusedTooLarge => "refused_too_large",
            TftpResult::RefusedMode => "refused_mode",
            TftpResult::RefusedBusy => "refused_busy",
            TftpResult::ReadError => "read_error",
            TftpResult::IgnoredMalformed => "ignored_malformed",
            TftpResult::IgnoredOversized => "ignored_oversized",
            TftpResult::IgnoredNotRequest => "ignored_not_request",
            TftpResult::UnknownTransferId => "unknown_transfer_id",
            TftpResult::TimedOut => "timed_out",
            TftpResult::AbortedByClient => "aborted_by_client",
        }
    }

    /// Whether this is an error (not [`TftpResult::Started`] or
    /// [`TftpResult::Completed`]).
    pub fn is_error(self) -> bool {
        !matches!(self, TftpResult::Started | TftpResult::Completed)
    }

    /// The position in [`TftpResult::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A file's bytes, read at offsets (a `File`, or memory in tests).
pub trait Source {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

impl Source for std::fs::File {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut filled = 0usize;
        while filled < buf.len() {
            let at = offset
                .checked_add(filled as u64)
                .ok_or_else(|| io::Error::other("offset overflow"))?;
            match FileExt::read_at(self, &mut buf[filled..], at) {
                Ok(0) => break,
                Ok(n) => filled = filled.saturating_add(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

impl Source for Vec<u8> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len().saturating_sub(start));
        buf[..n].copy_from_slice(&self[start..start.saturating_add(n)]);
        Ok(n)
    }
}

/// What to do with a datagram that arrived on the listening port.
#[derive(Debug)]
#[must_use]
pub enum Accept<S> {
    /// A read transfer starts; the shell gives it its own port.
    Start(Box<Transfer<S>>),
    /// Answer the sender with this ERROR packet, from the listening port.
    Refuse {
        /// Why (counted).
        result: TftpResult,
        /// The ERROR packet.
        packet: Vec<u8>,
    },
    /// Send nothing (counted).
    Drop(TftpResult),
}

impl<S> Accept<S> {
    /// The outcome to count.
    pub fn result(&self) -> TftpResult {
        match self {
            Accept::Start(_) => TftpResult::Started,
            Accept::Refuse { result, .. } | Accept::Drop(result) => *result,
        }
    }
}

/// The listening side: turns requests into transfers.
#[derive(Clone, Debug, Default)]
pub struct TftpServer {
    limits: TftpLimits,
}

impl TftpServer {
    /// A server with `limits`.
    pub fn new(limits: TftpLimits) -> Self {
        TftpServer { limits }
    }

    /// The limits.
    pub fn limits(&self) -> &TftpLimits {
        &self.limits
    }

    /// Handles a datagram on the listening port. `open` resolves a file
    /// name to its source and length (refusing paths outside the root).
    /// Never panics on any input.
    pub fn accept<S, F>(&self, now: Time, datagram: &[u8], peer: SocketAddr, open: F) -> Accept<S>
    where
        S: Source,
        F: FnOnce(&str, u64) -> Result<(S, u64), FileError>,
    {
        if datagram.len() > DATAGRAM_BYTES_MAX {
            return Accept::Drop(TftpResult::IgnoredOversized);
        }
        let request = match Packet::decode(datagram) {
            Ok(Packet::Rrq(request)) => request,
            Ok(Packet::Wrq(_)) => {
                return refuse(
                    TftpResult::RefusedWrite,
                    ErrorCode::AccessViolation,
                    "read-only server",
                );
            }
            Ok(_) => return Accept::Drop(TftpResult::IgnoredNotRequest),
            Err(_) => return Accept::Drop(TftpResult::IgnoredMalformed),
        };
        if !request.mode.eq_ignore_ascii_case("octet") {
            return refuse(
                TftpResult::RefusedMode,
                ErrorCode::IllegalOperation,
                "only octet mode",
            );
        }
        let (source, file_bytes) = match open(request.filename, self.limits.file_bytes_max) {
            Ok(opened) => opened,
            Err(e) => return refuse_file(peer, request.filename, &e),
        };
        tracing::debug!(%peer, file = request.filename, file_bytes, "tftp: transfer");
        Accept::Start(Box::new(Transfer::start(
            now,
            &request,
            peer,
            source,
            file_bytes,
            &self.limits,
        )))
    }
}

fn refuse<S>(result: TftpResult, code: ErrorCode, message: &str) -> Accept<S> {
    Accept::Refuse {
        result,
        packet: packet::encode_error(code, message),
    }
}

fn refuse_file<S>(peer: SocketAddr, filename: &str, e: &FileError) -> Accept<S> {
    if e.is_refusal() {
        tracing::warn!(%peer, file = filename.escape_debug().to_string(), "tftp: {e}");
    }
    match e {
        FileError::Refused(_) | FileError::OutsideRoot => refuse(
            TftpResult::RefusedTraversal,
            ErrorCode::AccessViolation,
            "access violation",
        ),
        FileError::NotFound | FileError::NotAFile => refuse(
            TftpResult::RefusedNotFound,
            ErrorCode::FileNotFound,
            "file not found",
        ),
        FileError::TooLarge(_) => refuse(
            TftpResult::RefusedTooLarge,
            ErrorCode::Undefined,
            "file too large",
        ),
        FileError::Io(_) => refuse(TftpResult::ReadError, ErrorCode::Undefined, "read error"),
    }
}

/// Where a transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting for an acknowledgement.
    Running,
    /// The last block was acknowledged.
    Completed,
    /// Ended without completing (timed out, aborted, read error).
    Failed(TftpResult),
}

/// A datagram a transfer wants sent to its client.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// The packet.
    pub bytes: &'a [u8],
    /// File bytes it carries (0 for OACK and ERROR).
    pub data_bytes: usize,
}

/// The options granted to one transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Granted {
    block_bytes: u16,
    timeout: Duration,
    /// Whether the client asked for `blksize` (and it was accepted).
    blksize: bool,
    /// Whether the client asked for `timeout` (and it was accepted).
    timeout_secs: bool,
    /// Whether the client asked for `tsize`.
    tsize: bool,
}

impl Granted {
    /// Whether an OACK is due: some option was accepted.
    fn oack(&self) -> bool {
        self.blksize || self.timeout_secs || self.tsize
    }
}

/// One read transfer. See the module documentation for the call order.
#[derive(Debug)]
pub struct Transfer<S> {
    peer: SocketAddr,
    source: S,
    file_bytes: u64,
    granted: Granted,
    retries_max: u8,
    /// The block awaiting its ACK (0: the OACK).
    block: u64,
    /// Whether `block` is the last one.
    last: bool,
    status: Status,
    packet: Vec<u8>,
    packet_data_bytes: usize,
    pending: bool,
    deadline: Time,
    retries: u8,
    /// Datagrams from the client that were not the awaited ACK.
    ignored: u64,
}

impl<S: Source> Transfer<S> {
    /// Starts sending `source` (`file_bytes` long) to `peer` as `request`
    /// asks: an OACK first if options were granted, else block 1.
    pub fn start(
        now: Time,
        request: &Request<'_>,
        peer: SocketAddr,
        source: S,
        file_bytes: u64,
        limits: &TftpLimits,
    ) -> Self {
        let granted = negotiate(request, limits);
        let mut t = Transfer {
            peer,
            source,
            file_bytes,
            granted,
            retries_max: limits.retries_max,
            block: 0,
            last: false,
            status: Status::Running,
            packet: Vec::new(),
            packet_data_bytes: 0,
            pending: false,
            deadline: now,
            retries: 0,
            ignored: 0,
        };
        if granted.oack() {
            let mut options = Vec::with_capacity(3);
            if granted.blksize {
                options.push(("blksize", granted.block_bytes.to_string()));
            }
            if granted.timeout_secs {
                options.push(("timeout", granted.timeout.as_secs().to_string()));
            }
            if granted.tsize {
                options.push(("tsize", file_bytes.to_string()));
            }
            t.packet = packet::encode_oack(&options);
            t.packet_data_bytes = 0;
            t.arm(now);
        } else {
            t.send_block(now, 1);
        }
        t
    }

    /// The client's address (its transfer id).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The block size in use.
    pub fn block_bytes(&self) -> u16 {
        self.granted.block_bytes
    }

    /// Where the transfer is.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Datagrams from the client that were not the awaited ACK.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// A datagram from the client's transfer id (the shell checks the
    /// address; see [`TftpResult::UnknownTransferId`]).
    pub fn handle_datagram(&mut self, now: Time, datagram: &[u8]) {
        if self.status != Status::Running {
            return;
        }
        match Packet::decode(datagram) {
            Ok(Packet::Ack { block }) if block == wire_block(self.block) => self.on_ack(now),
            Ok(Packet::Error { code, message }) => {
                tracing::debug!(peer = %self.peer, ?code, message, "tftp: client aborted");
                self.status = Status::Failed(TftpResult::AbortedByClient);
                self.pending = false;
            }
            // A duplicate or old ACK, or anything else: no retransmission.
            _ => self.ignored = self.ignored.saturating_add(1),
        }
    }

    /// The deadline from [`Transfer::poll_timeout`] passed: retransmit,
    /// or fail after [`TftpLimits::retries_max`] retransmissions.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.status != Status::Running || now < self.deadline {
            return;
        }
        if self.retries >= self.retries_max {
            self.status = Status::Failed(TftpResult::TimedOut);
            self.pending = false;
            return;
        }
        self.retries = self.retries.saturating_add(1);
        self.pending = true;
        self.deadline = now.saturating_add(self.granted.timeout);
    }

    /// The next datagram to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        if !self.pending {
            return None;
        }
        self.pending = false;
        Some(Transmit {
            bytes: &self.packet,
            data_bytes: self.packet_data_bytes,
        })
    }

    /// When [`Transfer::handle_timeout`] is next due (`None` once ended).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        (self.status == Status::Running).then_some(self.deadline)
    }

    fn on_ack(&mut self, now: Time) {
        if self.last {
            self.status = Status::Completed;
            self.pending = false;
            return;
        }
        let next = self.block.saturating_add(1);
        self.send_block(now, next);
    }

    /// Reads block `n` (1-based) and arms it; a read error ends the
    /// transfer with an ERROR to the client.
    fn send_block(&mut self, now: Time, n: u64) {
        let size = usize::from(self.granted.block_bytes);
        let offset = n
            .saturating_sub(1)
            .saturating_mul(u64::from(self.granted.block_bytes));
        // Never past the length announced (tsize), even if the file grew.
        let left = self.file_bytes.saturating_sub(offset);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(size);
        let mut data = vec![0u8; want];
        let read = if want == 0 {
            Ok(0)
        } else {
            self.source.read_at(offset, &mut data)
        };
        let Ok(read) = read else {
            self.packet = packet::encode_error(ErrorCode::Undefined, "read error");
            self.packet_data_bytes = 0;
            self.pending = true;
            self.status = Status::Failed(TftpResult::ReadError);
            return;
        };
        data.truncate(read);
        self.block = n;
        self.last = read < size;
        packet::encode_data(&mut self.packet, wire_block(n), &data);
        self.packet_data_bytes = read;
        self.arm(now);
    }

    fn arm(&mut self, now: Time) {
        self.pending = true;
        self.retries = 0;
        self.deadline = now.saturating_add(self.granted.timeout);
    }
}

/// A block index on the wire: it rolls over past 65535 to 0.
fn wire_block(n: u64) -> u16 {
    (n & 0xffff) as u16
}

/// The options granted: `blksize` within [`BLOCK_BYTES_MIN`] and the
/// limit, `timeout` of 1-255 s, `tsize` (a request sends 0; the OACK
/// carries the file's length). Others are ignored (RFC 2347).
fn negotiate(request: &Request<'_>, limits: &TftpLimits) -> Granted {
    let mut granted = Granted {
        block_bytes: BLOCK_BYTES_DEFAULT,
        timeout: limits.timeout,
        blksize: false,
        timeout_secs: false,
        tsize: false,
    };
    let block_max = limits
        .block_bytes_max
        .clamp(BLOCK_BYTES_MIN, BLOCK_BYTES_MAX);
    for (name, value) in &request.options {
        if name.eq_ignore_ascii_case("blksize") {
            if let Ok(asked) = value.parse::<u16>()
                && asked >= BLOCK_BYTES_MIN
            {
                granted.block_bytes = asked.min(block_max);
                granted.blksize = true;
            }
        } else if name.eq_ignore_ascii_case("timeout") {
            if let Ok(secs) = value.parse::<u8>()
                && secs >= 1
            {
                granted.timeout = Duration::from_secs(u64::from(secs));
                granted.timeout_secs = true;
            }
        } else if name.eq_ignore_ascii_case("tsize") && value.parse::<u64>().is_ok() {
            granted.tsize = true;
        }
    }
    granted
}

#[cfg(test)]
mod tests;
