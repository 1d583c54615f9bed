//! The thin async shell: runs one [`NodeEngine`] on tokio, performing its
//! actions through [`Module`]s and arming its timer on real time.
//!
//! - [`Module`]: the one trait a module implements: declare its mutations
//!   and discoveries, and perform one (reporting the values it changed or
//!   discovered).
//! - [`run_node`]: the driver task; it owns the engine and receives every
//!   outside input through one [`Input`] channel.

use crate::mutation::ModuleDecl;
use crate::node::NodeEngine;
use crate::url::Path;
use crate::value::Value;
use proto::node::Node;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One step a module must perform.
#[derive(Debug, Clone)]
pub struct MutationRequest {
    /// Node name.
    pub node: String,
    /// Mutation name.
    pub mutation: String,
    /// The node's Cfg.
    pub cfg: Node,
    /// The node's Dsc.
    pub dsc: Node,
}

/// A module's answer failed; the engine treats it like a timeout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("module error: {0}")]
pub struct ModuleError(pub String);

/// Values a module changed or observed.
pub type Report = Vec<(Path, Value)>;

/// What a module implements.
pub trait Module: Send + Sync + 'static {
    /// Its mutations and discoveries.
    fn declare(&self) -> ModuleDecl;
    /// Performs one mutation or discovery.
    fn handle(&self, req: MutationRequest) -> BoxFuture<Result<Report, ModuleError>>;
}

/// An outside input to [`run_node`].
#[derive(Debug, Clone)]
pub enum Input {
    /// A new Cfg.
    Cfg(Node),
    /// A new full Dsc.
    Dsc(Node),
    /// Freeze the node.
    Freeze,
    /// Thaw the node.
    Thaw,
}

/// Drives `engine` until `inputs` closes, then returns it.
///
/// # Cancel safety
/// Dropping the future drops the engine and aborts module calls in flight.
pub async fn run_node(
    mut engine: NodeEngine,
    modules: Vec<Arc<dyn Module>>,
    mut inputs: mpsc::Receiver<Input>,
) -> NodeEngine {
    let by_name: HashMap<String, Arc<dyn Module>> =
        modules.into_iter().map(|m| (m.declare().name, m)).collect();
    let epoch = Instant::now();
    let now = || epoch.elapsed().as_millis() as u64;
    let mut running: JoinSet<(u32, Result<Report, ModuleError>)> = JoinSet::new();
    loop {
        spawn_actions(&mut engine, &by_name, &mut running);
        let deadline = engine
            .poll_timeout()
            .map(|ms| epoch + std::time::Duration::from_millis(ms));
        tokio::select! {
            input = inputs.recv() => match input {
                None => return engine,
                Some(i) => apply_input(&mut engine, i, now()),
            },
            Some(Ok((token, res))) = running.join_next(), if !running.is_empty() => {
                apply_report(&mut engine, token, res, now());
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(epoch)), if deadline.is_some() => {
                engine.handle_timeout(now());
            }
        }
    }
}

fn spawn_actions(
    engine: &mut NodeEngine,
    by_name: &HashMap<String, Arc<dyn Module>>,
    running: &mut JoinSet<(u32, Result<Report, ModuleError>)>,
) {
    while let Some(a) = engine.poll_action() {
        let m = engine.executor().graph().mutation(a.mutation).clone();
        let Some(module) = by_name.get(&m.module).cloned() else {
            tracing::warn!(module = %m.module, "no module for mutation {}", m.name);
            continue;
        };
        let req = MutationRequest {
            node: engine.cfg().nodename.clone(),
            mutation: m.name,
            cfg: engine.cfg().clone(),
            dsc: engine.dsc().clone(),
        };
        let fut = module.handle(req);
        running.spawn(async move { (a.token, fut.await) });
    }
}

fn apply_input(engine: &mut NodeEngine, input: Input, now_ms: u64) {
    match input {
        Input::Cfg(cfg) => {
            if let Err(e) = engine.set_cfg(cfg, now_ms) {
                tracing::warn!("Cfg rejected: {e}");
            }
        }
        Input::Dsc(dsc) => engine.handle_dsc(dsc, now_ms),
        Input::Freeze => engine.freeze(),
        Input::Thaw => engine.thaw(now_ms),
    }
}

fn apply_report(
    engine: &mut NodeEngine,
    token: u32,
    res: Result<Report, ModuleError>,
    now_ms: u64,
) {
    match res {
        Err(e) => {
            tracing::debug!("module failed: {e}");
            engine.handle_failed(token, now_ms);
        }
        Ok(report) => {
            let mut dsc = engine.dsc().clone();
            let reg = engine.registry().clone();
            for (path, v) in &report {
                if let Err(e) = reg.set(&mut dsc, path, v) {
                    tracing::warn!("bad report value: {e}");
                }
            }
            engine.handle_dsc(dsc, now_ms);
        }
    }
}
