//! The boot table: which machines this instance boots, and as what.
//!
//! - [`Mac`]: an Ethernet address, parsed from `aa:bb:cc:dd:ee:ff` or
//!   `aa-bb-cc-dd-ee-ff`, printed with colons.
//! - [`Arch`]: the client's boot architecture (DHCP option 93, RFC 4578),
//!   which decides the boot file a firmware PXE client is given.
//! - [`NodeBoot`]: one node's entry (name, address, gateway, the extra
//!   kernel arguments layer 0 needs to join).
//! - [`Registry`]: MAC -> [`NodeBoot`], at most [`NODES_MAX`] entries,
//!   unique names and addresses; the DHCP core and the HTTP routes read it.
//!
//! Nothing in an entry is secret: every field may end up on a kernel
//! command line or in an iPXE script that anyone on the boot network can
//! fetch. [`Registry::register`] refuses values that could break out of
//! a script line (whitespace, quotes, control characters).

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// Most nodes one instance boots (a rack or a few: the sub-parent's
/// children). Bounds the table.
pub const NODES_MAX: usize = 4096;

/// Longest node name (a DNS label).
pub const NAME_BYTES_MAX: usize = 63;

/// Most extra kernel arguments per node.
pub const KERNEL_ARGS_MAX: usize = 16;

/// Longest extra kernel argument (`key=value`).
pub const KERNEL_ARG_BYTES_MAX: usize = 256;

/// An Ethernet (EUI-48) address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

/// Why a MAC address did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address (want aa:bb:cc:dd:ee:ff): {0:?}")]
pub struct MacParseError(pub String);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = MacParseError;

    /// Six two-digit hex groups separated by `:` or `-` (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.chars().take(32).collect());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

/// A client's boot architecture, as far as the choice of boot file goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Legacy BIOS on x86 (option 93 type 0): `undionly.kpxe`.
    BiosX86,
    /// UEFI on x86-64 (types 7 and 9): `ipxe.efi`.
    EfiX64,
    /// UEFI on 64-bit ARM (type 11).
    EfiArm64,
}

impl Arch {
    /// The architecture for an option 93 type code (RFC 4578 and IANA's
    /// registry), if it is one this server boots.
    pub fn from_option93(code: u16) -> Option<Arch> {
        match code {
            0 => Some(Arch::BiosX86),
            7 | 9 => Some(Arch::EfiX64),
            11 => Some(Arch::EfiArm64),
            _ => None,
        }
    }

    /// A short name for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::BiosX86 => "bios_x86",
            Arch::EfiX64 => "efi_x64",
            Arch::EfiArm64 => "efi_arm64",
        }
    }
}

/// One node this instance boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeBoot {
    /// The node's instance name (the topology id layer 0 runs as).
    pub name: String,
    /// The address DHCP hands it.
    pub ip: Ipv4Addr,
    /// Its prefix length (the subnet mask's width).
    pub prefix: u8,
    /// Its default gateway, if the boot network has one.
    pub gateway: Option<Ipv4Addr>,
    /// Its architecture when known from its Cfg; `None`: as the client
    /// says in DHCP option 93 (BIOS when it does not say).
    pub arch: Option<Arch>,
    /// The sync address of its parent (the instance layer 0 says hello
    /// to), put on the kernel command line as `layercake.parent=`.
    pub parent: Option<SocketAddr>,
    /// Extra `key=value` kernel arguments layer 0 needs to join (the
    /// daemon decides them; never a secret).
    pub kernel_args: Vec<String>,
}

impl NodeBoot {
    /// An entry with no gateway, parent or extra arguments, the
    /// architecture left to the client.
    pub fn new(name: impl Into<String>, ip: Ipv4Addr, prefix: u8) -> Self {
        NodeBoot {
            name: name.into(),
            ip,
            prefix,
            gateway: None,
            arch: None,
            parent: None,
            kernel_args: Vec::new(),
        }
    }

    /// The subnet mask for [`NodeBoot::prefix`].
    pub fn netmask(&self) -> Ipv4Addr {
        prefix_mask(self.prefix)
    }

    /// Checks every field; the entry is refused whole on the first error.
    pub fn validate(&self) -> Result<(), RegistryError> {
        if !valid_name(&self.name) {
            return Err(RegistryError::BadName(clip(&self.name)));
        }
        if self.prefix == 0 || self.prefix > 32 {
            return Err(RegistryError::BadPrefix(self.prefix));
        }
        if self.ip.is_unspecified() || self.ip.is_broadcast() || self.ip.is_multicast() {
            return Err(RegistryError::BadAddress(self.ip));
        }
        if self.kernel_args.len() > KERNEL_ARGS_MAX {
            return Err(RegistryError::TooManyKernelArgs(self.kernel_args.len()));
        }
        match self.kernel_args.iter().find(|a| !valid_kernel_arg(a)) {
            Some(bad) => Err(RegistryError::BadKernelArg(clip(bad))),
            None => Ok(()),
        }
    }
}

/// The subnet mask of a prefix length (0 for 0, all ones from 32 up).
pub fn prefix_mask(prefix: u8) -> Ipv4Addr {
    let bits = u32::from(prefix.min(32));
    let mask = u32::MAX
        .checked_shl(32u32.saturating_sub(bits))
        .unwrap_or(0);
    Ipv4Addr::from(mask)
}

/// A name that is safe in a URL path, a script line and a kernel argument:
/// `[A-Za-z0-9._-]`, not starting with `.` or `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `key=value`, printable ASCII without spaces, quotes, backslashes or
/// `$` (iPXE's variable expansion), within [`KERNEL_ARG_BYTES_MAX`].
fn valid_kernel_arg(arg: &str) -> bool {
    let (key, _) = arg.split_once('=').unwrap_or((arg, ""));
    !key.is_empty()
        && arg.len() <= KERNEL_ARG_BYTES_MAX
        && arg
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b'$' | b'`'))
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Why [`Registry::register`] refused an entry. The table is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is empty, too long, or has characters other than
    /// `[A-Za-z0-9._-]`.
    #[error("bad node name {0:?} (want [A-Za-z0-9._-], at most 63 bytes)")]
    BadName(String),
    /// The prefix length is 0 or above 32.
    #[error("bad prefix length /{0}")]
    BadPrefix(u8),
    /// The address is unspecified, broadcast or multicast.
    #[error("bad node address {0}")]
    BadAddress(Ipv4Addr),
    /// More than [`KERNEL_ARGS_MAX`] extra kernel arguments.
    #[error("{0} kernel arguments (at most 16)")]
    TooManyKernelArgs(usize),
    /// A kernel argument with spaces, quotes, `$` or control characters.
    #[error("bad kernel argument {0:?}")]
    BadKernelArg(String),
    /// Another MAC already has this name.
    #[error("name {name} is already registered for {mac}")]
    NameTaken {
        /// The name.
        name: String,
        /// The MAC holding it.
        mac: Mac,
    },
    /// Another MAC already has this address.
    #[error("address {ip} is already registered for {mac}")]
    AddressTaken {
        /// The address.
        ip: Ipv4Addr,
        /// The MAC holding it.
        mac: Mac,
    },
    /// The table holds [`NODES_MAX`] entries.
    #[error("the boot table is full ({0} nodes)")]
    Full(usize),
}

/// MAC -> [`NodeBoot`], with name and address indexes kept unique.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    by_mac: HashMap<Mac, NodeBoot>,
    by_name: HashMap<String, Mac>,
    by_ip: HashMap<Ipv4Addr, Mac>,
}

impl Registry {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the entry of `mac`. Refused (table unchanged) when
    /// the entry is invalid, its name or address belongs to another MAC,
    /// or the table is full.
    pub fn register(&mut self, mac: Mac, node: NodeBoot) -> Result<(), RegistryError> {
        node.validate()?;
        if let Some(&other) = self.by_name.get(&node.name).filter(|&&m| m != mac) {
            return Err(RegistryError::NameTaken {
                name: node.name,
                mac: other,
            });
        }
        if let Some(&other) = self.by_ip.get(&node.ip).filter(|&&m| m != mac) {
            return Err(RegistryError::AddressTaken {
                ip: node.ip,
                mac: other,
            });
        }
        if !self.by_mac.contains_key(&mac) && self.by_mac.len() >= NODES_MAX {
            return Err(RegistryError::Full(self.by_mac.len()));
        }
        self.unregister(mac);
        self.by_name.insert(node.name.clone(), mac);
        self.by_ip.insert(node.ip, mac);
        self.by_mac.insert(mac, node);
        debug_assert_eq!(self.by_mac.len(), self.by_name.len());
        debug_assert_eq!(self.by_mac.len(), self.by_ip.len());
        Ok(())
    }

    /// Removes the entry of `mac`; its DHCP, TFTP and HTTP answers stop.
    pub fn unregister(&mut self, mac: Mac) -> Option<NodeBoot> {
        let node = self.by_mac.remove(&mac)?;
        self.by_name.remove(&node.name);
        self.by_ip.remove(&node.ip);
        Some(node)
    }

    /// The entry of `mac`.
    pub fn get(&self, mac: &Mac) -> Option<&NodeBoot> {
        self.by_mac.get(mac)
    }

    /// The MAC and entry registered under `name`.
    pub fn by_name(&self, name: &str) -> Option<(Mac, &NodeBoot)> {
        let mac = *self.by_name.get(name)?;
        self.by_mac.get(&mac).map(|n| (mac, n))
    }

    /// The MAC and entry registered with address `ip`.
    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<(Mac, &NodeBoot)> {
        let mac = *self.by_ip.get(&ip)?;
        self.by_mac.get(&mac).map(|n| (mac, n))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }
}
