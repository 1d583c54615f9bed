//! The caller-facing value types: which BMC to reach and how
//! ([`IpmiTarget`], [`Privilege`]), what to do ([`ChassisControl`]) and the
//! client's timing ([`IpmiConfig`]).

use std::net::SocketAddr;
use std::time::Duration;

/// One BMC to talk to. Its `Debug` output hides the password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IpmiTarget {
    /// The BMC's LAN address (UDP, usually port 623).
    pub addr: SocketAddr,
    /// The IPMI user name (at most 16 bytes).
    pub user: String,
    /// The user's password (at most 20 bytes; it is the RAKP key `Kuid`).
    pub password: String,
    /// The session privilege to request (default `Administrator`;
    /// chassis control needs at least `Operator`).
    pub privilege: Privilege,
    /// The RMCP+ cipher suite ID (default 3: RAKP-HMAC-SHA1, HMAC-SHA1-96,
    /// AES-CBC-128). Supported: 1, 2, 3, 15, 16, 17.
    pub cipher_suite: u8,
}

impl IpmiTarget {
    /// A target with the default privilege (`Administrator`) and cipher
    /// suite (3).
    pub fn new(addr: SocketAddr, user: impl Into<String>, password: impl Into<String>) -> Self {
        IpmiTarget {
            addr,
            user: user.into(),
            password: password.into(),
            privilege: Privilege::default(),
            cipher_suite: DEFAULT_CIPHER_SUITE,
        }
    }
}

impl std::fmt::Debug for IpmiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiTarget")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("privilege", &self.privilege)
            .field("cipher_suite", &self.cipher_suite)
            .finish()
    }
}

/// The default RMCP+ cipher suite: 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96,
/// AES-CBC-128), what BMCs and `ipmi_sim` offer by default.
pub const DEFAULT_CIPHER_SUITE: u8 = 3;

/// An IPMI session privilege level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Privilege {
    /// Read-only commands (Get Chassis Status).
    User,
    /// Adds chassis control.
    Operator,
    /// Everything.
    #[default]
    Administrator,
}

impl Privilege {
    /// The privilege's wire value (IPMI v2.0 table 22-24).
    pub fn code(self) -> u8 {
        match self {
            Privilege::User => 2,
            Privilege::Operator => 3,
            Privilege::Administrator => 4,
        }
    }
}

/// A Chassis Control (NetFn chassis 0x00, command 0x02) action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChassisControl {
    /// Power down (hard, immediate).
    PowerOff,
    /// Power up.
    PowerOn,
    /// Power down, then up after a BMC-specific delay (at least 1 s).
    PowerCycle,
    /// Pulse the reset line; the power state does not change.
    HardReset,
    /// Ask the OS to shut down (ACPI soft-off emulated by a fatal
    /// over-temperature); the power goes off later, if ever.
    SoftShutdown,
}

impl ChassisControl {
    /// The action's wire value (IPMI v2.0 section 28.3).
    pub fn code(self) -> u8 {
        match self {
            ChassisControl::PowerOff => 0x00,
            ChassisControl::PowerOn => 0x01,
            ChassisControl::PowerCycle => 0x02,
            ChassisControl::HardReset => 0x03,
            ChassisControl::SoftShutdown => 0x05,
        }
    }
}

/// The client's timing.
#[derive(Clone, Debug)]
pub struct IpmiConfig {
    /// The wait for an answer to the first datagram of a step (default
    /// 1 s). Retransmissions wait 2x, then 4x this (capped at 4x).
    pub timeout: Duration,
    /// Retransmissions per protocol step after the first datagram
    /// (default 3), so a step sends at most `retries + 1` datagrams.
    pub retries: u32,
}

impl Default for IpmiConfig {
    fn default() -> Self {
        IpmiConfig {
            timeout: Duration::from_secs(1),
            retries: 3,
        }
    }
}

impl IpmiConfig {
    /// Datagrams sent per protocol step: `retries + 1`.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The wait after the datagram number `attempt` (0-based) of a step:
    /// `timeout * 2^attempt`, capped at `4 * timeout`.
    pub fn attempt_timeout(&self, attempt: u32) -> Duration {
        self.timeout * (1u32 << attempt.min(2))
    }
}
