//! `layercake busy` / `layercake free` (and `busy --status`): the node's
//! own Busy, through its agent's local socket.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

/// The default agent socket of a node.
pub const DEFAULT_SOCKET: &str = "/run/layercake/agent.sock";

/// `layercake busy|free`.
#[derive(Args, Debug)]
pub struct BusyArgs {
    /// Who holds the node busy (the node is busy while any source does).
    #[arg(default_value = crate::modules::busy::DEFAULT_SOURCE)]
    pub source: String,
    /// The node agent's socket (`run --agent-socket`).
    #[arg(long, default_value = DEFAULT_SOCKET, env = "LAYERCAKE_AGENT_SOCKET")]
    pub socket: PathBuf,
    /// Only print whether the node is busy.
    #[arg(long)]
    pub status: bool,
}

/// Sends `verb` for `a.source`; prints the agent's answer. Exit 0 on
/// success, 1 when the agent refused the request.
pub fn main(verb: &str, a: BusyArgs) -> Result<i32> {
    let line = if a.status {
        "status".to_owned()
    } else {
        format!("{verb} {}", a.source)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = rt
        .block_on(crate::modules::busy::request(&a.socket, &line))
        .with_context(|| format!("talking to the node agent at {}", a.socket.display()))?;
    if let Some(e) = answer.strip_prefix("error: ") {
        eprintln!("error: {e}");
        return Ok(1);
    }
    println!("{answer}");
    Ok(0)
}
