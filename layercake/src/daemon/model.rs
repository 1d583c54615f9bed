//! The module set layercake runs and the helpers that read node states
//! through it.
//!
//! - [`Model`]: the registry (PXE, power, network, image sets and
//!   layercake's own `Control` extension) and the epistemic graph of the
//!   power module, the pxe module's declarations
//!   (`crate::modules::pxe::mutations`) and the image module (`power_off`
//!   stops images first), shared by the root and every node of a process.
//! - [`Control`]: the `layercake.control.Control` extension; its `Frozen`
//!   field carries freeze and thaw down to the nodes inside Cfg (and back up
//!   in Dsc, where it says whether the node's engine really is frozen).
//! - Cfg normalisation ([`Model::normalize`]): values that cannot be known
//!   in the wanted state (RunState while powered off) are reset to UNKNOWN,
//!   so a Cfg never asks for an unreachable state.

use std::sync::Arc;

use engine::graph::{BuildOptions, Graph};
use engine::mutation::MutationSet;
use engine::registry::{FieldDef, MessageExtension, Registry};
use engine::url::{Field, Path};
use engine::value::{Kind, Value};
use engine::virt;
use proto::node::Node;

use crate::modules::pxe;

/// The type URL of the [`Control`] extension's `Frozen` field.
pub const FROZEN_URL: &str = "type.googleapis.com/layercake.control.Control/Frozen";

/// Layercake's own per-node control flags, carried as an extension.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Control {
    /// Cfg: the node's engine must stop driving. Dsc: it has stopped.
    #[prost(bool, tag = "1")]
    pub frozen: bool,
}

fn control_extension() -> MessageExtension<Control> {
    MessageExtension::new(
        "layercake.control.Control",
        vec![FieldDef {
            name: "Frozen",
            kind: Kind::Bool,
            get: |m: &Control| Value::Bool(m.frozen),
            set: |m: &mut Control, v: &Value| {
                if let Value::Bool(b) = v {
                    m.frozen = *b;
                }
            },
        }],
    )
}

/// Why the module set could not be built (a programming error: the
/// declarations are static).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The extension registry refused the control extension.
    #[error("registry: {0}")]
    Registry(#[from] engine::registry::AccessError),
    /// A module declaration was rejected.
    #[error("module declarations: {0}")]
    Decl(#[from] engine::mutation::DeclError),
    /// The graph is too large.
    #[error("graph: {0}")]
    Graph(#[from] engine::graph::TooLarge),
    /// A variable the application relies on is not tracked.
    #[error("the module set does not track `{0}`")]
    Untracked(&'static str),
}

/// The registry and graph of one process, and the tracked variables the
/// application reads.
pub struct Model {
    /// Extensions: PXE and Control.
    pub registry: Arc<Registry>,
    /// The virtual power and boot modules' graph.
    pub graph: Arc<Graph>,
    /// Index of `/PhysState` among the graph's variables.
    pub phys: usize,
    /// Index of `/RunState`.
    pub run: usize,
    /// Index of the PXE state.
    pub pxe: usize,
    /// Index of the image set's state.
    pub image: usize,
    frozen: Path,
}

impl Model {
    /// Builds the registry and the graph once.
    pub fn new() -> Result<Model, ModelError> {
        let mut reg = Registry::with_pxe();
        reg.register(Arc::new(control_extension()))?;
        reg.register(Arc::new(crate::modules::power::config::extension()))?;
        reg.register(Arc::new(engine::images::extension()))?;
        reg.register(Arc::new(crate::modules::pxe::network::extension()))?;
        let mut modules = [
            virt::power_module(),
            pxe::mutations::module(),
            engine::images::module(crate::modules::image::STEP_TIMEOUT_MS),
        ];
        // Leaving SYNC stops the images first (and so waits while busy).
        engine::images::stop_before(&mut modules, &["power_off"]);
        let set = MutationSet::build(&reg, &modules)?;
        let graph = Graph::build(set, BuildOptions::default())?;
        let var = |url: &'static str| {
            graph
                .set()
                .var(url)
                .map(usize::from)
                .ok_or(ModelError::Untracked(url))
        };
        let (phys, run, pxe) = (var("/PhysState")?, var("/RunState")?, var(virt::PXE_URL)?);
        let image = var(engine::images::STATE_URL)?;
        let frozen = FROZEN_URL
            .parse()
            .map_err(|_| ModelError::Untracked(FROZEN_URL))?;
        Ok(Model {
            registry: Arc::new(reg),
            graph: Arc::new(graph),
            phys,
            run,
            pxe,
            image,
            frozen,
        })
    }

    /// The tracked values of `node` (0 = unknown / any).
    pub fn project(&self, node: &Node) -> Vec<i32> {
        self.graph.project(&self.registry, node)
    }

    /// The Cfg target of `cfg`: its tracked values with the unknowable ones
    /// stripped.
    pub fn target(&self, cfg: &Node) -> Vec<i32> {
        let mut t = self.project(cfg);
        self.graph.strip(&mut t);
        t
    }

    /// Resets the tracked values of `cfg` that cannot be known in the state
    /// it asks for (e.g. RunState when PhysState is POWER_OFF).
    pub fn normalize(&self, cfg: &mut Node) {
        let raw = self.project(cfg);
        let stripped = self.target(cfg);
        for (i, var) in self.graph.set().vars.iter().enumerate() {
            if raw[i] != stripped[i] {
                // Cannot fail: tracked variables are enums with a zero value.
                let _ = self.registry.set(cfg, &var.path, &Value::Enum(0));
            }
        }
    }

    /// True when every value `target` asks for is present in `dsc`.
    pub fn matches(target: &[i32], dsc: &[i32]) -> bool {
        target.iter().zip(dsc).all(|(t, d)| *t == 0 || t == d)
    }

    /// The Control/Frozen flag of a node.
    pub fn frozen(&self, n: &Node) -> bool {
        matches!(self.registry.get(n, &self.frozen), Ok(Value::Bool(true)))
    }

    /// Sets the Control/Frozen flag of a node.
    pub fn set_frozen(&self, n: &mut Node, frozen: bool) {
        // Cannot fail: the extension is registered and the kind is Bool.
        let _ = self.registry.set(n, &self.frozen, &Value::Bool(frozen));
    }

    /// Every readable value of `node` as `URL -> text` (enums by name);
    /// identity bytes are left out.
    pub fn values(&self, node: &Node) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for p in self.registry.paths(node) {
            if matches!(p, Path::Field(Field::Id | Field::ParentId)) {
                continue;
            }
            let (Ok(kind), Ok(v)) = (self.registry.kind(&p), self.registry.get(node, &p)) else {
                continue;
            };
            out.insert(p.to_string(), serde_json::Value::String(kind.display(&v)));
        }
        out
    }

    /// The name of value `x` of tracked variable `var`.
    pub fn name_of(&self, var: usize, x: i32) -> &'static str {
        self.graph.set().vars[var].spec.name_of(x).unwrap_or("?")
    }

    #[cfg(test)]
    /// The Cfg asking for "powered on and booted" (PhysState POWER_ON,
    /// RunState SYNC, PXE COMP) on top of `base`.
    pub fn booted(&self, base: &Node) -> Node {
        let mut n = base.clone();
        let target = virt::booted_target(&self.graph);
        for (var, &x) in self.graph.set().vars.iter().zip(&target) {
            if x != 0 {
                let _ = self.registry.set(&mut n, &var.path, &Value::Enum(x));
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_off_strips_run_state() {
        let m = Model::new().unwrap();
        let mut cfg = m.booted(&m.registry.new_node("n1"));
        assert_eq!(m.target(&cfg)[m.run], 2);
        cfg.phys_state = 1;
        m.normalize(&mut cfg);
        assert_eq!(cfg.run_state, 0, "RunState is unknowable while off");
        assert_eq!(cfg.phys_state, 1);
    }

    #[test]
    fn frozen_flag_round_trips() {
        let m = Model::new().unwrap();
        let mut n = m.registry.new_node("n1");
        assert!(!m.frozen(&n));
        m.set_frozen(&mut n, true);
        assert!(m.frozen(&n));
        assert_eq!(m.values(&n)[FROZEN_URL], "true");
    }
}
