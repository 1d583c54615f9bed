//! The engine's modules that act on the world, run by layercake: power
//! (virtual, IPMI, Redfish). The virtual power and boot modules of the
//! simulation live in the engine (`engine::virt`).

pub mod power;
