//! The IPMI backend: adapts the RMCP+ client of [`super::ipmi`] to the power
//! abstraction (operations to chassis controls, errors to [`PowerError`]).
//!
//! - [`IpmiClients`]: the one [`IpmiClient`] of an instance (one UDP
//!   socket for every BMC), bound on first use.
//! - [`IpmiBmc`]: one BMC (a target and the shared client).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::OnceCell;

use super::config::BmcTarget;
use super::ipmi::{ChassisControl, IpmiClient, IpmiConfig, IpmiError, IpmiTarget};
use super::{PowerError, PowerOp, PowerState};

/// The instance's IPMI client, bound lazily inside the runtime.
#[derive(Clone)]
pub struct IpmiClients {
    cfg: IpmiConfig,
    client: Arc<OnceCell<IpmiClient>>,
}

impl IpmiClients {
    /// A factory whose client will use `cfg` (per-step timeout, retransmissions).
    pub fn new(cfg: IpmiConfig) -> IpmiClients {
        IpmiClients {
            cfg,
            client: Arc::new(OnceCell::new()),
        }
    }

    /// The backend for `t` at `addr` with `password`.
    pub fn bmc(&self, t: &BmcTarget, addr: SocketAddr, password: String) -> IpmiBmc {
        IpmiBmc {
            clients: self.clone(),
            target: IpmiTarget::new(addr, t.user.clone(), password),
            label: format!("ipmi {addr}"),
        }
    }
}

/// One IPMI BMC.
#[derive(Clone)]
pub struct IpmiBmc {
    clients: IpmiClients,
    target: IpmiTarget,
    label: String,
}

impl IpmiBmc {
    /// `ipmi ADDR`.
    pub fn label(&self) -> String {
        self.label.clone()
    }

    async fn client(&self) -> Result<&IpmiClient, PowerError> {
        let c = &self.clients;
        c.client
            .get_or_try_init(|| IpmiClient::bind(c.cfg.clone()))
            .await
            .map_err(|e| self.map(e))
    }

    fn map(&self, e: IpmiError) -> PowerError {
        let l = self.label();
        match e {
            IpmiError::Timeout { .. } => PowerError::Unreachable(l, e.to_string()),
            IpmiError::Unconfirmed { .. } => PowerError::Unconfirmed(l, e.to_string()),
            IpmiError::AuthRefused(why) => PowerError::AuthRefused(l, why),
            IpmiError::Unsupported(why) => PowerError::Unsupported(l, why),
            IpmiError::Protocol(why) => PowerError::Protocol(l, why),
            IpmiError::Io(io) => PowerError::Protocol(l, format!("local socket: {io}")),
        }
    }

    /// Get Chassis Status.
    pub async fn status(&self) -> Result<PowerState, PowerError> {
        let on = self
            .client()
            .await?
            .power_is_on(&self.target)
            .await
            .map_err(|e| self.map(e))?;
        Ok(if on { PowerState::On } else { PowerState::Off })
    }

    /// Chassis Control with the control of `op`.
    pub async fn control(&self, op: PowerOp) -> Result<(), PowerError> {
        let c = match op {
            PowerOp::On => ChassisControl::PowerOn,
            PowerOp::Off => ChassisControl::PowerOff,
            PowerOp::SoftOff => ChassisControl::SoftShutdown,
            PowerOp::Cycle => ChassisControl::PowerCycle,
        };
        self.client()
            .await?
            .chassis_control(&self.target, c)
            .await
            .map_err(|e| self.map(e))
    }
}
