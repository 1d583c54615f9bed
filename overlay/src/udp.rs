//! The real UDP driver: runs sans-io instances on real sockets.
//!
//! - [`bind`]: a non-blocking UDP socket made with `socket2` (buffer sizes
//!   set) and handed to tokio.
//! - [`spawn`]: one task per instance on the current `LocalSet`; the task
//!   owns the socket, the envelope sealer/opener and the instance (behind a
//!   [`Handle`] so the application can reach it), drains every readable
//!   datagram before flushing (batching), and sleeps until the instance's
//!   next deadline.
//! - [`monotonic_now`]: `CLOCK_MONOTONIC`, the time base handed to cores, so
//!   timestamps from several processes on one host compare directly.
//!
//! Datagrams that fail the envelope are counted by reason and dropped.
//!
//! Bounded resources under a flood: nothing is queued in user space (the
//! kernel's socket buffer, `SO_RCVBUF`, is the only receive queue, and what
//! overflows it is lost like any datagram); each wake-up reads at most
//! [`RECV_BATCH_MAX`] datagrams and then serves the instance's timer if it is
//! due, so a socket that never drains cannot starve hellos. Before the
//! envelope is opened, a datagram must pass, on its header alone and without
//! allocating: size, magic and version ([`crate::envelope::peek_header`]),
//! a sender id inside the cluster, a source address equal to that sender's
//! ([`DropReason::SourceMismatch`]), and the sender's token bucket
//! ([`PEER_DATAGRAMS_PER_S`], [`PEER_BURST_DATAGRAMS`];
//! [`DropReason::RateLimited`]). Per-peer state exists only for senders whose
//! address matched, so it is bounded by the cluster's size.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::envelope::{Boot, DropCounters, DropReason, Held, KeyRing, Opener, Sealer, peek_header};
use crate::record::NodeId;
use crate::rng::Rng;
use crate::strategy::{Instance, MAX_DATAGRAM_BYTES, Time, Transmit};
use std::collections::VecDeque;

/// Datagrams read in one wake-up before the instance's output is flushed.
pub const RECV_BATCH_MAX: usize = 64;
/// Sustained datagrams per second one peer may send an instance (far above
/// a protocol's needs: two hellos per interval plus bursts of updates).
pub const PEER_DATAGRAMS_PER_S: f64 = 4096.0;
/// Datagrams one peer may send at once above the sustained rate.
pub const PEER_BURST_DATAGRAMS: f64 = 4096.0;

/// Per-peer token buckets; a peer is only tracked once its datagram came
/// from its own address, so the table holds at most the cluster's size.
#[derive(Default)]
pub(crate) struct Limiter {
    buckets: rustc_hash::FxHashMap<NodeId, (f64, Time)>,
}

impl Limiter {
    /// Takes one token from `peer`'s bucket; false if it is empty.
    fn admit(&mut self, peer: NodeId, now: Time) -> bool {
        let (tokens, last) = self
            .buckets
            .entry(peer)
            .or_insert((PEER_BURST_DATAGRAMS, now));
        let refill = now.saturating_sub(*last).as_secs_f64() * PEER_DATAGRAMS_PER_S;
        *tokens = (*tokens + refill).min(PEER_BURST_DATAGRAMS);
        *last = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    /// The checks before an envelope that came over QUIC is opened (its
    /// connection already proved the sender's identity): header, sender id,
    /// rate limit. Allocates nothing but a bucket for a sender of the
    /// cluster.
    pub(crate) fn check_quic(&mut self, senders: usize, d: &[u8]) -> Result<(), DropReason> {
        let h = peek_header(d)?;
        if h.sender as usize >= senders {
            return Err(DropReason::UnknownSender);
        }
        if !self.admit(h.sender, monotonic_now()) {
            return Err(DropReason::RateLimited);
        }
        Ok(())
    }

    /// The checks before an envelope from `src` is opened: header, sender
    /// id, source address, rate limit. Allocates nothing but a bucket for
    /// a sender whose address matched.
    pub(crate) fn check(
        &mut self,
        addrs: &[SocketAddr],
        d: &[u8],
        src: SocketAddr,
    ) -> Result<(), DropReason> {
        let h = peek_header(d)?;
        let Some(&addr) = addrs.get(h.sender as usize) else {
            return Err(DropReason::UnknownSender);
        };
        if !same_source(addr, src) {
            return Err(DropReason::SourceMismatch);
        }
        if !self.admit(h.sender, monotonic_now()) {
            return Err(DropReason::RateLimited);
        }
        Ok(())
    }
}

/// Whether a datagram from `src` may come from the instance at `addr`: the
/// same address, where an IPv4-mapped IPv6 source (a dual-stack socket's
/// view of an IPv4 peer) counts as its IPv4 address. An instance whose
/// topology address is unspecified (`0.0.0.0`, `::`) cannot be checked, so
/// nothing matches it (a port alone proves nothing).
fn same_source(addr: SocketAddr, src: SocketAddr) -> bool {
    let plain = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (addr, src) = (plain(addr), plain(src));
    !addr.ip().is_unspecified() && addr == src
}

/// `CLOCK_MONOTONIC` as a duration since boot; shared by all processes.
pub fn monotonic_now() -> Time {
    let mut ts = (0, 0);
    clock::read(&mut ts);
    Duration::new(ts.0, ts.1)
}

mod clock {
    //! The one place that calls into libc for the clock.
    #![allow(unsafe_code)]

    /// Reads `CLOCK_MONOTONIC` into `(seconds, nanoseconds)`.
    pub fn read(out: &mut (u64, u32)) {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC
        // always exists on Linux; the call writes only into `ts`.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
        *out = (ts.tv_sec as u64, ts.tv_nsec as u32);
    }
}

/// A fresh envelope boot from the operating system's random source (what
/// every driver's `spawn` draws for its instance).
pub fn random_boot() -> io::Result<Boot> {
    let bits = getrandom::u64().map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Boot::from_random(bits))
}

/// [`random_boot`] for a driver's `spawn`, which cannot report an error.
///
/// # Panics
/// If the operating system has no random source (as `std`'s own hash maps
/// would).
pub(crate) fn spawn_boot() -> Boot {
    random_boot().expect("the operating system's random source")
}

/// Socket buffer sizes.
#[derive(Clone, Copy, Debug)]
pub struct Buffers {
    /// `SO_RCVBUF` in bytes.
    pub recv_bytes: usize,
    /// `SO_SNDBUF` in bytes.
    pub send_bytes: usize,
}

/// Binds a non-blocking UDP socket at `addr` for tokio.
pub fn bind(addr: SocketAddr, buffers: Buffers) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(buffers.recv_bytes)?;
    s.set_send_buffer_size(buffers.send_bytes)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// What every instance task of a process shares.
pub struct Shared {
    /// Address of every instance, by id.
    pub addrs: Vec<SocketAddr>,
    /// Name of every instance, by id (what its certificate names): the
    /// QUIC and dual drivers deliver an envelope from a connection only if
    /// the peer's certificate is valid for the envelope sender's name.
    pub names: Vec<String>,
    /// The cluster's keys.
    pub keys: KeyRing,
    /// Probability a received datagram is dropped on purpose (loss tests).
    pub loss: f64,
    /// Seeds the drivers' own randomness (the loss setting). The envelope
    /// no longer uses it: each instance's task draws its boot from the
    /// operating system ([`random_boot`]).
    pub epoch: u64,
}

impl Shared {
    /// What the instances of a cluster share: every instance's address and
    /// name from the flat topology; no simulated loss.
    pub fn from_flat(flat: &topo::Flat, keys: KeyRing) -> Shared {
        Shared {
            addrs: flat.instances.iter().map(|i| i.addr).collect(),
            names: flat.instances.iter().map(|i| i.name.clone()).collect(),
            keys,
            loss: 0.0,
            epoch: 0,
        }
    }
}

/// Counts a datagram dropped before its envelope was opened, in the
/// opener's counters and the instance's traffic.
pub(crate) fn count_drop<I>(h: &Handle<I>, opener: &mut Opener, reason: DropReason) {
    opener.drops.count(reason);
    h.traffic.borrow_mut().drops.count(reason);
}

/// Per-instance traffic counters of the UDP driver.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Largest datagram sent.
    pub tx_max_bytes: usize,
    /// Datagrams accepted.
    pub rx_datagrams: u64,
    /// Bytes of the datagrams accepted, envelope included.
    pub rx_bytes: u64,
    /// Datagrams dropped by the loss setting.
    pub rx_lost: u64,
    /// Send errors (e.g. a full buffer).
    pub tx_errors: u64,
    /// Envelope drops by reason.
    pub drops: DropCounters,
}

/// The application's way into a running instance (both drivers).
pub struct Handle<I> {
    pub(crate) inner: Rc<RefCell<I>>,
    pub(crate) traffic: Rc<RefCell<Traffic>>,
    pub(crate) wake: Rc<Notify>,
}

impl<I> Clone for Handle<I> {
    fn clone(&self) -> Self {
        Handle {
            inner: self.inner.clone(),
            traffic: self.traffic.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<I: Instance> Handle<I> {
    /// Wraps a new instance (used by the drivers).
    pub(crate) fn new(inst: I) -> Handle<I> {
        Handle {
            inner: Rc::new(RefCell::new(inst)),
            traffic: Rc::new(RefCell::new(Traffic::default())),
            wake: Rc::new(Notify::new()),
        }
    }

    /// Runs `f` on the instance now, then lets its task send and re-arm.
    pub fn with<R>(&self, f: impl FnOnce(&mut I, Time) -> R) -> R {
        let r = f(&mut self.inner.borrow_mut(), monotonic_now());
        self.wake.notify_one();
        r
    }

    /// Opens one received envelope and hands its frame to the instance,
    /// counting it (or the reason it was dropped); returns the
    /// authenticated sender of an accepted one. Every driver uses it.
    pub(crate) fn deliver(
        &self,
        opener: &mut Opener,
        rng: &mut Rng,
        shared: &Shared,
        d: &[u8],
    ) -> Option<crate::record::NodeId> {
        let mut t = self.traffic.borrow_mut();
        if rng.chance(shared.loss) {
            t.rx_lost += 1;
            return None;
        }
        match opener.open(&shared.keys, d) {
            Ok((o, frame)) => {
                t.rx_datagrams += 1;
                t.rx_bytes += d.len() as u64;
                drop(t);
                // A session datagram only teaches the envelope a boot.
                if !o.session {
                    self.inner
                        .borrow_mut()
                        .handle_frame(monotonic_now(), o.sender, frame);
                }
                Some(o.sender)
            }
            Err(_) => {
                t.drops = opener.drops.clone();
                None
            }
        }
    }

    /// Reads the instance without waking its task.
    pub fn peek<R>(&self, f: impl FnOnce(&I) -> R) -> R {
        f(&self.inner.borrow())
    }

    /// A copy of the instance's traffic counters.
    pub fn traffic(&self) -> Traffic {
        self.traffic.borrow().clone()
    }
}

/// After datagram `d` was opened (accepted from `from`, or dropped: a
/// session datagram from a boot seen first is dropped as unfresh yet
/// teaches the boot), queues again what was held for its sender.
pub(crate) fn release_after(
    held: &mut Held,
    retry: &mut VecDeque<Transmit>,
    opener: &Opener,
    from: Option<crate::record::NodeId>,
    d: &[u8],
) {
    let sender = from.or_else(|| peek_header(d).ok().map(|h| h.sender));
    if let Some(peer) = sender {
        release(held, retry, opener, peer);
    }
}

/// Queues again what was sent `peer` before its boot was known, now that
/// `opener` knows it (every driver calls this after an accepted datagram).
pub(crate) fn release(
    held: &mut Held,
    retry: &mut VecDeque<Transmit>,
    opener: &Opener,
    peer: crate::record::NodeId,
) {
    for frame in held.release(peer, opener) {
        retry.push_back(Transmit { to: peer, frame });
    }
}

/// Starts `inst` on `socket` in the current `LocalSet`, with a fresh
/// envelope boot.
///
/// # Panics
/// If the operating system has no random source ([`random_boot`]).
pub fn spawn<I: Instance + 'static>(inst: I, socket: UdpSocket, shared: Arc<Shared>) -> Handle<I> {
    let h = Handle::new(inst);
    let me = h.inner.borrow().id();
    let boot = spawn_boot();
    let task = Task {
        h: h.clone(),
        held: Held::default(),
        retry: VecDeque::new(),
        socket,
        sealer: Sealer::new(me, boot),
        opener: Opener::new(me, boot).with_senders(shared.addrs.len() as u32),
        rng: Rng::new(shared.epoch ^ h.inner.borrow().id() as u64),
        limiter: Limiter::default(),
        shared,
    };
    tokio::task::spawn_local(task.run());
    h
}

struct Task<I> {
    h: Handle<I>,
    /// Frames sent before the peer\'s boot was known, and those due again.
    held: Held,
    retry: VecDeque<Transmit>,
    socket: UdpSocket,
    sealer: Sealer,
    opener: Opener,
    rng: Rng,
    limiter: Limiter,
    shared: Arc<Shared>,
}

impl<I: Instance> Task<I> {
    async fn run(mut self) {
        let mut rx = vec![0u8; MAX_DATAGRAM_BYTES + 64];
        let mut tx = Vec::with_capacity(MAX_DATAGRAM_BYTES);
        // One timer, re-armed only when the deadline moves: cheaper than a
        // new timer-wheel entry per datagram.
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Time> = None;
        loop {
            self.flush(&mut tx).await;
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
                r = self.socket.recv_from(&mut rx) => {
                    if let Ok((n, src)) = r {
                        self.receive(&rx[..n], src);
                    }
                    for _ in 1..RECV_BATCH_MAX {
                        match self.socket.try_recv_from(&mut rx) {
                            Ok((n, src)) => self.receive(&rx[..n], src),
                            Err(_) => break,
                        }
                    }
                    // A socket that is always readable wins every biased
                    // select: serve a due timer here so hellos keep going.
                    if armed.is_some_and(|d| monotonic_now() >= d) {
                        armed = None;
                        self.h.inner.borrow_mut().handle_timeout(monotonic_now());
                    }
                }
                _ = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.h.inner.borrow_mut().handle_timeout(monotonic_now());
                }
                _ = self.h.wake.notified() => {}
            }
        }
    }

    fn receive(&mut self, d: &[u8], src: SocketAddr) {
        match self.limiter.check(&self.shared.addrs, d, src) {
            Ok(()) => {
                let from = self
                    .h
                    .deliver(&mut self.opener, &mut self.rng, &self.shared, d);
                release_after(&mut self.held, &mut self.retry, &self.opener, from, d);
                self.send_replies();
            }
            Err(reason) => count_drop(&self.h, &mut self.opener, reason),
        }
    }

    /// Sends the session datagrams the opener asks for (a full socket
    /// buffer drops them: the next datagram asks again).
    fn send_replies(&mut self) {
        let mut out = Vec::new();
        while let Some((peer, echo)) = self.opener.poll_reply() {
            let Some(&addr) = self.shared.addrs.get(peer as usize) else {
                continue;
            };
            if self
                .sealer
                .seal_session(&self.shared.keys, peer, echo, &mut out)
                .is_ok()
            {
                let _ = self.socket.try_send_to(&out, addr);
            }
        }
    }

    async fn flush(&mut self, tx: &mut Vec<u8>) {
        loop {
            let next = self.retry.pop_front();
            let Some(t) = next.or_else(|| self.h.inner.borrow_mut().poll_transmit()) else {
                return;
            };
            let Some(&addr) = self.shared.addrs.get(t.to as usize) else {
                continue;
            };
            let echo = self.opener.peer_boot(t.to);
            if echo.is_none() {
                self.held.hold(t.to, &t.frame);
            }
            if self
                .sealer
                .seal(&self.shared.keys, t.to, echo, &t.frame, tx)
                .is_err()
            {
                self.h.traffic.borrow_mut().tx_errors += 1;
                continue;
            }
            let sent = match self.socket.try_send_to(tx, addr) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.socket.send_to(tx, addr).await
                }
                r => r,
            };
            let mut c = self.h.traffic.borrow_mut();
            match sent {
                Ok(n) => {
                    c.tx_datagrams += 1;
                    c.tx_bytes += n as u64;
                    c.tx_max_bytes = c.tx_max_bytes.max(n);
                }
                Err(_) => c.tx_errors += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_over_its_rate_is_limited_then_refilled() {
        let mut l = Limiter::default();
        let t = Duration::from_secs(10);
        let burst = PEER_BURST_DATAGRAMS as usize;
        assert!((0..burst).all(|_| l.admit(3, t)));
        assert!(!l.admit(3, t));
        assert!(l.admit(4, t), "peers have their own buckets");
        assert!(l.admit(3, t + Duration::from_millis(10)));
    }

    #[test]
    fn sources_must_match_the_claimed_sender() {
        let a: SocketAddr = "127.0.0.2:7000".parse().unwrap();
        assert!(same_source(a, a));
        assert!(!same_source(a, "127.0.0.3:7000".parse().unwrap()));
    }

    #[test]
    fn same_source_matches_mapped_v4_and_not_an_unspecified_address() {
        let a: SocketAddr = "127.0.0.2:7000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.2]:7000".parse().unwrap();
        assert!(same_source(a, mapped), "a dual-stack socket's view of a");
        let other: SocketAddr = "[::ffff:127.0.0.3]:7000".parse().unwrap();
        assert!(!same_source(a, other));
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert!(same_source(v6, v6));
        // An unspecified topology address says nothing about where the
        // instance's datagrams come from: it is never matched by port alone.
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert!(!same_source(any, a));
        let any6: SocketAddr = "[::]:7000".parse().unwrap();
        assert!(!same_source(any6, a));
        assert!(!same_source(any, any));
    }

    #[test]
    fn garbage_is_rejected_before_opening() {
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(); 4];
        let me: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let other: SocketAddr = "127.0.0.9:1".parse().unwrap();
        let mut l = Limiter::default();
        let mut d = vec![0u8; 60];
        assert_eq!(l.check(&addrs, &d, me), Err(DropReason::BadMagic));
        d[..2].copy_from_slice(&crate::envelope::MAGIC);
        d[2] = crate::envelope::VERSION;
        d[4..8].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(l.check(&addrs, &d, me), Err(DropReason::UnknownSender));
        d[4..8].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(l.check(&addrs, &d, other), Err(DropReason::SourceMismatch));
        assert_eq!(l.check(&addrs, &d, me), Ok(()));
        assert_eq!(l.buckets.len(), 1, "only a matching sender has a bucket");
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_now();
        let b = monotonic_now();
        assert!(b >= a && a > Duration::ZERO);
    }
}
