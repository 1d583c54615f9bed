//! `layercake tokens create`: make an API token (see
//! [`crate::security::tokens`]).

use crate::security::tokens::{Role, create};

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
    }
}
