//! Power control: one abstraction, several backends, and the machinery that
//! runs them on behalf of the engine in CHILD context.
//!
//! - [`PowerOp`], [`PowerState`], [`PowerError`]: the vocabulary every
//!   backend speaks; errors say what went wrong in operator terms
//!   (unreachable, authentication refused, unsupported, protocol error).
//! - [`Backend`]: enum dispatch over the backends: [`virt`] (in-memory
//!   BMCs), [`redfish`] (HTTP(S), ComputerSystem.Reset) and IPMI
//!   ([`ipmi_backend`] adapting the [`ipmi`] RMCP+ client).
//! - [`Policy`]: per-attempt timeout, bounded retries with exponential
//!   backoff, and the wait for a state change to show. Reads are retried;
//!   commands never blindly: [`Backend::command`] re-reads the power state
//!   after an attempt whose answer was lost and decides from it, so one
//!   request never cycles (or powers) a machine twice.
//! - [`PowerPool`]: a bounded pool (a semaphore) every BMC call of one
//!   instance goes through.
//! - [`config`]: the `layercake.power.Power` extension and its resolution
//!   into a [`BmcTarget`]; [`creds`]: the credentials file.
//! - [`host`]: [`host::BmcHost`], the per-child engines of the nodes whose
//!   power this instance drives, with the poller, and [`host::drive`], the
//!   task that runs their calls through the pool.

pub mod config;
pub mod creds;
pub mod host;
pub mod ipmi;
pub mod ipmi_backend;
pub mod redfish;
pub mod setup;
pub mod virt;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use config::BmcTarget;

/// A power operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerOp {
    /// Power on.
    On,
    /// Hard power off.
    Off,
    /// Graceful (ACPI) shutdown, where the protocol has it.
    SoftOff,
    /// Power cycle (off then on; from off: on).
    Cycle,
}

impl PowerOp {
    /// The state the machine is in once the operation has taken effect.
    pub fn expected(self) -> PowerState {
        match self {
            PowerOp::On | PowerOp::Cycle => PowerState::On,
            PowerOp::Off | PowerOp::SoftOff => PowerState::Off,
        }
    }
}

impl fmt::Display for PowerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerOp::On => "on",
            PowerOp::Off => "off",
            PowerOp::SoftOff => "soft-off",
            PowerOp::Cycle => "cycle",
        })
    }
}

/// A machine's power state as its BMC reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerState {
    /// Powered on.
    On,
    /// Powered off.
    Off,
}

impl PowerState {
    /// The `/PhysState` value (`POWER_ON` = 2, `POWER_OFF` = 1).
    pub fn phys(self) -> i32 {
        match self {
            PowerState::On => proto::node::PhysState::PowerOn as i32,
            PowerState::Off => proto::node::PhysState::PowerOff as i32,
        }
    }
}

/// Why a power call failed. Each message names the BMC and says what the
/// operator can do; no state changed on our side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowerError {
    /// No answer within the timeout after every retry (wrong address, BMC
    /// down, network or firewall).
    #[error("BMC {0} unreachable: {1}")]
    Unreachable(String, String),
    /// The BMC refused the credentials (user or password wrong, or the
    /// credential is missing from the credentials file).
    #[error("BMC {0} refused authentication: {1}")]
    AuthRefused(String, String),
    /// The BMC or the backend cannot do this operation.
    #[error("BMC {0} does not support {1}")]
    Unsupported(String, String),
    /// The BMC answered something we could not understand or it reported
    /// a failure.
    #[error("BMC {0} protocol error: {1}")]
    Protocol(String, String),
    /// A command left but its answer did not come, and the power state
    /// cannot tell whether the BMC acted (a cycle of a machine that is on):
    /// it is not sent again, since a machine is never cycled twice for one
    /// request.
    #[error("BMC {0} did not confirm: {1}")]
    Unconfirmed(String, String),
}

impl PowerError {
    /// True for errors a retry may cure (timeouts, transient protocol
    /// failures); authentication and unsupported operations are final.
    pub fn is_transient(&self) -> bool {
        matches!(self, PowerError::Unreachable(..) | PowerError::Protocol(..))
    }

    /// True for errors that put the node in `PHYS_ERROR` (configuration
    /// the operator must fix) rather than a fail-to value.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            PowerError::AuthRefused(..) | PowerError::Unsupported(..)
        )
    }
}

/// Timeouts and retries of BMC calls.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// One attempt (one request and its answer).
    pub attempt_timeout: Duration,
    /// Extra attempts after a transient failure.
    pub retries: u32,
    /// First backoff; doubles per retry.
    pub backoff: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// How long an operation may take to show in the power state.
    pub settle_timeout: Duration,
    /// First delay between state reads while settling; doubles up to 1 s.
    pub settle_poll: Duration,
}

/// The most retries a [`Policy`] may ask for.
pub const RETRIES_MAX: u32 = 10;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempt_timeout: Duration::from_secs(5),
            retries: 2,
            backoff: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            settle_timeout: Duration::from_secs(30),
            settle_poll: Duration::from_millis(100),
        }
    }
}

impl Policy {
    /// The backoff before retry number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }

    /// Runs `call` with the per-attempt timeout, retrying transient
    /// failures at most [`Policy::retries`] times with backoff. Only for
    /// calls that change nothing (reads): a command goes through
    /// [`Backend::command`], which never re-sends blindly.
    pub async fn run<T, F, Fut>(&self, bmc: &str, mut call: F) -> Result<T, PowerError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PowerError>>,
    {
        let retries = self.retries.min(RETRIES_MAX);
        let mut attempt = 0;
        loop {
            let r = match tokio::time::timeout(self.attempt_timeout, call()).await {
                Ok(r) => r,
                Err(_) => Err(PowerError::Unreachable(
                    bmc.to_string(),
                    format!("no answer within {:?}", self.attempt_timeout),
                )),
            };
            match r {
                Err(e) if e.is_transient() && attempt < retries => {
                    attempt += 1;
                    tracing::debug!("{e}; retry {attempt}/{retries}");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(PowerError::Unreachable(b, why)) if attempt > 0 => {
                    return Err(PowerError::Unreachable(
                        b,
                        format!("{why} (after {} attempts)", attempt + 1),
                    ));
                }
                r => return r,
            }
        }
    }
}

/// One BMC of any backend (cheap to clone: backends share their clients).
#[derive(Clone)]
pub enum Backend {
    /// An in-memory BMC.
    Virtual(virt::VirtualBmc),
    /// A Redfish service.
    Redfish(redfish::RedfishBmc),
    /// An IPMI v2.0 (RMCP+) BMC.
    Ipmi(ipmi_backend::IpmiBmc),
}

impl Backend {
    /// The BMC's name in messages (protocol and address).
    pub fn label(&self) -> String {
        match self {
            Backend::Virtual(b) => b.label(),
            Backend::Redfish(b) => b.label(),
            Backend::Ipmi(b) => b.label(),
        }
    }

    /// One attempt at reading the power state.
    async fn status_once(&self) -> Result<PowerState, PowerError> {
        match self {
            Backend::Virtual(b) => b.status().await,
            Backend::Redfish(b) => b.status().await,
            Backend::Ipmi(b) => b.status().await,
        }
    }

    /// One attempt at an operation (no waiting for its effect).
    async fn control_once(&self, op: PowerOp) -> Result<(), PowerError> {
        match self {
            Backend::Virtual(b) => b.control(op).await,
            Backend::Redfish(b) => b.control(op).await,
            Backend::Ipmi(b) => b.control(op).await,
        }
    }

    /// Reads the power state under `policy` (timeouts, retries).
    pub async fn status(&self, policy: &Policy) -> Result<PowerState, PowerError> {
        let label = self.label();
        policy.run(&label, || self.status_once()).await
    }

    /// Sends `op` at most once per outcome the BMC could have acted on
    /// (issue 12, finding 6). An attempt that times out or fails in
    /// transit may have reached the BMC, so before any new attempt the
    /// power state is read and decides: on, off and soft-off are sent
    /// again only while the machine is not yet in the state they lead to
    /// (sending them to a machine on its way there changes nothing); a
    /// cycle is never sent again: a machine found off is taken to be
    /// cycling (the settle wait sees it come back), one found on is
    /// [`PowerError::Unconfirmed`].
    pub async fn command(&self, op: PowerOp, policy: &Policy) -> Result<(), PowerError> {
        let label = self.label();
        let retries = policy.retries.min(RETRIES_MAX);
        let mut attempt = 0;
        loop {
            let r = match tokio::time::timeout(policy.attempt_timeout, self.control_once(op)).await
            {
                Ok(r) => r,
                Err(_) => Err(PowerError::Unconfirmed(
                    label.clone(),
                    format!(
                        "no answer to power {op} within {:?}",
                        policy.attempt_timeout
                    ),
                )),
            };
            let e = match r {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() || matches!(e, PowerError::Unconfirmed(..)) => e,
                Err(e) => return Err(e),
            };
            if attempt >= retries && op != PowerOp::Cycle {
                return Err(e);
            }
            attempt += 1;
            tokio::time::sleep(policy.backoff(attempt)).await;
            let state = self.status(policy).await?;
            tracing::debug!("{e}; the machine is {state:?}");
            match op {
                PowerOp::Cycle if state == PowerState::Off => return Ok(()),
                PowerOp::Cycle => {
                    return Err(PowerError::Unconfirmed(
                        label,
                        format!(
                            "{e}; the machine is on, so it may have cycled already: \
                             not cycled again"
                        ),
                    ));
                }
                _ if state == op.expected() => return Ok(()),
                _ => tracing::debug!("power {op}: attempt {} of {}", attempt + 1, retries + 1),
            }
        }
    }

    /// Performs `op` under `policy` and waits until the power state shows
    /// its effect (at most [`Policy::settle_timeout`]); returns that state.
    /// A cycle of a machine that is off powers it on.
    pub async fn perform(&self, op: PowerOp, policy: &Policy) -> Result<PowerState, PowerError> {
        let label = self.label();
        let op = match op {
            PowerOp::Cycle if self.status(policy).await? == PowerState::Off => PowerOp::On,
            op => op,
        };
        self.command(op, policy).await?;
        let deadline = tokio::time::Instant::now() + policy.settle_timeout;
        let mut wait = policy.settle_poll;
        loop {
            let s = self.status(policy).await?;
            if s == op.expected() {
                return Ok(s);
            }
            if tokio::time::Instant::now() + wait > deadline {
                return Err(PowerError::Protocol(
                    label,
                    format!(
                        "power {op} accepted but the machine is still {s:?} after {:?}",
                        policy.settle_timeout
                    ),
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }
}

/// The bounded pool of one instance: at most `concurrency` BMC calls (a
/// status read or a whole operation) run at once; the rest queue.
#[derive(Clone)]
pub struct PowerPool {
    permits: Arc<Semaphore>,
    /// Timeouts and retries of every call.
    pub policy: Policy,
}

/// The most concurrent BMC calls one instance may allow.
pub const CONCURRENCY_MAX: usize = 4096;

impl PowerPool {
    /// A pool of `concurrency` (1 ..= [`CONCURRENCY_MAX`]) slots.
    pub fn new(concurrency: usize, policy: Policy) -> PowerPool {
        let n = concurrency.clamp(1, CONCURRENCY_MAX);
        PowerPool {
            permits: Arc::new(Semaphore::new(n)),
            policy,
        }
    }

    /// Reads `b`'s power state through the pool.
    pub async fn status(&self, b: &Backend) -> Result<PowerState, PowerError> {
        let _permit = self.permits.acquire().await.expect("never closed");
        b.status(&self.policy).await
    }

    /// Performs `op` on `b` through the pool; returns the settled state.
    pub async fn perform(&self, b: &Backend, op: PowerOp) -> Result<PowerState, PowerError> {
        let _permit = self.permits.acquire().await.expect("never closed");
        b.perform(op, &self.policy).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            attempt_timeout: Duration::from_millis(150),
            retries: 3,
            backoff: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            settle_timeout: Duration::from_secs(2),
            settle_poll: Duration::from_millis(10),
        }
    }

    fn machine(on: bool) -> (virt::VirtualMachine, Backend) {
        let fleet = virt::VirtualFleet::new();
        let m = fleet.machine("10.0.0.1");
        m.set_power_behind_back(on);
        m.set_delay(Duration::from_millis(1));
        (m, Backend::Virtual(fleet.bmc("10.0.0.1", None)))
    }

    /// Issue 12, finding 6: the reply to a power cycle is lost; the
    /// machine is cycled once, never twice (the old `Policy::run` re-sent
    /// the cycle after the timeout: two cycles).
    #[tokio::test]
    async fn finding6_a_lost_reply_never_cycles_twice() {
        let (m, b) = machine(true);
        m.lose_replies(1);
        let r = b.perform(PowerOp::Cycle, &policy()).await;
        assert_eq!(m.ops(), 1, "cycled {} times ({r:?})", m.ops());
        assert!(matches!(r, Err(PowerError::Unconfirmed(..))), "{r:?}");
    }

    /// Issue 12, finding 6: the reply to power on is lost; the state is
    /// read before anything is sent again, and the machine, already on,
    /// gets no second command (the old code sent it twice).
    #[tokio::test]
    async fn finding6_a_lost_reply_is_followed_by_a_state_read_not_a_resend() {
        let (m, b) = machine(false);
        m.lose_replies(1);
        let r = b.perform(PowerOp::On, &policy()).await;
        assert_eq!(r, Ok(PowerState::On));
        assert_eq!(m.ops(), 1, "{} commands sent", m.ops());
        let (m, b) = machine(true);
        m.lose_replies(1);
        assert_eq!(
            b.perform(PowerOp::Off, &policy()).await,
            Ok(PowerState::Off)
        );
        assert_eq!(m.ops(), 1);
    }

    /// A command that never reached the machine (an unreachable BMC that
    /// comes back) is sent again once the state shows it did not act.
    #[tokio::test]
    async fn a_command_that_did_not_act_is_sent_again() {
        let (m, b) = machine(false);
        m.set_reachable(false);
        let m2 = m.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            m2.set_reachable(true);
        });
        assert_eq!(b.perform(PowerOp::On, &policy()).await, Ok(PowerState::On));
        assert_eq!(m.ops(), 1);
        assert!(m.is_on());
    }
}
