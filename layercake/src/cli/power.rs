//! The BMC power flags of `run` (see [`crate::modules::power::setup`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::modules::power::setup::PowerOptions;

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
    #[arg(long, value_parser = topo::duration::parse_flag, default_value = "10s")]
    pub bmc_poll: Duration,
    /// BMC calls in flight at once on this instance.
    #[arg(long, default_value_t = 64)]
    pub bmc_concurrency: usize,
    /// One BMC request's timeout.
    #[arg(long, value_parser = topo::duration::parse_flag, default_value = "5s")]
    pub bmc_timeout: Duration,
    /// Retries of a BMC request that timed out or failed transiently.
    #[arg(long, default_value_t = 2)]
    pub bmc_retries: u32,
}

impl PowerArgs {
    /// The options these flags give.
    pub fn options(&self) -> PowerOptions {
        PowerOptions {
            credentials: self.credentials.clone(),
            bmc_ca_file: self.bmc_ca_file.clone(),
            bmc_poll: self.bmc_poll,
            bmc_concurrency: self.bmc_concurrency,
            bmc_timeout: self.bmc_timeout,
            bmc_retries: self.bmc_retries,
        }
    }
}
