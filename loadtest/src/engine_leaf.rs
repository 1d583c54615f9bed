//! The state engine on every leaf (`loadtest run --engine`).
//!
//! - [`EngineShared`]: what every engine of one process shares: one
//!   `Arc<Graph>` and one `Arc<Registry>` for the virtual power and boot
//!   modules, the modules' delays and fault rates, the run seed, and the
//!   Cfg of each generation the root rolls out.
//! - [`EngineLeaf`]: one leaf's [`NodeEngine`] and the [`VirtualWorld`]
//!   that performs its module calls, on the instance's clock in
//!   milliseconds (virtual time in `sim`, `CLOCK_MONOTONIC` in `udp`).
//!
//! The scenario: generation 1 asks every node to be powered off
//! (PhysState POWER_OFF); generation 2 asks for powered on and booted (the
//! engine's [`virt::booted_target`]: PhysState POWER_ON, RunState SYNC,
//! PXE COMP). A leaf hands each Cfg to its engine and publishes the
//! engine's Dsc whenever it changes, adding the Cfg's `Generation`
//! extension only once the engine has converged on that Cfg. So when the
//! root holds a Dsc carrying the generation, the real mutation chain
//! (discover, power on, PXE wait and init, boot sync) has finished.
//!
//! **Simplification:** the engine runs with [`Relation::All`]. On a real
//! cluster CHILD-context steps (power, PXE) run on the node's parent or
//! acting sub-parent and only SELF steps (`boot_sync`) on the node itself;
//! in the loadtest each leaf simulates its own virtual power and boot.

use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use engine::driver::Driver;
use engine::executor::Relation;
use engine::graph::Graph;
use engine::registry::Registry;
use engine::value::Value;
use engine::virt::{self, VirtualConfig};
use proto::node::{Node, PhysState};
use proto::prost::Message;

use crate::app::{generation_in, set_generation};

/// Shortest virtual module step: short, so that a run stays fast.
pub const STEP_DELAY_MIN_MS: u64 = 5;
/// Longest virtual module step.
pub const STEP_DELAY_MAX_MS: u64 = 50;

/// Shared by every engine instance of one process.
pub struct EngineShared {
    graph: Arc<Graph>,
    registry: Arc<Registry>,
    modules: VirtualConfig,
    seed: u64,
    /// Cfg of generation 1 (no generation yet): powered off.
    off_cfg: Node,
    /// Cfg of later generations (no generation yet): powered on and booted.
    booted_cfg: Node,
}

impl EngineShared {
    /// Builds the virtual module set once; `fail_rate` and `hang_rate` are
    /// the per-step probabilities of a module error and of a hang.
    pub fn new(fail_rate: f64, hang_rate: f64, seed: u64) -> Result<EngineShared> {
        ensure!(
            (0.0..=1.0).contains(&fail_rate) && (0.0..=1.0).contains(&hang_rate),
            "--engine-fail-rate and --engine-hang-rate must be in [0, 1]"
        );
        ensure!(
            fail_rate + hang_rate <= 1.0,
            "--engine-fail-rate + --engine-hang-rate must be at most 1"
        );
        let (registry, graph) = virt::build().context("building the virtual module set")?;
        let Some(phys) = graph.set().var("/PhysState") else {
            bail!("the virtual module set does not track /PhysState");
        };
        let mut off = vec![0; graph.set().vars.len()];
        off[phys as usize] = PhysState::PowerOff as i32;
        let off_cfg = cfg_node(&graph, &registry, &off)?;
        let booted_cfg = cfg_node(&graph, &registry, &virt::booted_target(&graph))?;
        Ok(EngineShared {
            graph: Arc::new(graph),
            registry: Arc::new(registry),
            modules: VirtualConfig {
                delay_min_ms: STEP_DELAY_MIN_MS,
                delay_max_ms: STEP_DELAY_MAX_MS,
                fail_rate,
                hang_rate,
                on_fraction: 0.0,
            },
            seed,
            off_cfg,
            booted_cfg,
        })
    }

    /// The Cfg the root publishes for `generation`: generation 1 powers
    /// every node off, later ones power on and boot; it carries the
    /// generation.
    pub fn cfg(&self, generation: u64) -> Node {
        let mut n = if generation == 1 {
            self.off_cfg.clone()
        } else {
            self.booted_cfg.clone()
        };
        set_generation(&mut n, generation);
        n
    }

    /// The engine of leaf `id` named `name`, with its own virtual machine
    /// seeded from the run seed and `id`.
    pub fn leaf(&self, id: u32, name: &str) -> EngineLeaf {
        let seed = mix(self.seed ^ mix(u64::from(id)));
        EngineLeaf {
            driver: Driver::new(
                self.graph.clone(),
                self.registry.clone(),
                Relation::All,
                name,
                self.modules,
                seed,
            ),
            published: None,
        }
    }
}

/// A Cfg node holding the non-zero `values` of the graph's variables.
fn cfg_node(g: &Graph, reg: &Registry, values: &[i32]) -> Result<Node> {
    let mut n = Node::default();
    for (var, &x) in g.set().vars.iter().zip(values).filter(|(_, x)| **x != 0) {
        reg.set(&mut n, &var.path, &Value::Enum(x))
            .with_context(|| format!("setting {} in a Cfg", var.url))?;
    }
    Ok(n)
}

/// SplitMix64 finaliser: spreads related seeds (same run, nearby ids).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One leaf's engine and virtual machine, through the one engine driver
/// ([`engine::driver::Driver`], as layercake's nodes run it).
///
/// Inputs: [`EngineLeaf::handle_cfg`] when a Cfg arrives and
/// [`EngineLeaf::handle_timeout`] at [`EngineLeaf::poll_timeout`]; each
/// returns the Dsc to publish when it changed.
pub struct EngineLeaf {
    driver: Driver,
    /// The Dsc last returned for publication.
    published: Option<Bytes>,
}

impl EngineLeaf {
    /// A new Cfg: the engine replaces its chain. A Cfg equal to the current
    /// one (a re-delivery) changes nothing.
    #[must_use]
    pub fn handle_cfg(&mut self, cfg: Node, now_ms: u64) -> Option<Bytes> {
        if *self.driver.cfg() == cfg {
            return None;
        }
        if let Err(e) = self.driver.set_cfg(cfg, now_ms, false, false) {
            // Cannot happen with one node and two targets; the old chain stays.
            tracing::warn!("engine rejected a Cfg: {e}");
        }
        while self.driver.poll_step().is_some() {}
        self.dsc_if_changed()
    }

    /// Delivers module completions and step timeouts due at `now_ms`,
    /// starts the module calls the engine asks for.
    #[must_use]
    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<Bytes> {
        self.driver.drive(now_ms);
        while self.driver.poll_step().is_some() {}
        self.dsc_if_changed()
    }

    /// The next module completion or step deadline, milliseconds (it may
    /// be a stale step deadline; handling it is harmless).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.driver.poll_timeout()
    }

    /// True when the engine's Dsc is compatible with its Cfg.
    pub fn is_converged(&self) -> bool {
        self.driver.is_converged()
    }

    /// The Dsc to publish: the engine's, plus the Cfg's generation once
    /// the engine has converged on that Cfg.
    pub fn dsc(&self) -> Node {
        let mut n = self.driver.dsc().clone();
        let generation = generation_in(self.driver.cfg());
        if let Some(g) = generation.filter(|_| self.is_converged()) {
            set_generation(&mut n, g);
        }
        n
    }

    fn dsc_if_changed(&mut self) -> Option<Bytes> {
        let bytes = Bytes::from(self.dsc().encode_to_vec());
        if self.published.as_ref() == Some(&bytes) {
            return None;
        }
        self.published = Some(bytes.clone());
        Some(bytes)
    }
}

#[cfg(test)]
mod tests;
