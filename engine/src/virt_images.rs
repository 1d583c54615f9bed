//! A virtual image module: performs the image module's steps
//! ([`crate::images::module`]) on virtual time, for the loadtest and for
//! tests, with the states and rules of the real one (layercake's image
//! host) and a simulated container start time instead of containers.
//!
//! - [`build`]: the registry and graph of the virtual power and boot
//!   modules plus the image module (`power_off` stops the images first).
//! - [`VirtualImages`]: one node's simulated containers. Run it as the
//!   *external* module `image` of an [`crate::driver::Driver`]
//!   (`set_external(&["image"])`):
//!   - [`VirtualImages::handle_cfg`] after every new Cfg: when the Cfg
//!     changes what would run while the set is ACTIVE or FATAL, it returns
//!     the flip to UPDATE (feed it to `Driver::set_dsc_values`), so the
//!     engine plans `image_update`, which waits while the Dsc says
//!     `/Busy`=BUSY: the Busy rules are the declarations' Dsc gates, not
//!     this module's.
//!   - [`VirtualImages::handle_call`] for each step `Driver::poll_external`
//!     hands out; [`VirtualImages::poll_timeout`] says when the next one
//!     finishes and [`VirtualImages::poll_report`] returns its Dsc values
//!     (feed them to `Driver::set_dsc_values`, or `report_failed` the
//!     token of a step this module does not know).
//!   - [`VirtualImages::set_cfg`] and [`VirtualImages::pump`] do the above
//!     for a driver (the glue a caller would otherwise write).
//!   - [`VirtualImages::running`]: what runs now (name -> digest, command,
//!     start time), the ground truth a checker compares.
//!
//! What a step does: `image_discover` reports IDLE (nothing runs), ACTIVE
//! (what runs is what the Cfg asks for) or UPDATE; `image_start`,
//! `image_update` and `image_retry` replace what runs by the Cfg's active
//! images after a seeded start time in `[start_min_ms, start_max_ms]`
//! (the old container keeps running until then, as the real host
//! prepares first) and report ACTIVE; `image_stop_*` stop everything.
//! A step reads the Cfg held when it finishes (the real host reads it when
//! it starts, and reports UPDATE when it changed meanwhile: either way the
//! node ends running the newest Cfg). No step fails: the module models
//! start times, not faults.

use std::collections::{BTreeMap, VecDeque};

use prost::Message;
use proto::image::{ImageSet, ImageState};
use proto::node::Node;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::driver::Driver;
use crate::graph::{BuildOptions, Graph};
use crate::images::{self, STATE_URL, TYPE_URL};
use crate::mutation::MutationSet;
use crate::planner::PlanError;
use crate::registry::Registry;
use crate::url::Path;
use crate::value::Value;
use crate::virt::{self, VirtError};

/// The longest a discovery or a stop takes (virtual milliseconds): they
/// touch no image, only the runtime's state.
pub const QUICK_STEP_MS: u64 = 20;

/// Steps one module holds before the oldest are dropped (the engine runs
/// one step per node at a time; a dropped step times out like a lost one).
pub const JOBS_MAX: usize = 8;

/// The registry (PXE and image-set extensions) and the graph of the
/// virtual power and boot modules and the image module, whose steps may
/// take `step_timeout_ms`; `power_off` stops the images first.
pub fn build(step_timeout_ms: u64) -> Result<(Registry, Graph), VirtError> {
    let mut reg = Registry::with_pxe();
    reg.register(std::sync::Arc::new(images::extension()))?;
    let mut modules = [
        virt::power_module(),
        virt::boot_module(),
        images::module(step_timeout_ms),
    ];
    images::stop_before(&mut modules, &["power_off"]);
    let set = MutationSet::build(&reg, &modules)?;
    Ok((reg, Graph::build(set, BuildOptions::default())?))
}

/// One running (simulated) container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The Cfg's digest it came from (`sha256:<hex>`).
    pub digest: String,
    /// Its command.
    pub command: String,
    /// When it started (the caller's milliseconds).
    pub started_ms: u64,
}

/// What an image should run: `(digest, command)` per active image.
type Wanted = BTreeMap<String, (String, String)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    Discover,
    Roll,
    Stop,
}

#[derive(Clone, Copy, Debug)]
struct Job {
    due_ms: u64,
    token: u32,
    work: Option<Work>,
}

/// A finished step: its token and the Dsc values it reports, or `None`
/// for a step this module does not know (report it failed).
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The step's token.
    pub token: u32,
    /// The Dsc values to write, or `None`: the step failed.
    pub values: Option<Vec<(Path, Value)>>,
}

/// One node's simulated image runtime (see the module doc).
pub struct VirtualImages {
    start_min_ms: u64,
    start_max_ms: u64,
    rng: SmallRng,
    wanted: Wanted,
    running: BTreeMap<String, Container>,
    /// The set's state as last reported.
    state: ImageState,
    /// Steps in flight, in call order (due times are not ordered).
    jobs: VecDeque<Job>,
}

fn url(text: String) -> Path {
    text.parse().expect("image URLs are valid")
}

fn image_url(name: &str, field: &str) -> Path {
    url(format!("{TYPE_URL}/Image/{name}/{field}"))
}

/// The images a Cfg asks to run: those whose wanted state is not IDLE.
fn wanted_of(cfg: &Node) -> Wanted {
    let Some(any) = cfg.extensions.iter().find(|a| a.type_url == TYPE_URL) else {
        return Wanted::new();
    };
    let Ok(set) = ImageSet::decode(any.value.as_slice()) else {
        return Wanted::new();
    };
    set.images
        .into_iter()
        .filter(|(_, i)| i.state != ImageState::Idle as i32)
        .map(|(n, i)| (n, (i.digest, i.command)))
        .collect()
}

impl VirtualImages {
    /// A module whose container starts take a seeded time in
    /// `[start_min_ms, start_max_ms]`.
    pub fn new(start_min_ms: u64, start_max_ms: u64, seed: u64) -> VirtualImages {
        VirtualImages {
            start_min_ms,
            start_max_ms: start_max_ms.max(start_min_ms),
            rng: SmallRng::seed_from_u64(seed),
            wanted: Wanted::new(),
            running: BTreeMap::new(),
            state: ImageState::Unknown,
            jobs: VecDeque::new(),
        }
    }

    /// What runs now, by image name.
    pub fn running(&self) -> &BTreeMap<String, Container> {
        &self.running
    }

    fn matches(&self) -> bool {
        self.wanted.len() == self.running.len()
            && self.wanted.iter().all(|(n, (d, c))| {
                self.running
                    .get(n)
                    .is_some_and(|r| r.digest == *d && r.command == *c)
            })
    }

    fn set_state(&mut self, s: ImageState, out: &mut Vec<(Path, Value)>) {
        self.state = s;
        out.push((url(STATE_URL.into()), Value::Enum(s as i32)));
    }

    /// A new Cfg. Returns the Dsc values to write: the flip to UPDATE when
    /// the set is ACTIVE or FATAL and the Cfg asks for something else
    /// than what runs (empty otherwise).
    pub fn handle_cfg(&mut self, cfg: &Node) -> Vec<(Path, Value)> {
        let wanted = wanted_of(cfg);
        let changed = wanted != self.wanted;
        self.wanted = wanted;
        let mut out = Vec::new();
        let due = matches!(self.state, ImageState::Active | ImageState::Fatal);
        if changed && due && !self.matches() {
            self.set_state(ImageState::Update, &mut out);
            for name in self.running.keys().filter(|n| self.wanted.contains_key(*n)) {
                out.push((
                    image_url(name, "State"),
                    Value::Enum(ImageState::Update as i32),
                ));
            }
        }
        out
    }

    /// Starts the step `mutation` (a name of [`crate::images::module`])
    /// with `token` at `now_ms`; it finishes at [`Self::poll_timeout`].
    pub fn handle_call(&mut self, mutation: &str, token: u32, now_ms: u64) {
        let work = match mutation {
            "image_discover" => Some(Work::Discover),
            "image_start" | "image_update" | "image_retry" => Some(Work::Roll),
            m if m.starts_with("image_stop") => Some(Work::Stop),
            _ => None,
        };
        let took_ms = match work {
            Some(Work::Roll) => self.rng.random_range(self.start_min_ms..=self.start_max_ms),
            _ => self.rng.random_range(1..=QUICK_STEP_MS),
        };
        if self.jobs.len() >= JOBS_MAX {
            self.jobs.pop_front();
        }
        self.jobs.push_back(Job {
            due_ms: now_ms.saturating_add(took_ms),
            token,
            work,
        });
    }

    /// A new Cfg for `d` at `now_ms`: the driver takes it, then the flip
    /// to UPDATE (if any) is written to its Dsc. Returns the steps handed
    /// to this module (see [`Self::pump`]).
    pub fn set_cfg(&mut self, d: &mut Driver, cfg: Node, now_ms: u64) -> Result<u32, PlanError> {
        let flip = self.handle_cfg(&cfg);
        let r = d.set_cfg(cfg, now_ms, false, false);
        if !flip.is_empty() {
            // Cannot fail: the URLs are the extension's.
            let _ = d.set_dsc_values(&flip, now_ms);
        }
        let started = self.pump(d, now_ms);
        r.map(|()| started)
    }

    /// Runs `d` with this module as its external `image` module at
    /// `now_ms`: delivers the steps finished by then, drives the engine and
    /// takes the image steps it hands out. Returns how many steps were
    /// handed to this module (a checker counts those made while busy).
    pub fn pump(&mut self, d: &mut Driver, now_ms: u64) -> u32 {
        while let Some(r) = self.poll_report(now_ms) {
            match r.values {
                // Cannot fail: the URLs are the extension's.
                Some(v) => {
                    let _ = d.set_dsc_values(&v, now_ms);
                }
                None => d.report_failed(r.token, now_ms),
            }
        }
        d.drive(now_ms);
        let g = d.graph();
        let mut started = 0u32;
        // Why no loop: every step takes at least 1 ms, so none handed out
        // here finishes at `now_ms`.
        while let Some(c) = d.poll_external() {
            self.handle_call(&g.mutation(c.mutation).name, c.token, now_ms);
            started = started.saturating_add(1);
        }
        started
    }

    /// When the next step finishes.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.jobs.iter().map(|j| j.due_ms).min()
    }

    /// The next step finished at or before `now_ms`.
    #[must_use]
    pub fn poll_report(&mut self, now_ms: u64) -> Option<Report> {
        let i = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.due_ms <= now_ms)
            .min_by_key(|(_, j)| j.due_ms)
            .map(|(i, _)| i)?;
        let job = self.jobs.remove(i).expect("found");
        let values = job.work.map(|w| self.perform(w, job.due_ms));
        Some(Report {
            token: job.token,
            values,
        })
    }

    fn perform(&mut self, work: Work, at_ms: u64) -> Vec<(Path, Value)> {
        let mut out = Vec::new();
        match work {
            Work::Discover => {
                let s = if self.running.is_empty() {
                    ImageState::Idle
                } else if self.matches() {
                    ImageState::Active
                } else {
                    ImageState::Update
                };
                self.set_state(s, &mut out);
            }
            Work::Roll => self.roll(at_ms, &mut out),
            Work::Stop => {
                for name in std::mem::take(&mut self.running).into_keys() {
                    out.push((
                        image_url(&name, "State"),
                        Value::Enum(ImageState::Idle as i32),
                    ));
                    out.push((image_url(&name, "Running"), Value::Str(String::new())));
                }
                self.set_state(ImageState::Idle, &mut out);
            }
        }
        out
    }

    /// Makes what runs what the Cfg asks for: stale containers stop,
    /// changed or new ones start at `at_ms`, unchanged ones keep running.
    fn roll(&mut self, at_ms: u64, out: &mut Vec<(Path, Value)>) {
        let stale: Vec<String> = self
            .running
            .keys()
            .filter(|n| !self.wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in stale {
            self.running.remove(&name);
            out.push((
                image_url(&name, "State"),
                Value::Enum(ImageState::Idle as i32),
            ));
            out.push((image_url(&name, "Running"), Value::Str(String::new())));
        }
        for (name, (digest, command)) in &self.wanted {
            let same = self
                .running
                .get(name)
                .is_some_and(|r| r.digest == *digest && r.command == *command);
            if !same {
                self.running.insert(
                    name.clone(),
                    Container {
                        digest: digest.clone(),
                        command: command.clone(),
                        started_ms: at_ms,
                    },
                );
                out.push((image_url(name, "Running"), Value::Str(digest.clone())));
                let started = i64::try_from(at_ms).unwrap_or(i64::MAX);
                out.push((image_url(name, "Started"), Value::Int(started)));
            }
            out.push((
                image_url(name, "State"),
                Value::Enum(ImageState::Active as i32),
            ));
        }
        // The Cfg read is the one held now, so what runs is what it asks for.
        debug_assert!(self.matches());
        self.set_state(ImageState::Active, out);
    }
}

#[cfg(test)]
mod tests;
