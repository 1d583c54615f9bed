//! CHILD-context power for the nodes whose power this instance drives (its
//! children with a BMC), and the task that runs their BMC calls.
//!
//! - [`BmcHost`]: sans-io. One [`NodeEngine`] per driven child, with
//!   [`Relation::Parent`] (it runs the CHILD steps: the power mutations);
//!   Cfgs go in with [`BmcHost::handle_cfg`], BMC answers with
//!   [`BmcHost::handle_result`], time with [`BmcHost::handle_timeout`]; BMC
//!   calls come out of [`BmcHost::poll_job`], the children's Dsc out of
//!   [`BmcHost::dsc_changes`]. It also schedules a status poll of every BMC
//!   each poll interval: a change made behind the system's back becomes a
//!   Dsc change, and the engine re-plans to correct it.
//! - [`drive`]: the async loop: runs jobs through the [`PowerPool`] (tokio
//!   tasks) and feeds their results back through a [`HostAccess`].
//!
//! Only `/PhysState` is driven here for a child without a boot network:
//! the Cfg its engine gets has its other tracked values (RunState, PXE)
//! cleared. With [`BmcHost::enable_boot`], a child whose Cfg names a
//! `Network/Mac` is also booted from the network: the pxe module's steps
//! run here ([`crate::modules::pxe::child`]), the boot servers are asked
//! through [`BmcHost::poll_boot`] and answer with
//! [`BmcHost::handle_armed`] and [`BmcHost::handle_script_fetched`], and
//! the node's agent saying hello or going silent comes in with
//! [`BmcHost::handle_agent`].
//!
//! Errors: authentication refused and unsupported operations put the node
//! in `PHYS_ERROR` (its engine stops: no plan from there) with the message
//! in `Power/Error`; the next successful poll clears it. Unreachable BMCs
//! fail the step (the engine applies its fail-to value; a discovery that
//! cannot reach the BMC lands in `PHYS_HANG`). An engine that used up its
//! re-plans gets a fresh budget from the next poll the BMC answers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::executor::{ExecEvent, Relation};
use engine::graph::Graph;
use engine::mutation::VarId;
use engine::node::NodeEngine;
use engine::registry::Registry;
use engine::url::Path;
use engine::value::Value;
use prost::Message as _;
use proto::node::{Node, PhysState};
use tokio::sync::mpsc;

use super::config::{Backends, BmcTarget, Place, power_of, set_power};
use super::{Backend, PowerError, PowerOp, PowerPool, PowerState};
use crate::modules::pxe::child::{BootChild, BootCmd, BootVars, StepOutcome};
use crate::modules::pxe::network::{NodeNet, network_of, set_network};
use crate::modules::pxe::registry::Mac;

/// The most BMC results queued between the pool's tasks and the host.
pub const RESULTS_MAX: usize = 4096;
/// The most children one host drives.
pub const CHILDREN_MAX: usize = 1 << 16;

/// What a job asks of a BMC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// A step of the child's chain: `op` (`None`: a discovery, a status read).
    Step {
        /// The engine's token for the step.
        token: u32,
        /// The operation.
        op: Option<PowerOp>,
    },
    /// A periodic status read.
    Poll,
}

/// One BMC call to run.
#[derive(Clone)]
pub struct Job {
    /// The child (overlay instance id).
    pub child: u32,
    /// The child's generation when the job was issued (stale polls are dropped).
    pub generation: u64,
    /// What to do.
    pub kind: JobKind,
    /// The BMC.
    pub backend: Backend,
}

/// A finished job.
#[derive(Clone, Debug)]
pub struct JobResult {
    /// The child.
    pub child: u32,
    /// The job's generation.
    pub generation: u64,
    /// What was done.
    pub kind: JobKind,
    /// The power state read or reached.
    pub result: Result<PowerState, PowerError>,
}

/// Runs one job through the pool.
pub async fn run_job(pool: &PowerPool, j: Job) -> JobResult {
    let result = match j.kind {
        JobKind::Step { op: Some(op), .. } => pool.perform(&j.backend, op).await,
        JobKind::Step { op: None, .. } | JobKind::Poll => pool.status(&j.backend).await,
    };
    JobResult {
        child: j.child,
        generation: j.generation,
        kind: j.kind,
        result,
    }
}

struct Child {
    name: String,
    engine: NodeEngine,
    /// The Cfg as received (with its power extension).
    cfg: Node,
    target: Option<BmcTarget>,
    backend: Option<Backend>,
    /// The last error, shown in `Power/Error`.
    error: Option<String>,
    /// A configuration error: the node is `PHYS_ERROR`.
    config_error: bool,
    step: Option<u32>,
    /// The engine used up its re-plans; a successful poll restarts it.
    gave_up: bool,
    poll_in_flight: bool,
    next_poll_ms: u64,
    generation: u64,
    published: Option<Bytes>,
    /// Booted from the network (its Cfg names a MAC and boot is enabled).
    boot: Option<BootChild>,
    /// The last boot configuration or arming error (`Network/Error`).
    boot_error: Option<String>,
}

/// Settings of a [`BmcHost`].
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// How often every BMC's power state is read.
    pub poll_interval: Duration,
    /// A boolean URL that freezes a node's engine when true in its Cfg (and
    /// is set in its Dsc while frozen).
    pub frozen: Option<Path>,
}

/// The children whose power this instance drives.
pub struct BmcHost {
    graph: Arc<Graph>,
    registry: Arc<Registry>,
    phys: VarId,
    backends: Backends,
    cfg: HostConfig,
    children: HashMap<u32, Child>,
    jobs: VecDeque<Job>,
    /// Network boot: the variables its steps report (`None`: disabled).
    boot: Option<BootVars>,
    boot_cmds: VecDeque<BootCmd>,
}

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the module set does not track /PhysState")]
pub struct NoPhysState;

fn mutation_op(name: &str) -> Option<Option<PowerOp>> {
    match name {
        "power_discover" => Some(None),
        "power_on" => Some(Some(PowerOp::On)),
        "power_off" | "power_reset_hang" => Some(Some(PowerOp::Off)),
        "power_cycle" => Some(Some(PowerOp::Cycle)),
        _ => None,
    }
}

impl BmcHost {
    /// A host for `graph` (which must track `/PhysState`).
    pub fn new(
        graph: Arc<Graph>,
        registry: Arc<Registry>,
        backends: Backends,
        cfg: HostConfig,
    ) -> Result<BmcHost, NoPhysState> {
        let phys = graph.set().var("/PhysState").ok_or(NoPhysState)?;
        Ok(BmcHost {
            graph,
            registry,
            phys,
            backends,
            cfg,
            children: HashMap::new(),
            jobs: VecDeque::new(),
            boot: None,
            boot_cmds: VecDeque::new(),
        })
    }

    /// Also boots children whose Cfg names a `Network/Mac` from the
    /// network (the graph must track the PXE state and `/RunState`).
    pub fn enable_boot(&mut self) -> Result<(), NoPhysState> {
        let set = self.graph.set();
        let var = |url: &str| set.var(url).ok_or(NoPhysState);
        self.boot = Some(BootVars {
            pxe: var(engine::virt::PXE_URL)?,
            run: var("/RunState")?,
            phys: self.phys,
        });
        Ok(())
    }

    /// Children booted from the network now.
    pub fn boot_children(&self) -> usize {
        self.children.values().filter(|c| c.boot.is_some()).count()
    }

    /// True when this host drives `child`'s power.
    pub fn drives(&self, child: u32) -> bool {
        self.children.contains_key(&child)
    }

    /// Stops driving `child` (another instance took its group over): its
    /// engine and queued calls are dropped; a call in flight is ignored
    /// when it returns.
    pub fn release(&mut self, child: u32) {
        if let Some(mut c) = self.children.remove(&child) {
            self.jobs.retain(|j| j.child != child);
            if let Some(b) = c.boot.as_mut() {
                b.disarm(child, &mut self.boot_cmds);
            }
        }
    }

    /// Number of children driven.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// True when no child is driven.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// A child's Cfg. Returns true when this host drives the child's power
    /// (its Cfg names a BMC protocol); a Cfg without one releases it.
    pub fn handle_cfg(&mut self, child: u32, place: Place<'_>, cfg: Node, now_ms: u64) -> bool {
        let power = power_of(&cfg).unwrap_or_default();
        let resolved = BmcTarget::resolve(&power, place);
        if matches!(resolved, Ok(None)) {
            self.release(child);
            return false;
        }
        if !self.children.contains_key(&child) {
            if self.children.len() >= CHILDREN_MAX {
                tracing::warn!("{}: more than {CHILDREN_MAX} BMC nodes", place.host);
                return false;
            }
            let engine = NodeEngine::new(
                self.graph.clone(),
                self.registry.clone(),
                Relation::Parent,
                place.host,
            );
            self.children.insert(
                child,
                Child {
                    name: place.host.to_string(),
                    engine,
                    cfg: Node::default(),
                    target: None,
                    backend: None,
                    error: None,
                    config_error: false,
                    step: None,
                    gave_up: false,
                    poll_in_flight: false,
                    next_poll_ms: now_ms,
                    generation: 0,
                    published: None,
                    boot: None,
                    boot_error: None,
                },
            );
        }
        let c = self.children.get_mut(&child).expect("inserted above");
        let target = resolved.and_then(|t| t.ok_or_else(String::new));
        match target {
            Ok(t) if c.target.as_ref() != Some(&t) || c.config_error => {
                match self.backends.backend(&t) {
                    Ok(b) => {
                        c.backend = Some(b);
                        c.config_error = false;
                        c.error = None;
                    }
                    Err(e) => set_config_error(c, &e.to_string()),
                }
                c.target = Some(t);
                c.generation += 1;
                c.next_poll_ms = now_ms;
            }
            Ok(_) => {}
            Err(e) => {
                c.backend = None;
                c.target = None;
                set_config_error(c, &format!("{}: {e}", place.host));
            }
        }
        c.cfg = cfg.clone();
        if self.boot.is_some() {
            update_boot(c, child, &mut self.boot_cmds);
        }
        let mut wanted = cfg;
        for (i, var) in self.graph.set().vars.iter().enumerate() {
            if i != self.phys as usize && c.boot.is_none() {
                // Cannot fail: tracked variables are enums with a zero value.
                let _ = self.registry.set(&mut wanted, &var.path, &Value::Enum(0));
            }
        }
        let frozen = is_frozen(&self.cfg.frozen, &self.registry, &wanted);
        let was = is_frozen(&self.cfg.frozen, &self.registry, c.engine.cfg());
        if frozen && !was {
            c.engine.freeze();
        }
        if *c.engine.cfg() != wanted
            && let Err(e) = c.engine.set_cfg(wanted, now_ms)
        {
            tracing::warn!("{}: engine rejected a Cfg: {e}", c.name);
        }
        if !frozen && was {
            c.engine.thaw(now_ms);
        }
        self.pump(child, now_ms);
        true
    }

    /// A BMC call finished.
    pub fn handle_result(&mut self, r: JobResult, now_ms: u64) {
        let phys = self.phys;
        let poll_ms = self.cfg.poll_interval.as_millis() as u64;
        let Some(c) = self.children.get_mut(&r.child) else {
            return;
        };
        match r.kind {
            JobKind::Poll => {
                c.poll_in_flight = false;
                c.next_poll_ms = now_ms + poll_ms;
                if r.generation != c.generation {
                    return;
                }
                match r.result {
                    Ok(s) => {
                        let was_error = c.config_error;
                        c.config_error = false;
                        c.error = None;
                        if was_error || c.engine.dsc().phys_state != s.phys() {
                            tracing::info!("{}: BMC reports power {s:?}", c.name);
                            c.engine.handle_report(&[(phys, s.phys())], now_ms);
                        }
                        if std::mem::take(&mut c.gave_up) {
                            // The BMC answers again: a fresh re-plan budget.
                            let cfg = c.engine.cfg().clone();
                            if let Err(e) = c.engine.set_cfg(cfg, now_ms) {
                                tracing::warn!("{}: engine rejected a Cfg: {e}", c.name);
                            }
                        }
                    }
                    Err(e) if e.is_config() => {
                        set_config_error(c, &e.to_string());
                        c.engine
                            .handle_report(&[(phys, PhysState::PhysError as i32)], now_ms);
                    }
                    Err(e) => {
                        tracing::debug!("{}: poll: {e}", c.name);
                        c.error = Some(e.to_string());
                    }
                }
            }
            JobKind::Step { token, op } => {
                if c.step == Some(token) {
                    c.step = None;
                }
                c.generation += 1;
                c.next_poll_ms = now_ms + poll_ms;
                match r.result {
                    Ok(s) => {
                        c.error = None;
                        c.config_error = false;
                        c.engine.handle_report(&[(phys, s.phys())], now_ms);
                    }
                    Err(e) if e.is_config() => {
                        tracing::warn!("{}: {e}", c.name);
                        set_config_error(c, &e.to_string());
                        c.engine
                            .handle_report(&[(phys, PhysState::PhysError as i32)], now_ms);
                    }
                    Err(e) => {
                        tracing::warn!("{}: {e}", c.name);
                        c.error = Some(e.to_string());
                        c.engine.handle_failed(token, now_ms);
                        if op.is_none() && c.engine.dsc().phys_state == 0 {
                            let hang = PhysState::PhysHang as i32;
                            c.engine.handle_report(&[(phys, hang)], now_ms);
                        }
                    }
                }
            }
        }
        self.pump(r.child, now_ms);
    }

    /// Fires engine deadlines and schedules due polls.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let ids: Vec<u32> = self.children.keys().copied().collect();
        for id in ids {
            let Some(c) = self.children.get_mut(&id) else {
                continue;
            };
            c.engine.handle_timeout(now_ms);
            let due = c.next_poll_ms <= now_ms && !c.poll_in_flight && c.step.is_none();
            if let (true, Some(b)) = (due, c.backend.clone()) {
                c.poll_in_flight = true;
                self.jobs.push_back(Job {
                    child: id,
                    generation: c.generation,
                    kind: JobKind::Poll,
                    backend: b,
                });
            }
            self.pump(id, now_ms);
        }
    }

    /// Moves the child's engine actions into jobs and drains its events.
    fn pump(&mut self, child: u32, now_ms: u64) {
        let Some(c) = self.children.get_mut(&child) else {
            return;
        };
        if let (Some(b), Some(v)) = (c.boot.as_mut(), self.boot) {
            b.check_power((&mut c.engine, v), child, &mut self.boot_cmds, now_ms);
        }
        while let Some(a) = c.engine.poll_action() {
            let name = &self.graph.mutation(a.mutation).name;
            if let (Some(b), Some(v)) = (c.boot.as_mut(), self.boot) {
                if name == "power_on" {
                    b.powering_on(now_ms);
                }
                let step = (name.as_str(), a.token);
                let who = (child, c.name.as_str());
                let out = b.step((&mut c.engine, v), who, step, &mut self.boot_cmds, now_ms);
                if out == StepOutcome::Handled {
                    continue;
                }
            }
            let op = mutation_op(name);
            match (op, c.backend.clone()) {
                (Some(op), Some(b)) if !c.config_error => {
                    c.step = Some(a.token);
                    self.jobs.push_back(Job {
                        child,
                        generation: c.generation,
                        kind: JobKind::Step { token: a.token, op },
                        backend: b,
                    });
                }
                _ => {
                    tracing::debug!("{}: cannot perform {name} here", c.name);
                    c.engine.handle_failed(a.token, now_ms);
                }
            }
        }
        while let Some(e) = c.engine.poll_event() {
            if let ExecEvent::GaveUp { .. } = e {
                tracing::warn!(
                    "{}: gave up after too many re-plans; retrying once the BMC answers a poll",
                    c.name
                );
                c.gave_up = true;
            }
        }
    }

    /// The next BMC call to run.
    #[must_use]
    pub fn poll_job(&mut self) -> Option<Job> {
        self.jobs.pop_front()
    }

    /// The next engine deadline or poll, milliseconds.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.children
            .values()
            .flat_map(|c| {
                let poll = (!c.poll_in_flight && c.step.is_none() && c.backend.is_some())
                    .then_some(c.next_poll_ms);
                [c.engine.poll_timeout(), poll]
            })
            .flatten()
            .min()
    }

    /// The Dsc of every child whose Dsc changed since the last call: `base`
    /// gives the latest Dsc held for a child (its `/PhysState` and power
    /// extension are replaced; other fields kept), else the engine's copy
    /// is used.
    pub fn dsc_changes(&mut self, base: impl Fn(u32) -> Option<Node>) -> Vec<(u32, Bytes)> {
        let mut out = Vec::new();
        let frozen_url = self.cfg.frozen.clone();
        for (&id, c) in &mut self.children {
            let mut dsc = base(id).unwrap_or_else(|| c.engine.dsc().clone());
            dsc.phys_state = if c.config_error {
                PhysState::PhysError as i32
            } else {
                c.engine.dsc().phys_state
            };
            let mut power = power_of(&c.cfg).unwrap_or_default();
            power.error = c.error.clone().unwrap_or_default();
            set_power(&mut dsc, &power);
            boot_dsc(c, &self.registry, self.boot, &mut dsc);
            if let Some(p) = &frozen_url {
                let frozen = c.engine.executor().is_frozen(0);
                let _ = self.registry.set(&mut dsc, p, &Value::Bool(frozen));
            }
            let bytes = Bytes::from(dsc.encode_to_vec());
            if c.published.as_ref() != Some(&bytes) {
                c.published = Some(bytes.clone());
                out.push((id, bytes));
            }
        }
        out
    }

    /// A Dsc of `child` written by someone else reached this instance
    /// (`data`: the record's bytes): unless it is what this host
    /// published last, the child's Dsc is published again (above it) on
    /// the next [`BmcHost::dsc_changes`]. This host is the node's only
    /// Dsc author; a stray record (the node's own process announcing
    /// itself before it knows its parent reports it, a predecessor's late
    /// one) must not stay the latest.
    pub fn reassert(&mut self, child: u32, data: &[u8]) {
        if let Some(c) = self.children.get_mut(&child)
            && c.published.as_deref() != Some(data)
        {
            c.published = None;
        }
    }

    /// The child's current Dsc as this host sees it (tests).
    pub fn dsc(&self, child: u32) -> Option<Node> {
        let c = self.children.get(&child)?;
        let mut d = c.engine.dsc().clone();
        if c.config_error {
            d.phys_state = PhysState::PhysError as i32;
        }
        let mut power = power_of(&c.cfg).unwrap_or_default();
        power.error = c.error.clone().unwrap_or_default();
        set_power(&mut d, &power);
        boot_dsc(c, &self.registry, self.boot, &mut d);
        Some(d)
    }

    /// The next request to the boot servers.
    #[must_use]
    pub fn poll_boot(&mut self) -> Option<BootCmd> {
        self.boot_cmds.pop_front()
    }

    /// The boot servers answered [`BootCmd::Arm`] for `child`: `Err` is
    /// why the entry was refused (the `pxe_wait` step fails).
    pub fn handle_armed(&mut self, child: u32, result: Result<(), String>, now_ms: u64) {
        let Some(v) = self.boot else { return };
        let Some(c) = self.children.get_mut(&child) else {
            return;
        };
        let Some(b) = c.boot.as_mut() else { return };
        if let Err(e) = &result {
            tracing::warn!("{}: boot entry refused: {e}", c.name);
        }
        if let Some(token) = b.armed(&mut c.engine, v, result.is_ok(), now_ms) {
            c.engine.handle_failed(token, now_ms);
        }
        c.boot_error = result.err();
        self.pump(child, now_ms);
    }

    /// The node with boot NIC `mac` fetched its iPXE script from its own
    /// address.
    pub fn handle_script_fetched(&mut self, mac: Mac, now_ms: u64) {
        let Some(v) = self.boot else { return };
        let found = self
            .children
            .iter()
            .find(|(_, c)| c.boot.as_ref().is_some_and(|b| b.net.mac == mac))
            .map(|(&id, _)| id);
        let Some(id) = found else { return };
        let c = self.children.get_mut(&id).expect("found above");
        if let Some(b) = c.boot.as_mut() {
            b.script_fetched(&mut c.engine, v, now_ms);
        }
        self.pump(id, now_ms);
    }

    /// `child`'s own agent said hello (`up`) or went silent.
    pub fn handle_agent(&mut self, child: u32, up: bool, now_ms: u64) {
        let Some(v) = self.boot else { return };
        let Some(c) = self.children.get_mut(&child) else {
            return;
        };
        let Some(b) = c.boot.as_mut() else { return };
        let took = b.agent((&mut c.engine, v), (child, up), &mut self.boot_cmds, now_ms);
        if let Some(ms) = took {
            tracing::info!("{}: booted, power-on to RunState SYNC in {ms} ms", c.name);
            crate::modules::pxe::stats::record_boot(&c.name, Duration::from_millis(ms));
        }
        self.pump(child, now_ms);
    }
}

/// Reads the child's boot network from its Cfg: a new or changed network
/// replaces its boot state (disarming the old entry), none or a bad one
/// stops booting it.
fn update_boot(c: &mut Child, child: u32, cmds: &mut VecDeque<BootCmd>) {
    let parsed = NodeNet::of(&c.cfg);
    let keep = matches!((&parsed, &c.boot), (Ok(Some(n)), Some(b)) if b.net == *n);
    if !keep {
        if let Some(b) = c.boot.as_mut() {
            b.disarm(child, cmds);
        }
        c.boot = None;
    }
    match parsed {
        Ok(Some(n)) => {
            if c.boot.is_none() {
                c.boot = Some(BootChild::new(n));
            }
            c.boot_error = None;
        }
        Ok(None) => c.boot_error = None,
        Err(e) => {
            if c.boot_error.as_deref() != Some(e.as_str()) {
                tracing::warn!("{}: {e}; the node is not booted from the network", c.name);
            }
            c.boot_error = Some(e);
        }
    }
}

/// Writes the boot side of a child's Dsc: its RunState and PXE state as
/// its engine has them and `Network/Error`.
fn boot_dsc(c: &Child, registry: &Registry, vars: Option<BootVars>, dsc: &mut Node) {
    let Some(net) = network_of(&c.cfg) else {
        return;
    };
    if let (Some(_), Some(_)) = (&c.boot, vars) {
        dsc.run_state = c.engine.dsc().run_state;
        let url = engine::virt::PXE_URL.parse::<Path>();
        if let Ok(p) = url
            && let Ok(x) = registry.get(c.engine.dsc(), &p)
        {
            let _ = registry.set(dsc, &p, &x);
        }
    }
    let mut net = net;
    net.error = c.boot_error.clone().unwrap_or_default();
    set_network(dsc, &net);
}

fn is_frozen(url: &Option<Path>, registry: &Registry, n: &Node) -> bool {
    url.as_ref()
        .is_some_and(|p| matches!(registry.get(n, p), Ok(Value::Bool(true))))
}

fn set_config_error(c: &mut Child, msg: &str) {
    if !c.config_error || c.error.as_deref() != Some(msg) {
        tracing::warn!(
            "{}: {msg}; the node is PHYS_ERROR until this is fixed",
            c.name
        );
    }
    c.config_error = true;
    c.error = Some(msg.to_string());
}

/// How [`drive`] reaches the host (it may live inside another owner, such
/// as an overlay instance, that publishes the Dsc changes afterwards).
pub trait HostAccess {
    /// Runs `f` on the host with the current time, milliseconds.
    fn with_host<R>(&self, f: impl FnOnce(&mut BmcHost, u64) -> R) -> R;
}

/// Runs the host's BMC calls through `pool` forever: issues jobs, feeds
/// results back, and wakes at least every `tick` for deadlines and polls.
///
/// # Cancel safety
/// Dropping the future leaves jobs in flight running; their results are lost
/// and the engines' step timeouts handle them.
pub async fn drive<H: HostAccess>(h: H, pool: PowerPool, tick: Duration) {
    let (tx, mut rx) = mpsc::channel::<JobResult>(RESULTS_MAX);
    loop {
        let jobs = h.with_host(|host, now| {
            host.handle_timeout(now);
            std::iter::from_fn(|| host.poll_job()).collect::<Vec<_>>()
        });
        for j in jobs {
            let (pool, tx) = (pool.clone(), tx.clone());
            tokio::spawn(async move {
                let r = run_job(&pool, j).await;
                let _ = tx.send(r).await;
            });
        }
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = tokio::time::sleep(tick) => None,
        };
        if let Some(r) = first {
            h.with_host(|host, now| {
                host.handle_result(r, now);
                while let Ok(r) = rx.try_recv() {
                    host.handle_result(r, now);
                }
            });
        }
    }
}
