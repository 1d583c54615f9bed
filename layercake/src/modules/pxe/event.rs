//! What the boot servers tell the daemon: [`PxeEvent`], delivered through
//! an [`EventSink`] (a bounded channel of [`EVENTS_MAX`]; when the daemon
//! falls behind, new events are dropped and counted, never queued without
//! bound and never blocking a server).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::dhcp::ClientKind;
use super::registry::Mac;
use super::stats::PxeStats;

/// Most events waiting for the daemon.
pub const EVENTS_MAX: usize = 1024;

/// A boot milestone of a registered node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PxeEvent {
    /// The node was sent a DHCP ACK for its registered address (firmware,
    /// iPXE or layer 0's own client: see `client`). The pxe module's
    /// WAIT -> INIT signal.
    Acked {
        /// The node's MAC.
        mac: Mac,
        /// Its registered name.
        name: String,
        /// The address acknowledged.
        ip: Ipv4Addr,
        /// Which client asked.
        client: ClientKind,
    },
    /// The node's iPXE script was fetched from its registered address.
    ScriptFetched {
        /// The node's MAC.
        mac: Mac,
        /// Its registered name.
        name: String,
        /// The HTTP client's address.
        peer: SocketAddr,
    },
}

/// The sending side, shared by the server tasks.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: mpsc::Sender<PxeEvent>,
    stats: Arc<PxeStats>,
}

impl EventSink {
    /// A sink and its receiver, counting drops in `stats`.
    pub fn channel(stats: Arc<PxeStats>) -> (EventSink, mpsc::Receiver<PxeEvent>) {
        let (tx, rx) = mpsc::channel(EVENTS_MAX);
        (EventSink { tx, stats }, rx)
    }

    /// Queues `event`, or drops and counts it when the queue is full or
    /// the receiver is gone.
    pub fn send(&self, event: PxeEvent) {
        if self.tx.try_send(event).is_err() {
            self.stats.record_event_dropped();
        }
    }
}
