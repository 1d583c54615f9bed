//! The image host: the task that runs a node's image set as containers,
//! performs the engine's image steps and keeps the containers alive.
//!
//! Inputs ([`Input`]): the image set the Cfg asks for, and the steps the
//! engine hands out (`image_discover`, `image_start`, `image_update`,
//! `image_retry`, `image_stop_*`). Output: Dsc values through [`Report`]
//! (the set's `State`, each image's `State`, `Running`, `Error`,
//! `Started`, `Restarts`).
//!
//! Rules:
//! - A roll prepares the new image first (fetch from the parent, check
//!   the digest, unpack), with [`HostConfig::retries`] retries and
//!   doubling backoff; only then is the old container replaced. When the
//!   retries are used up the image is FATAL with the reason in `Error`,
//!   and the old container keeps running.
//! - A Cfg that changes what would run while the set is ACTIVE or FATAL
//!   makes the set UPDATE, so the engine plans `image_update` (which waits
//!   while the node is busy).
//! - Every [`HostConfig::monitor`] each container's status is read; a
//!   container that died is restarted (`Restarts` counts), and after
//!   [`HostConfig::restart_max`] failed restarts in a row the image is
//!   FATAL.
//! - At start, containers left by an earlier run of this node are removed,
//!   so discovery finds the set IDLE. `image_stop_all` (sent by the node
//!   when it leaves SYNC) stops everything, whatever the set's state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::images::{STATE_URL, TYPE_URL};
use engine::url::Path;
use engine::value::Value;
use proto::image::ImageState;
use tokio::sync::mpsc;

use super::runtime::Runtime;
use super::spec::{Wanted, WantedImage};
use super::store::ImageStore;

/// What the host is told.
#[derive(Clone, Debug)]
pub enum Input {
    /// The image set the node's Cfg asks for.
    Cfg(Wanted),
    /// A step of the engine to perform (mutation name).
    Call(String),
}

/// Where the host's Dsc values go (the node's engine).
pub trait Report {
    /// New Dsc values.
    fn dsc(&self, values: Vec<(Path, Value)>);
}

/// Settings of a host.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The node's name (container ids are `lc-<node>-<image>`).
    pub node: String,
    /// Retries of a failing image before FATAL.
    pub retries: u32,
    /// First backoff; doubles per retry.
    pub backoff: Duration,
    /// How often containers are checked.
    pub monitor: Duration,
    /// Failed restarts in a row before FATAL.
    pub restart_max: u32,
}

struct Running {
    sha256: String,
    command: Vec<String>,
    id: String,
    bundle: PathBuf,
    started_ms: i64,
    restarts: i64,
    fails: u32,
}

struct Host<R> {
    cfg: HostConfig,
    store: Arc<ImageStore>,
    rt: Runtime,
    out: R,
    wanted: Wanted,
    running: BTreeMap<String, Running>,
    fatal: BTreeMap<String, String>,
    state: ImageState,
}

fn url(text: String) -> Path {
    text.parse().expect("image URLs are valid")
}

fn img(name: &str, field: &str) -> Path {
    url(format!("{TYPE_URL}/Image/{name}/{field}"))
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs the host until `rx` closes.
pub async fn run<R: Report>(
    cfg: HostConfig,
    store: Arc<ImageStore>,
    rt: Runtime,
    mut rx: mpsc::Receiver<Input>,
    out: R,
) {
    let mut h = Host {
        cfg,
        store,
        rt,
        out,
        wanted: Wanted::default(),
        running: BTreeMap::new(),
        fatal: BTreeMap::new(),
        state: ImageState::Unknown,
    };
    h.cleanup().await;
    let mut tick = tokio::time::interval(h.cfg.monitor);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(Input::Cfg(w)) => h.on_cfg(w),
                Some(Input::Call(m)) => h.on_call(&m).await,
                None => break,
            },
            _ = tick.tick() => h.monitor().await,
        }
    }
}

impl<R: Report> Host<R> {
    fn prefix(&self) -> String {
        format!("lc-{}-", self.cfg.node)
    }

    async fn cleanup(&mut self) {
        match self.rt.list().await {
            Ok(ids) => {
                for id in ids.iter().filter(|i| i.starts_with(&self.prefix())) {
                    tracing::info!("removing container {id} left by an earlier run");
                    if let Err(e) = self.rt.remove(id).await {
                        tracing::warn!("{e}");
                    }
                }
            }
            Err(e) => tracing::warn!("listing containers: {e}"),
        }
    }

    /// True when what runs is what `w` asks for.
    fn matches(&self, w: &Wanted) -> bool {
        let want: Vec<(&String, &WantedImage)> =
            w.images.iter().filter(|(_, i)| i.active).collect();
        want.len() == self.running.len()
            && want.iter().all(|(n, i)| {
                self.running
                    .get(*n)
                    .is_some_and(|r| r.sha256 == i.sha256 && r.command == i.command)
            })
            && w.invalid.is_empty()
    }

    fn set_state(&mut self, s: ImageState, out: &mut Vec<(Path, Value)>) {
        self.state = s;
        out.push((url(STATE_URL.into()), Value::Enum(s as i32)));
    }

    fn on_cfg(&mut self, w: Wanted) {
        let changed = w.differs(&self.wanted);
        self.wanted = w;
        let due = matches!(self.state, ImageState::Active | ImageState::Fatal);
        if changed && due && !self.matches(&self.wanted.clone()) {
            let mut v = Vec::new();
            self.set_state(ImageState::Update, &mut v);
            for name in self.wanted.images.keys() {
                if self.running.contains_key(name) {
                    v.push((img(name, "State"), Value::Enum(ImageState::Update as i32)));
                }
            }
            self.out.dsc(v);
        }
    }

    async fn on_call(&mut self, m: &str) {
        tracing::debug!("image step {m}");
        match m {
            "image_discover" => {
                let s = if self.running.is_empty() {
                    ImageState::Idle
                } else if self.matches(&self.wanted.clone()) {
                    ImageState::Active
                } else {
                    ImageState::Update
                };
                let mut v = Vec::new();
                self.set_state(s, &mut v);
                self.out.dsc(v);
            }
            "image_start" | "image_update" | "image_retry" => self.roll().await,
            _ if m.starts_with("image_stop") => self.stop_all().await,
            other => tracing::warn!("the image module has no step `{other}`"),
        }
    }

    async fn stop_all(&mut self) {
        let mut v = Vec::new();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for n in names {
            let r = self.running.remove(&n).expect("listed");
            if let Err(e) = self.rt.remove(&r.id).await {
                tracing::warn!("{e}");
            }
            v.push((img(&n, "State"), Value::Enum(ImageState::Idle as i32)));
            v.push((img(&n, "Running"), Value::Str(String::new())));
        }
        self.set_state(ImageState::Idle, &mut v);
        self.out.dsc(v);
    }

    /// Fetches, checks and unpacks `w`, then writes its bundle.
    async fn prepare(&self, name: &str, w: &WantedImage) -> Result<(PathBuf, String), String> {
        let tar = self
            .store
            .get(&w.source, &w.sha256)
            .await
            .map_err(|e| e.to_string())?;
        let rootfs = self
            .rt
            .rootfs(&tar, &w.sha256)
            .await
            .map_err(|e| e.to_string())?;
        let id = format!("{}{name}", self.prefix());
        let bundle = self
            .rt
            .bundle(&id, &rootfs, &w.command)
            .map_err(|e| e.to_string())?;
        Ok((bundle, id))
    }

    /// Prepares and (re)starts one image with bounded retries.
    async fn roll_one(&mut self, name: &str, w: &WantedImage, v: &mut Vec<(Path, Value)>) {
        let retries = self.cfg.retries.min(10);
        let mut wait = self.cfg.backoff;
        let mut attempt = 0;
        let last_error = loop {
            let r = match self.prepare(name, w).await {
                Ok((bundle, id)) => {
                    if self.running.contains_key(name) {
                        let _ = self.rt.remove(&id).await;
                        self.running.remove(name);
                    }
                    match self.rt.run(&id, &bundle).await {
                        Ok(()) => Ok((bundle, id)),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e),
            };
            match r {
                Ok((bundle, id)) => {
                    let started_ms = wall_ms();
                    self.running.insert(
                        name.to_owned(),
                        Running {
                            sha256: w.sha256.clone(),
                            command: w.command.clone(),
                            id,
                            bundle,
                            started_ms,
                            restarts: 0,
                            fails: 0,
                        },
                    );
                    self.fatal.remove(name);
                    v.push((img(name, "State"), Value::Enum(ImageState::Active as i32)));
                    v.push((
                        img(name, "Running"),
                        Value::Str(format!("sha256:{}", w.sha256)),
                    ));
                    v.push((img(name, "Error"), Value::Str(String::new())));
                    v.push((img(name, "Started"), Value::Int(started_ms)));
                    v.push((img(name, "Restarts"), Value::Int(0)));
                    tracing::info!("image {name} runs sha256:{}", &w.sha256[..12]);
                    return;
                }
                Err(e) if attempt < retries => {
                    attempt += 1;
                    tracing::warn!("image {name}: {e}; retry {attempt}/{retries} in {wait:?}");
                    self.out.dsc(vec![
                        (img(name, "State"), Value::Enum(ImageState::Error as i32)),
                        (img(name, "Error"), Value::Str(e)),
                    ]);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => break e,
            }
        };
        let reason = format!("{last_error} (after {} attempts)", attempt + 1);
        tracing::warn!("image {name} FATAL: {reason}");
        // Why: the old container (if any) keeps running, and `Running`
        // still names its digest.
        v.push((img(name, "State"), Value::Enum(ImageState::Fatal as i32)));
        v.push((img(name, "Error"), Value::Str(reason.clone())));
        self.fatal.insert(name.to_owned(), reason);
    }

    async fn roll(&mut self) {
        let mut v = Vec::new();
        let wanted = self.wanted.clone();
        for (name, reason) in &wanted.invalid {
            v.push((img(name, "State"), Value::Enum(ImageState::Fatal as i32)));
            v.push((img(name, "Error"), Value::Str(reason.clone())));
            self.fatal.insert(name.clone(), reason.clone());
        }
        let stale: Vec<String> = self
            .running
            .keys()
            .filter(|n| !wanted.images.get(*n).is_some_and(|w| w.active))
            .filter(|n| !wanted.invalid.contains_key(*n))
            .cloned()
            .collect();
        for n in stale {
            let r = self.running.remove(&n).expect("listed");
            let _ = self.rt.remove(&r.id).await;
            v.push((img(&n, "State"), Value::Enum(ImageState::Idle as i32)));
            v.push((img(&n, "Running"), Value::Str(String::new())));
        }
        for (name, w) in wanted.images.iter().filter(|(_, w)| w.active) {
            let same = self
                .running
                .get(name)
                .is_some_and(|r| r.sha256 == w.sha256 && r.command == w.command);
            if same {
                self.fatal.remove(name);
                v.push((img(name, "State"), Value::Enum(ImageState::Active as i32)));
                continue;
            }
            self.roll_one(name, w, &mut v).await;
        }
        for name in wanted
            .images
            .iter()
            .filter(|(_, w)| !w.active)
            .map(|(n, _)| n)
        {
            v.push((img(name, "State"), Value::Enum(ImageState::Idle as i32)));
        }
        self.fatal
            .retain(|n, _| wanted.images.contains_key(n) || wanted.invalid.contains_key(n));
        let s = if !self.fatal.is_empty() {
            ImageState::Fatal
        } else if self.matches(&wanted) {
            ImageState::Active
        } else {
            ImageState::Update
        };
        self.set_state(s, &mut v);
        self.out.dsc(v);
    }

    async fn monitor(&mut self) {
        let mut v = Vec::new();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for n in names {
            let (id, bundle) = {
                let r = &self.running[&n];
                (r.id.clone(), r.bundle.clone())
            };
            match self.rt.status(&id).await {
                Ok(Some(s)) if s == "running" || s == "created" => continue,
                Ok(s) => {
                    let s = s.as_deref().unwrap_or("gone");
                    tracing::warn!("container {id} is {s}: restarting it");
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            }
            let _ = self.rt.remove(&id).await;
            let r = self.rt.run(&id, &bundle).await;
            let run = self.running.get_mut(&n).expect("listed");
            match r {
                Ok(()) => {
                    run.restarts += 1;
                    run.fails = 0;
                    run.started_ms = wall_ms();
                    v.push((img(&n, "Started"), Value::Int(run.started_ms)));
                    v.push((img(&n, "Restarts"), Value::Int(run.restarts)));
                    v.push((img(&n, "State"), Value::Enum(ImageState::Active as i32)));
                }
                Err(e) => {
                    run.fails += 1;
                    v.push((img(&n, "Error"), Value::Str(e.to_string())));
                    if run.fails >= self.cfg.restart_max {
                        let reason = format!("{e} ({} restarts failed)", run.fails);
                        self.running.remove(&n);
                        v.push((img(&n, "State"), Value::Enum(ImageState::Fatal as i32)));
                        v.push((img(&n, "Error"), Value::Str(reason.clone())));
                        v.push((img(&n, "Running"), Value::Str(String::new())));
                        self.fatal.insert(n.clone(), reason);
                        self.set_state(ImageState::Fatal, &mut v);
                    } else {
                        v.push((img(&n, "State"), Value::Enum(ImageState::Error as i32)));
                    }
                }
            }
        }
        if !v.is_empty() {
            self.out.dsc(v);
        }
    }
}
