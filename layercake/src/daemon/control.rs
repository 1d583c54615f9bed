//! The control channel: how the API (multi-threaded, `Send`) reaches the
//! root (on the overlay's single thread).
//!
//! - [`Control`]: the `Send` handle the API uses; it sends [`Command`]s on
//!   a bounded channel ([`COMMANDS_MAX`]; a full queue answers 503) to
//!   [`control_task`], the one task that owns the root's handle.
//! - Writes are serialised there: [`RootApp::prepare`], commit to the
//!   database on the blocking pool (the overlay keeps running), then
//!   [`RootApp::apply`] and acknowledge ("persist, then acknowledge").
//! - [`ApiError`], [`Selection`], [`WriteOp`]: the request and error types
//!   the API and the root share.
//! - Cost: a request is costed on the API's thread before it is queued
//!   ([`Control::check`]: hostlists counted, never expanded, against the
//!   cluster's size; bounded filters and values), and reads are split into
//!   commands of at most [`NODES_PER_COMMAND`] nodes, so no API request
//!   holds the overlay's thread for long (issue 12, finding 3).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::daemon::metrics as m;
use crate::daemon::persist::CfgDb;
use crate::daemon::root::{Prepared, PreparedBatch, RootApp};
use overlay::udp::Handle;

use crate::sync::{App, Node, Stack};

/// An application that contains the root's ([`RootApp`] itself, or a
/// harness that wraps it, like loadtest's probe with `--api`): what the
/// control task drives.
pub trait RootHost: App + 'static {
    /// The root's application (`None`: this instance is not a root).
    fn root(&self) -> Option<&RootApp>;
    /// The same, mutable.
    fn root_mut(&mut self) -> Option<&mut RootApp>;
}

impl RootHost for RootApp {
    fn root(&self) -> Option<&RootApp> {
        Some(self)
    }

    fn root_mut(&mut self) -> Option<&mut RootApp> {
        Some(self)
    }
}

fn no_root() -> ApiError {
    ApiError::unavailable("this instance holds no root")
}

/// Commands queued for the root before the API answers 503.
pub const COMMANDS_MAX: usize = 1024;
/// Most conditions in one `filter`.
pub const FILTER_TERMS_MAX: usize = 64;
/// Most bytes of a `filter`.
pub const FILTER_BYTES_MAX: usize = 4096;
/// Longest group name a selection may carry.
pub const GROUP_BYTES_MAX: usize = 253;
/// Most `URL=VALUE` pairs in one write or plan.
pub const VALUES_MAX: usize = 256;
/// Most nodes one read command handles on the root's thread: the API
/// splits longer reads (lists, filters, snapshots, plan inputs) into
/// commands of this many nodes, so the overlay runs between them.
pub const NODES_PER_COMMAND: usize = 256;
/// Commands one request keeps queued at once ([`Control::read_all`]).
pub const READ_WINDOW: usize = 64;
/// How long the control task runs queued commands back to back before it
/// lets the overlay's driver run (it shares the thread).
pub const SLICE: std::time::Duration = std::time::Duration::from_millis(10);
/// Most characters of client input echoed in an error message.
const ECHO_CHARS_MAX: usize = 80;

/// `s` cut to [`ECHO_CHARS_MAX`] characters (with `...` when cut), for
/// error messages that quote client input.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(ECHO_CHARS_MAX) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}
/// An API failure: HTTP status, a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// Machine-readable code (`bad_request`, `not_found`, ...).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code: "bad_request",
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            code: "not_found",
            message: message.into(),
        }
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            code: "internal",
            message: message.into(),
        }
    }
    /// 503.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 503,
            code: "unavailable",
            message: message.into(),
        }
    }
}

/// Which nodes a request is about.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Selection {
    /// A hostlist (`n[0001-0010]`); every name must exist.
    #[serde(default)]
    pub hosts: Option<String>,
    /// A group of the topology (a rack, or a group above racks): its
    /// nodes; with `hosts` or `filter`, the nodes in both.
    #[serde(default)]
    pub group: Option<String>,
    /// `URL=VALUE[,URL=VALUE...]`, all must hold on `side`.
    #[serde(default)]
    pub filter: Option<String>,
    /// The copy `filter` reads: `dsc` (default) or `cfg`.
    #[serde(default)]
    pub side: Option<String>,
    /// Every node (writes need `hosts`, `filter` or `all`).
    #[serde(default)]
    pub all: bool,
}

impl Selection {
    /// True when nothing narrows or widens the selection explicitly.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_none() && self.filter.is_none() && self.group.is_none() && !self.all
    }

    /// The hostlist, unless absent, blank or `all` (every node).
    pub fn hosts(&self) -> Option<&str> {
        self.hosts
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty() && *h != "all")
    }

    /// Costs the selection before anything runs: the hostlist is counted
    /// with checked arithmetic, without expanding it, and refused when it
    /// names more than `nodes_max` hosts (the cluster's node count: every
    /// name must exist); a filter has at most [`FILTER_TERMS_MAX`] terms
    /// and [`FILTER_BYTES_MAX`] bytes. Cost linear in the request's length.
    pub fn check(&self, nodes_max: usize) -> Result<(), ApiError> {
        self.cost(nodes_max).map(|_| ())
    }

    /// Checks the selection like [`Selection::check`] and returns the most
    /// nodes it can select (its hostlist's count, else every node).
    pub fn cost(&self, nodes_max: usize) -> Result<u64, ApiError> {
        let mut cost = nodes_max as u64;
        if let Some(h) = self.hosts() {
            let n = topo::hostlist::count(h)
                .map_err(|e| ApiError::bad(format!("bad hostlist `{}`: {e}", clip(h))))?;
            if n > nodes_max as u64 {
                return Err(ApiError::bad(format!(
                    "hostlist `{}` names {n} hosts; this cluster has {nodes_max} nodes",
                    clip(h)
                )));
            }
            cost = n;
        }
        if let Some(g) = &self.group
            && g.len() > GROUP_BYTES_MAX
        {
            return Err(ApiError::bad(format!(
                "group name of {} bytes (at most {GROUP_BYTES_MAX})",
                g.len()
            )));
        }
        if let Some(f) = &self.filter {
            if f.len() > FILTER_BYTES_MAX {
                return Err(ApiError::bad(format!(
                    "filter of {} bytes (at most {FILTER_BYTES_MAX})",
                    f.len()
                )));
            }
            let terms = f.split(',').filter(|t| !t.trim().is_empty()).count();
            if terms > FILTER_TERMS_MAX {
                return Err(ApiError::bad(format!(
                    "filter of {terms} conditions (at most {FILTER_TERMS_MAX})"
                )));
            }
        }
        Ok(cost)
    }
}

/// What a write does to each selected node's Cfg.
#[derive(Clone, Debug)]
pub enum WriteOp {
    /// Sets `URL=VALUE` pairs; with `replace`, on a fresh Cfg.
    Set {
        /// The values, as text (enums by name or number).
        values: Vec<(String, String)>,
        /// Start from an empty Cfg instead of the current one.
        replace: bool,
    },
    /// Resets the Cfg to empty (nothing wanted).
    Reset,
    /// Sets the Control/Frozen flag.
    Freeze(bool),
}

/// A read of the root's state, run inside the world.
pub type ReadFn = Box<dyn FnOnce(&mut RootApp, &Stack) + Send>;

/// What the API asks of the root.
pub enum Command {
    /// Runs a read (the closure sends its own answer).
    Read(ReadFn),
    /// A Cfg write: acknowledged once committed and published.
    Write {
        /// Which nodes.
        sel: Selection,
        /// What to do to their Cfg.
        op: WriteOp,
        /// The answer.
        reply: oneshot::Sender<Result<WriteResult, ApiError>>,
    },
    /// Several writes committed in one transaction, all or nothing.
    Batch {
        /// The writes, in order.
        entries: Vec<(Selection, WriteOp)>,
        /// Only validate and report; commit nothing.
        dry_run: bool,
        /// The answer.
        reply: oneshot::Sender<Result<BatchResult, ApiError>>,
    },
}

/// One entry of a [`BatchResult`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct EntryResult {
    /// Nodes the entry selects.
    pub matched: usize,
    /// Nodes whose Cfg the entry changes.
    pub changed: usize,
    /// Those nodes as a compressed hostlist.
    pub hosts: String,
}

/// The answer to a batch write.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BatchResult {
    /// Per entry, in order.
    pub entries: Vec<EntryResult>,
    /// Nodes whose Cfg the batch changes (each once).
    pub changed: usize,
    /// True when nothing was committed on purpose (`dry_run`).
    pub dry_run: bool,
}

/// The answer to a write.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct WriteResult {
    /// Nodes selected.
    pub matched: usize,
    /// Nodes whose Cfg changed (committed and published).
    pub changed: usize,
}

/// The API's handle on the root (cheap to clone, `Send`).
#[derive(Clone)]
pub struct Control {
    tx: mpsc::Sender<Command>,
    nodes: usize,
}

impl Control {
    /// The cluster's node count (the bound of a selection).
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Costs a request on the caller's thread ([`Selection::check`], at
    /// most [`VALUES_MAX`] values) before anything reaches the root.
    pub fn check(&self, sel: &Selection, values: usize) -> Result<(), ApiError> {
        if values > VALUES_MAX {
            return Err(ApiError::bad(format!(
                "{values} values (at most {VALUES_MAX})"
            )));
        }
        sel.check(self.nodes)
    }

    /// Runs `f` on the root and returns its result.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RootApp, &Stack) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Read(Box::new(move |r, s| {
            let _ = tx.send(f(r, s));
        }));
        self.send(cmd).await?;
        rx.await
            .map_err(|_| ApiError::unavailable("the root is shutting down"))
    }

    /// Writes Cfg; returns once committed and published.
    pub async fn write(&self, sel: Selection, op: WriteOp) -> Result<WriteResult, ApiError> {
        let values = match &op {
            WriteOp::Set { values, .. } => values.len(),
            WriteOp::Reset | WriteOp::Freeze(_) => 0,
        };
        self.check(&sel, values)?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Write { sel, op, reply }).await?;
        rx.await
            .map_err(|_| ApiError::unavailable("the root is shutting down"))?
    }

    /// Writes several entries in one transaction (or, with `dry_run`,
    /// validates them and reports what they would change).
    pub async fn batch(
        &self,
        entries: Vec<(Selection, WriteOp)>,
        dry_run: bool,
    ) -> Result<BatchResult, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Batch {
            entries,
            dry_run,
            reply,
        })
        .await?;
        rx.await
            .map_err(|_| ApiError::unavailable("the root is shutting down"))?
    }

    /// Runs every closure on the root, in order, and returns their results
    /// in order. Up to [`READ_WINDOW`] are queued at once, so a large read
    /// cut into [`NODES_PER_COMMAND`]-node pieces costs one round trip per
    /// window, not one per piece, while the control task still gives the
    /// overlay the thread every [`SLICE`].
    pub async fn read_all<R, F>(&self, fs: impl IntoIterator<Item = F>) -> Result<Vec<R>, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&mut RootApp, &Stack) -> R + Send + 'static,
    {
        let mut it = fs.into_iter();
        let mut pending = std::collections::VecDeque::with_capacity(READ_WINDOW);
        let mut out = Vec::new();
        loop {
            while pending.len() < READ_WINDOW {
                let Some(f) = it.next() else { break };
                let (tx, rx) = oneshot::channel();
                let cmd = Command::Read(Box::new(move |r, s| {
                    let _ = tx.send(f(r, s));
                }));
                self.send(cmd).await?;
                pending.push_back(rx);
            }
            let Some(rx) = pending.pop_front() else {
                return Ok(out);
            };
            out.push(
                rx.await
                    .map_err(|_| ApiError::unavailable("the root is shutting down"))?,
            );
        }
    }

    async fn send(&self, cmd: Command) -> Result<(), ApiError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                ApiError::unavailable(format!("the root is busy ({COMMANDS_MAX} requests queued)"))
            }
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::unavailable("the root is shutting down")
            }
        })
    }
}

/// A control channel for the API to a root of `nodes` nodes, and its
/// receiving end.
pub fn control_channel(nodes: usize) -> (Control, mpsc::Receiver<Command>) {
    let (tx, rx) = mpsc::channel(COMMANDS_MAX);
    (Control { tx, nodes }, rx)
}

/// Serves API commands against the root until the channel closes.
pub async fn control_task<A: RootHost>(
    root: Handle<Node<A>>,
    db: Arc<CfgDb>,
    mut rx: mpsc::Receiver<Command>,
) {
    let mut slice = std::time::Instant::now();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Read(f) => root.with(|n, _| {
                let (app, stack) = n.parts();
                // Without a root the closure is dropped: its reader hears
                // "shutting down".
                if let Some(r) = app.root_mut() {
                    f(r, stack);
                }
            }),
            Command::Write { sel, op, reply } => {
                let res = write(&root, &db, &sel, &op).await;
                let _ = reply.send(res);
            }
            Command::Batch {
                entries,
                dry_run,
                reply,
            } => {
                let res = batch(&root, &db, &entries, dry_run).await;
                let _ = reply.send(res);
            }
        }
        // The overlay's driver shares this thread: let it run at least
        // every SLICE, however many commands are queued.
        if slice.elapsed() >= SLICE {
            tokio::task::yield_now().await;
            slice = std::time::Instant::now();
        }
    }
}

async fn batch<A: RootHost>(
    root: &Handle<Node<A>>,
    db: &Arc<CfgDb>,
    entries: &[(Selection, WriteOp)],
    dry_run: bool,
) -> Result<BatchResult, ApiError> {
    let PreparedBatch {
        entries: counts,
        changes,
    } = root.peek(|n| n.app().root().ok_or_else(no_root)?.prepare_batch(entries))?;
    let result = BatchResult {
        entries: counts
            .into_iter()
            .map(|(matched, names)| EntryResult {
                matched,
                changed: names.len(),
                hosts: topo::hostlist::compress(&names),
            })
            .collect(),
        changed: changes.len(),
        dry_run,
    };
    if !dry_run && !changes.is_empty() {
        let changes = commit(db, changes).await?;
        root.with(|n, now| {
            n.with(now, |a, s| {
                if let Some(r) = a.root_mut() {
                    r.apply(s, changes, now);
                }
            })
        });
    }
    Ok(result)
}

/// Commits Cfgs on the blocking pool (one transaction); returns them.
async fn commit(
    db: &Arc<CfgDb>,
    changes: Vec<(String, proto::node::Node)>,
) -> Result<Vec<(String, proto::node::Node)>, ApiError> {
    let t0 = std::time::Instant::now();
    let db = db.clone();
    let changes = tokio::task::spawn_blocking(move || db.put(&changes).map(|()| changes))
        .await
        .map_err(|e| ApiError::internal(format!("commit task failed: {e}")))?
        .map_err(|e| {
            tracing::error!("commit failed: {e}");
            ApiError::internal(format!("commit failed: {e}"))
        })?;
    m::api_write(t0.elapsed());
    Ok(changes)
}

async fn write<A: RootHost>(
    root: &Handle<Node<A>>,
    db: &Arc<CfgDb>,
    sel: &Selection,
    op: &WriteOp,
) -> Result<WriteResult, ApiError> {
    let Prepared { matched, changes } =
        root.peek(|n| n.app().root().ok_or_else(no_root)?.prepare(sel, op))?;
    let changed = changes.len();
    if changed > 0 {
        let changes = commit(db, changes).await?;
        root.with(|n, now| {
            n.with(now, |a, s| {
                if let Some(r) = a.root_mut() {
                    r.apply(s, changes, now);
                }
            })
        });
    }
    Ok(WriteResult { matched, changed })
}
