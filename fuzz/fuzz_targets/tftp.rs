//! Fuzz target: the TFTP codec, request acceptance and a transfer
//! (`layercake/src/modules/pxe/tftp_packet.rs`, `tftp.rs` and `files.rs`,
//! included by path). Must never panic. The input is tried as a packet
//! and as a request on the listening port (a started transfer is driven
//! to its end by a well-behaved client, with the input injected as noise
//! each step); then it is cut into length-prefixed client datagrams fed
//! to a running transfer, an empty one standing for a timeout. Every
//! transfer must end within a bounded number of steps.
#![no_main]

#[path = "../../layercake/src/modules/pxe/files.rs"]
#[allow(dead_code)]
mod files;

#[path = "../../layercake/src/modules/pxe/tftp_packet.rs"]
#[allow(dead_code)]
mod tftp_packet;

#[path = "../../layercake/src/modules/pxe/tftp.rs"]
#[allow(dead_code)]
mod tftp;

/// What the included modules call `super::Time`.
type Time = std::time::Duration;

use std::net::{Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use tftp::{Accept, Status, TftpLimits, TftpServer, Transfer};
use tftp_packet::Packet;

const FILE_BYTES: usize = 3000;
const STEPS_MAX: u32 = 20_000;

fn peer() -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(10, 0, 0, 11).into(), 2070)
}

/// Serves `ipxe.efi` and `undionly.kpxe` from memory, with the real checks.
fn open(name: &str, max: u64) -> Result<(Vec<u8>, u64), files::FileError> {
    let path = files::check_path(name)?;
    if path != std::path::Path::new("ipxe.efi") && path != std::path::Path::new("undionly.kpxe") {
        return Err(files::FileError::NotFound);
    }
    let data: Vec<u8> = (0..FILE_BYTES).map(|i| i as u8).collect();
    if data.len() as u64 > max {
        return Err(files::FileError::TooLarge(data.len() as u64));
    }
    Ok((data, FILE_BYTES as u64))
}

/// A client that acknowledges whatever arrives, plus `noise` each step.
fn drive(t: &mut Transfer<Vec<u8>>, noise: &[u8]) {
    let mut now = Time::ZERO;
    for _ in 0..STEPS_MAX {
        let mut ack = None;
        while let Some(tx) = t.poll_transmit() {
            ack = match Packet::decode(tx.bytes) {
                Ok(Packet::Oack(_)) => Some(0),
                Ok(Packet::Data { block, .. }) => Some(block),
                Ok(Packet::Error { .. }) => None,
                other => panic!("a transfer sent {other:?}"),
            };
        }
        if t.status() != Status::Running {
            return;
        }
        t.handle_datagram(now, noise);
        match ack {
            Some(block) => t.handle_datagram(now, &tftp_packet::encode_ack(block)),
            None => {
                now = t.poll_timeout().expect("a running transfer has a deadline");
                t.handle_timeout(now);
            }
        }
    }
    panic!("transfer still running after {STEPS_MAX} steps");
}

fuzz_target!(|data: &[u8]| {
    let _ = Packet::decode(data);
    let server = TftpServer::new(TftpLimits::default());
    if let Accept::Start(mut t) = server.accept(Time::ZERO, data, peer(), open) {
        drive(&mut t, data);
    }
    let rrq = tftp_packet::encode_rrq("ipxe.efi", "octet", &[("blksize", "512")]);
    let Accept::Start(mut t) = server.accept(Time::ZERO, &rrq, peer(), open) else {
        panic!("the fixed request is accepted");
    };
    let mut rest = data;
    let mut now = Time::ZERO;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        rest = tail;
        while t.poll_transmit().is_some() {}
        if datagram.is_empty() {
            now = t.poll_timeout().unwrap_or(now);
            t.handle_timeout(now);
        } else {
            t.handle_datagram(now, datagram);
        }
    }
});
