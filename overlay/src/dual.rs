//! The dual driver: UDP datagrams first, QUIC where a link is configured
//! for it or where UDP stops working, and back to UDP when it works again.
//!
//! Each instance owns a UDP socket (as in [`crate::udp`]) and a QUIC
//! endpoint (as in [`crate::quic`], mutual TLS with the cluster CA) on its
//! own port. Both carry the same sealed envelopes, so the cores above see
//! one stream of frames whichever way they came. Per peer the driver keeps
//! a [`PathState`]:
//!
//! - a peer whose link the topology marks `transport: quic` is **pinned**
//!   to QUIC;
//! - otherwise frames go by UDP. When frames have been sent to a peer by
//!   UDP for a whole dead interval and no UDP datagram from it arrived in
//!   that time, the peer **falls back** to QUIC (a firewall that drops UDP,
//!   a path with a broken MTU, a lossy link);
//! - while fallen back, at most one frame per probe interval still goes by
//!   UDP; the first UDP datagram that arrives from the peer **returns** the
//!   path to UDP.
//!
//! QUIC also carries what does not fit a datagram: an envelope larger than
//! the path's datagram size goes on a unidirectional stream.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::envelope::{Held, Opener, Sealer};
use crate::quic::{INBOX_MAX, Inbound, Links};
use crate::record::NodeId;
use crate::rng::Rng;
use crate::strategy::{Instance, MAX_DATAGRAM_BYTES, Time, Transmit};
use crate::udp::{
    Datagrams, Handle, Limiter, Sealing, Shared, count_drop, for_each_received, monotonic_now,
    random_boot, release_after,
};
use std::collections::VecDeque;

/// How an instance chooses between UDP and QUIC per peer.
#[derive(Clone, Debug)]
pub struct PathPolicy {
    /// QUIC address of every instance, by id.
    pub quic_addrs: Vec<SocketAddr>,
    /// Peers whose link is configured `transport: quic`, by id.
    pub pinned: Vec<bool>,
    /// UDP silence (while sending) after which a peer falls back to QUIC.
    pub dead: Duration,
    /// While fallen back: least time between two frames tried by UDP.
    pub probe: Duration,
}

/// Which way frames to one peer go, and why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathMode {
    /// UDP datagrams.
    #[default]
    Udp,
    /// QUIC: the link is configured so.
    Pinned,
    /// QUIC: UDP went unanswered for a dead interval.
    Fallback,
}

/// One peer's path.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathState {
    /// The current mode.
    pub mode: PathMode,
    /// First UDP send since the last UDP datagram from the peer.
    unanswered_since: Option<Time>,
    /// Last frame tried by UDP while fallen back.
    last_probe: Option<Time>,
}

/// Counters of the dual driver (per instance).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathCounters {
    /// Frames sent by UDP.
    pub udp_tx: u64,
    /// Frames sent by QUIC.
    pub quic_tx: u64,
    /// Envelopes received by UDP.
    pub udp_rx: u64,
    /// Envelopes received by QUIC.
    pub quic_rx: u64,
    /// Peers that fell back to QUIC.
    pub fallbacks: u64,
    /// Peers that returned to UDP.
    pub returns: u64,
}

/// The decision logic, apart from the sockets (unit-tested).
#[derive(Debug)]
struct Paths {
    policy: PathPolicy,
    peers: HashMap<NodeId, PathState>,
    counters: PathCounters,
}

/// Where one frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Udp,
    Quic,
}

impl Paths {
    fn new(policy: PathPolicy) -> Paths {
        Paths {
            policy,
            peers: HashMap::default(),
            counters: PathCounters::default(),
        }
    }

    fn state(&mut self, peer: NodeId) -> &mut PathState {
        let pinned = self
            .policy
            .pinned
            .get(peer as usize)
            .copied()
            .unwrap_or(false);
        self.peers.entry(peer).or_insert_with(|| PathState {
            mode: if pinned {
                PathMode::Pinned
            } else {
                PathMode::Udp
            },
            ..PathState::default()
        })
    }

    /// Chooses the way of a frame to `peer` sent at `now`.
    fn route(&mut self, now: Time, peer: NodeId) -> Way {
        let (dead, probe) = (self.policy.dead, self.policy.probe);
        let st = self.state(peer);
        let way = match st.mode {
            PathMode::Pinned => Way::Quic,
            PathMode::Udp => {
                let since = *st.unanswered_since.get_or_insert(now);
                if now.saturating_sub(since) >= dead {
                    st.mode = PathMode::Fallback;
                    st.last_probe = Some(now);
                    self.counters.fallbacks += 1;
                    Way::Quic
                } else {
                    Way::Udp
                }
            }
            PathMode::Fallback => {
                if st.last_probe.is_none_or(|t| now.saturating_sub(t) >= probe) {
                    st.last_probe = Some(now);
                    Way::Udp
                } else {
                    Way::Quic
                }
            }
        };
        match way {
            Way::Udp => self.counters.udp_tx += 1,
            Way::Quic => self.counters.quic_tx += 1,
        }
        way
    }

    /// An authenticated UDP datagram from `peer` arrived.
    fn heard_udp(&mut self, peer: NodeId) {
        self.counters.udp_rx += 1;
        let st = self.state(peer);
        st.unanswered_since = None;
        if st.mode == PathMode::Fallback {
            st.mode = PathMode::Udp;
            st.last_probe = None;
            self.counters.returns += 1;
        }
    }
}

/// Starts `inst` with `socket` and `ep` in the current `LocalSet`, with a
/// fresh envelope boot. Returns the application's handle and a view of the
/// path counters.
///
/// # Errors
/// If the operating system has no random source
/// ([`crate::udp::random_boot`]), or if the socket cannot be moved to the
/// driver's own registration with the runtime (as [`crate::udp::spawn`]).
pub fn spawn<I: Instance + 'static>(
    inst: I,
    socket: UdpSocket,
    ep: quinn::Endpoint,
    shared: Arc<Shared>,
    policy: PathPolicy,
) -> std::io::Result<(Handle<I>, DualView)> {
    let socket = Datagrams::new(socket)?;
    let boot = random_boot()?;
    let h = Handle::new(inst);
    let me = h.inner.borrow().id();
    let (inbox_tx, inbox) = mpsc::channel(INBOX_MAX);
    let view = DualView {
        paths: Rc::new(RefCell::new(Paths::new(policy))),
    };
    let task = Task {
        h: h.clone(),
        held: Held::default(),
        retry: VecDeque::new(),
        socket,
        links: Links::new(ep, inbox_tx, shared.clone()),
        inbox,
        sealer: Sealer::new(me, boot),
        opener: Opener::new(me, boot).with_senders(shared.addrs.len() as u32),
        rng: Rng::new(shared.epoch ^ u64::from(me) ^ 0xd0a1),
        shared,
        paths: view.paths.clone(),
        limiter: Limiter::default(),
    };
    tokio::task::spawn_local(task.run());
    Ok((h, view))
}

/// The application's read-only view of an instance's paths (shares the
/// task's state: nothing is copied per wake-up).
#[derive(Clone, Debug)]
pub struct DualView {
    paths: Rc<RefCell<Paths>>,
}

impl DualView {
    /// The counters so far.
    pub fn counters(&self) -> PathCounters {
        self.paths.borrow().counters.clone()
    }

    /// The mode of the path to `peer` (UDP until a frame went to it).
    pub fn mode(&self, peer: NodeId) -> PathMode {
        self.paths
            .borrow()
            .peers
            .get(&peer)
            .map_or(PathMode::Udp, |s| s.mode)
    }
}

struct Task<I> {
    h: Handle<I>,
    /// Frames sent before the peer\'s boot was known, and those due again.
    held: Held,
    retry: VecDeque<Transmit>,
    socket: Datagrams,
    links: Links,
    inbox: mpsc::Receiver<Inbound>,
    sealer: Sealer,
    opener: Opener,
    rng: Rng,
    shared: Arc<Shared>,
    paths: Rc<RefCell<Paths>>,
    limiter: Limiter,
}

impl<I: Instance> Task<I> {
    async fn run(mut self) {
        let mut tx = Vec::with_capacity(MAX_DATAGRAM_BYTES);
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Time> = None;
        loop {
            self.flush(&mut tx);
            let deadline = self.h.inner.borrow_mut().poll_timeout();
            if deadline != armed {
                armed = deadline;
                if let Some(d) = deadline {
                    let wait = d.saturating_sub(monotonic_now());
                    sleep.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            tokio::select! {
                biased;
                n = self.socket.recv_batch() => {
                    for_each_received(n, |d, src| self.receive_udp(d, src));
                    // As in the UDP driver: a socket that is always
                    // readable must not starve the instance's timer.
                    if armed.is_some_and(|d| monotonic_now() >= d) {
                        armed = None;
                        self.h.inner.borrow_mut().handle_timeout(monotonic_now());
                    }
                }
                Some(inbound) = self.inbox.recv() => self.receive_quic(&inbound),
                Some((peer, conn)) = self.links.done.recv() => {
                    let lost = self.links.connected(peer, conn);
                    self.h.traffic.borrow_mut().tx_errors += lost;
                }
                _ = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.h.inner.borrow_mut().handle_timeout(monotonic_now());
                }
                _ = self.h.wake.notified() => {}
            }
        }
    }

    /// The QUIC driver's checks (the connection's identity and the
    /// stream's length, made where it was read; sender id and rate here)
    /// before opening. One bucket per peer serves both ways.
    fn receive_quic(&mut self, inbound: &Inbound) {
        let d = &inbound.data[..];
        let checked = inbound
            .verdict
            .and_then(|()| self.limiter.check_quic(self.shared.addrs.len(), d));
        if let Err(reason) = checked {
            count_drop(&self.h, &mut self.opener, reason);
            return;
        }
        let from = self
            .h
            .deliver(&mut self.opener, &mut self.rng, &self.shared, d);
        if from.is_some() {
            self.paths.borrow_mut().counters.quic_rx += 1;
        }
        release_after(&mut self.held, &mut self.retry, &self.opener, from, d);
        self.send_replies(Way::Quic);
    }

    /// The UDP driver's checks (header, sender id, source address, rate)
    /// before opening; an accepted envelope marks UDP alive for its sender.
    fn receive_udp(&mut self, d: &[u8], src: SocketAddr) {
        if let Err(reason) = self.limiter.check(&self.shared.addrs, d, src) {
            count_drop(&self.h, &mut self.opener, reason);
            return;
        }
        let from = self
            .h
            .deliver(&mut self.opener, &mut self.rng, &self.shared, d);
        if let Some(from) = from {
            self.paths.borrow_mut().heard_udp(from);
        }
        release_after(&mut self.held, &mut self.retry, &self.opener, from, d);
        self.send_replies(Way::Udp);
    }

    /// Sends the session datagrams the opener asks for, the way the
    /// datagram that asked came.
    fn send_replies(&mut self, way: Way) {
        let mut out = Vec::new();
        while let Some((peer, echo)) = self.opener.poll_reply() {
            if self
                .sealer
                .seal_session(&self.shared.keys, peer, echo, &mut out)
                .is_ok()
            {
                let _ = self.send_way(way, peer, &out);
            }
        }
    }

    /// Sends one sealed envelope to `to` by `way`; false if it was dropped.
    fn send_way(&mut self, way: Way, to: NodeId, d: &[u8]) -> bool {
        let (Some(&udp), Some(quic)) = (
            self.shared.addrs.get(to as usize),
            self.paths
                .borrow()
                .policy
                .quic_addrs
                .get(to as usize)
                .copied(),
        ) else {
            return false;
        };
        match way {
            // A full socket buffer drops the datagram, as the network
            // might; the protocols above re-send.
            Way::Udp => self.socket.try_send_to(d, udp).is_ok(),
            Way::Quic => self.links.send(to, quic, Bytes::copy_from_slice(d)),
        }
    }

    fn flush(&mut self, tx: &mut Vec<u8>) {
        loop {
            let next = self.retry.pop_front();
            let Some(t) = next.or_else(|| self.h.inner.borrow_mut().poll_transmit()) else {
                return;
            };
            let mut sealing = Sealing {
                opener: &self.opener,
                held: &mut self.held,
                sealer: &mut self.sealer,
                keys: &self.shared.keys,
                traffic: &self.h.traffic,
            };
            if !sealing.seal(&t, tx) {
                continue;
            }
            let way = self.paths.borrow_mut().route(monotonic_now(), t.to);
            let ok = self.send_way(way, t.to, tx);
            let mut c = self.h.traffic.borrow_mut();
            if ok {
                c.tx_datagrams += 1;
                c.tx_bytes += tx.len() as u64;
                c.tx_max_bytes = c.tx_max_bytes.max(tx.len());
            } else {
                c.tx_errors += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
