//! Small tools: shell completions and man pages from the command line's
//! own definition (`clap_complete`, `clap_mangen`), and `hostlist
//! expand|compress|count` for scripts.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Subcommand};

use crate::cli::Cli;

/// `layercake hostlist ...`.
#[derive(Subcommand, Debug)]
pub enum HostlistCmd {
    /// One name per line: `hostlist expand 'n[01-03],gpu1'`.
    Expand {
        /// Hostlists.
        #[arg(required = true)]
        exprs: Vec<String>,
    },
    /// One hostlist of the names given as arguments, or one per line on
    /// standard input (sorted, duplicates dropped).
    Compress {
        /// Names (default: standard input).
        names: Vec<String>,
    },
    /// How many names a hostlist holds (without expanding it).
    Count {
        /// Hostlists.
        #[arg(required = true)]
        exprs: Vec<String>,
    },
}

/// Most names `hostlist expand` prints (use `count` first for more).
const EXPAND_MAX: u64 = 10_000_000;

/// Runs a `hostlist` command.
pub fn hostlist(cmd: HostlistCmd) -> Result<i32> {
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    match cmd {
        HostlistCmd::Expand { exprs } => {
            for e in &exprs {
                let n = topo::hostlist::count(e).with_context(|| format!("`{e}`"))?;
                if n > EXPAND_MAX {
                    bail!("`{e}` holds {n} names; `expand` prints at most {EXPAND_MAX}");
                }
                for name in topo::hostlist::expand(e).with_context(|| format!("`{e}`"))? {
                    writeln!(out, "{name}")?;
                }
            }
        }
        HostlistCmd::Compress { names } => {
            let names = if names.is_empty() {
                let mut v = Vec::new();
                for line in std::io::stdin().lock().lines() {
                    let line = line.context("reading standard input")?;
                    v.extend(line.split_whitespace().map(str::to_string));
                }
                v
            } else {
                names
            };
            let mut names = names;
            names.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
            names.dedup();
            writeln!(out, "{}", topo::hostlist::compress(&names))?;
        }
        HostlistCmd::Count { exprs } => {
            let mut total: u64 = 0;
            for e in &exprs {
                let n = topo::hostlist::count(e).with_context(|| format!("`{e}`"))?;
                total = total
                    .checked_add(n)
                    .context("the total does not fit in 64 bits")?;
            }
            writeln!(out, "{total}")?;
        }
    }
    out.flush()?;
    Ok(0)
}

/// Orders `n2` before `n10`: the text before the trailing digits, then
/// their value, then their width (`n02` after `n2`).
fn natural_key(name: &str) -> (&str, u128, usize) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = name.split_at(name.len() - digits);
    (head, tail.parse().unwrap_or(0), digits)
}

/// Writes the completion script of `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "layercake", &mut std::io::stdout());
    Ok(0)
}

/// Writes `layercake.1` and one page per subcommand (`layercake-ctl.1`,
/// `layercake-ctl-set.1`, ...) into `dir`.
pub fn man(dir: &Path) -> Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = Cli::command();
    let mut written = 0usize;
    write_pages(&cmd, "layercake", dir, &mut written)?;
    println!("{written} man page(s) in {}", dir.display());
    Ok(0)
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, written: &mut usize) -> Result<()> {
    let page = cmd.clone().name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page.clone())
        .render(&mut buf)
        .with_context(|| format!("rendering {name}(1)"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    *written += 1;
    for sub in page.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
