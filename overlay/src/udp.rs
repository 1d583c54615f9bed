//! The real UDP driver: runs sans-io instances on real sockets.
//!
//! - [`bind`]: a non-blocking UDP socket made with `socket2` (buffer sizes
//!   set) and handed to tokio.
//! - [`spawn`]: one task per instance on the current `LocalSet`; the task
//!   owns the socket, the envelope sealer/opener and the instance (behind a
//!   [`Handle`] so the application can reach it), drains every readable
//!   datagram before flushing (batching), and sleeps until the instance's
//!   next deadline.
//! - [`spawn_pool`] (`pool`): one task over many instances, each on its
//!   own socket, served from the pool's own `epoll` set and deadline heap
//!   (a host of thousands of instances: the loadtest workers). Both wait
//!   differently but run an instance the same way, [`Member`]'s.
//! - [`monotonic_now`]: `CLOCK_MONOTONIC`, the time base handed to cores, so
//!   timestamps from several processes on one host compare directly.
//!
//! System calls per datagram (issue 14): a wake-up reads with one
//! `recvmmsg(2)` up to [`RECV_BATCH_MAX`] datagrams into one batch of
//! buffers per thread (the instances of a process share it: only one runs
//! at a time), and a short batch tells the runtime the socket is drained, so
//! a lone datagram costs one receive call, not a second one that fails with
//! `EAGAIN`. An instance's output of more than one datagram (a parent's
//! hellos of one grid slot, a roll-out's updates to a rack) is sealed into
//! the thread's send batch and leaves with one `sendmmsg(2)` per
//! [`SEND_BATCH_MAX`]. Sockets bound to a loopback address ask for the
//! don't-fragment bit ([`bind`]).
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

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

use crate::envelope::{Boot, DropCounters, DropReason, Held, KeyRing, Opener, Sealer, peek_header};
use crate::record::NodeId;
use crate::rng::Rng;
use crate::strategy::{Instance, Time, Transmit};
use std::collections::VecDeque;

mod pool;
pub use pool::{TURNS_PER_POLL, spawn_pool};

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

mod sys {
    //! The one place that calls into libc for sockets: `recvmmsg(2)` into a
    //! batch of buffers, `sendmmsg(2)` of a batch of sealed datagrams, the
    //! don't-fragment option, and the runtime
    //! registration of a socket the driver owns.
    #![allow(unsafe_code)]

    use std::io;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use tokio::io::unix::AsyncFd;

    use crate::strategy::MAX_DATAGRAM_BYTES;

    /// Bytes of one receive slot: a longer datagram is truncated to this
    /// and rejected as oversized by the envelope's first check.
    pub const SLOT_BYTES: usize = MAX_DATAGRAM_BYTES + 64;

    /// Registers `socket` with the current runtime, for reading only: a
    /// socket registered for writing too gets a writable edge from the
    /// kernel each time a datagram it sent leaves its buffer, that is one
    /// more `epoll` event and runtime wake-up per datagram sent, for a
    /// readiness nothing waits on (a full buffer is retried on a timer,
    /// [`super::Datagrams::send_to`]).
    ///
    /// Also how a pool registers its own `epoll` set
    /// ([`super::spawn_pool`]): readable when one of its sockets is.
    pub fn register<T: Owns>(socket: T) -> io::Result<AsyncFd<T>> {
        // SAFETY: `T` owns its descriptor (the trait's contract), and the
        // `AsyncFd` owns `T` until it is dropped: the descriptor stays
        // open and the same for the registration's whole life.
        unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)
    }

    /// A value that owns the descriptor it returns and closes it only
    /// when dropped.
    pub trait Owns: AsRawFd {}
    impl Owns for std::net::UdpSocket {}
    impl Owns for mio::Poll {}

    /// Sets `IP_MTU_DISCOVER` to `IP_PMTUDISC_PROBE` on an IPv4 socket.
    pub fn set_dont_fragment(s: &socket2::Socket) -> io::Result<()> {
        let v: libc::c_int = libc::IP_PMTUDISC_PROBE;
        // SAFETY: `v` lives across the call and its size is passed; the
        // call only reads it.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Buffers, addresses and headers for one `recvmmsg(2)`.
    pub struct RecvBatch {
        data: Vec<u8>,
        names: Vec<libc::sockaddr_storage>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
        /// Per slot of the last call: length and source.
        got: Vec<(usize, Option<SocketAddr>)>,
    }

    impl RecvBatch {
        /// Room for `slots` datagrams.
        pub fn new(slots: usize) -> RecvBatch {
            RecvBatch {
                data: vec![0; slots * SLOT_BYTES],
                // SAFETY: all-zero is a valid `sockaddr_storage` and
                // `mmsghdr` (null pointers, zero lengths).
                names: (0..slots).map(|_| unsafe { std::mem::zeroed() }).collect(),
                iovs: (0..slots)
                    .map(|_| libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    })
                    .collect(),
                // SAFETY: as above.
                hdrs: (0..slots).map(|_| unsafe { std::mem::zeroed() }).collect(),
                got: Vec::with_capacity(slots),
            }
        }

        /// Datagrams read by the last [`RecvBatch::recv`].
        pub fn len(&self) -> usize {
            self.got.len()
        }

        /// Datagram `i` of the last call and its source.
        pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
            let (len, src) = self.got[i];
            let start = i * SLOT_BYTES;
            (&self.data[start..start + len.min(SLOT_BYTES)], src)
        }

        /// One non-blocking `recvmmsg(2)` on `socket`: how many datagrams
        /// were read (`WouldBlock` when none was waiting).
        pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
            self.got.clear();
            let slots = self.hdrs.len();
            let base = self.data.as_mut_ptr();
            for i in 0..slots {
                // SAFETY: slot `i` lies inside `data` (slots * SLOT_BYTES).
                self.iovs[i].iov_base = unsafe { base.add(i * SLOT_BYTES) }.cast();
                self.iovs[i].iov_len = SLOT_BYTES;
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut self.iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                self.hdrs[i].msg_len = 0;
            }
            // SAFETY: every header points at this batch's own name, iovec
            // and buffer of the stated sizes, all alive and unaliased for
            // the call; the kernel writes at most those sizes.
            let rc = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    slots as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = (rc as usize).min(slots);
            for i in 0..n {
                let src = to_addr(&self.names[i], self.hdrs[i].msg_hdr.msg_namelen);
                self.got.push((self.hdrs[i].msg_len as usize, src));
            }
            Ok(n)
        }
    }

    /// Sealed datagrams waiting for one `sendmmsg(2)`, each with its
    /// destination; buffers are kept between calls.
    pub struct SendBatch {
        bufs: Vec<Vec<u8>>,
        to: Vec<(SocketAddr, socket2::SockAddr)>,
        len: usize,
        /// The call's vectors and headers, rebuilt per call (kept to
        /// spare two allocations per call).
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    impl SendBatch {
        /// Room for `slots` datagrams.
        pub fn new(slots: usize) -> SendBatch {
            SendBatch {
                bufs: (0..slots)
                    .map(|_| Vec::with_capacity(MAX_DATAGRAM_BYTES))
                    .collect(),
                to: Vec::with_capacity(slots),
                len: 0,
                iovs: Vec::with_capacity(slots),
                hdrs: Vec::with_capacity(slots),
            }
        }

        /// Datagrams waiting.
        pub fn len(&self) -> usize {
            self.len
        }

        /// Whether no more fit.
        pub fn is_full(&self) -> bool {
            self.len == self.bufs.len()
        }

        /// The next free buffer (cleared), to seal into; it joins the batch
        /// with [`SendBatch::push`].
        pub fn next_buf(&mut self) -> &mut Vec<u8> {
            let b = &mut self.bufs[self.len];
            b.clear();
            b
        }

        /// Adds the buffer [`SendBatch::next_buf`] returned, for `to`.
        pub fn push(&mut self, to: SocketAddr) {
            self.to.truncate(self.len);
            self.to.push((to, to.into()));
            self.len += 1;
        }

        /// Datagram `i` and its destination.
        pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
            (&self.bufs[i], self.to[i].0)
        }

        /// Empties the batch (buffers are kept).
        pub fn clear(&mut self) {
            self.len = 0;
            self.to.clear();
        }

        /// One non-blocking `sendmmsg(2)` of datagrams `from..` of the
        /// batch on `socket`: how many the kernel took (at least one), or
        /// the error of the first (`WouldBlock` when the buffer is full).
        pub fn send(&mut self, socket: &impl AsRawFd, from: usize) -> io::Result<usize> {
            let n = self.len.saturating_sub(from);
            if n == 0 {
                return Ok(0);
            }
            self.iovs.clear();
            self.iovs
                .extend(self.bufs[from..self.len].iter().map(|b| libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                }));
            self.hdrs.clear();
            for k in 0..n {
                let to = &self.to[from + k].1;
                // SAFETY: all-zero is a valid `mmsghdr`; the fields set
                // below point at this batch's own live data.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = to.len();
                h.msg_hdr.msg_iov = &mut self.iovs[k];
                h.msg_hdr.msg_iovlen = 1;
                self.hdrs.push(h);
            }
            // SAFETY: every header points at a destination address and an
            // iovec of this batch (alive and unchanged for the call: the
            // vectors are not touched until it returns); the kernel only
            // reads them and writes `msg_len`.
            let rc = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((rc as usize).min(n))
        }
    }

    /// The socket address the kernel wrote, if it is IPv4 or IPv6.
    fn to_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        match s.ss_family as libc::c_int {
            libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in,
                // and sockaddr_storage is large and aligned enough for it.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
            }
            libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                let port = u16::from_be(a.sin6_port);
                Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
            }
            _ => None,
        }
    }
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

/// Socket buffer sizes.
#[derive(Clone, Copy, Debug)]
pub struct Buffers {
    /// `SO_RCVBUF` in bytes.
    pub recv_bytes: usize,
    /// `SO_SNDBUF` in bytes.
    pub send_bytes: usize,
}

/// Binds a non-blocking UDP socket at `addr` for tokio.
///
/// On an IPv4 loopback address the socket sets the don't-fragment bit
/// (`IP_PMTUDISC_PROBE`; the loopback's MTU is 65,536, far above a
/// datagram). Why: on a route whose MTU it may learn the kernel sets DF on
/// these datagrams by itself, but on the loopback it did not, and then drew
/// a hashed IP identifier for every datagram (`__ip_select_ident`, 3-4 % of
/// the CPU time of a 100,000-node run on one host).
pub fn bind(addr: SocketAddr, buffers: Buffers) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(buffers.recv_bytes)?;
    s.set_send_buffer_size(buffers.send_bytes)?;
    s.set_nonblocking(true)?;
    if let SocketAddr::V4(v4) = addr
        && v4.ip().is_loopback()
    {
        sys::set_dont_fragment(&s)?;
    }
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// How long a send waits for room in a full socket buffer before it is
/// tried again.
pub const SEND_RETRY: Duration = Duration::from_millis(1);

/// Most datagrams one `sendmmsg(2)` of an instance's output carries.
pub const SEND_BATCH_MAX: usize = 64;

thread_local! {
    /// The receive batch of this thread's instances (see the module doc).
    static RECEIVED: RefCell<sys::RecvBatch> = RefCell::new(sys::RecvBatch::new(RECV_BATCH_MAX));
    /// The send batch of this thread's instances; a flush never waits, so
    /// one instance at a time uses it.
    static SENDING: RefCell<Option<sys::SendBatch>> = const { RefCell::new(None) };
}

/// An instance's UDP socket as its task drives it: batched receives into
/// the thread's [`RECEIVED`] batch, sends without a copy.
pub(crate) struct Datagrams {
    fd: AsyncFd<std::net::UdpSocket>,
}

impl Datagrams {
    /// Takes over a socket made by [`bind`].
    pub(crate) fn new(socket: UdpSocket) -> io::Result<Datagrams> {
        let std = socket.into_std()?;
        Ok(Datagrams {
            fd: sys::register(std)?,
        })
    }

    /// Waits until datagrams arrive and reads up to [`RECV_BATCH_MAX`] of
    /// them with one system call into the thread's batch; returns how many
    /// (0 after an error other than "nothing to read"). Hand them to
    /// [`for_each_received`] before the next await.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is read before the last await point.
    pub(crate) async fn recv_batch(&self) -> usize {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return 0;
            };
            let got = RECEIVED.with_borrow_mut(|b| b.recv(self.fd.get_ref()));
            match got {
                Ok(n) => {
                    // A short batch means the socket's queue was empty when
                    // read: wait for the next datagram's edge.
                    if n < RECV_BATCH_MAX {
                        guard.clear_ready();
                    }
                    return n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(_) => return 0,
            }
        }
    }

    /// Sends `d` to `addr` if the socket's buffer has room now.
    pub(crate) fn try_send_to(&self, d: &[u8], addr: SocketAddr) -> io::Result<usize> {
        self.fd.get_ref().send_to(d, addr)
    }
}

/// Hands the first `n` datagrams of the thread's batch (what
/// [`Datagrams::recv_batch`] just read) to `f` with their source address.
/// A datagram whose source is not an IP address is skipped.
pub(crate) fn for_each_received(n: usize, mut f: impl FnMut(&[u8], SocketAddr)) {
    RECEIVED.with_borrow(|b| {
        for i in 0..n.min(b.len()) {
            if let (d, Some(src)) = b.get(i) {
                f(d, src);
            }
        }
    });
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

/// Wakes an instance's task after the application changed the instance
/// (a permit, as `tokio::sync::Notify` keeps one, and the task's waker).
/// Single-threaded like the instance: no lock and no waiter list, which
/// `Notify` paid on every turn of every task's loop (issue 14).
/// In a pool ([`spawn_pool`]) the permit instead puts the instance on the
/// pool's list of woken members, once until the pool served it.
#[derive(Default)]
pub(crate) struct Wake {
    permit: Cell<bool>,
    waker: Cell<Option<Waker>>,
    /// The pool's list and this member's place in it.
    pool: Option<(Rc<pool::Woken>, u32)>,
}

impl Wake {
    /// Leaves a permit and wakes the task if it waits.
    pub(crate) fn notify_one(&self) {
        if let Some((woken, i)) = &self.pool {
            if !self.permit.replace(true) {
                woken.push(*i);
            }
            return;
        }
        self.permit.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Completes once a permit is there, taking it.
    pub(crate) fn notified(&self) -> Notified<'_> {
        Notified(self)
    }
}

/// The future of [`Wake::notified`].
pub(crate) struct Notified<'a>(&'a Wake);

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let w = self.0;
        if w.permit.replace(false) {
            return Poll::Ready(());
        }
        let old = w.waker.take();
        w.waker.set(match old {
            Some(o) if o.will_wake(cx.waker()) => Some(o),
            _ => Some(cx.waker().clone()),
        });
        Poll::Pending
    }
}

/// The application's way into a running instance (both drivers).
pub struct Handle<I> {
    pub(crate) inner: Rc<RefCell<I>>,
    pub(crate) traffic: Rc<RefCell<Traffic>>,
    pub(crate) wake: Rc<Wake>,
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
        Self::with_wake(inst, Wake::default())
    }

    /// Wraps a new instance that `wake` wakes.
    pub(crate) fn with_wake(inst: I, wake: Wake) -> Handle<I> {
        Handle {
            inner: Rc::new(RefCell::new(inst)),
            traffic: Rc::new(RefCell::new(Traffic::default())),
            wake: Rc::new(wake),
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

/// What sealing a transmit takes in every driver: the peer's boot from
/// the opener (a frame sent before it is known is also held, to go again
/// once it is), the sealer and the keys; a failure is counted.
pub(crate) struct Sealing<'a> {
    pub(crate) opener: &'a Opener,
    pub(crate) held: &'a mut Held,
    pub(crate) sealer: &'a mut Sealer,
    pub(crate) keys: &'a KeyRing,
    pub(crate) traffic: &'a RefCell<Traffic>,
}

impl Sealing<'_> {
    /// Seals `t` into `out`; false (counted in `tx_errors`) if it failed.
    pub(crate) fn seal(&mut self, t: &Transmit, out: &mut Vec<u8>) -> bool {
        let echo = self.opener.peer_boot(t.to);
        if echo.is_none() {
            self.held.hold(t.to, &t.frame);
        }
        if self
            .sealer
            .seal(self.keys, t.to, echo, &t.frame, out)
            .is_err()
        {
            self.traffic.borrow_mut().tx_errors += 1;
            return false;
        }
        true
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
/// envelope boot: one task for this instance (see [`spawn_pool`] for one
/// task over many).
///
/// # Errors
/// If the operating system has no random source ([`random_boot`]), or if
/// the socket cannot be moved to the driver's own registration with the
/// runtime (it was registered with tokio by [`bind`]; the kernel can
/// refuse, e.g. past `fs.epoll.max_user_watches`).
pub fn spawn<I: Instance + 'static>(
    inst: I,
    socket: UdpSocket,
    shared: Arc<Shared>,
) -> io::Result<Handle<I>> {
    let socket = Datagrams::new(socket)?;
    let m = Member::new(Handle::new(inst), shared)?;
    let h = m.h.clone();
    tokio::task::spawn_local(Task { m, socket }.run());
    Ok(h)
}

/// One instance as the UDP drivers run it, apart from how it waits: the
/// instance's handle, its envelope state, its token buckets and what waits
/// to be sent again. Both the task per instance ([`spawn`]) and the pool
/// ([`spawn_pool`]) call these methods when the instance's socket is
/// readable, its deadline passed or the application changed it.
pub(crate) struct Member<I> {
    pub(crate) h: Handle<I>,
    /// Frames sent before the peer's boot was known, and those due again.
    held: Held,
    retry: VecDeque<Transmit>,
    /// Sealed datagrams a full socket buffer refused, to go first.
    unsent: VecDeque<(Vec<u8>, SocketAddr)>,
    sealer: Sealer,
    opener: Opener,
    rng: Rng,
    limiter: Limiter,
    shared: Arc<Shared>,
}

impl<I: Instance> Member<I> {
    /// The driver's state for the instance behind `h`, with a fresh boot.
    pub(crate) fn new(h: Handle<I>, shared: Arc<Shared>) -> io::Result<Member<I>> {
        let boot = random_boot()?;
        let me = h.inner.borrow().id();
        Ok(Member {
            held: Held::default(),
            retry: VecDeque::new(),
            unsent: VecDeque::new(),
            sealer: Sealer::new(me, boot),
            opener: Opener::new(me, boot).with_senders(shared.addrs.len() as u32),
            rng: Rng::new(shared.epoch ^ me as u64),
            limiter: Limiter::default(),
            shared,
            h,
        })
    }

    /// Checks, opens and hands one datagram from `src` to the instance,
    /// then answers the session requests it raised on `sock`.
    pub(crate) fn receive(&mut self, sock: &std::net::UdpSocket, d: &[u8], src: SocketAddr) {
        match self.limiter.check(&self.shared.addrs, d, src) {
            Ok(()) => {
                let from = self
                    .h
                    .deliver(&mut self.opener, &mut self.rng, &self.shared, d);
                release_after(&mut self.held, &mut self.retry, &self.opener, from, d);
                self.send_replies(sock);
            }
            Err(reason) => count_drop(&self.h, &mut self.opener, reason),
        }
    }

    /// Sends the session datagrams the opener asks for (a full socket
    /// buffer drops them: the next datagram asks again).
    fn send_replies(&mut self, sock: &std::net::UdpSocket) {
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
                let _ = sock.send_to(&out, addr);
            }
        }
    }

    /// The next transmit: what was held for a peer's boot first, then the
    /// instance's output.
    fn next_transmit(&mut self) -> Option<Transmit> {
        let next = self.retry.pop_front();
        next.or_else(|| self.h.inner.borrow_mut().poll_transmit())
    }

    /// Seals `t` into `out`; its destination, or `None` if it has none or
    /// sealing failed (counted).
    fn seal(&mut self, t: &Transmit, out: &mut Vec<u8>) -> Option<SocketAddr> {
        let &addr = self.shared.addrs.get(t.to as usize)?;
        let mut s = Sealing {
            opener: &self.opener,
            held: &mut self.held,
            sealer: &mut self.sealer,
            keys: &self.shared.keys,
            traffic: &self.h.traffic,
        };
        s.seal(t, out).then_some(addr)
    }

    /// Sends everything the instance has to send on `sock`, sealed into
    /// the thread's send batch: a lone datagram with one `sendto(2)`, more
    /// (a parent's hellos of one grid slot, a roll-out's updates to a
    /// rack) [`SEND_BATCH_MAX`] at a time with one `sendmmsg(2)`.
    ///
    /// False if the socket's buffer was full: what did not go waits, as
    /// sealed and in order, to go first next time; call again after
    /// [`SEND_RETRY`] (the socket is registered for reading only).
    pub(crate) fn flush(&mut self, sock: &std::net::UdpSocket) -> bool {
        while let Some((d, addr)) = self.unsent.front() {
            match sock.send_to(d, *addr) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                r => self.count_sent(r),
            }
            self.unsent.pop_front();
        }
        SENDING.with_borrow_mut(|slot| {
            let batch = slot.get_or_insert_with(|| sys::SendBatch::new(SEND_BATCH_MAX));
            batch.clear();
            loop {
                let t = self.next_transmit();
                let done = t.is_none();
                if let Some(t) = t
                    && let Some(addr) = self.seal(&t, batch.next_buf())
                {
                    batch.push(addr);
                }
                if batch.is_full() || (done && batch.len() > 0) {
                    if let Some(at) = self.send_batch(sock, batch) {
                        // Kept sealed: sealing again would hold a frame
                        // for an unknown boot twice and spend a sequence.
                        for k in at..batch.len() {
                            let (d, addr) = batch.get(k);
                            self.unsent.push_back((d.to_vec(), addr));
                        }
                        return false;
                    }
                    batch.clear();
                }
                if done {
                    return true;
                }
            }
        })
    }

    /// Sends every datagram of `batch`: `sendmmsg(2)` while the kernel
    /// takes them (`sendto(2)` for a lone one), one at a time from the
    /// first it refused. `Some(i)` if the buffer was full at datagram `i`.
    fn send_batch(
        &mut self,
        sock: &std::net::UdpSocket,
        batch: &mut sys::SendBatch,
    ) -> Option<usize> {
        let mut at = 0;
        while at < batch.len() {
            let sent = if batch.len() - at > 1 {
                batch.send(sock, at)
            } else {
                Err(io::ErrorKind::Other.into())
            };
            match sent {
                Ok(k) if k > 0 => {
                    for i in at..at + k {
                        self.count_sent(Ok(batch.get(i).0.len()));
                    }
                    at += k;
                }
                _ => {
                    let (d, addr) = batch.get(at);
                    match sock.send_to(d, addr) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(at),
                        r => self.count_sent(r),
                    }
                    at += 1;
                }
            }
        }
        None
    }

    fn count_sent(&self, sent: io::Result<usize>) {
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

/// The task of one instance ([`spawn`]).
struct Task<I> {
    m: Member<I>,
    socket: Datagrams,
}

impl<I: Instance> Task<I> {
    async fn run(self) {
        let Task { mut m, socket } = self;
        let sock = socket.fd.get_ref();
        // One timer, re-armed only when the deadline moves: cheaper than a
        // new timer-wheel entry per datagram.
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Time> = None;
        loop {
            while !m.flush(sock) {
                tokio::time::sleep(SEND_RETRY).await;
            }
            let deadline = m.h.inner.borrow_mut().poll_timeout();
            if deadline != armed {
                armed = deadline;
                if let Some(d) = deadline {
                    let wait = d.saturating_sub(monotonic_now());
                    sleep.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            tokio::select! {
                biased;
                n = socket.recv_batch() => {
                    for_each_received(n, |d, src| m.receive(sock, d, src));
                    // A socket that is always readable wins every biased
                    // select: serve a due timer here so hellos keep going.
                    if armed.is_some_and(|d| monotonic_now() >= d) {
                        armed = None;
                        m.h.inner.borrow_mut().handle_timeout(monotonic_now());
                    }
                }
                _ = &mut sleep, if armed.is_some() => {
                    armed = None;
                    m.h.inner.borrow_mut().handle_timeout(monotonic_now());
                }
                _ = m.h.wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::MAX_DATAGRAM_BYTES;

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

    #[tokio::test]
    async fn a_batch_reads_every_waiting_datagram_with_its_source() {
        let bufs = Buffers {
            recv_bytes: 1 << 20,
            send_bytes: 1 << 20,
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = bind(any, bufs).unwrap();
        let b = bind(any, bufs).unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let rx = Datagrams::new(b).unwrap();
        for i in 0..3u8 {
            a.send_to(&[i; 10], b_addr).await.unwrap();
        }
        let n = rx.recv_batch().await;
        assert_eq!(n, 3, "one call reads everything waiting");
        let mut seen = Vec::new();
        for_each_received(n, |d, src| {
            assert_eq!(src, a_addr);
            seen.push((d[0], d.len()));
        });
        assert_eq!(seen, [(0, 10), (1, 10), (2, 10)]);
        // The short batch told the runtime the socket was drained: the next
        // datagram must still wake the reader. A datagram longer than a
        // slot arrives truncated to the slot, which the envelope's first
        // check rejects as oversized.
        a.send_to(&[7; 2000], b_addr).await.unwrap();
        let wait = Duration::from_secs(5);
        let n = tokio::time::timeout(wait, rx.recv_batch()).await.unwrap();
        assert_eq!(n, 1);
        let mut len = 0;
        for_each_received(n, |d, _| len = d.len());
        assert_eq!(len, sys::SLOT_BYTES);
        assert!(len > MAX_DATAGRAM_BYTES);
    }

    #[tokio::test]
    async fn one_call_sends_a_batch_to_several_peers() {
        let bufs = Buffers {
            recv_bytes: 1 << 20,
            send_bytes: 1 << 20,
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (a, b, c) = (
            bind(any, bufs).unwrap(),
            bind(any, bufs).unwrap(),
            bind(any, bufs).unwrap(),
        );
        let (b_addr, c_addr) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let tx = a.into_std().unwrap();
        let mut batch = sys::SendBatch::new(4);
        for (i, to) in [(1u8, b_addr), (2, c_addr), (3, b_addr)] {
            batch.next_buf().extend_from_slice(&[i; 20]);
            batch.push(to);
        }
        assert_eq!(batch.len(), 3);
        assert!(!batch.is_full());
        assert_eq!(batch.send(&tx, 0).unwrap(), 3);
        assert_eq!(batch.send(&tx, 3).unwrap(), 0, "nothing left");
        let mut got = [0u8; 64];
        let wait = Duration::from_secs(5);
        let (n, _) = tokio::time::timeout(wait, b.recv_from(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((n, got[0]), (20, 1));
        let (n, _) = tokio::time::timeout(wait, b.recv_from(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((n, got[0]), (20, 3));
        let (n, _) = tokio::time::timeout(wait, c.recv_from(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((n, got[0]), (20, 2));
        // A cleared batch reuses its buffers from the start.
        batch.clear();
        batch.next_buf().extend_from_slice(&[9; 5]);
        batch.push(c_addr);
        assert_eq!(batch.get(0), (&[9u8; 5][..], c_addr));
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_now();
        let b = monotonic_now();
        assert!(b >= a && a > Duration::ZERO);
    }
}
