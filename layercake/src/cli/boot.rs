//! The network boot flags of `run` (see [`crate::daemon::boot`] and
//! `docs/boot.md`).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::daemon::boot::BootOptions;

/// Network boot options of `layercake run` (on the instances that drive
/// BMC nodes: sub-parents and their standbys).
#[derive(Args, Debug, Clone, Default)]
pub struct BootArgs {
    /// This instance's IPv4 address on the boot network: runs the DHCP,
    /// TFTP and HTTP boot servers for the BMC nodes whose Cfg names a
    /// `Network/Mac`.
    #[arg(long, value_name = "IP")]
    pub boot_server: Option<Ipv4Addr>,
    /// The boot network's interface (DHCP answers only there).
    #[arg(long, value_name = "IFACE", requires = "boot_server")]
    pub boot_interface: Option<String>,
    /// Served files: iPXE binaries (TFTP), `vmlinuz`, `initrd.img` and
    /// `topology.yaml` (HTTP); see `examples/netboot-lab/build-layer0.sh`.
    #[arg(long, value_name = "DIR", requires = "boot_server")]
    pub boot_root: Option<PathBuf>,
    /// Nodes' certificates and keys (`certs issue --name NODE --out DIR`),
    /// each served once per boot window to its node.
    #[arg(long, value_name = "DIR", requires = "boot_server")]
    pub boot_identities: Option<PathBuf>,
    /// A kernel argument for every node (repeat it; default `console=ttyS0`).
    #[arg(long = "boot-kernel-arg", value_name = "ARG", requires = "boot_server")]
    pub boot_kernel_args: Vec<String>,
    /// An iPXE script template (default: layer 0's; see docs/boot.md).
    #[arg(long, value_name = "FILE", requires = "boot_server")]
    pub boot_template: Option<PathBuf>,
    /// The HTTP port of the boot server.
    #[arg(long, default_value_t = 8080, requires = "boot_server")]
    pub boot_http_port: u16,
    /// The DHCP port (67; another only for tests).
    #[arg(long, default_value_t = 67, requires = "boot_server")]
    pub boot_dhcp_port: u16,
    /// The TFTP port (69; 0: any free port).
    #[arg(long, default_value_t = 69, requires = "boot_server")]
    pub boot_tftp_port: u16,
}

impl BootArgs {
    /// The options these flags give (`None`: no `--boot-server`).
    pub fn options(&self) -> Result<Option<BootOptions>> {
        let Some(server_ip) = self.boot_server else {
            return Ok(None);
        };
        let Some(root) = self.boot_root.clone() else {
            bail!("--boot-server needs --boot-root DIR (the kernel, initramfs and iPXE files)");
        };
        if !root.is_dir() {
            bail!("--boot-root {}: not a directory", root.display());
        }
        if let Some(d) = &self.boot_identities
            && !d.is_dir()
        {
            bail!("--boot-identities {}: not a directory", d.display());
        }
        Ok(Some(BootOptions {
            server_ip,
            interface: self.boot_interface.clone(),
            root,
            dhcp_port: self.boot_dhcp_port,
            tftp_port: self.boot_tftp_port,
            http_port: self.boot_http_port,
            identities: self.boot_identities.clone(),
            kernel_args: self.boot_kernel_args.clone(),
            template: self.boot_template.clone(),
        }))
    }
}
