//! One task that drives many instances, each on its own socket
//! ([`spawn_pool`]): what a host of thousands of instances (a loadtest
//! worker) runs instead of one task per instance.
//!
//! The pool owns an `epoll` set of its own (`mio`'s [`mio::Poll`]) with
//! every member's socket in it, edge-triggered and for reading only, and
//! registers that set's descriptor with the runtime as one source. A
//! readable socket is served in the same pass that reads the set: its
//! datagrams read with one `recvmmsg(2)`, opened and handed to the
//! instance, its output flushed and its deadline re-armed, with no task
//! wake-up, runtime readiness or timer-wheel entry per socket. Deadlines
//! live in one heap per pool (stale entries are skipped when they come
//! due), served by one runtime timer set to the earliest.
//!
//! What a member does when it runs is [`super::Member`]'s, shared with
//! the task per instance ([`super::spawn`]): the same checks, envelope,
//! batching and counters.
//!
//! Fairness and bounds: one poll of the pool's task serves at most
//! [`TURNS_PER_POLL`] members (plus one read of the set) and then yields
//! to the runtime behind its next look at I/O (`yield_now`), so other
//! tasks (another pool, an API, the worker's commands) run between; a socket read to a full batch goes to the back
//! of a queue instead of being drained at once, and due deadlines are
//! served in every pass, so a flooded socket cannot starve hellos.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

use super::{
    Handle, Member, RECEIVED, RECV_BATCH_MAX, SEND_RETRY, Shared, Wake, for_each_received,
    monotonic_now,
};
use crate::strategy::{Instance, Time};

/// Members served in one poll of a pool's task before it yields.
pub const TURNS_PER_POLL: usize = 64;

/// Readiness events read from the pool's set at once.
const EVENTS: usize = 64;

/// Members the application woke ([`Wake`]), in order, and the pool task's
/// waker.
#[derive(Default)]
pub(crate) struct Woken {
    list: RefCell<Vec<u32>>,
    waker: Cell<Option<Waker>>,
}

impl Woken {
    /// Puts member `i` on the list and wakes the pool's task.
    pub(crate) fn push(&self, i: u32) {
        self.list.borrow_mut().push(i);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Starts `members` (each instance with the socket [`super::bind`] made
/// for it) in one task of the current `LocalSet`, each with a fresh
/// envelope boot; their handles, in order.
///
/// # Errors
/// If the operating system has no random source, if the pool's `epoll`
/// set cannot be made or registered with the runtime, or if a socket
/// cannot be added to it (e.g. past `fs.epoll.max_user_watches`).
pub fn spawn_pool<I: Instance + 'static>(
    members: Vec<(I, UdpSocket)>,
    shared: Arc<Shared>,
) -> io::Result<Vec<Handle<I>>> {
    let poll = mio::Poll::new()?;
    let woken = Rc::new(Woken::default());
    let mut slots = Vec::with_capacity(members.len());
    for (i, (inst, socket)) in members.into_iter().enumerate() {
        let idx = u32::try_from(i).map_err(|_| io::Error::other("too many members"))?;
        let sock = socket.into_std()?;
        poll.registry().register(
            &mut SourceFd(&sock.as_raw_fd()),
            mio::Token(i),
            mio::Interest::READABLE,
        )?;
        let wake = Wake {
            pool: Some((woken.clone(), idx)),
            ..Wake::default()
        };
        let m = Member::new(Handle::with_wake(inst, wake), shared.clone())?;
        slots.push(Slot {
            m,
            sock,
            deadline: None,
            retry_at: None,
            armed: None,
        });
    }
    let handles = slots.iter().map(|s| s.m.h.clone()).collect();
    let mut pool = Pool {
        // Every member starts as if woken: its first output goes and its
        // first deadline is armed.
        again: (0..slots.len() as u32).collect(),
        slots,
        set: super::sys::register(poll)?,
        events: mio::Events::with_capacity(EVENTS),
        tokens: Vec::with_capacity(EVENTS),
        woken,
        serving: Vec::new(),
        timers: BinaryHeap::new(),
        sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
        sleep_at: None,
    };
    tokio::task::spawn_local(async move {
        loop {
            std::future::poll_fn(|cx| pool.poll(cx)).await;
            // Out of turns: yield as `yield_now` does, behind the
            // runtime's next look at its I/O, so the tasks woken
            // meanwhile (another pool's, in another `LocalSet`) run
            // first; waking itself again would put this task back in
            // the same turn of its set.
            tokio::task::yield_now().await;
        }
    });
    Ok(handles)
}

/// One member of a pool.
struct Slot<I> {
    m: Member<I>,
    sock: std::net::UdpSocket,
    /// The instance's deadline, as it last said.
    deadline: Option<Time>,
    /// When to flush again after a full socket buffer refused datagrams.
    retry_at: Option<Time>,
    /// The earlier of the two, as pushed on the heap (older heap entries
    /// for this member are stale).
    armed: Option<Time>,
}

/// Why a member runs.
#[derive(Clone, Copy, PartialEq)]
enum Cause {
    /// Its socket may hold datagrams.
    Readable,
    /// Its deadline (or send retry) came.
    Due,
    /// The application changed it.
    Woken,
}

struct Pool<I> {
    slots: Vec<Slot<I>>,
    /// The pool's `epoll` set, registered with the runtime.
    set: AsyncFd<mio::Poll>,
    events: mio::Events,
    /// The members of the last read of the set.
    tokens: Vec<u32>,
    woken: Rc<Woken>,
    /// The woken list being served (swapped with `woken`'s).
    serving: Vec<u32>,
    /// Sockets read to a full batch, served again in a later pass.
    again: VecDeque<u32>,
    timers: BinaryHeap<Reverse<(Time, u32)>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    sleep_at: Option<Time>,
}

impl<I: Instance> Pool<I> {
    /// Serves what is ready: `Ready` after at most [`TURNS_PER_POLL`]
    /// members when more may be ready (the task then yields), `Pending`
    /// when nothing is (woken by readiness, the application or the
    /// earliest deadline).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut turns = 0;
        loop {
            let mut worked = false;
            // The application's changes.
            std::mem::swap(&mut self.serving, &mut *self.woken.list.borrow_mut());
            for k in 0..self.serving.len() {
                let i = self.serving[k];
                if let Some(s) = self.slots.get(i as usize) {
                    s.m.h.wake.permit.set(false);
                    self.turn(i, Cause::Woken);
                    turns += 1;
                }
            }
            worked |= !self.serving.is_empty();
            self.serving.clear();
            // Due deadlines, every pass.
            let now = monotonic_now();
            while turns < TURNS_PER_POLL
                && let Some(&Reverse((t, i))) = self.timers.peek()
                && t <= now
            {
                self.timers.pop();
                if self.slots[i as usize].armed == Some(t) {
                    self.slots[i as usize].armed = None;
                    self.turn(i, Cause::Due);
                    turns += 1;
                    worked = true;
                }
            }
            // Sockets that had more than a batch waiting.
            for _ in 0..self.again.len() {
                if turns >= TURNS_PER_POLL {
                    break;
                }
                let Some(i) = self.again.pop_front() else {
                    break;
                };
                self.turn(i, Cause::Readable);
                turns += 1;
                worked = true;
            }
            // New readiness.
            if turns < TURNS_PER_POLL {
                if self.read_set() {
                    self.tokens.clear();
                    let ready = self.events.iter().map(|e| e.token().0 as u32);
                    self.tokens.extend(ready);
                    for k in 0..self.tokens.len() {
                        self.turn(self.tokens[k], Cause::Readable);
                        turns += 1;
                    }
                    worked = true;
                } else {
                    match self.set.poll_read_ready(cx) {
                        Poll::Ready(Ok(mut g)) => {
                            // Read again before waiting: what arrived
                            // since the last read sets readiness anew.
                            g.clear_ready();
                            worked = true;
                        }
                        Poll::Ready(Err(e)) => {
                            tracing::warn!(error = %e, "pool: readiness failed");
                        }
                        Poll::Pending => {}
                    }
                }
            }
            if turns >= TURNS_PER_POLL {
                return Poll::Ready(());
            }
            if worked {
                continue;
            }
            // Nothing ready: wait for readiness (registered above), the
            // application or the earliest deadline.
            self.woken.waker.set(Some(cx.waker().clone()));
            if let Some(&Reverse((t, _))) = self.timers.peek() {
                if self.sleep_at != Some(t) {
                    self.sleep_at = Some(t);
                    let wait = t.saturating_sub(monotonic_now());
                    self.sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + wait);
                }
                if self.sleep.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            return Poll::Pending;
        }
    }

    /// Reads the set without waiting: whether any event came.
    fn read_set(&mut self) -> bool {
        match self
            .set
            .get_mut()
            .poll(&mut self.events, Some(Duration::ZERO))
        {
            Ok(()) => !self.events.is_empty(),
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::warn!(error = %e, "pool: epoll_wait failed");
                }
                false
            }
        }
    }

    /// Runs member `i` for `cause`, flushes its output and re-arms it.
    fn turn(&mut self, i: u32, cause: Cause) {
        let Some(s) = self.slots.get_mut(i as usize) else {
            return;
        };
        let mut now = None;
        match cause {
            Cause::Readable => {
                let got = RECEIVED.with_borrow_mut(|b| b.recv(&s.sock));
                match got {
                    Ok(n) => {
                        for_each_received(n, |d, src| s.m.receive(&s.sock, d, src));
                        if n == RECV_BATCH_MAX {
                            self.again.push_back(i);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // A pending socket error (e.g. an ICMP report) is
                    // cleared by this read: read again in a later pass.
                    Err(_) => self.again.push_back(i),
                }
            }
            Cause::Due => {
                let t = monotonic_now();
                now = Some(t);
                if s.retry_at.is_some_and(|r| r <= t) {
                    s.retry_at = None;
                }
            }
            // The application may have moved the deadline.
            Cause::Woken => s.deadline = s.m.h.inner.borrow_mut().poll_timeout(),
        }
        // A busy socket must not keep the instance from its deadline.
        if let Some(d) = s.deadline {
            let t = *now.get_or_insert_with(monotonic_now);
            if d <= t {
                s.deadline = None;
                s.m.h.inner.borrow_mut().handle_timeout(t);
            }
        }
        if s.retry_at.is_none() && !s.m.flush(&s.sock) {
            s.retry_at = Some(monotonic_now() + SEND_RETRY);
        }
        s.deadline = s.m.h.inner.borrow_mut().poll_timeout();
        let at = match (s.deadline, s.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if at != s.armed {
            s.armed = at;
            if let Some(t) = at {
                self.timers.push(Reverse((t, i)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
