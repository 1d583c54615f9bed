//! TFTP: the codec on valid and hostile input, request acceptance (write
//! requests, modes, traversal), and transfers against a simulated client
//! (options, last block, duplicate ACKs, retransmission, give-up, abort,
//! block-number rollover, read errors).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

use super::super::files::check_path;
use super::super::tftp_packet::{
    self as wire, ErrorCode, FILENAME_BYTES_MAX, Packet, PacketError, REQUEST_BYTES_MAX,
    REQUEST_OPTIONS_MAX,
};
use super::*;

const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11)), 2070);
const T0: Duration = Duration::ZERO;

fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// An `open` for [`TftpServer::accept`] serving `files` from memory with
/// the real path checks.
fn open_in(
    files: &[(&str, Vec<u8>)],
) -> impl FnOnce(&str, u64) -> Result<(Vec<u8>, u64), FileError> {
    let files: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, d)| (n.to_string(), d.clone()))
        .collect();
    move |name: &str, max: u64| {
        let path = check_path(name)?;
        let (_, data) = files
            .into_iter()
            .find(|(n, _)| std::path::Path::new(n) == path)
            .ok_or(FileError::NotFound)?;
        let len = data.len() as u64;
        if len > max {
            return Err(FileError::TooLarge(len));
        }
        Ok((data, len))
    }
}

fn accept(datagram: &[u8]) -> Accept<Vec<u8>> {
    let server = TftpServer::new(TftpLimits::default());
    server.accept(
        T0,
        datagram,
        PEER,
        open_in(&[("ipxe.efi", file(3000)), ("dir/a", file(10))]),
    )
}

fn start(options: &[(&str, &str)], data: Vec<u8>) -> Transfer<Vec<u8>> {
    let len = data.len();
    let rrq = wire::encode_rrq("f", "octet", options);
    let server = TftpServer::new(TftpLimits::default());
    match server.accept(T0, &rrq, PEER, open_in(&[("f", data)])) {
        Accept::Start(t) => {
            assert_eq!(t.file_bytes, len as u64);
            *t
        }
        other => panic!("not started: {other:?}"),
    }
}

/// Takes the one pending packet.
fn sent(t: &mut Transfer<Vec<u8>>) -> Vec<u8> {
    let bytes = t.poll_transmit().expect("a packet").bytes.to_vec();
    assert!(t.poll_transmit().is_none(), "one packet at a time");
    bytes
}

/// A well-behaved client: acknowledges every block, returns the file.
fn download(t: &mut Transfer<Vec<u8>>) -> Vec<u8> {
    let mut got = Vec::new();
    let mut steps = 0u64;
    while t.status() == Status::Running {
        steps += 1;
        assert!(steps < 2_000_000, "transfer does not end");
        let packet = sent(t);
        match Packet::decode(&packet).unwrap() {
            Packet::Oack(_) => t.handle_datagram(T0, &wire::encode_ack(0)),
            Packet::Data { block, data } => {
                got.extend_from_slice(data);
                t.handle_datagram(T0, &wire::encode_ack(block));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(t.status(), Status::Completed);
    got
}

#[test]
fn codec_reads_requests_with_options() {
    let rrq = wire::encode_rrq("ipxe.efi", "octet", &[("blksize", "1468"), ("tsize", "0")]);
    assert_eq!(
        Packet::decode(&rrq),
        Ok(Packet::Rrq(wire::Request {
            filename: "ipxe.efi",
            mode: "octet",
            options: vec![("blksize", "1468"), ("tsize", "0")],
        }))
    );
    let wrq = wire::encode_wrq("x", "netascii", &[]);
    assert!(matches!(Packet::decode(&wrq), Ok(Packet::Wrq(_))));
    assert_eq!(
        Packet::decode(&wire::encode_ack(7)),
        Ok(Packet::Ack { block: 7 })
    );
    let mut data = Vec::new();
    wire::encode_data(&mut data, 3, b"abc");
    assert_eq!(
        Packet::decode(&data),
        Ok(Packet::Data {
            block: 3,
            data: b"abc"
        })
    );
    assert_eq!(
        Packet::decode(&wire::encode_error(ErrorCode::OptionRefused, "no")),
        Ok(Packet::Error {
            code: ErrorCode::OptionRefused,
            message: "no"
        })
    );
    let oack = wire::encode_oack(&[("tsize", "12".into())]);
    assert_eq!(
        Packet::decode(&oack),
        Ok(Packet::Oack(vec![("tsize", "12")]))
    );
}

#[test]
fn codec_refuses_malformed_packets() {
    let malformed = |bytes: &[u8]| match Packet::decode(bytes) {
        Err(e) => e,
        Ok(p) => panic!("accepted {bytes:?} as {p:?}"),
    };
    assert_eq!(malformed(&[]), PacketError::Truncated);
    assert_eq!(malformed(&[0]), PacketError::Truncated);
    assert_eq!(malformed(&[0, 4, 1]), PacketError::Truncated);
    assert_eq!(malformed(&[0, 9, 0, 0]), PacketError::UnknownOpcode(9));
    assert!(matches!(
        malformed(b"\x00\x01file"),
        PacketError::Malformed(_)
    ));
    assert!(matches!(
        malformed(b"\x00\x01file\x00octet"),
        PacketError::Malformed(_)
    ));
    assert!(matches!(
        malformed(b"\x00\x01file\x00octet\x00blksize\x00"),
        PacketError::Malformed(_)
    ));
    assert!(matches!(
        malformed(b"\x00\x01f\xff\x00octet\x00"),
        PacketError::Malformed(_)
    ));
    assert!(matches!(
        malformed(&[0, 4, 0, 1, 0]),
        PacketError::Malformed(_)
    ));
    assert!(matches!(
        malformed(b"\x00\x05\x00\x01oops"),
        PacketError::Malformed(_)
    ));
    assert!(matches!(
        malformed(b"\x00\x05\x00\x01a\x00b"),
        PacketError::Malformed(_)
    ));
    let long_name = "a".repeat(FILENAME_BYTES_MAX + 1);
    assert!(matches!(
        malformed(&wire::encode_rrq(&long_name, "octet", &[])),
        PacketError::Malformed(_)
    ));
    let many: Vec<(&str, &str)> = (0..=REQUEST_OPTIONS_MAX).map(|_| ("x", "1")).collect();
    assert!(matches!(
        malformed(&wire::encode_rrq("f", "octet", &many)),
        PacketError::Malformed(_)
    ));
    let huge = wire::encode_rrq("f", "octet", &[("x", &"9".repeat(REQUEST_BYTES_MAX))]);
    assert_eq!(malformed(&huge), PacketError::TooLarge);
}

#[test]
fn error_messages_are_cut_at_nul_and_length() {
    let e = wire::encode_error(ErrorCode::Undefined, "a\0b");
    assert_eq!(
        Packet::decode(&e),
        Ok(Packet::Error {
            code: ErrorCode::Undefined,
            message: "a"
        })
    );
    let long = "é".repeat(200);
    let e = wire::encode_error(ErrorCode::Undefined, &long);
    assert!(matches!(Packet::decode(&e), Ok(Packet::Error { .. })));
}

#[test]
fn write_requests_are_refused_with_access_violation() {
    match accept(&wire::encode_wrq("ipxe.efi", "octet", &[])) {
        Accept::Refuse { result, packet } => {
            assert_eq!(result, TftpResult::RefusedWrite);
            assert!(matches!(
                Packet::decode(&packet),
                Ok(Packet::Error {
                    code: ErrorCode::AccessViolation,
                    ..
                })
            ));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn path_traversal_is_refused_and_counted_as_such() {
    for name in [
        "../etc/passwd",
        "dir/../../x",
        "/etc/passwd",
        "..",
        "dir\\..\\x",
        "a\u{1}b",
        "",
    ] {
        let refused = accept(&wire::encode_rrq(name, "octet", &[]));
        assert_eq!(refused.result(), TftpResult::RefusedTraversal, "{name:?}");
        let Accept::Refuse { packet, .. } = refused else {
            panic!("{name:?}")
        };
        assert!(matches!(
            Packet::decode(&packet),
            Ok(Packet::Error {
                code: ErrorCode::AccessViolation,
                ..
            })
        ));
    }
    assert_eq!(
        accept(&wire::encode_rrq("./dir//a", "octet", &[])).result(),
        TftpResult::Started
    );
}

#[test]
fn other_refusals_and_drops_are_counted_by_reason() {
    assert_eq!(
        accept(&wire::encode_rrq("nope", "octet", &[])).result(),
        TftpResult::RefusedNotFound
    );
    assert_eq!(
        accept(&wire::encode_rrq("ipxe.efi", "netascii", &[])).result(),
        TftpResult::RefusedMode
    );
    assert_eq!(
        accept(&wire::encode_rrq("ipxe.efi", "OCTET", &[])).result(),
        TftpResult::Started
    );
    assert!(matches!(
        accept(&wire::encode_ack(1)),
        Accept::Drop(TftpResult::IgnoredNotRequest)
    ));
    assert!(matches!(
        accept(b"garbage"),
        Accept::Drop(TftpResult::IgnoredMalformed)
    ));
    assert!(matches!(
        accept(&[]),
        Accept::Drop(TftpResult::IgnoredMalformed)
    ));
    assert!(matches!(
        accept(&vec![0; DATAGRAM_BYTES_MAX + 1]),
        Accept::Drop(TftpResult::IgnoredOversized)
    ));
    let small = TftpLimits {
        file_bytes_max: 100,
        ..TftpLimits::default()
    };
    let r = TftpServer::new(small).accept(
        T0,
        &wire::encode_rrq("f", "octet", &[]),
        PEER,
        open_in(&[("f", file(101))]),
    );
    assert_eq!(r.result(), TftpResult::RefusedTooLarge);
}

#[test]
fn without_options_blocks_of_512_go_until_a_short_one() {
    let data = file(1300);
    let mut t = start(&[], data.clone());
    assert_eq!(t.block_bytes(), BLOCK_BYTES_DEFAULT);
    let first = sent(&mut t);
    assert_eq!(
        Packet::decode(&first),
        Ok(Packet::Data {
            block: 1,
            data: &data[..512]
        })
    );
    t.handle_datagram(T0, &wire::encode_ack(1));
    t.handle_datagram(T0, &wire::encode_ack(1));
    let second = sent(&mut t);
    assert!(matches!(
        Packet::decode(&second),
        Ok(Packet::Data { block: 2, .. })
    ));
    t.handle_datagram(T0, &wire::encode_ack(2));
    let third = sent(&mut t);
    assert_eq!(
        Packet::decode(&third),
        Ok(Packet::Data {
            block: 3,
            data: &data[1024..]
        })
    );
    assert_eq!(t.status(), Status::Running);
    t.handle_datagram(T0, &wire::encode_ack(3));
    assert_eq!(t.status(), Status::Completed);
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn a_file_of_whole_blocks_ends_with_an_empty_block() {
    let data = file(1024);
    let mut t = start(&[], data.clone());
    assert_eq!(download(&mut t), data);
    let mut empty = start(&[], Vec::new());
    assert_eq!(download(&mut empty), Vec::<u8>::new());
}

#[test]
fn options_are_acknowledged_then_used() {
    let data = file(5000);
    let mut t = start(
        &[("blksize", "1024"), ("tsize", "0"), ("windowsize", "4")],
        data.clone(),
    );
    let oack = sent(&mut t);
    assert_eq!(
        Packet::decode(&oack),
        Ok(Packet::Oack(vec![("blksize", "1024"), ("tsize", "5000")]))
    );
    t.handle_datagram(T0, &wire::encode_ack(0));
    let first = sent(&mut t);
    assert_eq!(
        Packet::decode(&first),
        Ok(Packet::Data {
            block: 1,
            data: &data[..1024]
        })
    );

    let mut big = start(&[("BLKSIZE", "65464")], data.clone());
    assert_eq!(big.block_bytes(), BLOCK_BYTES_MAX);
    assert_eq!(download(&mut big), data);
    let mut tiny = start(&[("blksize", "4")], data.clone());
    assert_eq!(
        tiny.block_bytes(),
        BLOCK_BYTES_DEFAULT,
        "below 8 is ignored"
    );
    assert_eq!(download(&mut tiny), data);
}

#[test]
fn the_timeout_option_sets_the_retransmission_interval() {
    let mut t = start(&[("timeout", "3")], file(10));
    let oack = sent(&mut t);
    assert_eq!(
        Packet::decode(&oack),
        Ok(Packet::Oack(vec![("timeout", "3")]))
    );
    assert_eq!(t.poll_timeout(), Some(Duration::from_secs(3)));
}

#[test]
fn duplicate_acks_never_retransmit_timeouts_do_up_to_the_limit() {
    let limits = TftpLimits::default();
    let mut t = start(&[], file(2000));
    let first = sent(&mut t);
    t.handle_datagram(T0, &wire::encode_ack(0));
    assert!(t.poll_transmit().is_none(), "an old ACK is ignored");
    assert_eq!(t.ignored(), 1);
    let mut now = T0;
    for _ in 0..limits.retries_max {
        t.handle_timeout(now);
        assert!(t.poll_transmit().is_none(), "not due yet");
        now = t.poll_timeout().unwrap();
        t.handle_timeout(now);
        assert_eq!(sent(&mut t), first, "the same block again");
    }
    now = t.poll_timeout().unwrap();
    t.handle_timeout(now);
    assert_eq!(t.status(), Status::Failed(TftpResult::TimedOut));
    assert!(t.poll_transmit().is_none());
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn a_client_error_aborts_the_transfer() {
    let mut t = start(&[("blksize", "1024")], file(5000));
    let _oack = sent(&mut t);
    t.handle_datagram(
        T0,
        &wire::encode_error(ErrorCode::OptionRefused, "no options"),
    );
    assert_eq!(t.status(), Status::Failed(TftpResult::AbortedByClient));
    assert!(t.poll_transmit().is_none());
}

#[test]
fn block_numbers_roll_over_past_65535() {
    let data = file(8 * 65_540 + 3);
    let mut t = start(&[("blksize", "8")], data.clone());
    assert_eq!(download(&mut t), data);
}

/// A source whose reads fail after `ok_bytes`.
struct Failing {
    ok_bytes: u64,
}

impl Source for Failing {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.ok_bytes {
            return Err(io::Error::other("disk gone"));
        }
        buf.fill(1);
        Ok(buf.len())
    }
}

#[test]
fn a_read_error_ends_the_transfer_with_an_error_packet() {
    let request = wire::Request {
        filename: "f",
        mode: "octet",
        options: vec![],
    };
    let mut t = Transfer::start(
        T0,
        &request,
        PEER,
        Failing { ok_bytes: 512 },
        4096,
        &TftpLimits::default(),
    );
    let first = t.poll_transmit().unwrap().bytes.to_vec();
    assert!(matches!(
        Packet::decode(&first),
        Ok(Packet::Data { block: 1, .. })
    ));
    t.handle_datagram(T0, &wire::encode_ack(1));
    let error = t.poll_transmit().unwrap().bytes.to_vec();
    assert!(matches!(Packet::decode(&error), Ok(Packet::Error { .. })));
    assert_eq!(t.status(), Status::Failed(TftpResult::ReadError));
}

#[test]
fn result_labels_are_unique_and_indexes_match_all() {
    for (i, r) in TftpResult::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    let mut labels: Vec<_> = TftpResult::ALL.iter().map(|r| r.label()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), TftpResult::ALL.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any bytes: the codec and the listener never panic.
    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let _ = Packet::decode(&bytes);
        let _ = accept(&bytes);
    }

    /// Requests round-trip through the codec.
    #[test]
    fn requests_round_trip(
        name in "[a-z0-9./_-]{1,40}",
        options in proptest::collection::vec(("[a-z]{1,8}", "[0-9]{1,6}"), 0..REQUEST_OPTIONS_MAX),
    ) {
        let pairs: Vec<(&str, &str)> = options.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let bytes = wire::encode_rrq(&name, "octet", &pairs);
        let decoded = Packet::decode(&bytes);
        prop_assert_eq!(
            decoded,
            Ok(Packet::Rrq(wire::Request { filename: &name, mode: "octet", options: pairs.clone() }))
        );
    }

    /// Any file, any block size: the client gets exactly the file.
    #[test]
    fn any_file_arrives_whole(len in 0usize..6000, block in 8u16..1500) {
        let data = file(len);
        let block = block.to_string();
        let mut t = start(&[("blksize", &block)], data.clone());
        prop_assert_eq!(download(&mut t), data);
    }

    /// Garbage from the client mid-transfer is ignored; the transfer goes on.
    #[test]
    fn garbage_mid_transfer_is_ignored(junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
        let data = file(3000);
        let mut t = start(&[], data.clone());
        let first = sent(&mut t);
        for j in &junk {
            t.handle_datagram(T0, j);
        }
        if t.status() == Status::Running {
            let Ok(Packet::Data { block, .. }) = Packet::decode(&first) else { panic!() };
            t.handle_datagram(T0, &wire::encode_ack(block));
            let rest = download(&mut t);
            prop_assert_eq!(&rest[..], &data[512..]);
        } else {
            prop_assert_eq!(t.status(), Status::Failed(TftpResult::AbortedByClient));
        }
    }
}
