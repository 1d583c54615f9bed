//! Fuzz target: the DHCP server core (`layercake/src/modules/pxe/dhcp.rs`,
//! included by path with the boot table, so the target does not build the
//! whole daemon). Must never panic; exactly one result is counted per
//! datagram; a reply fits `REPLY_BYTES_MAX` and goes only to the
//! registered MAC. Each input is tried as sent and with the registered
//! MAC written into `chaddr`, to reach the reply paths.
#![no_main]

#[path = "../../layercake/src/modules/pxe/registry.rs"]
#[allow(dead_code)]
mod registry;

#[path = "../../layercake/src/modules/pxe/dhcp.rs"]
#[allow(dead_code)]
mod dhcp;

/// What the included modules call `super::Time`.
type Time = std::time::Duration;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn nodes() -> &'static registry::Registry {
    static NODES: OnceLock<registry::Registry> = OnceLock::new();
    NODES.get_or_init(|| {
        let mut r = registry::Registry::new();
        let mut node = registry::NodeBoot::new("vm1", Ipv4Addr::new(10, 0, 0, 11), 24);
        node.gateway = Some(Ipv4Addr::new(10, 0, 0, 254));
        r.register(registry::Mac(MAC), node).expect("a valid entry");
        r
    })
}

fn check(data: &[u8]) {
    let mut core = dhcp::DhcpCore::new(dhcp::DhcpConfig::new(Ipv4Addr::new(10, 0, 0, 1), 8080));
    let from = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dhcp::CLIENT_PORT);
    let handled = core.handle(Time::ZERO, data, from, nodes());
    let total: u64 = core.counters().iter().map(|(_, n)| n).sum();
    assert_eq!(total, 1);
    if let Some(reply) = handled.reply {
        assert!(reply.bytes.len() <= dhcp::REPLY_BYTES_MAX);
        assert_eq!(&data[28..34], &MAC);
    }
    while core.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 34 {
        let mut forged = data.to_vec();
        forged[28..34].copy_from_slice(&MAC);
        check(&forged);
    }
});
