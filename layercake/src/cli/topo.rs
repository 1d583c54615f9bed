//! `layercake topo check|gen|key`: validating, generating and keying
//! topology files.
//!
//! `check` prints a one-line summary and exits 0, or prints every problem
//! it finds as `file:line:column: message` and exits 1. `gen` refuses
//! settings whose file `check` would reject; `key --out` creates the key
//! file 0600.

use anyhow::Result;
use clap::Args;
use topo::generate::{GenSpec, generate};
use topo::{Role, SyncSettings, Topology};

use crate::cli::TopoCmd;
use crate::daemon::cluster;

/// `layercake topo gen`.
#[derive(Args, Debug)]
pub struct GenArgs {
    /// Leaf nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Racks.
    #[arg(long, default_value_t = 10)]
    pub racks: usize,
    /// Tiers below the root, nodes included (2 = racks + nodes).
    #[arg(long, default_value_t = 2)]
    pub levels: usize,
    /// The cluster's name.
    #[arg(long, default_value = "cluster")]
    pub cluster: String,
    /// Hello interval of every level (dead: four hellos).
    #[arg(long, value_parser = topo::duration::parse_flag)]
    pub hello: Option<std::time::Duration>,
    /// Demo naming (`n0001`, racks `r01`) on loopback port PORT instead of
    /// the generator's (`n00001`, `r001`, port 7000).
    #[arg(long)]
    pub demo_port: Option<u16>,
    /// Add `key_file: FILE` to the topology.
    #[arg(long)]
    pub key_file: Option<std::path::PathBuf>,
}

/// Runs a `topo` command; returns the exit code.
pub fn main(cmd: TopoCmd) -> Result<i32> {
    match cmd {
        TopoCmd::Check { file } => Ok(check(&file)),
        TopoCmd::Gen(a) => {
            let yaml = gen_topology(&a)?.to_yaml();
            // Never write a file `check` rejects.
            let t = Topology::parse(&yaml, "the generated topology").map_err(|e| {
                anyhow::anyhow!("these settings make a topology `check` rejects: {e}")
            })?;
            compose(&t, "the generated topology").map_err(|e| {
                anyhow::anyhow!("these settings make a topology `check` rejects: {e}")
            })?;
            print!("{yaml}");
            Ok(0)
        }
        TopoCmd::Key { out } => {
            let hex = cluster::new_key_hex()?;
            match out {
                Some(path) => {
                    crate::security::secrets::write_private(&path, &format!("{hex}\n"))?;
                    println!("new cluster key in {} (mode 0600)", path.display());
                }
                None => {
                    private_stdout()?;
                    println!("{hex}");
                }
            }
            Ok(0)
        }
    }
}

/// When standard output is a regular file (`topo key > cluster.key`),
/// makes it private (0600) before the key is written into it.
fn private_stdout() -> Result<()> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;
    let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
    let f = std::fs::File::from(fd);
    if f.metadata()?.is_file() {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| anyhow::anyhow!("making the key file private (0600): {e}"))?;
    }
    Ok(())
}

/// What `run` composes from a topology: the tree, strategies per level,
/// standbys.
fn compose(t: &Topology, file: &str) -> std::result::Result<(), String> {
    let flat = t.flatten();
    let tree = overlay::tree::Tree::from_flat(&flat).map_err(|e| format!("{file}: {e}"))?;
    crate::sync::Spec::new(&flat, std::sync::Arc::new(tree)).map_err(|e| format!("{file}: {e}"))?;
    Ok(())
}

fn check(file: &std::path::Path) -> i32 {
    let loaded = Topology::load_all(file)
        .map_err(|errs| {
            let n = errs.len();
            let mut text: Vec<String> = errs.iter().map(ToString::to_string).collect();
            if n > 1 {
                text.push(format!("{}: {n} errors", file.display()));
            }
            text.join("\n")
        })
        .and_then(|t| {
            t.check_key_file().map_err(|e| e.to_string())?;
            compose(&t, &file.display().to_string())?;
            Ok(t)
        });
    match loaded {
        Ok(t) => {
            let flat = t.flatten();
            let count = |r: Role| flat.instances.iter().filter(|i| i.role == r).count();
            println!(
                "{}: ok: cluster {}, {} nodes, {} sub-parents, {} levels ({}), key_file {}",
                file.display(),
                t.cluster,
                count(Role::Leaf),
                count(Role::SubParent),
                t.levels.len(),
                t.levels
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                t.key_file
                    .as_ref()
                    .map_or("none".to_string(), |k| k.display().to_string()),
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn gen_topology(a: &GenArgs) -> Result<Topology> {
    let hello = a.hello.unwrap_or(SyncSettings::default().hello);
    let mut t = match a.demo_port {
        Some(port) => {
            cluster::demo_topology(a.nodes, a.racks, port, hello, topo::StrategyKind::Tree)?
        }
        None => {
            if a.nodes == 0 || a.racks == 0 || a.racks > a.nodes {
                anyhow::bail!("--nodes must be >= --racks >= 1");
            }
            if !(2..=topo::LEVELS_MAX).contains(&a.levels) {
                anyhow::bail!("--levels must be in 2..={}", topo::LEVELS_MAX);
            }
            generate(&GenSpec {
                cluster: a.cluster.clone(),
                nodes: a.nodes,
                racks: a.racks,
                levels: a.levels,
                sync: SyncSettings {
                    hello,
                    dead: hello * 4,
                    ..SyncSettings::default()
                },
            })
        }
    };
    t.cluster = a.cluster.clone();
    t.key_file = a.key_file.clone();
    Ok(t)
}
