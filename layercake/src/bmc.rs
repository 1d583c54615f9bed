//! Wiring of the power backends ([`layercake::power`]) into a running
//! instance: the `run` options, the per-process setup (credentials, HTTP
//! and IPMI clients, the pool) and the bridge between a sub-parent's
//! [`MemberApp`] and the [`drive`] task.
//!
//! - [`PowerArgs`]: `--credentials`, `--bmc-ca-file`, `--bmc-poll`,
//!   `--bmc-concurrency`, `--bmc-timeout`, `--bmc-retries`.
//! - [`PowerSetup`]: built once per process from the options.
//! - [`ChildPlaces`]: a sub-parent's direct children with their pattern
//!   variables.
//! - [`start_driver`]: spawns the driver of one sub-parent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use layercake::power::config::{Backends, Place};
use layercake::power::creds::Credentials;
use layercake::power::host::{BmcHost, HostAccess, HostConfig, drive};
use layercake::power::ipmi::IpmiConfig;
use layercake::power::ipmi_backend::IpmiClients;
use layercake::power::redfish::RedfishClients;
use layercake::power::virt::VirtualFleet;
use layercake::power::{Policy, PowerPool};
use overlay::udp::Handle;
use topo::Flat;

use crate::member::MemberApp;
use crate::model::Model;

/// How often the driver wakes without a BMC answer (deadlines, polls).
pub const DRIVER_TICK: Duration = Duration::from_millis(50);

/// Power options of `layercake run` (used on the instances that drive BMCs:
/// the sub-parents).
#[derive(Args, Debug, Clone)]
pub struct PowerArgs {
    /// BMC passwords: `NAME PASSWORD` lines, mode 600 (see docs/power.md).
    #[arg(long, env = "LAYERCAKE_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for `https` Redfish BMCs.
    #[arg(long)]
    pub bmc_ca_file: Option<PathBuf>,
    /// How often every BMC's power state is read.
    #[arg(long, value_parser = crate::cli::parse_duration, default_value = "10s")]
    pub bmc_poll: Duration,
    /// BMC calls in flight at once on this instance.
    #[arg(long, default_value_t = 64)]
    pub bmc_concurrency: usize,
    /// One BMC request's timeout.
    #[arg(long, value_parser = crate::cli::parse_duration, default_value = "5s")]
    pub bmc_timeout: Duration,
    /// Retries of a BMC request that timed out or failed transiently.
    #[arg(long, default_value_t = 2)]
    pub bmc_retries: u32,
}

/// The power machinery of one process.
#[derive(Clone)]
pub struct PowerSetup {
    backends: Backends,
    pool: PowerPool,
    poll: Duration,
}

impl PowerSetup {
    /// Loads the credentials (checking their permissions) and builds the
    /// clients. Must run inside the tokio runtime.
    pub fn new(a: &PowerArgs) -> Result<PowerSetup> {
        let creds = match &a.credentials {
            Some(p) => Credentials::load(p)?,
            None => Credentials::empty(),
        };
        let redfish = RedfishClients::new(a.bmc_ca_file.as_deref())
            .map_err(anyhow::Error::msg)
            .context("Redfish clients")?;
        let policy = Policy {
            attempt_timeout: a.bmc_timeout,
            retries: a.bmc_retries,
            ..Policy::default()
        };
        // The IPMI client retransmits inside one attempt: 1x + 2x + 4x its
        // step timeout must fit in the attempt timeout.
        let ipmi = IpmiClients::new(IpmiConfig {
            timeout: (a.bmc_timeout / 8).max(Duration::from_millis(100)),
            retries: 2,
        });
        Ok(PowerSetup {
            backends: Backends {
                creds: Arc::new(creds),
                redfish,
                fleet: VirtualFleet::new(),
                ipmi,
            },
            pool: PowerPool::new(a.bmc_concurrency, policy),
            poll: a.bmc_poll,
        })
    }

    /// A host for one sub-parent.
    pub fn host(&self, model: &Model) -> Result<BmcHost> {
        let frozen = crate::model::FROZEN_URL.parse().ok();
        Ok(BmcHost::new(
            model.graph.clone(),
            model.registry.clone(),
            self.backends.clone(),
            HostConfig {
                poll_interval: self.poll,
                frozen,
            },
        )?)
    }
}

/// A sub-parent's direct children: name and pattern variables.
#[derive(Default)]
pub struct ChildPlaces {
    by_id: HashMap<u32, (String, u64, u64)>,
}

impl ChildPlaces {
    /// The leaf children of `me` in `flat`: `{i}` is the position among the
    /// group's members, `{g}` the group's position among its siblings.
    pub fn of(flat: &Flat, me: u32) -> ChildPlaces {
        let mut by_id = HashMap::new();
        let Some(gi) = flat.instances[me as usize].leads else {
            return ChildPlaces { by_id };
        };
        let group = &flat.groups[gi as usize];
        let g = flat
            .groups
            .iter()
            .enumerate()
            .filter(|(_, x)| x.parent_group == group.parent_group)
            .position(|(i, _)| i == gi as usize)
            .map_or(1, |p| p as u64 + 1);
        for (i, &m) in group.members.iter().enumerate() {
            let inst = &flat.instances[m as usize];
            if inst.parent == Some(me) && inst.leads.is_none() {
                by_id.insert(m, (inst.name.clone(), i as u64 + 1, g));
            }
        }
        ChildPlaces { by_id }
    }

    /// The place of child `id`, if it is a leaf child.
    pub fn place(&self, id: u32) -> Option<Place<'_>> {
        self.by_id.get(&id).map(|(name, i, g)| Place {
            host: name,
            i: *i,
            g: *g,
        })
    }
}

struct MemberAccess(Handle<MemberApp>);

impl HostAccess for MemberAccess {
    fn with_host<R>(&self, f: impl FnOnce(&mut BmcHost, u64) -> R) -> R {
        self.0.with(|app, now| app.with_bmc(now, f))
    }
}

/// Spawns (on the current `LocalSet`) the task that runs `h`'s BMC calls.
pub fn start_driver(h: Handle<MemberApp>, setup: &PowerSetup) {
    let pool = setup.pool.clone();
    tokio::task::spawn_local(drive(MemberAccess(h), pool, DRIVER_TICK));
}
