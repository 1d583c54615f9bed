//! The power machinery of one process: the options, the credentials, the
//! HTTP and IPMI clients and the pool every BMC call goes through, and the
//! places (pattern variables) of the children an instance drives.
//!
//! - [`PowerOptions`]: `--credentials`, `--bmc-ca-file`, `--bmc-poll`,
//!   `--bmc-concurrency`, `--bmc-timeout`, `--bmc-retries`.
//! - [`PowerSetup`]: built once per process from the options.
//! - [`ChildPlaces`]: a group's leaf members with their pattern variables.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use engine::graph::Graph;
use engine::registry::Registry;
use topo::Flat;

use super::config::{Backends, Place};
use super::creds::Credentials;
use super::host::{BmcHost, HostConfig};
use super::ipmi::IpmiConfig;
use super::ipmi_backend::IpmiClients;
use super::redfish::RedfishClients;
use super::virt::VirtualFleet;
use super::{Policy, PowerPool};

/// Power options of an instance that drives BMCs (`run --credentials ...`).
#[derive(Debug, Clone)]
pub struct PowerOptions {
    /// BMC passwords: `NAME PASSWORD` lines, mode 600 (see docs/power.md).
    pub credentials: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for `https` Redfish BMCs.
    pub bmc_ca_file: Option<PathBuf>,
    /// How often every BMC's power state is read.
    pub bmc_poll: Duration,
    /// BMC calls in flight at once on this instance.
    pub bmc_concurrency: usize,
    /// One BMC request's timeout.
    pub bmc_timeout: Duration,
    /// Retries of a BMC request that timed out or failed transiently.
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
    pub fn new(a: &PowerOptions) -> Result<PowerSetup> {
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

    /// The pool every BMC call of this process goes through.
    pub fn pool(&self) -> PowerPool {
        self.pool.clone()
    }

    /// A host for one instance that drives BMCs, over the module set
    /// (`graph`, `registry`); `frozen` is the Cfg flag that freezes a node.
    pub fn host(
        &self,
        graph: Arc<Graph>,
        registry: Arc<Registry>,
        frozen: Option<engine::url::Path>,
    ) -> Result<BmcHost> {
        Ok(BmcHost::new(
            graph,
            registry,
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

    /// Adds `other`'s children (the places of a group this instance may
    /// take over), except `me`.
    pub fn merge(&mut self, other: ChildPlaces, me: u32) {
        for (id, place) in other.by_id {
            if id != me {
                self.by_id.entry(id).or_insert(place);
            }
        }
    }

    /// True when no child has a place.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
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
