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
//! Everything lives in the library (`layercake::*`, see its docs).
#![deny(missing_docs)]
#![deny(unsafe_code)]

use clap::Parser;
use layercake::cli;

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
    // No colour codes in files and the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
