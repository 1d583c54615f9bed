//! Network boot (issue 16): the DHCP, TFTP and HTTP servers an instance
//! runs so that the machines it is responsible for (its children, in
//! CHILD context) boot layer 0 from the network.
//!
//! The servers know nothing of the engine: which MACs to answer comes in
//! through [`PxeServers::register`], and what happened goes out as
//! [`PxeEvent`]s (a registered MAC got its DHCP ACK; a node fetched its
//! iPXE script). [`child`] turns those into the module's mutations (PXE
//! NONE -> WAIT -> INIT -> COMP); `crate::daemon::boot` runs the servers
//! on the instance that does the nodes' CHILD-context work.
//!
//! - [`registry`]: [`Mac`], [`Arch`], [`NodeBoot`] and the [`Registry`]
//!   (MAC -> node, bounded, unique names and addresses).
//! - [`dhcp`]: the DHCPv4 core (sans-io, `dhcproto` codec): OFFER/ACK/NAK
//!   for registered MACs only, TFTP boot files for firmware PXE clients,
//!   HTTP script URLs for iPXE.
//! - [`tftp_packet`] (the wire format) and [`tftp`] (the sans-io
//!   [`tftp::Transfer`] state machine and request acceptance): read-only,
//!   `blksize`/`tsize`/`timeout`, bounded retries.
//! - [`files`]: serving from one directory only (no traversal).
//! - [`script`]: iPXE script templates and layer 0's kernel command line.
//! - [`http`]: the axum routes (`/boot/{mac|name}.ipxe`,
//!   `/boot/files/{path}`).
//! - [`stats`]: counters mirrored into `metrics`
//!   (`layercake_pxe_dhcp_total{result}`, `..._tftp_bytes_total`, ...).
//! - [`event`]: [`PxeEvent`] and its bounded channel.
//! - [`server`]: the tokio shells ([`PxeServers`]).
//! - [`identity`]: a booting node's certificate and key, served once per
//!   boot window to its registered address and MAC.
//! - [`network`]: the `layercake.network.Network` extension (a node's
//!   MAC, address, gateway, boot architecture) and [`network::NodeNet`].
//! - [`mutations`]: the module's declarations (PXE NONE -> WAIT -> INIT
//!   -> COMP, after Kraken's).
//! - [`child`]: what those steps do for one node driven in CHILD context
//!   (run by `crate::modules::power::host::BmcHost`, which holds the
//!   node's engine).
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use layercake::modules::pxe::{NodeBoot, PxeConfig, PxeEvent, PxeServers};
//!
//! let mut config = PxeConfig::new("10.0.0.1".parse()?, "/srv/boot");
//! config.interface = Some("br0".into());
//! let (servers, mut events) = PxeServers::start(config).await?;
//! servers.register("52:54:00:12:34:56".parse()?, NodeBoot::new("vm1", "10.0.0.11".parse()?, 24))?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         PxeEvent::Acked { name, .. } => println!("{name}: DHCP ACK"),
//!         PxeEvent::ScriptFetched { name, .. } => println!("{name}: iPXE script fetched"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod child;
pub mod dhcp;
pub mod event;
pub mod files;
pub mod http;
pub mod identity;
pub mod mutations;
pub mod network;
pub mod registry;
pub mod script;
pub mod server;
pub mod stats;
pub mod tftp;
pub mod tftp_packet;

/// A point in time for the sans-io cores: an offset from the shell's
/// epoch (as `overlay::strategy::Time`).
pub type Time = std::time::Duration;

#[cfg(test)]
mod tests;

pub use event::PxeEvent;
pub use registry::{Arch, Mac, NodeBoot, Registry, RegistryError};
pub use server::{PxeConfig, PxeError, PxeServers};
pub use stats::PxeCounters;
