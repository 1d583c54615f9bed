//! A node's BMC configuration: the `layercake.power.Power` extension
//! (`type.googleapis.com/layercake.power.Power/<Field>`) and its
//! resolution, on the driving instance, into a [`BmcTarget`] (patterns
//! filled, defaults applied, the password looked up) and then a
//! [`Backend`].
//!
//! Fields: `Protocol` (`""`, `virtual`, `ipmi`, `redfish`), `Address`,
//! `Port`, `User`, `Credential`, `Scheme` (Redfish: `https`,
//! `https-insecure`, `http`), `System` (Redfish system id), `Auth`
//! (Redfish: `basic` or `session`) and, in Dsc, `Error`. `Address` and `System` may be patterns (`10.0.{g}.{n}`).

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;

use engine::registry::{FieldDef, MessageExtension};
use engine::value::{Kind, Value};
use prost::Message as _;
use proto::node::Node;
use proto::power::Power;

use super::creds::Credentials;
use super::redfish::{RedfishAuth, RedfishBmc, RedfishClients, Scheme};
use super::virt::VirtualFleet;
use super::{Backend, PowerError, ipmi_backend};

/// The extension's full message name.
pub const POWER_MESSAGE: &str = "layercake.power.Power";
/// The type URL of the extension inside `Node.extensions`.
pub const POWER_TYPE_URL: &str = "type.googleapis.com/layercake.power.Power";

macro_rules! str_field {
    ($name:literal, $f:ident) => {
        FieldDef {
            name: $name,
            kind: Kind::Str,
            get: |m: &Power| Value::Str(m.$f.clone()),
            set: |m: &mut Power, v: &Value| {
                if let Value::Str(s) = v {
                    m.$f = s.clone();
                }
            },
        }
    };
}

/// The registry description of the extension (register it once per process).
pub fn extension() -> MessageExtension<Power> {
    MessageExtension::new(
        POWER_MESSAGE,
        vec![
            str_field!("Protocol", protocol),
            str_field!("Address", address),
            FieldDef {
                name: "Port",
                kind: Kind::Int,
                get: |m: &Power| Value::Int(i64::from(m.port)),
                set: |m: &mut Power, v: &Value| {
                    if let Value::Int(i) = v {
                        m.port = u32::try_from(*i).unwrap_or(0);
                    }
                },
            },
            str_field!("User", user),
            str_field!("Credential", credential),
            str_field!("Scheme", scheme),
            str_field!("System", system),
            str_field!("Error", error),
            str_field!("Auth", auth),
        ],
    )
}

/// The node's power extension, if present and decodable.
pub fn power_of(node: &Node) -> Option<Power> {
    let any = node
        .extensions
        .iter()
        .find(|a| a.type_url == POWER_TYPE_URL)?;
    Power::decode(any.value.as_slice()).ok()
}

/// Writes (or adds) the node's power extension.
pub fn set_power(node: &mut Node, p: &Power) {
    let value = p.encode_to_vec();
    match node
        .extensions
        .iter_mut()
        .find(|a| a.type_url == POWER_TYPE_URL)
    {
        Some(a) => a.value = value,
        None => node.extensions.push(prost_types::Any {
            type_url: POWER_TYPE_URL.to_string(),
            value,
        }),
    }
}

/// Which backend a BMC speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// In-memory machines ([`super::virt`]).
    Virtual,
    /// IPMI v2.0 over RMCP+.
    Ipmi,
    /// Redfish over HTTP(S).
    Redfish,
}

impl Protocol {
    /// Parses the `Protocol` field; `""` is no BMC (`Ok(None)`).
    pub fn parse(s: &str) -> Result<Option<Protocol>, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(None),
            "virtual" => Ok(Some(Protocol::Virtual)),
            "ipmi" => Ok(Some(Protocol::Ipmi)),
            "redfish" => Ok(Some(Protocol::Redfish)),
            other => Err(format!(
                "unknown power protocol `{other}` (expected virtual, ipmi or redfish)"
            )),
        }
    }
}

/// A node's BMC with every pattern filled and default applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BmcTarget {
    /// The protocol.
    pub protocol: Protocol,
    /// Host name or IP address.
    pub host: String,
    /// Port (the protocol's default applied).
    pub port: u16,
    /// User name.
    pub user: String,
    /// Credential name (in the credentials file).
    pub credential: String,
    /// Redfish scheme and trust.
    pub scheme: Scheme,
    /// Redfish system id (`""`: the first system).
    pub system: String,
    /// Redfish authentication.
    pub auth: RedfishAuth,
}

/// Where a node sits, for pattern variables: `{n}` comes from `host`,
/// `{i}` is its 1-based position in its group, `{g}` its group's 1-based
/// position among its siblings.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    /// The node's name.
    pub host: &'a str,
    /// 1-based position in its group.
    pub i: u64,
    /// 1-based position of its group.
    pub g: u64,
}

impl BmcTarget {
    /// Resolves `p` for the node at `place`; `Ok(None)` when the node has
    /// no BMC (it powers itself).
    pub fn resolve(p: &Power, place: Place<'_>) -> Result<Option<BmcTarget>, String> {
        let Some(protocol) = Protocol::parse(&p.protocol)? else {
            return Ok(None);
        };
        let fill = |t: &str| topo::fill_pattern(t, place.host, place.i, place.g);
        let host = if p.address.is_empty() && protocol == Protocol::Virtual {
            place.host.to_string()
        } else {
            fill(&p.address)?
        };
        if host.is_empty() {
            return Err(format!("{}: Power/Address is empty", place.host));
        }
        let (host, port_in_address) = split_port(&host)?;
        let scheme = Scheme::parse(&p.scheme)?;
        let port = match (port_in_address, u16::try_from(p.port), protocol) {
            (Some(port), _, _) => port,
            (None, Ok(0), Protocol::Ipmi) => 623,
            (None, Ok(0), Protocol::Redfish) => scheme.default_port(),
            (None, Ok(port), _) => port,
            (None, Err(_), _) => return Err(format!("Power/Port {} is not a port", p.port)),
        };
        Ok(Some(BmcTarget {
            protocol,
            host,
            port,
            user: p.user.clone(),
            credential: p.credential.clone(),
            scheme,
            system: fill(&p.system)?,
            auth: RedfishAuth::parse(&p.auth)?,
        }))
    }

    /// `protocol host:port` for messages.
    pub fn label(&self) -> String {
        format!("{:?} {}:{}", self.protocol, self.host, self.port).to_lowercase()
    }
}

/// What backends are built from: the credentials, the shared HTTP clients,
/// the IPMI client and the virtual fleet of this instance.
#[derive(Clone)]
pub struct Backends {
    /// Passwords by name.
    pub creds: Arc<Credentials>,
    /// Redfish HTTP clients (one per trust setting).
    pub redfish: RedfishClients,
    /// The virtual machines.
    pub fleet: VirtualFleet,
    /// The IPMI client factory.
    pub ipmi: ipmi_backend::IpmiClients,
}

impl Backends {
    /// The backend for `t`. A credential missing from the credentials file
    /// is an authentication error (the operator must add it).
    pub fn backend(&self, t: &BmcTarget) -> Result<Backend, PowerError> {
        let password = if t.credential.is_empty() {
            None
        } else {
            // Only to a host the credentials file binds the credential to,
            // and over plain HTTP only where it allows it.
            let plain = t.protocol == Protocol::Redfish && t.scheme == Scheme::Http;
            let p = self
                .creds
                .password_for(&t.credential, &t.host, plain)
                .map_err(|e| PowerError::AuthRefused(t.label(), e.to_string()))?;
            Some(p.to_string())
        };
        Ok(match t.protocol {
            Protocol::Virtual => Backend::Virtual(self.fleet.bmc(&t.host, password.as_deref())),
            Protocol::Redfish => Backend::Redfish(RedfishBmc::new(
                &self.redfish,
                t,
                password.unwrap_or_default(),
            )?),
            Protocol::Ipmi => {
                let addr = socket_addr(&t.host, t.port)
                    .map_err(|e| PowerError::Unreachable(t.label(), e))?;
                Backend::Ipmi(self.ipmi.bmc(t, addr, password.unwrap_or_default()))
            }
        })
    }
}

/// Splits `HOST:PORT` or `[V6]:PORT` (a port given in the address wins over
/// `Port`, so patterns can vary it: `127.0.0.1:{n+9000}`); a bare IPv6
/// address or a host keeps no port.
fn split_port(addr: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = addr.strip_prefix('[') {
        let (ip, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("address `{addr}`: `[` without `]`"))?;
        return match tail.strip_prefix(':') {
            Some(p) => Ok((ip.to_string(), Some(parse_port(addr, p)?))),
            None if tail.is_empty() => Ok((ip.to_string(), None)),
            None => Err(format!("address `{addr}`: unexpected `{tail}`")),
        };
    }
    match addr.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h.to_string(), Some(parse_port(addr, p)?))),
        _ => Ok((addr.to_string(), None)),
    }
}

fn parse_port(addr: &str, p: &str) -> Result<u16, String> {
    p.parse()
        .map_err(|_| format!("address `{addr}`: `{p}` is not a port"))
}

/// Resolves `host:port` (an IP address, or a name through the resolver).
fn socket_addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn power(protocol: &str, address: &str) -> Power {
        Power {
            protocol: protocol.into(),
            address: address.into(),
            ..Power::default()
        }
    }

    #[test]
    fn resolves_patterns_and_defaults() {
        let place = Place {
            host: "n0042",
            i: 3,
            g: 2,
        };
        let t = BmcTarget::resolve(&power("ipmi", "10.0.{g}.{n}"), place)
            .unwrap()
            .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.2.42", 623));
        assert!(BmcTarget::resolve(&power("", ""), place).unwrap().is_none());
        let t = BmcTarget::resolve(&power("ipmi", "127.0.0.1:{n+9000}"), place)
            .unwrap()
            .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9042));
        let t = BmcTarget::resolve(&power("redfish", "[::1]:8443"), place)
            .unwrap()
            .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        let e = BmcTarget::resolve(&power("snmp", "x"), place).unwrap_err();
        assert!(e.contains("unknown power protocol"), "{e}");
    }

    #[test]
    fn extension_round_trips() {
        let mut n = Node::default();
        let p = power("redfish", "bmc1");
        set_power(&mut n, &p);
        assert_eq!(power_of(&n), Some(p));
    }
}
