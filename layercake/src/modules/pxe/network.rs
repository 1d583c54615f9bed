//! A node's boot network: the `layercake.network.Network` extension
//! (`type.googleapis.com/layercake.network.Network/<Field>`) and its
//! parsed form, [`NodeNet`].
//!
//! Fields (Cfg): `Mac` (`52:54:00:12:34:56`), `Address` (`10.0.0.11/24`),
//! `Gateway` (`10.0.0.1` or empty), `Arch` (`""`: as the client says in
//! DHCP, `bios`, `efi-x64`, `efi-arm64`). In Dsc, `Error` holds the last
//! boot configuration error for the operator (`""` when fine).
//!
//! A node whose Cfg names a BMC and a `Mac` is booted from the network by
//! the instance that does its CHILD-context work (`docs/boot.md`).

use std::net::Ipv4Addr;

use engine::registry::{FieldDef, MessageExtension};
use engine::value::{Kind, Value};
use prost::Message as _;
use proto::node::Node;

use super::registry::{Arch, Mac};

/// The extension's full message name.
pub const NETWORK_MESSAGE: &str = "layercake.network.Network";
/// The type URL of the extension inside `Node.extensions`.
pub const NETWORK_TYPE_URL: &str = "type.googleapis.com/layercake.network.Network";

/// One node's boot network (Cfg) and its last boot error (Dsc).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Network {
    /// The boot NIC's Ethernet address.
    #[prost(string, tag = "1")]
    pub mac: String,
    /// The node's address with its prefix length (`10.0.0.11/24`).
    #[prost(string, tag = "2")]
    pub address: String,
    /// The default gateway (`""`: none).
    #[prost(string, tag = "3")]
    pub gateway: String,
    /// The boot architecture (`""`, `bios`, `efi-x64`, `efi-arm64`).
    #[prost(string, tag = "4")]
    pub arch: String,
    /// Dsc only: the last boot configuration error.
    #[prost(string, tag = "5")]
    pub error: String,
}

macro_rules! str_field {
    ($name:literal, $f:ident) => {
        FieldDef {
            name: $name,
            kind: Kind::Str,
            get: |m: &Network| Value::Str(m.$f.clone()),
            set: |m: &mut Network, v: &Value| {
                if let Value::Str(s) = v {
                    m.$f = s.clone();
                }
            },
        }
    };
}

/// The registry description of the extension (register it once per process).
pub fn extension() -> MessageExtension<Network> {
    MessageExtension::new(
        NETWORK_MESSAGE,
        vec![
            str_field!("Mac", mac),
            str_field!("Address", address),
            str_field!("Gateway", gateway),
            str_field!("Arch", arch),
            str_field!("Error", error),
        ],
    )
}

/// The node's network extension, if present and decodable.
pub fn network_of(node: &Node) -> Option<Network> {
    let any = node
        .extensions
        .iter()
        .find(|a| a.type_url == NETWORK_TYPE_URL)?;
    Network::decode(any.value.as_slice()).ok()
}

/// Writes (or adds) the node's network extension.
pub fn set_network(node: &mut Node, n: &Network) {
    let value = n.encode_to_vec();
    match node
        .extensions
        .iter_mut()
        .find(|a| a.type_url == NETWORK_TYPE_URL)
    {
        Some(a) => a.value = value,
        None => node.extensions.push(prost_types::Any {
            type_url: NETWORK_TYPE_URL.to_string(),
            value,
        }),
    }
}

/// A parsed, checked [`Network`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeNet {
    /// The boot NIC.
    pub mac: Mac,
    /// The node's address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Its gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Its boot architecture (`None`: as the client says).
    pub arch: Option<Arch>,
}

impl NodeNet {
    /// Parses `n`; `Ok(None)` when it names no MAC (the node is not
    /// booted from the network). Errors say which field is wrong and why.
    pub fn parse(n: &Network) -> Result<Option<NodeNet>, String> {
        if n.mac.trim().is_empty() {
            return Ok(None);
        }
        let mac: Mac = n
            .mac
            .trim()
            .parse()
            .map_err(|e| format!("Network/Mac: {e}"))?;
        let (ip, prefix) = n
            .address
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("Network/Address {:?}: want ADDR/PREFIX", n.address))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("Network/Address {:?}: not an IPv4 address", n.address))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| format!("Network/Address {:?}: prefix not in 1..=32", n.address))?;
        let gateway = match n.gateway.trim() {
            "" => None,
            g => Some(
                g.parse()
                    .map_err(|_| format!("Network/Gateway {g:?}: not an IPv4 address"))?,
            ),
        };
        let arch = match n.arch.trim().to_ascii_lowercase().as_str() {
            "" => None,
            "bios" => Some(Arch::BiosX86),
            "efi-x64" => Some(Arch::EfiX64),
            "efi-arm64" => Some(Arch::EfiArm64),
            other => {
                return Err(format!(
                    "Network/Arch {other:?}: want bios, efi-x64, efi-arm64 or empty"
                ));
            }
        };
        Ok(Some(NodeNet {
            mac,
            ip,
            prefix,
            gateway,
            arch,
        }))
    }

    /// The node's parsed boot network from its Cfg (see [`NodeNet::parse`]).
    pub fn of(cfg: &Node) -> Result<Option<NodeNet>, String> {
        match network_of(cfg) {
            Some(n) => NodeNet::parse(&n),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(mac: &str, address: &str, gateway: &str, arch: &str) -> Network {
        Network {
            mac: mac.into(),
            address: address.into(),
            gateway: gateway.into(),
            arch: arch.into(),
            error: String::new(),
        }
    }

    #[test]
    fn parses_a_full_entry() {
        let n = NodeNet::parse(&net(
            "52:54:00:00:00:01",
            "10.0.0.11/24",
            "10.0.0.1",
            "bios",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(n.ip, Ipv4Addr::new(10, 0, 0, 11));
        assert_eq!(n.prefix, 24);
        assert_eq!(n.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(n.arch, Some(Arch::BiosX86));
    }

    #[test]
    fn no_mac_is_no_network_boot() {
        assert_eq!(NodeNet::parse(&net("", "", "", "")).unwrap(), None);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (net("zz", "10.0.0.1/24", "", ""), "Network/Mac"),
            (net("52:54:00:00:00:01", "10.0.0.1", "", ""), "ADDR/PREFIX"),
            (net("52:54:00:00:00:01", "10.0.0.1/33", "", ""), "prefix"),
            (net("52:54:00:00:00:01", "x/24", "", ""), "not an IPv4"),
            (net("52:54:00:00:00:01", "10.0.0.1/24", "gw", ""), "Gateway"),
            (net("52:54:00:00:00:01", "10.0.0.1/24", "", "sparc"), "Arch"),
        ];
        for (n, want) in cases {
            let e = NodeNet::parse(&n).unwrap_err();
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }

    #[test]
    fn round_trips_through_a_node() {
        let mut node = Node::default();
        let n = net("52:54:00:00:00:01", "10.0.0.11/24", "", "");
        set_network(&mut node, &n);
        assert_eq!(network_of(&node), Some(n));
    }
}
