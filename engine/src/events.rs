//! Events and the one dispatcher: every store write, mutation step,
//! discovery and sync produces an [`Event`]; subscribers receive the ones
//! their [`Filter`] matches in a bounded queue each.

use crate::value::Value;
use std::collections::VecDeque;

/// Which copy of a node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Side {
    /// Configured: what the admin wants.
    Cfg,
    /// Discovered: what is really there.
    Dsc,
}

/// The class of an event, used by filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EventKind {
    /// A value changed in the store.
    StateChange,
    /// A mutation step started, finished, timed out or was replaced.
    Mutation,
    /// A module discovered a value.
    Discovery,
    /// A copy arrived from state sync.
    Sync,
}

/// One event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    /// Its class.
    pub kind: EventKind,
    /// The node it concerns.
    pub node: String,
    /// The URL it concerns (mutation name for [`EventKind::Mutation`]).
    pub url: String,
    /// The copy it concerns.
    pub side: Side,
    /// Old value, if any.
    pub old: Option<Value>,
    /// New value, if any.
    pub new: Option<Value>,
}

/// Which events a subscriber wants; `None` fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Accepted kinds (empty: all).
    pub kinds: Vec<EventKind>,
    /// Only this node.
    pub node: Option<String>,
    /// Only URLs starting with this prefix.
    pub url_prefix: Option<String>,
}

impl Filter {
    /// True when `e` passes the filter.
    pub fn matches(&self, e: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self.node.as_ref().is_none_or(|n| *n == e.node)
            && self
                .url_prefix
                .as_ref()
                .is_none_or(|p| e.url.starts_with(p.as_str()))
    }
}

/// A subscription handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubId(usize);

struct Sub {
    filter: Filter,
    queue: VecDeque<Event>,
    dropped: u64,
    live: bool,
}

/// The most events one subscriber's queue holds; older ones are dropped.
pub const SUB_QUEUE_MAX: usize = 4096;
/// The most subscribers one dispatcher holds.
pub const SUBSCRIBERS_MAX: usize = 1024;

/// Fans events out to filtered, bounded subscriber queues (sans-io: polled).
#[derive(Default)]
pub struct Dispatcher {
    subs: Vec<Sub>,
}

impl Dispatcher {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a subscriber; `None` when [`SUBSCRIBERS_MAX`] are live.
    pub fn subscribe(&mut self, filter: Filter) -> Option<SubId> {
        if self.subs.iter().filter(|s| s.live).count() >= SUBSCRIBERS_MAX {
            return None;
        }
        let sub = Sub {
            filter,
            queue: VecDeque::new(),
            dropped: 0,
            live: true,
        };
        self.subs.push(sub);
        Some(SubId(self.subs.len() - 1))
    }

    /// Removes a subscriber and its queue.
    pub fn unsubscribe(&mut self, id: SubId) {
        if let Some(s) = self.subs.get_mut(id.0) {
            s.live = false;
            s.queue.clear();
        }
    }

    /// Delivers `e` to every matching subscriber.
    pub fn publish(&mut self, e: &Event) {
        for s in self
            .subs
            .iter_mut()
            .filter(|s| s.live && s.filter.matches(e))
        {
            if s.queue.len() >= SUB_QUEUE_MAX {
                s.queue.pop_front();
                s.dropped += 1;
            }
            s.queue.push_back(e.clone());
        }
    }

    /// The next event for `id`.
    #[must_use]
    pub fn poll(&mut self, id: SubId) -> Option<Event> {
        self.subs.get_mut(id.0)?.queue.pop_front()
    }

    /// How many events `id` lost to a full queue.
    pub fn dropped(&self, id: SubId) -> u64 {
        self.subs.get(id.0).map_or(0, |s| s.dropped)
    }
}
