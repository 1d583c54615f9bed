//! `layercake`: one binary for every role of a Kraken cluster.
//!
//! - `layercake run --topology FILE --id NAME`: the instance `NAME` of the
//!   topology (root, sub-parent or node, from the topology).
//! - `layercake demo`: a root, sub-parents and simulated nodes in one
//!   process on loopback, with the dashboard, API and metrics.
//! - `layercake ctl ...`: the command-line client of the root's API.
//! - `layercake topo check|gen|key`: topology tools.
//! - `layercake tokens create`, `keys ...`, `certs init|issue`: API tokens,
//!   keyring rotation, the cluster CA (`docs/security.md`).
//!
//! Modules: [`cli`] (arguments), [`serve`] (run and demo), [`world`] (the
//! overlay instances), [`root`], [`member`], [`model`], [`persist`],
//! [`api`], [`bmc`] (BMC power wiring), [`dashboard`], [`metrics`], [`ctl`], [`http`], [`yaml`],
//! [`topo_cmd`], [`cluster`], [`sys`]; security: [`auth`] (API tokens),
//! [`api_tls`], [`secrets`] (private files), [`keys`] (keyring rotation),
//! [`certs`] (cluster CA), [`join`] (QUIC mutual-TLS join).
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod api;
mod api_tls;
mod auth;
mod bmc;
mod certs;
mod cli;
mod cluster;
mod ctl;
mod dashboard;
mod http;
mod join;
mod keys;
mod member;
mod metrics;
mod model;
mod persist;
mod root;
mod secrets;
mod serve;
mod sys;
mod topo_cmd;
mod world;
mod yaml;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    init_tracing(&args);
    let code = match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn init_tracing(args: &cli::Cli) {
    use tracing_subscriber::EnvFilter;
    let default = if args.is_client() { "warn" } else { "info" };
    let filter = EnvFilter::try_from_env("LAYERCAKE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
