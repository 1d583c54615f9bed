//! `layercake certs init|issue` and the `--pki` options of `run` (see
//! [`crate::security::certs`]).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use crate::security::certs::{Pki, init_ca, issue};

/// `layercake certs ...`.
#[derive(Subcommand, Debug)]
pub enum CertsCmd {
    /// Make the cluster's CA in `--dir`.
    Init {
        /// Where the CA lives (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The cluster's name (in the CA's common name).
        #[arg(long, default_value = "layercake")]
        cluster: String,
    },
    /// Issue an instance's certificate and key.
    Issue {
        /// The CA's directory (`certs init --dir`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The instance's name in the topology, or a hostlist of names
        /// (`c[0001-1000]`: one certificate each).
        #[arg(long)]
        name: String,
        /// The instance's `--pki` directory (default: `--dir`).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Refuse a name that is not an instance of this topology.
        #[arg(long, value_name = "FILE")]
        topology: Option<PathBuf>,
    },
}

/// An instance's identity options (`run`).
#[derive(Args, Debug, Clone, Default)]
pub struct PkiArgs {
    /// A directory with `ca.crt`, `ID.crt` and `ID.key` (`certs issue --out`).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["ca", "cert", "key"])]
    pub pki: Option<PathBuf>,
    /// The cluster CA's certificate (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,
    /// This instance's certificate (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["ca", "key"])]
    pub cert: Option<PathBuf>,
    /// This instance's private key (PEM, mode 0600).
    #[arg(long, value_name = "FILE", requires_all = ["ca", "cert"])]
    pub key: Option<PathBuf>,
}

impl PkiArgs {
    /// The identity of instance `name`, if any option was given.
    pub fn load(&self, name: &str) -> Result<Option<Pki>> {
        let (ca, cert, key) = match (&self.pki, &self.ca, &self.cert, &self.key) {
            (Some(d), ..) => (
                d.join("ca.crt"),
                d.join(format!("{name}.crt")),
                d.join(format!("{name}.key")),
            ),
            (None, Some(a), Some(c), Some(k)) => (a.clone(), c.clone(), k.clone()),
            _ => return Ok(None),
        };
        Pki::load(&ca, &cert, &key).map(Some)
    }
}

/// Runs a `certs` command.
pub fn main(cmd: CertsCmd) -> Result<i32> {
    match cmd {
        CertsCmd::Init { dir, cluster } => {
            init_ca(&dir, &cluster)?;
            println!("CA for cluster `{cluster}` in {}", dir.display());
            Ok(0)
        }
        CertsCmd::Issue {
            dir,
            name,
            out,
            topology,
        } => {
            let names = ::topo::hostlist::expand(&name)
                .map_err(|e| anyhow::anyhow!("--name `{name}`: {e}"))?;
            if let Some(t) = topology {
                let c = crate::daemon::cluster::Cluster::load(&t)?;
                let unknown: Vec<String> = names
                    .iter()
                    .filter(|n| c.flat.by_name(n).is_none())
                    .cloned()
                    .collect();
                if !unknown.is_empty() {
                    bail!(
                        "not instances of {}: {} (nothing issued)",
                        t.display(),
                        ::topo::hostlist::compress(&unknown)
                    );
                }
            }
            let out = out.unwrap_or_else(|| dir.clone());
            for n in &names {
                issue(&dir, n, &out)?;
            }
            if let [one] = &names[..] {
                println!(
                    "{one}: {} and {} (with ca.crt)",
                    out.join(format!("{one}.crt")).display(),
                    out.join(format!("{one}.key")).display()
                );
            } else {
                println!(
                    "{} certificate(s) and key(s) for {name} in {} (with ca.crt)",
                    names.len(),
                    out.display()
                );
            }
            Ok(0)
        }
    }
}
