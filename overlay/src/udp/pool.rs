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
//! Fairness and bounds: every pass serves the members the application
//! woke, at most [`SHARE`] due deadlines, at most [`SHARE`] sockets read
//! again and one read of the set, so no kind of work starves another (a
//! pass that served deadlines first and only then the set, sharing one
//! budget, let a hybrid rack's SWIM timers keep its probes' answers
//! waiting: 10,000 hybrid nodes collapsed into a storm of suspicions). A
//! socket read to a full batch goes to the back of a queue instead of
//! being drained at once, so a flooded socket cannot starve hellos. After
//! [`TURNS_PER_POLL`] members the task yields to the runtime behind its
//! next look at I/O (`yield_now`), so other tasks (another pool, an API,
//! the worker's commands) run between.

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

/// Due deadlines, and sockets read again, served in one pass at most:
/// a pass always reads the set too, so a flood of deadlines cannot keep
/// datagrams (a SWIM probe's answer) waiting, nor the reverse.
const SHARE: usize = 32;

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
    // Every member starts woken, all in the first pass (as a task per
    // instance gets its first poll before any datagram): its first output
    // goes and its first deadline is armed. Started a few per pass, the
    // first members' SWIM timers ran against members not yet started
    // (10,000 hybrid nodes: initial sync 8.8 s instead of 5.0 s).
    for s in &slots {
        s.m.h.wake.notify_one();
    }
    let mut pool = Pool {
        again: VecDeque::new(),
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
    /// When the member's live heap entry comes due: the earlier of the
    /// two, or the time of its last turn if that was later (other entries
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
    /// Serves what is ready, pass after pass: `Ready` once
    /// [`TURNS_PER_POLL`] members ran (the task then yields), `Pending`
    /// when nothing is ready (woken by readiness, the application or the
    /// earliest deadline).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut total = 0;
        loop {
            let turns = self.pass(cx);
            total += turns;
            if total >= TURNS_PER_POLL {
                return Poll::Ready(());
            }
            if turns > 0 {
                continue;
            }
            // Nothing ready: wait for readiness (registered by the pass),
            // the application or the earliest deadline.
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
            if self.woken.list.borrow().is_empty() {
                return Poll::Pending;
            }
        }
    }

    /// One pass over every kind of work, each with its own share so that
    /// none starves another: the members the application woke, up to
    /// [`SHARE`] due deadlines, up to [`SHARE`] sockets that had more than
    /// a batch waiting, and one read of the set (each of its events
    /// served). How many members ran; 0 only when nothing was ready, the
    /// set's readiness then being registered with `cx`.
    fn pass(&mut self, cx: &mut Context<'_>) -> usize {
        let mut turns = 0;
        std::mem::swap(&mut self.serving, &mut *self.woken.list.borrow_mut());
        for k in 0..self.serving.len() {
            let i = self.serving[k];
            if let Some(s) = self.slots.get(i as usize) {
                s.m.h.wake.permit.set(false);
                self.turn(i, Cause::Woken);
                turns += 1;
            }
        }
        self.serving.clear();
        let now = monotonic_now();
        let mut due = 0;
        while due < SHARE
            && let Some(&Reverse((t, i))) = self.timers.peek()
            && t <= now
        {
            self.timers.pop();
            if self.slots[i as usize].armed == Some(t) {
                self.slots[i as usize].armed = None;
                self.turn(i, Cause::Due);
                due += 1;
            }
        }
        turns += due;
        for _ in 0..self.again.len().min(SHARE) {
            let Some(i) = self.again.pop_front() else {
                break;
            };
            self.turn(i, Cause::Readable);
            turns += 1;
        }
        loop {
            if self.read_set() {
                self.tokens.clear();
                let ready = self.events.iter().map(|e| e.token().0 as u32);
                self.tokens.extend(ready);
                for k in 0..self.tokens.len() {
                    self.turn(self.tokens[k], Cause::Readable);
                    turns += 1;
                }
                return turns;
            }
            match self.set.poll_read_ready(cx) {
                // Read again: what arrived since the read sets readiness
                // anew.
                Poll::Ready(Ok(mut g)) => g.clear_ready(),
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "pool: readiness failed");
                    return turns;
                }
                Poll::Pending => return turns,
            }
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
        // A deadline already past is queued at the time of this turn, behind
        // the members already due: an instance that is always due (whatever
        // its bug) cannot keep the others' deadlines waiting. A moved
        // deadline leaves its old entry behind, skipped when it comes due.
        // (Pushing only earlier times, the old entry's turn re-arming a
        // later one, costs a spurious turn per deadline put off: converge
        // p99 of the 100,000-node run 1.819 / 1.628 s and 1.825 / 1.598 s
        // in two pairs against this.)
        if let Some(t) = at {
            let key = now.map_or(t, |n| t.max(n));
            if s.armed != Some(key) {
                s.armed = Some(key);
                self.timers.push(Reverse((key, i)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
