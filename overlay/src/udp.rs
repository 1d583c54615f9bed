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

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::envelope::{DropCounters, KeyRing, Opener, Sealer};
use crate::rng::Rng;
use crate::strategy::{Instance, MAX_DATAGRAM_BYTES, Time};

/// Datagrams read in one wake-up before the instance's output is flushed.
pub const RECV_BATCH_MAX: usize = 64;

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
    /// The cluster's keys.
    pub keys: KeyRing,
    /// Probability a received datagram is dropped on purpose (loss tests).
    pub loss: f64,
    /// Envelope epoch of this process's instances (grows across restarts).
    pub epoch: u64,
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
    /// counting it (or the reason it was dropped). Both drivers use it.
    pub(crate) fn deliver(&self, opener: &mut Opener, rng: &mut Rng, shared: &Shared, d: &[u8]) {
        let mut t = self.traffic.borrow_mut();
        if rng.chance(shared.loss) {
            t.rx_lost += 1;
            return;
        }
        match opener.open(&shared.keys, d) {
            Ok((o, frame)) => {
                t.rx_datagrams += 1;
                t.rx_bytes += d.len() as u64;
                drop(t);
                self.inner
                    .borrow_mut()
                    .handle_frame(monotonic_now(), o.sender, frame);
            }
            Err(_) => t.drops = opener.drops.clone(),
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

/// Starts `inst` on `socket` in the current `LocalSet`.
pub fn spawn<I: Instance + 'static>(inst: I, socket: UdpSocket, shared: Arc<Shared>) -> Handle<I> {
    let h = Handle::new(inst);
    let task = Task {
        h: h.clone(),
        socket,
        sealer: Sealer::new(h.inner.borrow().id(), shared.epoch),
        opener: Opener::new(h.inner.borrow().id()),
        rng: Rng::new(shared.epoch ^ h.inner.borrow().id() as u64),
        shared,
    };
    tokio::task::spawn_local(task.run());
    h
}

struct Task<I> {
    h: Handle<I>,
    socket: UdpSocket,
    sealer: Sealer,
    opener: Opener,
    rng: Rng,
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
                    if let Ok((n, _)) = r {
                        self.receive(&rx[..n]);
                    }
                    for _ in 1..RECV_BATCH_MAX {
                        match self.socket.try_recv_from(&mut rx) {
                            Ok((n, _)) => self.receive(&rx[..n]),
                            Err(_) => break,
                        }
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

    fn receive(&mut self, d: &[u8]) {
        self.h
            .deliver(&mut self.opener, &mut self.rng, &self.shared, d);
    }

    async fn flush(&mut self, tx: &mut Vec<u8>) {
        loop {
            let Some(t) = self.h.inner.borrow_mut().poll_transmit() else {
                return;
            };
            let Some(&addr) = self.shared.addrs.get(t.to as usize) else {
                continue;
            };
            self.sealer.seal(&self.shared.keys, t.to, &t.frame, tx);
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
    fn monotonic_clock_moves_forward() {
        let a = monotonic_now();
        let b = monotonic_now();
        assert!(b >= a && a > Duration::ZERO);
    }
}
