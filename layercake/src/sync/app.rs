//! [`App`]: what an application does on top of its [`Stack`], and
//! [`Node`]: the two as one `overlay::Instance`.

use overlay::{Instance, NodeId, Record, Time, Transmit};
use proto::overlay::Frame;

use super::stack::Stack;

/// Rounds of "collect the stack's events, hand them to the application"
/// per input; each round only runs when the previous one produced events
/// (an application's publish can wake the groups, whose events can move
/// the tree), so a handful is always enough.
pub const PUMP_ROUNDS_MAX: usize = 8;

/// Something the application should know about.
#[derive(Clone, Debug, PartialEq)]
pub enum StackEvent {
    /// A record newer than the held one arrived (from the tree, from a
    /// group this instance acts for, or from the flat group).
    Delivered(Record),
    /// A node in this instance's care ([`Stack::is_child`]) went silent
    /// for its dead interval.
    ChildDown(NodeId),
    /// A node in this instance's care became reachable.
    ChildUp(NodeId),
    /// Another neighbour (the parent) went silent.
    PeerDown(NodeId),
    /// Another neighbour (the parent) became reachable.
    PeerUp(NodeId),
    /// This instance took over (`on`) or handed back (`!on`) group `group`,
    /// led in the topology by `leader`: from now on (or no longer) its
    /// members are in this instance's care, with their CHILD-context work.
    Acting {
        /// The group's index in the topology.
        group: u32,
        /// The group's sub-parent in the topology.
        leader: NodeId,
        /// Taken over (true) or handed back (false).
        on: bool,
    },
}

/// An application on top of the sync stack: the root, a member (relay,
/// node, BMC host), the loadtest probe. It never sees a core's type.
pub trait App {
    /// Called once when the instance starts (publish a first state here).
    fn on_start(&mut self, _stack: &mut Stack, _now: Time) {}
    /// One event of the stack, in order.
    fn on_event(&mut self, stack: &mut Stack, now: Time, event: StackEvent);
    /// After a batch of events was handed over (work worth doing once per
    /// batch rather than per event: publishing what changed).
    fn after_events(&mut self, _stack: &mut Stack, _now: Time) {}
    /// Every wake-up of the instance (its own deadline, or the stack's).
    fn on_timeout(&mut self, _stack: &mut Stack, _now: Time) {}
    /// The application's own next deadline.
    fn poll_timeout(&self) -> Option<Time> {
        None
    }
}

/// A [`Stack`] and its [`App`], run by a driver as one instance.
pub struct Node<A> {
    stack: Stack,
    app: A,
}

impl<A: App> Node<A> {
    /// Starts `app` on `stack` at `now`.
    pub fn new(mut stack: Stack, mut app: A, now: Time) -> Node<A> {
        app.on_start(&mut stack, now);
        let mut n = Node { stack, app };
        n.pump(now);
        n
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The stack (read-only: counters, views).
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// Runs `f` on the application with its stack at `now` (an input from
    /// outside the overlay: an API write, a BMC answer), then hands the
    /// stack's events to the application.
    pub fn with<R>(&mut self, now: Time, f: impl FnOnce(&mut A, &mut Stack) -> R) -> R {
        let r = f(&mut self.app, &mut self.stack);
        self.pump(now);
        r
    }

    /// Runs `f` on the application alone (a read, or work that publishes
    /// nothing).
    pub fn with_app<R>(&mut self, f: impl FnOnce(&mut A) -> R) -> R {
        f(&mut self.app)
    }

    /// The application (mutable) and the stack (read-only), for reads that
    /// need both.
    pub fn parts(&mut self) -> (&mut A, &Stack) {
        (&mut self.app, &self.stack)
    }

    /// Crashes the instance where the driver cannot remove it (real
    /// sockets): deaf and silent from now on.
    pub fn kill(&mut self) {
        self.stack.kill();
    }

    fn pump(&mut self, now: Time) {
        for _ in 0..PUMP_ROUNDS_MAX {
            if !self.stack.collect(now) {
                break;
            }
            while let Some(e) = self.stack.poll_event() {
                self.app.on_event(&mut self.stack, now, e);
            }
            self.app.after_events(&mut self.stack, now);
        }
    }
}

impl<A: App> Instance for Node<A> {
    fn id(&self) -> NodeId {
        self.stack.id()
    }

    fn handle_frame(&mut self, now: Time, from: NodeId, frame: Frame) {
        self.stack.handle_frame(now, from, frame);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Time) {
        self.stack.handle_timeout(now);
        self.app.on_timeout(&mut self.stack, now);
        self.pump(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.stack.poll_transmit()
    }

    fn poll_timeout(&mut self) -> Option<Time> {
        let s = self.stack.poll_timeout();
        let a = self.app.poll_timeout();
        [s, a].into_iter().flatten().min()
    }
}
