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
//! Scenario `roll` (`with images`): the module set adds the image module
//! ([`engine::virt_images`]: simulated container start times, the real
//! module's states and Busy gates); every generation's Cfg is "booted and
//! running image `app` of version `v<generation>`", so generation 1 boots
//! and starts v1 and generation 2 rolls v2. A leaf made busy
//! ([`EngineLeaf::set_busy`], as `layercake busy` on a node) reports
//! `/Busy`=BUSY in its Dsc; its [`BusyWatch`] (a checker, not part of the
//! module) notes any image step handed out and any container change while
//! it is busy.
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
use engine::images::{STATE_URL, TYPE_URL};
use engine::registry::Registry;
use engine::url::Path;
use engine::value::Value;
use engine::virt::{self, VirtualConfig};
use engine::virt_images::{self, Container, VirtualImages};
use proto::image::ImageSet;
use proto::node::{Busy, Node, PhysState};
use proto::prost::Message;
use std::collections::BTreeMap;

use crate::app::{generation_in, set_generation};

/// Shortest virtual module step: short, so that a run stays fast.
pub const STEP_DELAY_MIN_MS: u64 = 5;
/// Longest virtual module step.
pub const STEP_DELAY_MAX_MS: u64 = 50;

/// The image module's step timeout (Kraken's imageapi: one minute).
pub const IMAGE_STEP_TIMEOUT_MS: u64 = 60_000;
/// The name of the one image of the roll scenario's image sets.
pub const IMAGE_NAME: &str = "app";

/// The digest of image version `version` (virtual: a number, not a hash).
pub fn image_digest(version: u64) -> String {
    format!("sha256:{version:064x}")
}

/// The digest the running container of image `name` came from, as a node
/// state reports it.
pub fn running_digest(n: &Node, name: &str) -> Option<String> {
    let any = n.extensions.iter().find(|a| a.type_url == TYPE_URL)?;
    let set = ImageSet::decode(any.value.as_slice()).ok()?;
    let r = &set.images.get(name)?.running;
    (!r.is_empty()).then(|| r.clone())
}

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
    /// With images: the longest simulated container start, milliseconds
    /// (each takes a seeded time between half of it and all of it).
    image_start_ms: Option<u64>,
}

impl EngineShared {
    /// Builds the virtual module set once; `fail_rate` and `hang_rate` are
    /// the per-step probabilities of a module error and of a hang (of the
    /// power and boot modules); `image_start_ms` adds the virtual image
    /// module with that longest container start time.
    pub fn new(
        fail_rate: f64,
        hang_rate: f64,
        seed: u64,
        image_start_ms: Option<u64>,
    ) -> Result<EngineShared> {
        ensure!(
            (0.0..=1.0).contains(&fail_rate) && (0.0..=1.0).contains(&hang_rate),
            "--engine-fail-rate and --engine-hang-rate must be in [0, 1]"
        );
        ensure!(
            fail_rate + hang_rate <= 1.0,
            "--engine-fail-rate + --engine-hang-rate must be at most 1"
        );
        let (registry, graph) = match image_start_ms {
            Some(_) => virt_images::build(IMAGE_STEP_TIMEOUT_MS),
            None => virt::build(),
        }
        .context("building the virtual module set")?;
        let Some(phys) = graph.set().var("/PhysState") else {
            bail!("the virtual module set does not track /PhysState");
        };
        let mut off = vec![0; graph.set().vars.len()];
        off[phys as usize] = PhysState::PowerOff as i32;
        let off_cfg = cfg_node(&graph, &registry, &off)?;
        let mut booted = virt::booted_target(&graph);
        if image_start_ms.is_some() {
            let Some(img) = graph.set().var(STATE_URL) else {
                bail!("the module set does not track the image set's state");
            };
            booted[img as usize] = proto::image::ImageState::Active as i32;
        }
        let booted_cfg = cfg_node(&graph, &registry, &booted)?;
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
            image_start_ms,
        })
    }

    /// True when the leaves run the virtual image module (scenario `roll`).
    pub fn images(&self) -> bool {
        self.image_start_ms.is_some()
    }

    /// The Cfg the root publishes for `generation`: generation 1 powers
    /// every node off, later ones power on and boot; it carries the
    /// generation.
    /// With images every generation is booted and runs image
    /// [`IMAGE_NAME`] of version `v<generation>`.
    pub fn cfg(&self, generation: u64) -> Node {
        let mut n = if generation == 1 && !self.images() {
            self.off_cfg.clone()
        } else {
            self.booted_cfg.clone()
        };
        if self.images() {
            self.set_image(&mut n, generation);
        }
        set_generation(&mut n, generation);
        n
    }

    fn set_image(&self, n: &mut Node, version: u64) {
        let field = |f: &str| format!("{TYPE_URL}/Image/{IMAGE_NAME}/{f}");
        let values = [
            (
                format!("{TYPE_URL}/Name"),
                Value::Str(format!("v{version}")),
            ),
            (field("Source"), Value::Str(format!("app-v{version}.tar"))),
            (field("Digest"), Value::Str(image_digest(version))),
            (field("Command"), Value::Str("/bin/app".into())),
            (
                field("State"),
                Value::Enum(proto::image::ImageState::Active as i32),
            ),
        ];
        for (u, v) in values {
            let p: Path = u.parse().expect("image URLs are valid");
            self.registry
                .set(n, &p, &v)
                .expect("image values are valid");
        }
    }

    /// The engine of leaf `id` named `name`, with its own virtual machine
    /// seeded from the run seed and `id`.
    pub fn leaf(&self, id: u32, name: &str) -> EngineLeaf {
        let seed = mix(self.seed ^ mix(u64::from(id)));
        let mut driver = Driver::new(
            self.graph.clone(),
            self.registry.clone(),
            Relation::All,
            name,
            self.modules,
            seed,
        );
        let images = self.image_start_ms.map(|max| {
            driver.set_external(&["image"]);
            Box::new(VirtualImages::new(max / 2, max, mix(seed)))
        });
        EngineLeaf {
            driver,
            images,
            watch: BusyWatch::default(),
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
pub fn mix(mut z: u64) -> u64 {
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
    /// Scenario `roll`: the virtual image module (the driver's external
    /// `image` module).
    images: Option<Box<VirtualImages>>,
    watch: BusyWatch,
    /// The Dsc last returned for publication.
    published: Option<Bytes>,
}

/// A checker of the Busy rule, outside the module: while the node is busy,
/// no image step may be handed out and what runs may not change.
#[derive(Debug, Default)]
pub struct BusyWatch {
    /// What ran when the node became busy; `None` while free.
    held: Option<BTreeMap<String, Container>>,
    /// Image steps handed out while busy.
    pub calls_while_busy: u32,
    /// Times what runs changed while busy.
    pub changes_while_busy: u32,
}

impl BusyWatch {
    /// True when the node's images were touched while it was busy.
    pub fn interrupted(&self) -> bool {
        self.calls_while_busy > 0 || self.changes_while_busy > 0
    }

    fn check(&mut self, started: u32, images: Option<&VirtualImages>) {
        let Some(held) = &mut self.held else { return };
        self.calls_while_busy = self.calls_while_busy.saturating_add(started);
        let now = images.map(|v| v.running().clone()).unwrap_or_default();
        if *held != now {
            self.changes_while_busy = self.changes_while_busy.saturating_add(1);
            *held = now;
        }
    }
}

impl EngineLeaf {
    /// A new Cfg: the engine replaces its chain. A Cfg equal to the current
    /// one (a re-delivery) changes nothing.
    #[must_use]
    pub fn handle_cfg(&mut self, cfg: Node, now_ms: u64) -> Option<Bytes> {
        if *self.driver.cfg() == cfg {
            return None;
        }
        let r = match self.images.as_deref_mut() {
            Some(v) => v.set_cfg(&mut self.driver, cfg, now_ms),
            None => self.driver.set_cfg(cfg, now_ms, false, false).map(|()| 0),
        };
        match r {
            Ok(started) => self.watch.check(started, self.images.as_deref()),
            // Cannot happen with one node and reachable targets; the old
            // chain stays.
            Err(e) => tracing::warn!("engine rejected a Cfg: {e}"),
        }
        while self.driver.poll_step().is_some() {}
        self.dsc_if_changed()
    }

    /// The node says it is busy (`true`, as `layercake busy` does) or free:
    /// its Dsc `/Busy`; a step waiting for it to be free starts here.
    #[must_use]
    pub fn set_busy(&mut self, busy: bool, now_ms: u64) -> Option<Bytes> {
        let v = if busy { Busy::Busy } else { Busy::Free };
        let busy_url = Path::Field(engine::url::Field::Busy);
        if let Err(e) = self
            .driver
            .set_dsc_values(&[(busy_url, Value::Enum(v as i32))], now_ms)
        {
            tracing::warn!("setting /Busy: {e}");
        }
        if busy {
            // Before the pump: what runs now is what must stay.
            let running = self.images.as_deref().map(|i| i.running().clone());
            self.watch.held = Some(running.unwrap_or_default());
        } else {
            self.watch.held = None;
        }
        self.pump(now_ms);
        self.dsc_if_changed()
    }

    /// The Busy checker's findings.
    pub fn busy_watch(&self) -> &BusyWatch {
        &self.watch
    }

    /// What the image module runs (scenario `roll`), by image name.
    #[cfg(test)]
    pub fn running(&self) -> Option<&BTreeMap<String, Container>> {
        self.images.as_deref().map(VirtualImages::running)
    }

    fn pump(&mut self, now_ms: u64) {
        let started = match self.images.as_deref_mut() {
            Some(v) => v.pump(&mut self.driver, now_ms),
            None => {
                self.driver.drive(now_ms);
                0
            }
        };
        self.watch.check(started, self.images.as_deref());
        while self.driver.poll_step().is_some() {}
    }

    /// Delivers module completions and step timeouts due at `now_ms`,
    /// starts the module calls the engine asks for.
    #[must_use]
    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<Bytes> {
        self.pump(now_ms);
        self.dsc_if_changed()
    }

    /// The next module completion or step deadline, milliseconds (it may
    /// be a stale step deadline; handling it is harmless).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        let images = self.images.as_deref().and_then(VirtualImages::poll_timeout);
        [self.driver.poll_timeout(), images]
            .into_iter()
            .flatten()
            .min()
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
