//! A booting node's identity: its certificate and private key from the
//! cluster CA (with the CA's certificate), which layer 0 needs to join
//! (`layercake run --pki`). The only secret the boot servers hold.
//!
//! [`Identities`] serves a node's bundle (`GET /boot/identity`, see
//! [`super::http`]) only when all of these hold, else it refuses and
//! counts ([`IdentityResult`]):
//! - the client's address is the registered address of a node whose boot
//!   window is open (its DHCP entry is armed: from `pxe_wait` until its
//!   agent says hello);
//! - the client's MAC, as this host's neighbour table (`/proc/net/arp`)
//!   has it for that address, is the node's registered MAC;
//! - the bundle was not served yet in this window (once; a second request
//!   is refused and logged: someone else may have it).
//!
//! The files are the output of `layercake certs issue --name NODE --out
//! DIR`: `DIR/NODE.crt`, `DIR/NODE.key` (which must not be readable by
//! group or others) and `DIR/ca.crt`.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Mutex;

use super::registry::{Mac, NodeBoot, Registry};
use super::stats::IdentityResult;

/// Largest certificate or key file read.
pub const PEM_BYTES_MAX: u64 = 64 * 1024;

/// How the client's MAC is learnt from its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighbourCheck {
    /// From the kernel's neighbour table (`/proc/net/arp`).
    Arp,
    /// Not checked (tests on loopback, where there is no neighbour).
    Off,
}

/// The identities directory and the per-window "served" marks.
#[derive(Debug)]
pub struct Identities {
    dir: PathBuf,
    check: NeighbourCheck,
    /// MACs whose bundle was served in their current boot window.
    served: Mutex<HashSet<Mac>>,
}

impl Identities {
    /// Bundles from `dir`, the MAC checked as `check` says.
    pub fn new(dir: impl Into<PathBuf>, check: NeighbourCheck) -> Identities {
        Identities {
            dir: dir.into(),
            check,
            served: Mutex::new(HashSet::new()),
        }
    }

    /// A new boot window opened for `mac`: its bundle may be served again.
    pub fn open_window(&self, mac: Mac) {
        self.lock().remove(&mac);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Mac>> {
        match self.served.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The bundle for a request from `peer`, or why not.
    pub fn bundle(&self, registry: &Registry, peer: Ipv4Addr) -> Result<String, IdentityResult> {
        let Some((mac, node)) = registry.by_ip(peer) else {
            return Err(IdentityResult::NotInWindow);
        };
        if self.check == NeighbourCheck::Arp && arp_mac(peer) != Some(mac) {
            return Err(IdentityResult::WrongMac);
        }
        if self.lock().contains(&mac) {
            tracing::warn!(
                %mac, name = node.name,
                "pxe identity: asked again in the same boot window; refused (was it the node?)"
            );
            return Err(IdentityResult::AlreadyServed);
        }
        let text = self.read(node).map_err(|e| {
            tracing::warn!(name = node.name, "pxe identity: {e}");
            IdentityResult::Missing
        })?;
        // Marked only once read: a missing file does not use the window up.
        if !self.lock().insert(mac) {
            return Err(IdentityResult::AlreadyServed);
        }
        tracing::info!(%mac, name = node.name, %peer, "pxe identity: served");
        Ok(text)
    }

    fn read(&self, node: &NodeBoot) -> Result<String, String> {
        let key = self.dir.join(format!("{}.key", node.name));
        let mode = std::fs::metadata(&key)
            .map_err(|e| format!("{}: {e}", key.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is accessible by group or others (mode {:04o}); not served",
                key.display(),
                mode & 0o777
            ));
        }
        let mut out = String::new();
        for file in [
            self.dir.join("ca.crt"),
            self.dir.join(format!("{}.crt", node.name)),
            key,
        ] {
            let len = std::fs::metadata(&file)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .len();
            if len > PEM_BYTES_MAX {
                return Err(format!(
                    "{}: larger than {PEM_BYTES_MAX} bytes",
                    file.display()
                ));
            }
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            out.push_str(text.trim_end());
            out.push('\n');
        }
        Ok(out)
    }
}

/// The MAC the kernel's neighbour table holds for `ip`, if complete.
pub fn arp_mac(ip: Ipv4Addr) -> Option<Mac> {
    let table = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse_arp(&table, ip)
}

/// `/proc/net/arp`: `IP address  HW type  Flags  HW address  Mask  Device`;
/// flag 0x2 marks a complete entry.
fn parse_arp(table: &str, ip: Ipv4Addr) -> Option<Mac> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (addr, flags, hw) = (cols.first()?, cols.get(2)?, cols.get(3)?);
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
        (addr.parse::<Ipv4Addr>().ok()? == ip && flags & 0x2 != 0)
            .then(|| hw.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "IP address       HW type     Flags       HW address            Mask     Device\n\
10.0.0.11        0x1         0x2         52:54:00:00:00:11     *        br0\n\
10.0.0.12        0x1         0x0         00:00:00:00:00:00     *        br0\n";

    #[test]
    fn reads_complete_entries_only() {
        assert_eq!(
            parse_arp(TABLE, Ipv4Addr::new(10, 0, 0, 11)),
            Some(Mac([0x52, 0x54, 0, 0, 0, 0x11]))
        );
        assert_eq!(parse_arp(TABLE, Ipv4Addr::new(10, 0, 0, 12)), None);
        assert_eq!(parse_arp(TABLE, Ipv4Addr::new(10, 0, 0, 13)), None);
        assert_eq!(parse_arp("garbage\n1 2\n", Ipv4Addr::new(1, 2, 3, 4)), None);
    }

    fn setup(name: &str) -> (PathBuf, Registry, Mac) {
        let dir = std::env::temp_dir().join(format!("lc-ident-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), "CA\n").unwrap();
        std::fs::write(dir.join("vm1.crt"), "CERT\n").unwrap();
        std::fs::write(dir.join("vm1.key"), "KEY\n").unwrap();
        let key = dir.join("vm1.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
        let mut reg = Registry::new();
        reg.register(mac, NodeBoot::new("vm1", Ipv4Addr::new(10, 0, 0, 11), 24))
            .unwrap();
        (dir, reg, mac)
    }

    #[test]
    fn served_once_per_window_to_the_registered_address_only() {
        let (dir, reg, mac) = setup("once");
        let ids = Identities::new(&dir, NeighbourCheck::Off);
        let other = Ipv4Addr::new(10, 0, 0, 99);
        assert_eq!(ids.bundle(&reg, other), Err(IdentityResult::NotInWindow));
        let node = Ipv4Addr::new(10, 0, 0, 11);
        assert_eq!(ids.bundle(&reg, node).unwrap(), "CA\nCERT\nKEY\n");
        assert_eq!(ids.bundle(&reg, node), Err(IdentityResult::AlreadyServed));
        ids.open_window(mac);
        assert!(ids.bundle(&reg, node).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_readable_key_or_a_missing_file_is_not_served() {
        let (dir, reg, _) = setup("perm");
        let ids = Identities::new(&dir, NeighbourCheck::Off);
        let node = Ipv4Addr::new(10, 0, 0, 11);
        let key = dir.join("vm1.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(ids.bundle(&reg, node), Err(IdentityResult::Missing));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(dir.join("vm1.crt")).unwrap();
        assert_eq!(ids.bundle(&reg, node), Err(IdentityResult::Missing));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_neighbour_check_refuses_an_address_without_the_mac() {
        let (dir, reg, _) = setup("arp");
        let ids = Identities::new(&dir, NeighbourCheck::Arp);
        // No neighbour entry for this address on the test host.
        let node = Ipv4Addr::new(10, 0, 0, 11);
        assert_eq!(ids.bundle(&reg, node), Err(IdentityResult::WrongMac));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
