//! `layercake tokens create|list|revoke`: the root's API tokens (see
//! [`crate::security::tokens`]). The table holds hashes only, so `list`
//! shows roles and names, never tokens.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::security::secrets;
use crate::security::tokens::{Role, TokenTable, create};

/// `layercake tokens ...`.
#[derive(clap::Subcommand, Debug)]
pub enum TokensCmd {
    /// Make a token: write it to `--out` (0600) and add its hash to the
    /// root's table `--table` (created 0600 if missing).
    Create {
        /// `read` (GET and plan) or `admin` (everything).
        #[arg(long)]
        role: Role,
        /// Who holds it (shown in logs and 403 messages).
        #[arg(long)]
        name: String,
        /// The new token file (must not exist).
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
        /// The root's token table (`--api-tokens`).
        #[arg(long, value_name = "FILE")]
        table: std::path::PathBuf,
    },
    /// The roles and names the table accepts.
    List {
        /// The root's token table (`--api-tokens`).
        #[arg(long, value_name = "FILE")]
        table: PathBuf,
    },
    /// Remove every token of a holder from the table (then send the root
    /// SIGHUP, or `systemctl reload layercake-root`).
    Revoke {
        /// The holder's name (`tokens create --name`).
        name: String,
        /// The root's token table (`--api-tokens`).
        #[arg(long, value_name = "FILE")]
        table: PathBuf,
    },
}

/// Rewrites `table` without the lines of `name`; returns how many went.
/// The new table is written beside it (0600) and renamed over it, so a
/// crash leaves either the old or the new table.
fn revoke(table: &Path, name: &str) -> anyhow::Result<usize> {
    let text = secrets::read_private(table)?;
    // Checks the syntax first: a table the root would refuse stays as is.
    TokenTable::parse(&text, &table.display().to_string())?;
    let mut kept = String::new();
    let mut removed = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.len() == 3 && fields[1] == name {
            removed += 1;
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    if removed == 0 {
        bail!("{} has no token named `{name}`", table.display());
    }
    let tmp = table.with_extension(format!("new.{}", std::process::id()));
    secrets::write_private(&tmp, &kept)?;
    std::fs::rename(&tmp, table).with_context(|| format!("replacing {}", table.display()))?;
    Ok(removed)
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &[Role::Read, Role::Admin]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }))
    }
}

/// Runs a `tokens` command.
pub fn main(cmd: TokensCmd) -> anyhow::Result<i32> {
    match cmd {
        TokensCmd::Create {
            role,
            name,
            out,
            table,
        } => {
            create(role, &name, &out, &table)?;
            println!(
                "token `{name}` ({role}) written to {}; {} accepts it (send the root SIGHUP, or restart it, to load it)",
                out.display(),
                table.display()
            );
            Ok(0)
        }
        TokensCmd::List { table } => {
            let t = TokenTable::load(&table)?;
            println!("ROLE   NAME");
            for e in t.entries() {
                println!("{:<6} {}", e.role.to_string(), e.name);
            }
            Ok(0)
        }
        TokensCmd::Revoke { name, table } => {
            let n = revoke(&table, &name)?;
            println!(
                "revoked {n} token(s) of `{name}` in {}; send the root SIGHUP (or `systemctl reload layercake-root`) to apply",
                table.display()
            );
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_removes_only_that_holder() {
        let dir = std::env::temp_dir().join(format!("lc-revoke-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let table = dir.join("api.tokens");
        create(Role::Admin, "alice", &dir.join("a.token"), &table).unwrap();
        create(Role::Read, "bob", &dir.join("b.token"), &table).unwrap();
        assert_eq!(revoke(&table, "alice").unwrap(), 1);
        let t = TokenTable::load(&table).unwrap();
        let names: Vec<&str> = t.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bob"]);
        assert!(revoke(&table, "alice").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
