//! The path decisions alone, then two instances on loopback whose UDP
//! runs through a relay the test can cut: they fall back to QUIC, keep
//! talking, and return to UDP when the relay forwards again.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::envelope::{ClusterKey, KeyRing};
use crate::quic::{Ca, endpoint};
use crate::strategy::Transmit;
use crate::udp::{Buffers, bind};
use proto::overlay::{Frame, Hello, frame};

fn ms(n: u64) -> Time {
    Duration::from_millis(n)
}

fn policy(pinned: Vec<bool>) -> PathPolicy {
    PathPolicy {
        quic_addrs: vec![],
        pinned,
        dead: ms(400),
        probe: ms(100),
    }
}

#[test]
fn udp_until_a_dead_interval_of_silence_then_quic_with_probes() {
    let mut p = Paths::new(policy(vec![false, false]));
    assert_eq!(p.route(ms(0), 1), Way::Udp);
    assert_eq!(p.route(ms(200), 1), Way::Udp);
    p.heard_udp(1);
    // Heard: the silence starts again from the next send.
    assert_eq!(p.route(ms(300), 1), Way::Udp);
    assert_eq!(p.route(ms(650), 1), Way::Udp);
    assert_eq!(p.route(ms(700), 1), Way::Quic, "400 ms unanswered");
    assert_eq!(p.counters.fallbacks, 1);
    assert_eq!(p.route(ms(750), 1), Way::Quic);
    assert_eq!(p.route(ms(800), 1), Way::Udp, "a probe per 100 ms");
    assert_eq!(p.route(ms(820), 1), Way::Quic);
    p.heard_udp(1);
    assert_eq!(p.counters.returns, 1);
    assert_eq!(p.route(ms(830), 1), Way::Udp);
}

#[test]
fn a_pinned_link_always_uses_quic() {
    let mut p = Paths::new(policy(vec![false, true]));
    for t in 0..10 {
        assert_eq!(p.route(ms(t * 500), 1), Way::Quic);
    }
    p.heard_udp(1);
    assert_eq!(p.route(ms(6000), 1), Way::Quic);
    assert_eq!(p.counters.fallbacks, 0);
}

/// Sends a hello to the other node every 20 ms and counts what arrives.
struct Ping {
    id: NodeId,
    next: Time,
    out: Option<Transmit>,
    got: usize,
}

impl Instance for Ping {
    fn id(&self) -> NodeId {
        self.id
    }
    fn handle_frame(&mut self, _now: Time, _from: NodeId, _f: Frame) {
        self.got += 1;
    }
    fn handle_timeout(&mut self, now: Time) {
        if now >= self.next {
            let frame = Frame {
                body: Some(frame::Body::Hello(Hello::default())),
            };
            self.out = Some(Transmit {
                to: 1 - self.id,
                frame,
            });
            self.next = now + ms(20);
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.take()
    }
    fn poll_timeout(&mut self) -> Option<Time> {
        Some(self.next)
    }
}

/// Forwards datagrams between the two nodes' UDP sockets while `open` is
/// set. Both nodes know the relay as the other's address, so what it
/// forwards passes the source-address check.
async fn relay(listen: UdpSocket, nodes: [SocketAddr; 2], open: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 2048];
    while let Ok((n, src)) = listen.recv_from(&mut buf).await {
        let to = if src == nodes[0] { nodes[1] } else { nodes[0] };
        if open.load(Ordering::Relaxed) {
            let _ = listen.send_to(&buf[..n], to).await;
        }
    }
}

const BUFFERS: Buffers = Buffers {
    recv_bytes: 1 << 20,
    send_bytes: 1 << 20,
};

fn free_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

#[test]
fn a_cut_udp_path_falls_back_to_quic_and_returns() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let udp = [free_addr(), free_addr()];
        let r = free_addr();
        let quic = vec![free_addr(), free_addr()];
        let open = Arc::new(AtomicBool::new(true));
        let s = bind(r, BUFFERS).unwrap();
        tokio::task::spawn_local(relay(s, udp, open.clone()));
        // Every node reaches the other's UDP through the relay.
        let shared = Arc::new(Shared {
            addrs: vec![r, r],
            names: vec!["n0".into(), "n1".into()],
            keys: KeyRing::single(1, &ClusterKey::from_seed(5)),
            loss: 0.0,
            epoch: 1,
        });
        let ca = Ca::generate("dual").unwrap();
        let pol = PathPolicy {
            quic_addrs: quic.clone(),
            pinned: vec![false, false],
            dead: ms(300),
            probe: ms(100),
        };
        let mut nodes = Vec::new();
        for i in 0..2u32 {
            let ep = endpoint(
                quic[i as usize],
                ca.cert(),
                &ca.issue(&format!("n{i}")).unwrap(),
                BUFFERS,
            )
            .unwrap();
            let sock = bind(udp[i as usize], BUFFERS).unwrap();
            let ping = Ping {
                id: i,
                next: monotonic_now(),
                out: None,
                got: 0,
            };
            nodes.push(spawn(ping, sock, ep, shared.clone(), pol.clone()).unwrap());
        }
        let got = |n: &(Handle<Ping>, DualView)| n.0.peek(|p| p.got);

        tokio::time::sleep(ms(500)).await;
        let c = nodes[0].1.counters();
        assert!(c.udp_rx >= 10 && c.quic_tx == 0, "UDP first: {c:?}");
        assert_eq!(nodes[0].1.mode(1), PathMode::Udp);

        open.store(false, Ordering::Relaxed);
        tokio::time::sleep(ms(1200)).await;
        assert_eq!(nodes[0].1.mode(1), PathMode::Fallback);
        assert_eq!(nodes[1].1.mode(0), PathMode::Fallback);
        let before = got(&nodes[0]);
        tokio::time::sleep(ms(500)).await;
        assert!(
            got(&nodes[0]) >= before + 10,
            "frames keep arriving over QUIC: {:?}",
            nodes[0].1.counters()
        );
        assert!(nodes[0].1.counters().quic_rx >= 10);

        open.store(true, Ordering::Relaxed);
        tokio::time::sleep(ms(600)).await;
        assert_eq!(
            nodes[0].1.mode(1),
            PathMode::Udp,
            "{:?}",
            nodes[0].1.counters()
        );
        assert_eq!(nodes[1].1.mode(0), PathMode::Udp);
        let c = nodes[0].1.counters();
        assert_eq!((c.fallbacks, c.returns), (1, 1), "{c:?}");
    });
}

/// Issue 12, finding 9, on the dual driver's QUIC path: an envelope whose
/// sender is not the instance its connection's certificate names is
/// dropped and counted, and a correct one is delivered.
#[test]
fn quic_envelopes_must_come_from_their_certificates_instance() {
    let run = |cert1: &str| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let udp = [free_addr(), free_addr()];
            let quic = vec![free_addr(), free_addr()];
            let shared = Arc::new(Shared {
                addrs: udp.to_vec(),
                names: vec!["n0".into(), "n1".into()],
                keys: KeyRing::single(1, &ClusterKey::from_seed(5)),
                loss: 0.0,
                epoch: 1,
            });
            let ca = Ca::generate("dual").unwrap();
            let pol = PathPolicy {
                quic_addrs: quic.clone(),
                pinned: vec![true, true],
                dead: ms(300),
                probe: ms(100),
            };
            let mut nodes = Vec::new();
            for (i, name) in [(0u32, "n0"), (1, cert1)] {
                let id = ca.issue(name).unwrap();
                let ep = endpoint(quic[i as usize], ca.cert(), &id, BUFFERS).unwrap();
                let sock = bind(udp[i as usize], BUFFERS).unwrap();
                let ping = Ping {
                    id: i,
                    next: monotonic_now(),
                    out: None,
                    got: 0,
                };
                nodes.push(spawn(ping, sock, ep, shared.clone(), pol.clone()).unwrap());
            }
            tokio::time::sleep(ms(700)).await;
            let h0 = &nodes[0].0;
            (h0.peek(|p| p.got), h0.traffic().drops)
        })
    };
    let (got, drops) = run("n0");
    assert_eq!(got, 0, "node 1 holds node 0's certificate");
    assert!(
        drops.get(crate::envelope::DropReason::IdentityMismatch) >= 1,
        "{drops:?}"
    );
    let (got, _) = run("n1");
    assert!(got >= 10, "its own certificate: {got}");
}
