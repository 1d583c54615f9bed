//! The virtual backend: in-memory BMCs that behave like real ones (a
//! password, a response delay, an unreachable mode, power changed behind
//! the system's back). It is the power abstraction's reference backend and
//! the one the conformance suite checks the others against.
//!
//! - [`VirtualFleet`]: the machines of one process, by address; shared by
//!   the backends and by whoever plays "the operator at the machine".
//! - [`VirtualMachine`]: one machine's handle (power, reachability,
//!   password).
//! - [`VirtualBmc`]: the backend for one machine, with the password it was
//!   given.
//!
//! The engine's own `engine::virt` modules (sans-io, virtual time) still
//! drive nodes that run their own chain; this backend serves the nodes
//! whose power a parent drives with protocol `virtual`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{PowerError, PowerOp, PowerState};

/// The most machines one fleet holds.
pub const MACHINES_MAX: usize = 1 << 20;

#[derive(Debug)]
struct Machine {
    on: bool,
    reachable: bool,
    password: Option<String>,
    delay: Duration,
    ops: u64,
    /// Command replies still to lose (the command acts, its answer never
    /// comes).
    lost_replies: u32,
}

/// One virtual machine (a handle; clones share it).
#[derive(Clone, Debug)]
pub struct VirtualMachine(Arc<Mutex<Machine>>);

impl VirtualMachine {
    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when powered on.
    pub fn is_on(&self) -> bool {
        self.lock().on
    }

    /// Power changed at the machine (a button), not through the BMC API.
    pub fn set_power_behind_back(&self, on: bool) {
        self.lock().on = on;
    }

    /// An unreachable BMC never answers.
    pub fn set_reachable(&self, reachable: bool) {
        self.lock().reachable = reachable;
    }

    /// The password the BMC accepts (`None`: any).
    pub fn set_password(&self, password: Option<&str>) {
        self.lock().password = password.map(str::to_string);
    }

    /// How long each BMC request takes.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Power operations performed through the BMC so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// The next `n` power commands act but their replies are lost (only
    /// the caller's timeout ends them), as on a network that drops answers.
    pub fn lose_replies(&self, n: u32) {
        self.lock().lost_replies = n;
    }

    /// True when the reply to the request just served is to be lost.
    fn take_lost_reply(&self) -> bool {
        let mut m = self.lock();
        let lost = m.lost_replies > 0;
        m.lost_replies = m.lost_replies.saturating_sub(1);
        lost
    }
}

/// The virtual machines of one process, by BMC address.
#[derive(Clone, Debug, Default)]
pub struct VirtualFleet {
    machines: Arc<Mutex<HashMap<String, VirtualMachine>>>,
}

impl VirtualFleet {
    /// An empty fleet.
    pub fn new() -> VirtualFleet {
        VirtualFleet::default()
    }

    /// The machine at `addr`, created powered off on first use.
    pub fn machine(&self, addr: &str) -> VirtualMachine {
        let mut m = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = m.get(addr) {
            return v.clone();
        }
        assert!(m.len() < MACHINES_MAX, "virtual fleet full");
        let v = VirtualMachine(Arc::new(Mutex::new(Machine {
            on: false,
            reachable: true,
            password: None,
            delay: Duration::from_millis(5),
            ops: 0,
            lost_replies: 0,
        })));
        m.insert(addr.to_string(), v.clone());
        v
    }

    /// The backend for the machine at `addr`, presenting `password`.
    pub fn bmc(&self, addr: &str, password: Option<&str>) -> VirtualBmc {
        VirtualBmc {
            addr: addr.to_string(),
            machine: self.machine(addr),
            password: password.map(str::to_string),
        }
    }
}

/// The backend of one virtual machine.
#[derive(Clone, Debug)]
pub struct VirtualBmc {
    addr: String,
    machine: VirtualMachine,
    password: Option<String>,
}

impl VirtualBmc {
    /// `virtual ADDR`.
    pub fn label(&self) -> String {
        format!("virtual {}", self.addr)
    }

    /// Waits the machine's delay, then checks reachability and password.
    async fn request(&self) -> Result<(), PowerError> {
        let (delay, reachable) = {
            let m = self.machine.lock();
            (m.delay, m.reachable)
        };
        if !reachable {
            // Like a BMC that does not answer: only the caller's timeout ends it.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(delay).await;
        let m = self.machine.lock();
        match (&m.password, &self.password) {
            (None, _) => Ok(()),
            (Some(want), Some(got)) if want == got => Ok(()),
            _ => Err(PowerError::AuthRefused(
                self.label(),
                "wrong user or password".into(),
            )),
        }
    }

    /// Reads the power state.
    pub async fn status(&self) -> Result<PowerState, PowerError> {
        self.request().await?;
        Ok(if self.machine.is_on() {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    /// Performs `op` (takes effect at once).
    pub async fn control(&self, op: PowerOp) -> Result<(), PowerError> {
        self.request().await?;
        {
            let mut m = self.machine.lock();
            m.ops += 1;
            m.on = op.expected() == PowerState::On;
        }
        if self.machine.take_lost_reply() {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}
