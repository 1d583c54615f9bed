//! The command line: every subcommand's arguments (clap) and the dispatch
//! to the code that runs it. The reference is `docs/cli.md`.

pub mod agent;
pub mod api_security;
pub mod apply;
pub mod boot;
pub mod certs;
pub mod ctl;
pub mod http;
pub mod keys;
pub mod listing;
pub mod power;
pub mod rollout;
pub mod start;
pub mod tokens;
pub mod tools;
pub mod topo;
pub mod urls;
pub mod yaml;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

/// The default API address of the root.
pub const DEFAULT_API: &str = "127.0.0.1:7180";

/// Layercake: Kraken's state engine and cluster provisioning.
#[derive(Parser, Debug)]
#[command(name = "layercake", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

impl Cli {
    /// True for client commands (quiet logs by default).
    pub fn is_client(&self) -> bool {
        matches!(
            self.cmd,
            Cmd::Ctl(_)
                | Cmd::Topo(_)
                | Cmd::Tokens(_)
                | Cmd::Keys(_)
                | Cmd::Certs(_)
                | Cmd::Hostlist(_)
                | Cmd::Completions { .. }
                | Cmd::Man { .. }
                | Cmd::Busy(_)
                | Cmd::Free(_)
        )
    }
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run one instance of a topology (root, sub-parent or node).
    Run(Box<RunArgs>),
    /// Run a whole simulated cluster on loopback in this process.
    Demo(DemoArgs),
    /// Talk to the root's API (kubectl-style).
    Ctl(ctl::CtlArgs),
    /// Topology tools.
    #[command(subcommand)]
    Topo(TopoCmd),
    /// API tokens (`tokens create`).
    #[command(subcommand)]
    Tokens(crate::cli::tokens::TokensCmd),
    /// The cluster keyring: generate, install, use, remove, list.
    Keys(crate::cli::keys::KeysArgs),
    /// The cluster CA and instance certificates (`certs init|issue`).
    #[command(subcommand)]
    Certs(crate::cli::certs::CertsCmd),
    /// Hostlists for scripts: expand, compress, count.
    #[command(subcommand)]
    Hostlist(tools::HostlistCmd),
    /// Print a shell completion script (`source <(layercake completions bash)`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (`layercake.1`, `layercake-ctl.1`, ...) into a
    /// directory.
    Man {
        /// The directory (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// On a node: report it busy (image changes and power off wait).
    Busy(agent::BusyArgs),
    /// On a node: report it free (waiting changes continue).
    Free(agent::BusyArgs),
}

/// The virtual modules' settings.
#[derive(Args, Debug, Clone)]
pub struct ModuleArgs {
    /// Shortest virtual power/boot step, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub step_min_ms: u64,
    /// Longest virtual power/boot step, milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub step_max_ms: u64,
    /// Probability that a virtual step reports a module error.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Probability that a virtual step never answers (it times out).
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Seed of the virtual machines.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `layercake run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The topology file.
    #[arg(long)]
    pub topology: PathBuf,
    /// This instance's name in the topology.
    #[arg(long)]
    pub id: String,
    /// Where the root keeps its database.
    #[arg(long, default_value = "/var/lib/layercake")]
    pub data_dir: PathBuf,
    /// The root's API, dashboard and metrics address.
    #[arg(long, default_value = DEFAULT_API)]
    pub api: SocketAddr,
    /// API tokens and TLS.
    #[command(flatten)]
    pub api_security: crate::cli::api_security::ApiSecurityArgs,
    /// The instance's certificate: join over QUIC for the keyring.
    #[command(flatten)]
    pub pki: crate::cli::certs::PkiArgs,
    /// How often a `--pki` instance fetches the root's keyring.
    #[arg(long, value_parser = ::topo::duration::parse_flag, default_value = "10s")]
    pub key_poll: Duration,
    /// Serve Prometheus metrics of this instance at `http://ADDR/metrics`
    /// (any instance; the root also serves them on its API).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// The virtual modules' settings (nodes without a BMC).
    #[command(flatten)]
    pub modules: ModuleArgs,
    /// BMC power control (sub-parents; see docs/power.md).
    #[command(flatten)]
    pub power: crate::cli::power::PowerArgs,
    /// A node's agent socket (`layercake busy|free`); `none`: no agent.
    #[arg(long, default_value = agent::DEFAULT_SOCKET)]
    pub agent_socket: PathBuf,
    /// Image sets (layer 1; see docs/images.md).
    #[command(flatten)]
    pub images: ImageArgs,
    /// Network boot (sub-parents; see docs/boot.md).
    #[command(flatten)]
    pub boot: crate::cli::boot::BootArgs,
}

/// `run`'s image-set flags.
#[derive(Args, Debug, Clone)]
pub struct ImageArgs {
    /// Run image sets: a node runs its containers, the root and the
    /// sub-parents serve and cache tarballs for their children over HTTP
    /// on TCP at their own topology address.
    #[arg(long)]
    pub images: bool,
    /// The root: the directory of image tarballs it serves.
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    /// The OCI runtime binary.
    #[arg(long, default_value = "runc")]
    pub runtime: PathBuf,
    /// Retries of a failing image before it is FATAL.
    #[arg(long, default_value_t = 3)]
    pub image_retries: u32,
    /// First backoff between retries (doubles per retry).
    #[arg(long, value_parser = ::topo::duration::parse_flag, default_value = "500ms")]
    pub image_backoff: Duration,
    /// How often a node checks that its containers run.
    #[arg(long, value_parser = ::topo::duration::parse_flag, default_value = "1s")]
    pub image_monitor: Duration,
}

/// `layercake demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Simulated nodes (`n0001`, `n0002`, ...).
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Racks (`r01`, ...), each with a sub-parent.
    #[arg(long, default_value_t = 10)]
    pub racks: usize,
    /// Sync strategy of the racks: `tree`, `hybrid` (sub-parent failover)
    /// or `gossip`.
    #[arg(long, default_value = "tree")]
    pub strategy: String,
    /// `auto`: UDP with the QUIC fallback (a CA made for the demo; plain
    /// UDP when the open-file limit is too low for two sockets per
    /// instance); `udp`: plain UDP.
    #[arg(long, default_value = "auto")]
    pub transport: String,
    /// Exit after this long: status 0 only if every node converged.
    #[arg(long = "for", value_parser = ::topo::duration::parse_flag)]
    pub for_: Option<Duration>,
    /// API, dashboard and metrics address (port 0: any free port).
    #[arg(long, default_value = DEFAULT_API)]
    pub api: SocketAddr,
    /// API tokens and TLS (default: no token, loopback only).
    #[command(flatten)]
    pub api_security: crate::cli::api_security::ApiSecurityArgs,
    /// Where the root keeps its database (default: a fresh temporary
    /// directory, removed at exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// UDP port of every instance (each has its own 127.x address; 0: pick
    /// a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Hello interval of every level (dead is four hellos).
    #[arg(long, value_parser = ::topo::duration::parse_flag, default_value = "1s")]
    pub hello: Duration,
    /// Do not ask for every node powered on and booted at start.
    #[arg(long)]
    pub no_boot: bool,
    /// Virtual modules.
    #[command(flatten)]
    pub modules: ModuleArgs,
}

/// `layercake topo ...`.
#[derive(Subcommand, Debug)]
pub enum TopoCmd {
    /// Check a topology file; errors name file:line:column.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Write a generated topology (YAML) to standard output.
    Gen(topo::GenArgs),
    /// A new random cluster key (64 hex digits): into `--out FILE`
    /// (created 0600, never overwritten), or to standard output (made
    /// 0600 when it is a file).
    Key {
        /// The key file to create.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// Runs the parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Run(a) => start::run(*a),
        Cmd::Demo(a) => start::demo(a),
        Cmd::Ctl(a) => Ok(ctl::main(a)),
        Cmd::Topo(t) => topo::main(t),
        Cmd::Tokens(t) => crate::cli::tokens::main(t),
        Cmd::Keys(k) => crate::cli::keys::main(k),
        Cmd::Certs(c) => crate::cli::certs::main(c),
        Cmd::Hostlist(h) => tools::hostlist(h),
        Cmd::Completions { shell } => tools::completions(shell),
        Cmd::Man { out } => tools::man(&out),
        Cmd::Busy(a) => agent::main("busy", a),
        Cmd::Free(a) => agent::main("free", a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_the_topology_duration_grammar() {
        let cli =
            Cli::try_parse_from(["layercake", "demo", "--hello", "1.5s", "--for", "1h"]).unwrap();
        let Cmd::Demo(d) = cli.cmd else {
            panic!("demo")
        };
        assert_eq!(d.hello, Duration::from_millis(1500));
        assert_eq!(d.for_, Some(Duration::from_secs(3600)));
        assert!(Cli::try_parse_from(["layercake", "demo", "--hello", "2"]).is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
