//! The engine's modules that act on the world, run by layercake:
//!
//! - [`power`]: power control (virtual, IPMI, Redfish) behind one
//!   abstraction, driven by the instance that has the node in its care.
//! - [`busy`]: Busy reported by the node itself: the agent socket's
//!   protocol and the in-process hook for scheduler integrations.
//! - [`image`]: image sets (layer 1): containers through `runc`, rolled
//!   only while the node is free; the parents' image cache.
//! - [`pxe`]: network boot servers (DHCP, TFTP, HTTP iPXE scripts) as a
//!   library; not yet wired into the engine's mutations.
//!
//! The virtual power and boot modules of the simulation live in the engine
//! (`engine::virt`).

pub mod busy;
pub mod image;
pub mod power;
pub mod pxe;
