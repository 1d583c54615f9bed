//! The DHCP core: the exchanges a booting machine makes, and hostile input
//! (garbage, truncated, oversized, impossible options, unknown MACs):
//! dropped and counted, never a panic, never a reply.

use std::time::Duration;

use dhcproto::v4::{Architecture, Flags};
use proptest::prelude::*;

use super::*;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const MAC: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const STRANGER: Mac = Mac([0x52, 0x54, 0, 0xde, 0xad, 0]);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT);

fn registry() -> Registry {
    let mut r = Registry::new();
    let mut node = NodeBoot::new("vm1", NODE_IP, 24);
    node.gateway = Some(Ipv4Addr::new(10, 0, 0, 254));
    r.register(MAC, node).unwrap();
    r
}

fn core() -> DhcpCore {
    DhcpCore::new(DhcpConfig::new(SERVER, 8080))
}

/// The kinds of client that boot.
#[derive(Clone, Copy)]
enum Who {
    /// BIOS PXE firmware (option 60, arch 0).
    Bios,
    /// UEFI x86-64 firmware (arch 7).
    Efi,
    /// iPXE (user class, arch 0 as its ROM says).
    Ipxe,
    /// An OS's DHCP client.
    Plain,
}

fn message(mac: Mac, kind: MessageType, who: Who) -> Message {
    let mut m = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    m.set_flags(Flags::default().set_broadcast());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let arch = match who {
        Who::Efi => Some(Architecture::from(7)),
        Who::Bios | Who::Ipxe => Some(Architecture::from(0)),
        Who::Plain => None,
    };
    if let Some(arch) = arch {
        opts.insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
        ));
        opts.insert(DhcpOption::ClientSystemArchitecture(arch));
        opts.insert(DhcpOption::ClientNetworkInterface(1, 2, 1));
    }
    if let Who::Ipxe = who {
        opts.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    }
    m
}

fn encode(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out)).unwrap();
    out
}

fn request(mac: Mac, who: Who, server: Option<Ipv4Addr>, asked: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = message(mac, MessageType::Request, who);
    if let Some(s) = server {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(s));
    }
    if let Some(ip) = asked {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    }
    encode(&m)
}

fn decode(reply: &DhcpReply) -> Message {
    assert!(reply.bytes.len() <= REPLY_BYTES_MAX);
    Message::decode(&mut Decoder::new(&reply.bytes)).unwrap()
}

fn bootfile(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8(f.clone()).unwrap()),
        _ => None,
    }
}

/// Handles `bytes` and checks it was dropped with `result`.
fn check_dropped(bytes: &[u8], result: DhcpResult) {
    let mut core = core();
    let handled = core.handle(Duration::ZERO, bytes, CLIENT, &registry());
    assert_eq!(handled.result, result);
    assert_eq!(handled.reply, None);
    assert_eq!(core.counters().get(result), 1);
    assert_eq!(core.poll_event(), None);
}

#[test]
fn discover_from_bios_firmware_is_offered_its_address_and_the_bios_boot_file() {
    let mut core = core();
    let bytes = encode(&message(MAC, MessageType::Discover, Who::Bios));
    let handled = core.handle(Duration::ZERO, &bytes, CLIENT, &registry());
    assert_eq!(handled.result, DhcpResult::Offer);
    let reply = handled.reply.unwrap();
    assert_eq!(
        reply.to,
        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
    );
    let m = decode(&reply);
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(m.xid(), 0x1234_5678);
    assert_eq!(m.yiaddr(), NODE_IP);
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(&m.chaddr()[..6], &MAC.0);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(bootfile(&m).as_deref(), Some("undionly.kpxe"));
    let fname = m.fname().unwrap();
    assert_eq!(fname.split(|&b| b == 0).next(), Some(&b"undionly.kpxe"[..]));
    assert_eq!(
        m.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(
        m.opts().get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        m.opts().get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 254)]))
    );
    assert_eq!(
        m.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(core.poll_event(), None, "an OFFER is not a boot signal");
}

#[test]
fn uefi_firmware_gets_the_efi_boot_file_and_a_registered_arch_overrides_the_client() {
    let mut core = core();
    let bytes = encode(&message(MAC, MessageType::Discover, Who::Efi));
    let reply = core
        .handle(Duration::ZERO, &bytes, CLIENT, &registry())
        .reply;
    assert_eq!(
        bootfile(&decode(&reply.unwrap())).as_deref(),
        Some("ipxe.efi")
    );

    let mut nodes = Registry::new();
    let mut node = NodeBoot::new("vm1", NODE_IP, 24);
    node.arch = Some(Arch::BiosX86);
    nodes.register(MAC, node).unwrap();
    let reply = core.handle(Duration::ZERO, &bytes, CLIENT, &nodes).reply;
    assert_eq!(
        bootfile(&decode(&reply.unwrap())).as_deref(),
        Some("undionly.kpxe")
    );
}

#[test]
fn an_architecture_without_a_boot_file_is_not_answered() {
    let mut m = message(MAC, MessageType::Discover, Who::Bios);
    m.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(Architecture::from(11)));
    check_dropped(&encode(&m), DhcpResult::IgnoredUnknownArch);
}

#[test]
fn ipxe_is_sent_to_its_http_script_by_mac_or_by_name() {
    let mut core = core();
    let bytes = encode(&message(MAC, MessageType::Discover, Who::Ipxe));
    let m = decode(
        &core
            .handle(Duration::ZERO, &bytes, CLIENT, &registry())
            .reply
            .unwrap(),
    );
    assert_eq!(
        bootfile(&m).as_deref(),
        Some("http://10.0.0.1:8080/boot/52:54:00:12:34:56.ipxe")
    );
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(m.opts().get(OptionCode::ClassIdentifier), None);

    let mut config = DhcpConfig::new(SERVER, 80);
    config.script_key = ScriptKey::Name;
    let mut core = DhcpCore::new(config);
    let m = decode(
        &core
            .handle(Duration::ZERO, &bytes, CLIENT, &registry())
            .reply
            .unwrap(),
    );
    assert_eq!(
        bootfile(&m).as_deref(),
        Some("http://10.0.0.1:80/boot/vm1.ipxe")
    );
}

#[test]
fn an_rfc3004_user_class_list_naming_ipxe_is_ipxe() {
    let mut m = message(MAC, MessageType::Discover, Who::Bios);
    m.opts_mut()
        .insert(DhcpOption::UserClass(b"\x03abc\x04iPXE".to_vec()));
    assert_eq!(client_kind(&m), ClientKind::Ipxe);
}

#[test]
fn an_os_client_gets_an_address_and_no_boot_file() {
    let mut core = core();
    let bytes = encode(&message(MAC, MessageType::Discover, Who::Plain));
    let m = decode(
        &core
            .handle(Duration::ZERO, &bytes, CLIENT, &registry())
            .reply
            .unwrap(),
    );
    assert_eq!(m.yiaddr(), NODE_IP);
    assert_eq!(m.siaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(bootfile(&m), None);
    assert_eq!(
        m.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("vm1".into()))
    );
}

#[test]
fn request_for_the_registered_address_is_acked_and_reported_once() {
    let mut core = core();
    let bytes = request(MAC, Who::Ipxe, Some(SERVER), Some(NODE_IP));
    let now = Duration::from_secs(7);
    let handled = core.handle(now, &bytes, CLIENT, &registry());
    assert_eq!(handled.result, DhcpResult::Ack);
    let m = decode(&handled.reply.unwrap());
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), NODE_IP);
    assert_eq!(
        core.poll_event(),
        Some(DhcpEvent::Acked {
            mac: MAC,
            name: "vm1".into(),
            ip: NODE_IP,
            client: ClientKind::Ipxe,
            at: now,
        })
    );
    assert_eq!(core.poll_event(), None);
    assert_eq!(core.counters().get(DhcpResult::Ack), 1);
}

#[test]
fn init_reboot_request_without_server_id_is_acked() {
    let mut core = core();
    let bytes = request(MAC, Who::Plain, None, Some(NODE_IP));
    let handled = core.handle(Duration::ZERO, &bytes, CLIENT, &registry());
    assert_eq!(handled.result, DhcpResult::Ack);
}

#[test]
fn request_for_another_address_is_naked_by_broadcast_without_an_event() {
    let mut core = core();
    let bytes = request(
        MAC,
        Who::Bios,
        Some(SERVER),
        Some(Ipv4Addr::new(10, 0, 0, 99)),
    );
    let handled = core.handle(Duration::ZERO, &bytes, CLIENT, &registry());
    assert_eq!(handled.result, DhcpResult::Nak);
    let reply = handled.reply.unwrap();
    assert_eq!(
        reply.to,
        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
    );
    let m = decode(&reply);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(bootfile(&m), None);
    assert_eq!(core.poll_event(), None);
}

#[test]
fn request_naming_another_server_is_ignored() {
    let bytes = request(
        MAC,
        Who::Bios,
        Some(Ipv4Addr::new(10, 0, 0, 2)),
        Some(NODE_IP),
    );
    check_dropped(&bytes, DhcpResult::IgnoredOtherServer);
}

#[test]
fn renewal_is_acked_by_unicast_to_the_client_address() {
    let mut core = core();
    let mut m = message(MAC, MessageType::Request, Who::Plain);
    m.set_ciaddr(NODE_IP).set_flags(Flags::default());
    let handled = core.handle(Duration::ZERO, &encode(&m), CLIENT, &registry());
    assert_eq!(handled.result, DhcpResult::Ack);
    let reply = handled.reply.unwrap();
    assert_eq!(reply.to, SocketAddrV4::new(NODE_IP, CLIENT_PORT));
    assert_eq!(decode(&reply).ciaddr(), NODE_IP);
}

#[test]
fn a_relayed_discover_is_answered_to_the_relay() {
    let mut core = core();
    let relay = Ipv4Addr::new(10, 1, 0, 1);
    let mut m = message(MAC, MessageType::Discover, Who::Bios);
    m.set_giaddr(relay);
    let reply = core
        .handle(Duration::ZERO, &encode(&m), CLIENT, &registry())
        .reply;
    let reply = reply.unwrap();
    assert_eq!(reply.to, SocketAddrV4::new(relay, SERVER_PORT));
    assert_eq!(decode(&reply).giaddr(), relay);
}

#[test]
fn release_and_decline_are_counted_without_answer() {
    let mut core = core();
    for (kind, result) in [
        (MessageType::Release, DhcpResult::Release),
        (MessageType::Decline, DhcpResult::Decline),
    ] {
        let bytes = encode(&message(MAC, kind, Who::Plain));
        let handled = core.handle(Duration::ZERO, &bytes, CLIENT, &registry());
        assert_eq!((handled.result, handled.reply), (result, None));
    }
    let bytes = encode(&message(MAC, MessageType::Inform, Who::Plain));
    let handled = core.handle(Duration::ZERO, &bytes, CLIENT, &registry());
    assert_eq!(handled.result, DhcpResult::IgnoredUnsupported);
}

#[test]
fn an_unknown_mac_gets_no_answer_and_is_counted() {
    let bytes = encode(&message(STRANGER, MessageType::Discover, Who::Bios));
    check_dropped(&bytes, DhcpResult::IgnoredUnknownMac);
    let bytes = request(STRANGER, Who::Bios, Some(SERVER), Some(NODE_IP));
    check_dropped(&bytes, DhcpResult::IgnoredUnknownMac);
}

#[test]
fn an_unregistered_mac_stops_being_answered() {
    let mut core = core();
    let mut nodes = registry();
    let bytes = encode(&message(MAC, MessageType::Discover, Who::Bios));
    assert!(
        core.handle(Duration::ZERO, &bytes, CLIENT, &nodes)
            .reply
            .is_some()
    );
    nodes.unregister(MAC);
    let handled = core.handle(Duration::ZERO, &bytes, CLIENT, &nodes);
    assert_eq!(handled.result, DhcpResult::IgnoredUnknownMac);
}

#[test]
fn server_messages_and_boot_replies_are_not_requests() {
    let bytes = encode(&message(MAC, MessageType::Offer, Who::Bios));
    check_dropped(&bytes, DhcpResult::IgnoredNotRequest);
    let mut m = message(MAC, MessageType::Discover, Who::Bios);
    m.set_opcode(Opcode::BootReply);
    check_dropped(&encode(&m), DhcpResult::IgnoredNotRequest);
}

/// A valid DISCOVER's bytes, for the hostile edits below.
fn discover_bytes() -> Vec<u8> {
    encode(&message(MAC, MessageType::Discover, Who::Bios))
}

/// A DISCOVER whose options are `options` (then End).
fn with_options(options: &[u8]) -> Vec<u8> {
    let mut bytes = discover_bytes();
    bytes.truncate(BOOTP_HEADER_BYTES + MAGIC_COOKIE.len());
    bytes.extend_from_slice(&[53, 1, 1]);
    bytes.extend_from_slice(options);
    bytes.push(255);
    bytes
}

#[test]
fn garbage_truncated_and_oversized_datagrams_are_dropped_and_counted() {
    check_dropped(&[], DhcpResult::IgnoredTruncated);
    check_dropped(b"hello", DhcpResult::IgnoredTruncated);
    let valid = discover_bytes();
    check_dropped(&valid[..239], DhcpResult::IgnoredTruncated);
    check_dropped(
        &vec![0xff; DATAGRAM_BYTES_MAX + 1],
        DhcpResult::IgnoredOversized,
    );
    check_dropped(&[0u8; 300], DhcpResult::IgnoredMalformed);
    let mut bad_op = valid.clone();
    bad_op[0] = 9;
    check_dropped(&bad_op, DhcpResult::IgnoredMalformed);
    let mut bad_magic = valid.clone();
    bad_magic[BOOTP_HEADER_BYTES] = 0;
    check_dropped(&bad_magic, DhcpResult::IgnoredMalformed);
    let mut token_ring = valid.clone();
    token_ring[1] = 6;
    check_dropped(&token_ring, DhcpResult::IgnoredNotEthernet);
    let mut long_mac = valid;
    long_mac[2] = 16;
    check_dropped(&long_mac, DhcpResult::IgnoredNotEthernet);
}

#[test]
fn options_overrunning_the_datagram_or_too_many_are_malformed() {
    let mut overrun = with_options(&[]);
    overrun.pop();
    overrun.extend_from_slice(&[60, 200, b'P']);
    check_dropped(&overrun, DhcpResult::IgnoredMalformed);
    let mut cut = with_options(&[]);
    cut.pop();
    cut.push(60);
    check_dropped(&cut, DhcpResult::IgnoredMalformed);
    let many: Vec<u8> = (0..=OPTIONS_MAX).flat_map(|_| [224u8, 0]).collect();
    check_dropped(&with_options(&many), DhcpResult::IgnoredMalformed);
}

#[test]
fn option_lengths_the_codec_trusts_are_checked_first() {
    // Each of these made the codec assert (debug) or underflow.
    for bad in [
        &[94u8, 2, 1, 2][..],
        &[94, 4, 1, 2, 3, 4],
        &[80, 1, 0],
        &[81, 1, 0],
        &[151, 0],
        &[152, 2, 0, 0],
        &[53, 2, 1, 1],
        &[93, 1, 0],
        &[50, 3, 1, 2, 3],
        // Split into two options of one code, joined (RFC 3396): 94 of 4.
        &[94, 2, 1, 2, 94, 2, 3, 4],
    ] {
        assert_eq!(
            screen(&with_options(bad)),
            Err(DhcpResult::IgnoredMalformed),
            "{bad:?}"
        );
        check_dropped(&with_options(bad), DhcpResult::IgnoredMalformed);
    }
    // Well-formed, they pass.
    let ok = with_options(&[94, 3, 1, 2, 1, 80, 0, 81, 3, 0, 0, 0]);
    assert_eq!(screen(&ok), Ok(()));
}

#[test]
fn a_datagram_without_message_type_is_malformed() {
    let mut bytes = discover_bytes();
    bytes.truncate(BOOTP_HEADER_BYTES + MAGIC_COOKIE.len());
    bytes.push(255);
    check_dropped(&bytes, DhcpResult::IgnoredMalformed);
}

#[test]
fn events_are_bounded_and_the_excess_counted() {
    let mut core = core();
    let bytes = request(MAC, Who::Plain, None, Some(NODE_IP));
    let nodes = registry();
    let extra = 3;
    for _ in 0..EVENTS_MAX + extra {
        let _ = core.handle(Duration::ZERO, &bytes, CLIENT, &nodes);
    }
    assert_eq!(core.counters().events_dropped, extra as u64);
    assert_eq!(std::iter::from_fn(|| core.poll_event()).count(), EVENTS_MAX);
}

#[test]
fn a_boot_file_name_too_long_is_a_counted_configuration_error() {
    let mut config = DhcpConfig::new(SERVER, 8080);
    config.boot_files.bios_x86 = "x".repeat(BOOT_FILE_BYTES_MAX + 1);
    let mut core = DhcpCore::new(config);
    let handled = core.handle(Duration::ZERO, &discover_bytes(), CLIENT, &registry());
    assert_eq!(
        (handled.result, handled.reply),
        (DhcpResult::ReplyTooLarge, None)
    );
}

#[test]
fn result_labels_are_unique_and_indexes_match_all() {
    for (i, r) in DhcpResult::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    let mut labels: Vec<_> = DhcpResult::ALL.iter().map(|r| r.label()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), DhcpResult::ALL.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: no panic, exactly one count, a reply only for the
    /// registered MAC.
    #[test]
    fn any_bytes_are_handled_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let mut core = core();
        let handled = core.handle(Duration::ZERO, &bytes, CLIENT, &registry());
        let total: u64 = core.counters().iter().map(|(_, n)| n).sum();
        prop_assert_eq!(total, 1);
        if let Some(reply) = handled.reply {
            prop_assert!(reply.bytes.len() <= REPLY_BYTES_MAX);
            prop_assert_eq!(&bytes[28..34], &MAC.0[..]);
        }
    }

    /// A valid DISCOVER with bytes flipped, cut or appended: no panic.
    #[test]
    fn mutated_discovers_are_handled_without_panic(
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..12),
        cut in 0usize..400,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = discover_bytes();
        for (at, value) in flips {
            if let Some(b) = bytes.get_mut(at) {
                *b = value;
            }
        }
        bytes.truncate(cut.max(BOOTP_HEADER_BYTES));
        bytes.extend_from_slice(&tail);
        let mut core = core();
        let _ = core.handle(Duration::ZERO, &bytes, CLIENT, &registry());
        let total: u64 = core.counters().iter().map(|(_, n)| n).sum();
        prop_assert_eq!(total, 1);
    }
}
