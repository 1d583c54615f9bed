//! The client's error type and the tables that turn the protocol's numeric
//! codes (RMCP+ status codes, IPMI completion codes) into words.

use std::net::SocketAddr;

/// Everything an IPMI call can fail with.
///
/// State after an error: a call that fails never leaves a half-built
/// session in the client's cache. After `Timeout`, `AuthRefused` or
/// `Protocol` on an established session, the cached session for that BMC
/// is dropped and the next call opens a fresh one.
#[derive(thiserror::Error, Debug)]
pub enum IpmiError {
    /// The BMC did not answer one step within the configured attempts
    /// (`IpmiConfig::retries + 1`, each with a growing timeout). An
    /// unreachable address or a closed UDP port ends up here.
    #[error("no answer from BMC {addr} during {step} after {attempts} attempts")]
    Timeout {
        /// The BMC's address.
        addr: SocketAddr,
        /// The protocol step that went unanswered, e.g. "open session".
        step: &'static str,
        /// How many datagrams were sent for that step.
        attempts: u32,
    },
    /// A command the BMC acts on (chassis control) was sent once and not
    /// answered: the BMC may or may not have acted. It is not re-sent.
    #[error("no answer from BMC {addr} to {step}, sent once (it may have acted)")]
    Unconfirmed {
        /// The BMC's address.
        addr: SocketAddr,
        /// The command, e.g. "chassis control".
        step: &'static str,
    },
    /// The BMC refused the credentials or the privilege level: an RMCP+
    /// status code in words ("unauthorized name", "invalid integrity check
    /// value", ...) or a failed check of the BMC's key-exchange code
    /// (usually a wrong password).
    #[error("authentication refused: {0}")]
    AuthRefused(String),
    /// The request cannot be expressed or the BMC does not offer it: an
    /// unknown cipher suite, a BMC without IPMI v2.0, a chassis control the
    /// BMC rejects as invalid, an over-long user name or password.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The BMC answered with something the protocol does not allow, or a
    /// command failed with a completion code (named in the message).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The local socket failed (bind, send) or the OS random source did.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// An RMCP+ / RAKP status code (IPMI v2.0 table 13-15) in words.
pub fn rakp_status_name(code: u8) -> &'static str {
    match code {
        0x00 => "no errors",
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session ID",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session ID",
        0x09 => "invalid role",
        0x0a => "unauthorized role or privilege level requested",
        0x0b => "insufficient resources to create a session at the requested role",
        0x0c => "invalid name length",
        0x0d => "unauthorized name",
        0x0e => "unauthorized GUID",
        0x0f => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown RMCP+ status code",
    }
}

/// Whether an RMCP+ status code means "this cipher suite is not offered"
/// rather than "these credentials are refused".
pub fn rakp_status_is_unsupported(code: u8) -> bool {
    matches!(code, 0x03..=0x07 | 0x10 | 0x11)
}

/// An IPMI completion code (IPMI v2.0 table 5-2) in words.
pub fn completion_code_name(code: u8) -> &'static str {
    match code {
        0x00 => "command completed normally",
        0xc0 => "node busy",
        0xc1 => "invalid command",
        0xc2 => "command invalid for given LUN",
        0xc3 => "timeout while processing command",
        0xc4 => "out of space",
        0xc5 => "reservation canceled or invalid reservation ID",
        0xc6 => "request data truncated",
        0xc7 => "request data length invalid",
        0xc8 => "request data field length limit exceeded",
        0xc9 => "parameter out of range",
        0xca => "cannot return number of requested data bytes",
        0xcb => "requested sensor, data, or record not present",
        0xcc => "invalid data field in request",
        0xcd => "command illegal for specified sensor or record type",
        0xce => "command response could not be provided",
        0xcf => "cannot execute duplicated request",
        0xd0 => "SDR repository in update mode",
        0xd1 => "device in firmware update mode",
        0xd2 => "BMC initialization in progress",
        0xd3 => "destination unavailable",
        0xd4 => "insufficient privilege level",
        0xd5 => "command not supported in present state",
        0xd6 => "command sub-function disabled or unavailable",
        0xff => "unspecified error",
        0x01..=0x7e => "OEM completion code",
        0x80..=0xbe => "command-specific completion code",
        _ => "reserved completion code",
    }
}
