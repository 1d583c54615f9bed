//! The boot side of one node driven in CHILD context: what the pxe
//! module's steps do to that node's engine, and what they ask of the boot
//! servers. Sans-io: time comes in as `now_ms`, commands go out through a
//! queue the caller drains ([`BootCmd`]).
//!
//! - [`BootVars`]: the tracked variables the steps report (PXE state,
//!   RunState, PhysState).
//! - [`BootChild`]: one node's boot network and where its boot is:
//!   [`BootChild::step`] performs `pxe_discover`, `pxe_wait` (asks for its
//!   DHCP entry: [`BootCmd::Arm`]), `pxe_init` (awaited: completed by
//!   [`BootChild::script_fetched`]), `pxe_reset_*` ([`BootCmd::Disarm`]);
//!   [`BootChild::armed`] answers an arm; [`BootChild::agent`] is the
//!   node's own agent saying hello (`boot_sync` done: RunState SYNC, PXE
//!   COMP, the entry disarmed) or going silent (RunState UNKNOWN, PXE
//!   NONE: the engine drives the boot chain again);
//!   [`BootChild::check_power`] closes the window of a machine seen off.
//!
//! The DHCP entry is armed only in the node's boot window (from
//! `pxe_wait` until its agent says hello or the machine is seen off):
//! outside it the servers do not answer the node at all.

use std::collections::VecDeque;

use engine::mutation::VarId;
use engine::node::NodeEngine;
use proto::node::{PhysState, RunState};

use super::network::NodeNet;
use super::registry::Mac;

/// Values of the PXE state (`layercake.pxe.PxeState`) as the engine
/// tracks them.
pub mod pxe_state {
    use proto::pxe::PxeState;

    /// Nothing armed.
    pub const NONE: i32 = PxeState::None as i32;
    /// The DHCP entry is armed.
    pub const WAIT: i32 = PxeState::Wait as i32;
    /// The firmware fetched its script.
    pub const INIT: i32 = PxeState::Init as i32;
    /// The node's agent said hello.
    pub const COMP: i32 = PxeState::Comp as i32;
}

const RUN_UNKNOWN: i32 = RunState::Unknown as i32;
const RUN_INIT: i32 = RunState::Init as i32;
const RUN_SYNC: i32 = RunState::Sync as i32;
const POWER_ON: i32 = PhysState::PowerOn as i32;

/// The tracked variables boot steps report.
#[derive(Clone, Copy, Debug)]
pub struct BootVars {
    /// The PXE state.
    pub pxe: VarId,
    /// `/RunState`.
    pub run: VarId,
    /// `/PhysState`.
    pub phys: VarId,
}

/// What a host asks of the boot servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootCmd {
    /// Answer this node's MAC from now on (its boot window opens).
    Arm {
        /// The child (overlay instance id).
        child: u32,
        /// Its name.
        name: String,
        /// Its boot network.
        net: NodeNet,
    },
    /// Stop answering this MAC.
    Disarm {
        /// The child.
        child: u32,
        /// Its MAC.
        mac: Mac,
    },
}

/// One driven node's boot state.
#[derive(Clone, Debug)]
pub struct BootChild {
    /// Its boot network (from its Cfg).
    pub net: NodeNet,
    /// Its DHCP entry is registered with the servers.
    pub armed: bool,
    /// Its agent is up (the sync stack hears it).
    pub agent_up: bool,
    /// A `pxe_wait` step waiting for the servers' answer.
    arming: Option<u32>,
    /// When the last power-on command went out (the boot time's start).
    power_on_ms: Option<u64>,
}

/// What a boot step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Performed (or awaited) here.
    Handled,
    /// Not a boot step.
    NotBoot,
}

impl BootChild {
    /// A node booted on `net`, nothing armed, its agent not heard.
    pub fn new(net: NodeNet) -> BootChild {
        BootChild {
            net,
            armed: false,
            agent_up: false,
            arming: None,
            power_on_ms: None,
        }
    }

    /// The power-on command for this node went out at `now_ms`.
    pub fn powering_on(&mut self, now_ms: u64) {
        self.power_on_ms = Some(now_ms);
    }

    /// Performs the engine's step `mutation` (token `token`) for child
    /// `child` named `name`.
    pub fn step(
        &mut self,
        (e, v): (&mut NodeEngine, BootVars),
        (child, name): (u32, &str),
        (mutation, token): (&str, u32),
        cmds: &mut VecDeque<BootCmd>,
        now_ms: u64,
    ) -> StepOutcome {
        match mutation {
            "pxe_discover" => {
                let on = e.dsc().phys_state == POWER_ON;
                if self.agent_up && on {
                    e.handle_report(&[(v.pxe, pxe_state::COMP), (v.run, RUN_SYNC)], now_ms);
                } else {
                    e.handle_report(&[(v.pxe, pxe_state::NONE)], now_ms);
                }
            }
            "pxe_wait" => {
                self.arming = Some(token);
                cmds.push_back(BootCmd::Arm {
                    child,
                    name: name.to_string(),
                    net: self.net.clone(),
                });
            }
            // Awaited: the node's firmware fetching its script completes it.
            "pxe_init" => {}
            n if n.starts_with("pxe_reset_") => {
                self.disarm(child, cmds);
                e.handle_report(&[(v.pxe, pxe_state::NONE)], now_ms);
            }
            _ => return StepOutcome::NotBoot,
        }
        StepOutcome::Handled
    }

    /// The servers answered an arm: the `pxe_wait` step completes (`ok`)
    /// or fails. Returns the failed step's token, for the caller to fail.
    pub fn armed(&mut self, e: &mut NodeEngine, v: BootVars, ok: bool, now_ms: u64) -> Option<u32> {
        let token = self.arming.take();
        if !ok {
            return token;
        }
        self.armed = true;
        if token.is_some() {
            e.handle_report(&[(v.pxe, pxe_state::WAIT)], now_ms);
        }
        None
    }

    /// The node's firmware fetched its iPXE script (from its own address):
    /// `pxe_init` is done (PXE INIT, RunState INIT).
    pub fn script_fetched(&mut self, e: &mut NodeEngine, v: BootVars, now_ms: u64) {
        if e.dsc().phys_state == POWER_ON && value(e, v.pxe) == pxe_state::WAIT {
            e.handle_report(&[(v.pxe, pxe_state::INIT), (v.run, RUN_INIT)], now_ms);
        }
    }

    /// The node's agent said hello (`up`) or went silent. Returns the
    /// boot time (power-on command to RunState SYNC) when this hello
    /// ends a boot this host powered on.
    pub fn agent(
        &mut self,
        (e, v): (&mut NodeEngine, BootVars),
        (child, up): (u32, bool),
        cmds: &mut VecDeque<BootCmd>,
        now_ms: u64,
    ) -> Option<u64> {
        self.agent_up = up;
        if e.dsc().phys_state != POWER_ON {
            return None;
        }
        let (pxe, run) = (value(e, v.pxe), value(e, v.run));
        if up {
            self.disarm(child, cmds);
            if pxe != pxe_state::COMP || run != RUN_SYNC {
                e.handle_report(&[(v.run, RUN_SYNC), (v.pxe, pxe_state::COMP)], now_ms);
            }
            return self.power_on_ms.take().map(|at| now_ms.saturating_sub(at));
        }
        if pxe == pxe_state::COMP || run == RUN_SYNC {
            // Seen dead: the engine drives the boot chain again (a node
            // that rebooted takes its new lease; a hung one times out in
            // pxe_init and is power-cycled through PHYS_HANG).
            e.handle_report(&[(v.run, RUN_UNKNOWN), (v.pxe, pxe_state::NONE)], now_ms);
        }
        None
    }

    /// Closes the boot window of a machine seen off (powered off, reset
    /// after a hang, lost power): its entry is disarmed and a PXE state of
    /// WAIT or INIT becomes NONE (nothing waits for it any more), so the
    /// next power-on opens a new window. Nothing may take its lease or its
    /// identity while it cannot.
    pub fn check_power(
        &mut self,
        (e, v): (&mut NodeEngine, BootVars),
        child: u32,
        cmds: &mut VecDeque<BootCmd>,
        now_ms: u64,
    ) {
        let off = e.dsc().phys_state != POWER_ON && value(e, v.phys) != 0;
        if !off {
            return;
        }
        self.disarm(child, cmds);
        let pxe = value(e, v.pxe);
        if pxe == pxe_state::WAIT || pxe == pxe_state::INIT {
            e.handle_report(&[(v.pxe, pxe_state::NONE)], now_ms);
        }
    }

    /// Drops the DHCP entry (if armed).
    pub fn disarm(&mut self, child: u32, cmds: &mut VecDeque<BootCmd>) {
        self.arming = None;
        if std::mem::take(&mut self.armed) {
            cmds.push_back(BootCmd::Disarm {
                child,
                mac: self.net.mac,
            });
        }
    }
}

/// The engine's current value of tracked variable `var` (0: unknown).
pub fn value(e: &mut NodeEngine, var: VarId) -> i32 {
    let exec = e.executor();
    exec.state(0)
        .map_or(0, |id| exec.graph().state(id)[var as usize])
}

#[cfg(test)]
#[path = "child_tests.rs"]
mod tests;
