//! Layercake's modules: the work an instance does for the engine beyond
//! state sync. [`pxe`]: network boot (DHCP, TFTP, HTTP iPXE scripts).

pub mod pxe;
