//! Instances in pools on real loopback sockets: periodic output on each
//! member's deadline, a burst woken by the application that spans several
//! send and receive batches, hellos that keep going while one member's
//! socket is flooded with garbage, and deadlines and datagrams served
//! while hundreds of members are always due.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::overlay::{Frame, Hello, frame};

use super::spawn_pool;
use crate::envelope::{ClusterKey, KeyRing};
use crate::record::NodeId;
use crate::strategy::{Instance, Time, Transmit};
use crate::udp::{Buffers, Handle, SEND_BATCH_MAX, Shared, bind};

/// Says hello to `peer` every `every` (if set), sends what the test
/// queues, and counts what arrives by sender; with `always_due`, its
/// deadline is the clock's origin (due at every pass, doing nothing).
struct Chat {
    id: NodeId,
    peer: NodeId,
    every: Option<Duration>,
    always_due: bool,
    next: Time,
    out: VecDeque<Transmit>,
    got: Vec<usize>,
}

fn hello(to: NodeId) -> Transmit {
    Transmit {
        to,
        frame: Frame {
            body: Some(frame::Body::Hello(Hello::default())),
        },
    }
}

impl Instance for Chat {
    fn id(&self) -> NodeId {
        self.id
    }
    fn handle_frame(&mut self, _now: Time, from: NodeId, _f: Frame) {
        if let Some(n) = self.got.get_mut(from as usize) {
            *n += 1;
        }
    }
    fn handle_timeout(&mut self, now: Time) {
        if let Some(every) = self.every
            && now >= self.next
        {
            self.out.push_back(hello(self.peer));
            self.next = now + every;
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
    fn poll_timeout(&mut self) -> Option<Time> {
        if self.always_due {
            return Some(Duration::ZERO);
        }
        self.every.map(|_| self.next)
    }
}

const BUFFERS: Buffers = Buffers {
    recv_bytes: 4 << 20,
    send_bytes: 4 << 20,
};

/// `n` sockets on loopback and what the cluster shares.
fn cluster(n: usize) -> (Vec<tokio::net::UdpSocket>, Arc<Shared>) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let socks: Vec<_> = (0..n).map(|_| bind(any, BUFFERS).unwrap()).collect();
    let shared = Arc::new(Shared {
        addrs: socks.iter().map(|s| s.local_addr().unwrap()).collect(),
        names: (0..n).map(|i| format!("n{i}")).collect(),
        keys: KeyRing::single(1, &ClusterKey::from_seed(9)),
        loss: 0.0,
        epoch: 3,
    });
    (socks, shared)
}

fn chat(id: usize, n: usize, every: Option<Duration>) -> Chat {
    Chat {
        id: id as NodeId,
        peer: ((id + 1) % n) as NodeId,
        every,
        always_due: false,
        next: Duration::ZERO,
        out: VecDeque::new(),
        got: vec![0; n],
    }
}

fn local<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// Waits until `cond` holds on the handles (at most 10 s).
async fn until(hs: &[Handle<Chat>], cond: impl Fn(&[Handle<Chat>]) -> bool) -> bool {
    for _ in 0..1000 {
        if cond(hs) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[test]
fn members_of_two_pools_talk_on_their_deadlines() {
    local(async {
        let n = 40;
        let (socks, shared) = cluster(n);
        let mut members: Vec<_> = socks
            .into_iter()
            .enumerate()
            .map(|(i, s)| (chat(i, n, Some(Duration::from_millis(10))), s))
            .collect();
        // Half in one pool, half in another: a ring across both.
        let second = members.split_off(n / 2);
        let mut hs = spawn_pool(members, shared.clone()).unwrap();
        hs.extend(spawn_pool(second, shared).unwrap());
        let every_one_heard = until(&hs, |hs| {
            hs.iter().enumerate().all(|(i, h)| {
                let from = (i + n - 1) % n;
                h.peek(|c| c.got[from] >= 5)
            })
        })
        .await;
        assert!(every_one_heard, "each member hears its ring neighbour");
        let t = hs[0].traffic();
        assert!(t.tx_datagrams >= 5 && t.rx_datagrams >= 5, "{t:?}");
        assert_eq!(t.tx_errors, 0);
    });
}

#[test]
fn a_woken_burst_crosses_several_batches_and_arrives_whole() {
    local(async {
        let n = 3;
        let (socks, shared) = cluster(n);
        let members: Vec<_> = socks
            .into_iter()
            .enumerate()
            // Slow hellos: the session handshake, then only the burst.
            .map(|(i, s)| (chat(i, n, Some(Duration::from_millis(50))), s))
            .collect();
        let hs = spawn_pool(members, shared).unwrap();
        // Boots are learnt from the first hellos; then a burst to 1.
        assert!(until(&hs, |hs| hs[1].peek(|c| c.got[0] >= 2)).await);
        let before = hs[1].peek(|c| c.got[0]);
        let burst = 5 * SEND_BATCH_MAX + 7;
        hs[0].with(|c, _| {
            for _ in 0..burst {
                c.out.push_back(hello(1));
            }
        });
        let whole = until(&hs, |hs| hs[1].peek(|c| c.got[0]) >= before + burst).await;
        assert!(
            whole,
            "got {} of {burst}",
            hs[1].peek(|c| c.got[0]) - before
        );
        assert_eq!(hs[0].traffic().tx_errors, 0);
    });
}

#[test]
fn a_flooded_member_keeps_its_hellos_going() {
    local(async {
        let n = 2;
        let (socks, shared) = cluster(n);
        let target = shared.addrs[0];
        let members: Vec<_> = socks
            .into_iter()
            .enumerate()
            .map(|(i, s)| (chat(i, n, Some(Duration::from_millis(10))), s))
            .collect();
        let hs = spawn_pool(members, shared).unwrap();
        assert!(until(&hs, |hs| hs[1].peek(|c| c.got[0]) >= 2).await);
        // A thread sends garbage to member 0 as fast as it can.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let junk = [0xAB; 200];
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.send_to(&junk, target).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        };
        let start = hs[1].peek(|c| c.got[0]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = hs[1].peek(|c| c.got[0]) - start;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = flood.join().unwrap();
        let dropped = hs[0].traffic().drops.total();
        assert!(sent > 1000 && dropped > 0, "sent {sent}, dropped {dropped}");
        // 50 hellos are due in 500 ms; allow for a slow machine.
        assert!(
            during >= 10,
            "member 0 sent {during} hellos under the flood"
        );
    });
}

#[test]
fn members_always_due_starve_neither_deadlines_nor_datagrams() {
    local(async {
        // Members 0 and 1 talk; 300 others are due at every pass, far
        // more than a pass's share of deadlines.
        let n = 302;
        let (socks, shared) = cluster(n);
        let members: Vec<_> = socks
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let mut c = chat(i, 2, Some(Duration::from_millis(10)));
                if i >= 2 {
                    c.every = None;
                    c.always_due = true;
                }
                (c, s)
            })
            .collect();
        let hs = spawn_pool(members, shared).unwrap();
        let both = until(&hs, |hs| {
            hs[0].peek(|c| c.got[1] >= 5) && hs[1].peek(|c| c.got[0] >= 5)
        })
        .await;
        let heard = (hs[0].peek(|c| c.got[1]), hs[1].peek(|c| c.got[0]));
        assert!(both, "heard {heard:?}");
    });
}
