//! The node's local agent: the busy socket ([`crate::modules::busy`])
//! wired into the node's own engine.
//!
//! [`start`] binds the socket, serves it, and applies every request
//! (from the socket or from the [`BusyHook`] it returns, for in-process
//! scheduler integrations) to the node's busy board; when the node turns
//! busy or free, its Dsc `/Busy` changes through
//! [`MemberApp::set_busy`](crate::daemon::member::MemberApp::set_busy),
//! which starts a step that waited for it within the same call.

use std::path::Path;

use anyhow::{Context, Result};
use overlay::udp::Handle;

use crate::daemon::world::MemberNode;
use crate::modules::busy::{self, Board, BusyHook};

/// Starts the agent of the node hosted in `h`, on the current `LocalSet`;
/// the node reports FREE at once. Returns the in-process hook.
pub fn start(h: Handle<MemberNode>, socket: &Path) -> Result<BusyHook> {
    let listener = busy::bind(socket)
        .with_context(|| format!("binding the agent socket {}", socket.display()))?;
    let (hook, mut rx) = BusyHook::channel();
    tokio::task::spawn_local(busy::serve(listener, hook.clone()));
    h.with(|n, now| n.with(now, |app, stack| app.set_busy(stack, now, false)));
    tokio::task::spawn_local(async move {
        let mut board = Board::default();
        while let Some((req, reply)) = rx.recv().await {
            let was = board.is_busy();
            let answer = board.apply(&req);
            if board.is_busy() != was {
                let b = board.is_busy();
                tracing::info!(
                    "the node reports itself {}",
                    if b { "BUSY" } else { "FREE" }
                );
                h.with(|n, now| n.with(now, |app, stack| app.set_busy(stack, now, b)));
            }
            let _ = reply.send(answer);
        }
    });
    tracing::info!("agent socket {}", socket.display());
    Ok(hook)
}
