//! Counters of the boot servers, mirrored into the `metrics` facade.
//!
//! - [`PxeStats`]: shared by the server tasks (atomics, no lock); every
//!   `record_*` bumps its own counter and the Prometheus one.
//! - [`PxeCounters`]: a snapshot, for the daemon and tests.
//! - [`describe_metrics`]: the metric descriptions (call once after the
//!   recorder is installed).
//!
//! Metric names (reference for `docs/metrics.md`):
//! - `layercake_pxe_dhcp_total{result}`: every DHCP datagram, by
//!   [`DhcpResult::label`] (`offer`, `ack`, `nak`, `ignored_unknown_mac`,
//!   `ignored_malformed`, ...).
//! - `layercake_pxe_tftp_transfers_total{result=started|completed}` and
//!   `layercake_pxe_tftp_errors_total{reason}` ([`TftpResult::label`]).
//! - `layercake_pxe_tftp_bytes_total`: file bytes sent in DATA packets,
//!   retransmissions included.
//! - `layercake_pxe_http_requests_total{kind=script|file}`,
//!   `layercake_pxe_http_errors_total{reason}` ([`HttpResult::label`]) and
//!   `layercake_pxe_http_bytes_total` (body bytes sent).
//! - `layercake_pxe_events_dropped_total`: events the daemon did not take
//!   in time (its queue held [`super::event::EVENTS_MAX`]).
//! - `layercake_pxe_identity_total{result}`: identity bundles served once
//!   per boot window (`served`) and refused, by reason ([`IdentityResult`]).
//! - `layercake_boot_seconds` (histogram) and
//!   `layercake_boot_last_seconds{node}` (gauge): the boot convergence
//!   time, from the power-on command to the node's agent saying hello
//!   (RunState SYNC), per boot ([`record_boot`]).

use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use super::dhcp::DhcpResult;
use super::tftp::TftpResult;

/// What happened to one HTTP boot request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpResult {
    /// A node's script was served.
    Script,
    /// A file (kernel, initramfs) was served.
    File,
    /// A script for a MAC or name that is not registered.
    UnknownNode,
    /// A file that does not exist.
    NotFound,
    /// A path refused (`..`, absolute, NUL, a link out of the root).
    Refused,
    /// A request this server does not serve (a script name without
    /// `.ipxe`).
    BadRequest,
    /// The file could not be read (or stopped being readable mid-body).
    Io,
    /// [`super::http::FILE_STREAMS_MAX`] file bodies were streaming.
    Busy,
}

impl HttpResult {
    /// Every value, in declaration order.
    pub const ALL: [HttpResult; 8] = [
        HttpResult::Script,
        HttpResult::File,
        HttpResult::UnknownNode,
        HttpResult::NotFound,
        HttpResult::Refused,
        HttpResult::BadRequest,
        HttpResult::Io,
        HttpResult::Busy,
    ];

    /// The metric label (`kind` for requests served, else `reason`).
    pub fn label(self) -> &'static str {
        match self {
            HttpResult::Script => "script",
            HttpResult::File => "file",
            HttpResult::UnknownNode => "unknown_node",
            HttpResult::NotFound => "not_found",
            HttpResult::Refused => "refused",
            HttpResult::BadRequest => "bad_request",
            HttpResult::Io => "io",
            HttpResult::Busy => "busy",
        }
    }

    /// Whether this is an error (not a script or file served).
    pub fn is_error(self) -> bool {
        !matches!(self, HttpResult::Script | HttpResult::File)
    }
}

/// What happened to one request for a node's identity bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdentityResult {
    /// Served (once in this boot window).
    Served,
    /// No node's boot window is open for the client's address.
    NotInWindow,
    /// The client's MAC (from the neighbour table) is not the registered one.
    WrongMac,
    /// Already served in this boot window.
    AlreadyServed,
    /// This server has no identities, or none for this node.
    Missing,
}

impl IdentityResult {
    /// Every value, in declaration order.
    pub const ALL: [IdentityResult; 5] = [
        IdentityResult::Served,
        IdentityResult::NotInWindow,
        IdentityResult::WrongMac,
        IdentityResult::AlreadyServed,
        IdentityResult::Missing,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            IdentityResult::Served => "served",
            IdentityResult::NotInWindow => "not_in_window",
            IdentityResult::WrongMac => "wrong_mac",
            IdentityResult::AlreadyServed => "already_served",
            IdentityResult::Missing => "missing",
        }
    }
}

/// One boot's convergence time (power-on command to RunState SYNC) of
/// node `name`.
pub fn record_boot(name: &str, took: Duration) {
    let secs = took.as_secs_f64();
    histogram!("layercake_boot_seconds").record(secs);
    gauge!("layercake_boot_last_seconds", "node" => name.to_string()).set(secs);
}

/// The servers' counters (see the module documentation for names).
#[derive(Debug, Default)]
pub struct PxeStats {
    dhcp: [AtomicU64; DhcpResult::ALL.len()],
    tftp: [AtomicU64; TftpResult::ALL.len()],
    tftp_bytes: AtomicU64,
    http: [AtomicU64; HttpResult::ALL.len()],
    http_bytes: AtomicU64,
    events_dropped: AtomicU64,
    identity: [AtomicU64; IdentityResult::ALL.len()],
}

impl PxeStats {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// One DHCP datagram handled.
    pub fn record_dhcp(&self, result: DhcpResult) {
        bump(&self.dhcp[result as usize], 1);
        counter!("layercake_pxe_dhcp_total", "result" => result.label()).increment(1);
    }

    /// One TFTP request or transfer outcome.
    pub fn record_tftp(&self, result: TftpResult) {
        bump(&self.tftp[result.index()], 1);
        if result.is_error() {
            counter!("layercake_pxe_tftp_errors_total", "reason" => result.label()).increment(1);
        } else {
            counter!("layercake_pxe_tftp_transfers_total", "result" => result.label()).increment(1);
        }
    }

    /// File bytes sent in one DATA packet.
    pub fn record_tftp_bytes(&self, bytes: usize) {
        let n = bytes as u64;
        bump(&self.tftp_bytes, n);
        counter!("layercake_pxe_tftp_bytes_total").increment(n);
    }

    /// One HTTP request's outcome.
    pub fn record_http(&self, result: HttpResult) {
        bump(&self.http[result as usize], 1);
        if result.is_error() {
            counter!("layercake_pxe_http_errors_total", "reason" => result.label()).increment(1);
        } else {
            counter!("layercake_pxe_http_requests_total", "kind" => result.label()).increment(1);
        }
    }

    /// Body bytes sent.
    pub fn record_http_bytes(&self, bytes: usize) {
        let n = bytes as u64;
        bump(&self.http_bytes, n);
        counter!("layercake_pxe_http_bytes_total").increment(n);
    }

    /// One identity request's outcome.
    pub fn record_identity(&self, result: IdentityResult) {
        bump(&self.identity[result as usize], 1);
        counter!("layercake_pxe_identity_total", "result" => result.label()).increment(1);
    }

    /// An event the daemon's queue had no room for.
    pub fn record_event_dropped(&self) {
        bump(&self.events_dropped, 1);
        counter!("layercake_pxe_events_dropped_total").increment(1);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> PxeCounters {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PxeCounters {
            dhcp: DhcpResult::ALL
                .map(|r| (r, load(&self.dhcp[r as usize])))
                .to_vec(),
            tftp: TftpResult::ALL
                .map(|r| (r, load(&self.tftp[r.index()])))
                .to_vec(),
            tftp_bytes: load(&self.tftp_bytes),
            http: HttpResult::ALL
                .map(|r| (r, load(&self.http[r as usize])))
                .to_vec(),
            http_bytes: load(&self.http_bytes),
            events_dropped: load(&self.events_dropped),
            identity: IdentityResult::ALL
                .map(|r| (r, load(&self.identity[r as usize])))
                .to_vec(),
        }
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    // Relaxed: independent monotonic counters, read only for reporting.
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A snapshot of [`PxeStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PxeCounters {
    /// DHCP datagrams by result.
    pub dhcp: Vec<(DhcpResult, u64)>,
    /// TFTP requests and transfers by result.
    pub tftp: Vec<(TftpResult, u64)>,
    /// TFTP file bytes sent.
    pub tftp_bytes: u64,
    /// HTTP requests by result.
    pub http: Vec<(HttpResult, u64)>,
    /// HTTP body bytes sent.
    pub http_bytes: u64,
    /// Events dropped for want of room.
    pub events_dropped: u64,
    /// Identity requests by result.
    pub identity: Vec<(IdentityResult, u64)>,
}

impl PxeCounters {
    /// One DHCP count.
    pub fn dhcp(&self, result: DhcpResult) -> u64 {
        find(&self.dhcp, result)
    }

    /// One TFTP count.
    pub fn tftp(&self, result: TftpResult) -> u64 {
        find(&self.tftp, result)
    }

    /// One HTTP count.
    pub fn http(&self, result: HttpResult) -> u64 {
        find(&self.http, result)
    }

    /// One identity count.
    pub fn identity(&self, result: IdentityResult) -> u64 {
        find(&self.identity, result)
    }
}

fn find<K: PartialEq>(counts: &[(K, u64)], key: K) -> u64 {
    counts
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(0, |(_, n)| *n)
}

/// Describes the metrics above to the installed recorder.
pub fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!(
        "layercake_pxe_dhcp_total",
        "DHCP datagrams handled by the boot server, by result (offer, ack, nak, ignored_*)"
    );
    describe_counter!(
        "layercake_pxe_tftp_transfers_total",
        "TFTP transfers started and completed"
    );
    describe_counter!(
        "layercake_pxe_tftp_errors_total",
        "TFTP requests refused or dropped and transfers failed, by reason"
    );
    describe_counter!(
        "layercake_pxe_tftp_bytes_total",
        metrics::Unit::Bytes,
        "File bytes sent by TFTP (retransmissions included)"
    );
    describe_counter!(
        "layercake_pxe_http_requests_total",
        "HTTP boot requests served, by kind (script, file)"
    );
    describe_counter!(
        "layercake_pxe_http_errors_total",
        "HTTP boot requests refused or failed, by reason"
    );
    describe_counter!(
        "layercake_pxe_http_bytes_total",
        metrics::Unit::Bytes,
        "HTTP boot body bytes sent"
    );
    describe_counter!(
        "layercake_pxe_identity_total",
        "Identity bundles served to booting nodes (once per boot window) and refused, by result"
    );
    metrics::describe_histogram!(
        "layercake_boot_seconds",
        metrics::Unit::Seconds,
        "Boot convergence: power-on command to the node's agent saying hello (RunState SYNC)"
    );
    metrics::describe_gauge!(
        "layercake_boot_last_seconds",
        metrics::Unit::Seconds,
        "The last boot convergence time of each node booted here"
    );
    describe_counter!(
        "layercake_pxe_events_dropped_total",
        "Boot events (DHCP ACK, script fetched) dropped because the daemon's queue was full"
    );
}
