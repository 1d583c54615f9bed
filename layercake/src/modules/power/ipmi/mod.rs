//! IPMI v2.0 over LAN (RMCP+): the power backend for BMCs.
//!
//! One [`IpmiClient`] owns one UDP socket and talks to any number of BMCs
//! through it: a dispatcher task routes each reply by (peer address, our
//! session ID) to the call waiting for it, sessions are cached per BMC and
//! set up again when they expire, and at most `IN_FLIGHT_MAX` calls run at
//! once. No process is spawned per call.
//!
//! - [`IpmiTarget`], [`Privilege`], [`ChassisControl`], [`IpmiConfig`]:
//!   what to reach, what to do, how long to wait (`target`).
//! - [`IpmiClient`]: `power_is_on`, `chassis_control`, `close` (`client`).
//! - [`IpmiError`]: timeouts, refused credentials with the RMCP+ status in
//!   words, unsupported requests, completion codes by name (`error`).
//! - `session`: the sans-io handshake (Get Channel Authentication
//!   Capabilities is sent by the client, then Open Session, RAKP 1-4) and
//!   the active session's sequence numbers.
//! - `crypto`: cipher suites 1-3 (SHA-1) and 15-17 (SHA-256), SIK/K1/K2,
//!   HMAC-SHA1-96 / HMAC-SHA256-128 integrity, AES-CBC-128.
//! - `rmcp`: the datagram codecs; every decoder returns an error on
//!   hostile input and never panics.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use layercake::modules::power::ipmi::{ChassisControl, IpmiClient, IpmiConfig, IpmiTarget};
//! let client = IpmiClient::bind(IpmiConfig::default()).await?;
//! let bmc = IpmiTarget::new("10.0.0.5:623".parse()?, "admin", "secret");
//! if !client.power_is_on(&bmc).await? {
//!     client.chassis_control(&bmc, ChassisControl::PowerOn).await?;
//! }
//! client.close(&bmc).await;
//! # Ok(()) }
//! ```
//!
//! Tested against OpenIPMI's `ipmi_sim` (`layercake/tests/ipmi_sim.rs`),
//! which offers cipher suites 0-3 only; suites 15-17 are covered by the
//! unit tests' in-memory BMC.

mod client;
mod crypto;
mod error;
mod rmcp;
mod session;
mod target;

#[cfg(test)]
mod tests;

pub use client::{IN_FLIGHT_MAX, IpmiClient, SESSION_IDLE_MAX};
pub use error::{IpmiError, completion_code_name, rakp_status_name};
pub use target::{ChassisControl, DEFAULT_CIPHER_SUITE, IpmiConfig, IpmiTarget, Privilege};
