//! `layercake run` and `layercake demo`: set up a process's world (the
//! overlay instances on a single-threaded `LocalSet`), the root's database,
//! API thread and metrics, then wait for SIGINT/SIGTERM (or the demo's
//! `--for`) and shut down gracefully.
//!
//! Threads: the main thread runs every overlay instance and the control
//! task; the API (axum) runs on a second thread with its own runtime and
//! reaches the root through [`crate::daemon::control::Control`].

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use engine::virt::{PXE_URL, VirtualConfig};
use metrics_exporter_prometheus::PrometheusHandle;
use overlay::envelope::ClusterKey;
use overlay::udp::Handle;
use tokio::sync::{broadcast, watch};
use topo::Role;

use crate::api::{ApiState, router};
use crate::daemon::cluster::Cluster;
use crate::daemon::control;
use crate::daemon::control::{Selection, WriteOp};
use crate::daemon::model::Model;
use crate::daemon::persist::CfgDb;
use crate::daemon::root::BUS_CAPACITY;
use crate::daemon::world::{self, QuicSetup, RootNode, WorldConfig};
use crate::modules::power::setup::{PowerOptions, PowerSetup};
use crate::security::certs::Pki;
use crate::security::tls::{ApiSecurity, ApiSecurityOptions};

/// How long shutdown waits for the API's open connections.
const API_SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// What one process serves.
pub struct Plan {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// The cluster key (`None`: a `--pki` instance that joins for its ring).
    pub key: Option<ClusterKey>,
    /// The instance's certificate (`run --pki`): join over QUIC.
    pub pki: Option<Pki>,
    /// How often a `--pki` instance fetches the root's keyring.
    pub key_poll: Duration,
    /// The instances this process hosts.
    pub ids: Vec<u32>,
    /// The virtual modules' delays and fault rates.
    pub modules: VirtualConfig,
    /// Seed of the virtual machines.
    pub seed: u64,
    /// The root's data directory.
    pub data_dir: PathBuf,
    /// The API's address.
    pub api: SocketAddr,
    /// The API's token and TLS settings.
    pub api_security: ApiSecurityOptions,
    /// BMC power options (`run` only).
    pub power: Option<PowerOptions>,
    /// Network boot (`run --boot-server`; needs `power`).
    pub boot: Option<crate::daemon::boot::BootOptions>,
    /// How the instances get QUIC identities (the dual driver).
    pub quic: QuicPlan,
    /// Where this process serves its own `/metrics` (any instance).
    pub metrics: Option<SocketAddr>,
    /// The demo's settings (`demo` only).
    pub demo: Option<DemoPlan>,
    /// A node's agent socket (`run` of a node).
    pub agent_socket: Option<PathBuf>,
    /// Image sets (`run --images`).
    pub images: Option<crate::modules::image::ImageOptions>,
}

/// Where QUIC identities come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuicPlan {
    /// None: plain UDP.
    Off,
    /// The instance's `--pki` certificate, if it has one.
    FromPki,
    /// A CA made for this process, a certificate per instance (the demo).
    Generate,
}

/// What `demo` adds to a plan.
pub struct DemoPlan {
    /// Exit after this long (`--for`).
    pub for_: Option<Duration>,
    /// Ask every node to boot at start.
    pub boot: bool,
    /// The data directory is temporary.
    pub remove_data_dir: bool,
}

/// Runs one process's instances, API and metrics until a signal (or the
/// demo's `--for`); returns the exit code.
pub fn serve(plan: Plan) -> Result<i32> {
    let limit = crate::daemon::sys::raise_nofile();
    let need = plan.ids.len() as u64 + 64;
    if limit < need {
        bail!(
            "this process may open {limit} files but needs about {need} (one socket per instance); raise `ulimit -n`"
        );
    }
    let model = Arc::new(Model::new()?);
    let prom = crate::daemon::metrics::install()?;
    let hosts_root = plan.ids.contains(&0);
    let db = if hosts_root {
        let db = CfgDb::open(&plan.data_dir)?;
        tracing::info!(
            "database {} (boot epoch {})",
            db.path().display(),
            db.epoch()
        );
        Some(Arc::new(db))
    } else {
        None
    };
    let security = if hosts_root {
        ApiSecurity::load(&plan.api_security, plan.api)?
    } else {
        ApiSecurity::default()
    };
    let listener = if hosts_root {
        let l = TcpListener::bind(plan.api)
            .with_context(|| format!("binding the API at {}", plan.api))?;
        l.set_nonblocking(true)?;
        Some(l)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let code = local.block_on(
        &rt,
        serve_world(&plan, model, prom, db, (listener, security)),
    );
    if plan.demo.as_ref().is_some_and(|d| d.remove_data_dir) {
        let _ = std::fs::remove_dir_all(&plan.data_dir);
    }
    code
}

async fn serve_world(
    plan: &Plan,
    model: Arc<Model>,
    prom: PrometheusHandle,
    db: Option<Arc<CfgDb>>,
    (listener, security): (Option<TcpListener>, ApiSecurity),
) -> Result<i32> {
    let bus = broadcast::channel(BUS_CAPACITY).0;
    let upload_ok = plan.api.ip().is_loopback() || security.tls.is_some();
    let me = plan.ids[0];
    let (key, pki) = (plan.key.clone(), plan.pki.as_ref());
    let setup = crate::daemon::join::Setup {
        cluster: &plan.cluster,
        me,
        key,
        pki,
        poll: plan.key_poll,
    };
    let Some((ring, keys)) = crate::daemon::join::keyring(setup, db.as_ref(), upload_ok).await?
    else {
        return Ok(0); // a signal during the join
    };
    let cfg = WorldConfig {
        cluster: plan.cluster.clone(),
        key: ring
            .get(ring.primary())
            .expect("the primary key is in the ring"),
        ring: Some(ring),
        ids: plan.ids.clone(),
        modules: plan.modules,
        seed: plan.seed,
        db: db.clone(),
        bus: bus.clone(),
        power: match &plan.power {
            Some(p) => Some(PowerSetup::new(p)?),
            None => None,
        },
        quic: quic_setup(plan)?,
        agent_socket: plan.agent_socket.clone(),
        images: plan.images.clone(),
        boot: plan.boot.clone(),
    };
    let hosted = world::start(&cfg, &model)?;
    if let Some(b) = &plan.boot {
        let mut started = 0;
        for h in hosted
            .members
            .iter()
            .filter(|h| h.handle.peek(|n| n.app().has_bmc()))
        {
            let addr = plan.cluster.flat.instances[h.id as usize].addr;
            crate::daemon::boot::start(h.handle.clone(), b, addr).await?;
            started += 1;
        }
        if started == 0 {
            bail!(
                "--boot-server: this instance drives no BMC nodes (network boot runs on \
                 the sub-parent of nodes whose Cfg names a BMC, or its standby)"
            );
        }
    }
    tracing::info!(
        "sync: {}",
        if plan.cluster.sync.is_flat() {
            "flat gossip (the baseline)"
        } else if plan.cluster.sync.has_hybrid() {
            "tree with hybrid groups"
        } else {
            "tree"
        }
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut api_thread = None;
    let (ctl, rx) = control::control_channel(plan.cluster.leaves().count());
    let root = hosted.root.as_ref().map(|r| r.handle.clone());
    if let (Some(root), Some(db), Some(listener)) = (&root, &db, listener) {
        tokio::task::spawn_local(control::control_task(root.clone(), db.clone(), rx));
        let state = ApiState {
            ctl: ctl.clone(),
            view: root.peek(|n| n.app().view()),
            bus: bus.clone(),
            prom: Some(prom.clone()),
            model: model.clone(),
            shutdown: stop_rx.clone(),
            auth: security.tokens.clone(),
            keys,
        };
        let addr = listener.local_addr()?;
        let scheme = security.scheme();
        api_thread = Some(spawn_api(listener, state, security.tls, stop_rx.clone())?);
        println!("dashboard: {scheme}://{addr}/");
        println!("api: {scheme}://{addr}/api/v1");
        println!("metrics: {scheme}://{addr}/metrics");
    }
    if let Some(addr) = plan.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --metrics {addr}"))?;
        println!("metrics: http://{}/metrics", l.local_addr()?);
        tokio::task::spawn_local(crate::api::metrics_only(l, prom.clone(), stop_rx.clone()));
    }
    tokio::task::spawn_local(world::sampler_task(
        hosted,
        plan.cluster.clone(),
        Some(prom),
    ));
    let me = &plan.cluster.flat.instances[plan.ids[0] as usize];
    if plan.demo.is_none() {
        let role = match me.role {
            Role::Root => "root",
            Role::SubParent => "sub-parent",
            Role::Leaf => "node",
        };
        tracing::info!("{} running as {role} on {}", me.name, me.addr);
        // systemd's Type=notify: ready once the instance runs (and the
        // root's API listens); nothing happens outside systemd.
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::warn!("telling systemd we are ready: {e}");
        }
    }
    let code = match (&plan.demo, &root) {
        (Some(d), Some(root)) => run_demo(d, root, &ctl).await?,
        _ => {
            crate::daemon::sys::wait_for_signal().await?;
            0
        }
    };
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(t) = api_thread {
        let deadline = Instant::now() + API_SHUTDOWN_WAIT;
        while !t.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(code)
}

/// The QUIC identities of the hosted instances, as the plan says.
fn quic_setup(plan: &Plan) -> Result<Option<QuicSetup>> {
    match plan.quic {
        QuicPlan::Off => Ok(None),
        QuicPlan::FromPki => Ok(plan.pki.as_ref().map(|p| QuicSetup {
            ca: p.ca.clone(),
            ids: plan
                .ids
                .iter()
                .map(|&id| {
                    let ident = overlay::quic::Identity {
                        cert: p.id.cert.clone(),
                        key: p.id.key.clone(),
                    };
                    (id, ident)
                })
                .collect(),
        })),
        QuicPlan::Generate => {
            let ca = overlay::quic::Ca::generate(&plan.cluster.topo.cluster)?;
            let mut ids = std::collections::HashMap::new();
            for &id in &plan.ids {
                let name = &plan.cluster.flat.instances[id as usize].name;
                ids.insert(id, ca.issue(name)?);
            }
            Ok(Some(QuicSetup {
                ca: ca.cert().clone(),
                ids,
            }))
        }
    }
}

/// The root's REST API, event stream, dashboard and `/metrics` for a root
/// that another program hosts (loadtest's `--api`: the product's root on
/// the harness's overlay): spawns the control task on the current
/// `LocalSet` and the API on its own thread, exactly as `layercake run`
/// does, without authentication, so only on a loopback address. Returns
/// the API thread and the switch that stops it.
pub fn start_root_api<A: control::RootHost>(
    root: Handle<crate::sync::Node<A>>,
    db: Arc<CfgDb>,
    bus: crate::daemon::root::Bus,
    model: Arc<Model>,
    prom: Option<PrometheusHandle>,
    listener: TcpListener,
) -> Result<(std::thread::JoinHandle<()>, watch::Sender<bool>)> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        bail!("an API without tokens listens on loopback only, not {addr}");
    }
    let (nodes, view) = root
        .peek(|n| n.app().root().map(|r| (r.len(), r.view())))
        .context("this instance holds no root")?;
    let (ctl, rx) = control::control_channel(nodes);
    tokio::task::spawn_local(control::control_task(root, db, rx));
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = ApiState {
        ctl,
        view,
        bus,
        prom,
        model,
        shutdown: stop_rx.clone(),
        auth: None,
        keys: None,
    };
    let t = spawn_api(listener, state, None, stop_rx)?;
    Ok((t, stop_tx))
}

fn spawn_api(
    listener: TcpListener,
    state: ApiState,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: watch::Receiver<bool>,
) -> Result<std::thread::JoinHandle<()>> {
    // Two workers: one large answer being serialised (a full list of a big
    // cluster) does not hold up `/api/v1/health` and small requests.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("layercake-api")
        // Workers and blocking threads alike run below the overlay.
        .on_thread_start(|| {
            crate::daemon::sys::lower_thread_priority(crate::daemon::sys::API_NICE);
        })
        .enable_all()
        .build()?;
    let t = std::thread::Builder::new()
        .name("layercake-api".into())
        .spawn(move || {
            crate::daemon::sys::lower_thread_priority(crate::daemon::sys::API_NICE);
            rt.block_on(async move {
                let l = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("API listener: {e}");
                        return;
                    }
                };
                if let Some(t) = state.auth.clone() {
                    tokio::spawn(crate::security::tokens::reload_on_hangup(t));
                }
                crate::api::listen::serve(l, router(state), tls, stop).await;
            });
        })?;
    Ok(t)
}

/// Boots every node, shows progress, and waits for `--for` or a signal.
async fn run_demo(d: &DemoPlan, root: &Handle<RootNode>, ctl: &control::Control) -> Result<i32> {
    let total = root.peek(|n| n.app().len());
    if d.boot {
        let values = vec![
            ("/PhysState".to_string(), "POWER_ON".to_string()),
            ("/RunState".to_string(), "SYNC".to_string()),
            (PXE_URL.to_string(), "COMP".to_string()),
        ];
        let sel = Selection {
            all: true,
            ..Selection::default()
        };
        let r = ctl
            .write(
                sel,
                WriteOp::Set {
                    values,
                    replace: false,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("booting the demo nodes: {e}"))?;
        println!(
            "demo: {total} nodes asked to be POWER_ON and booted ({} Cfg changed)",
            r.changed
        );
    }
    let t0 = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let sleep = async {
        match d.for_ {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    let mut last = usize::MAX;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let c = root.peek(|n| n.app().converged());
                let secs = t0.elapsed().as_secs();
                if tty {
                    eprint!("\r\x1b[2Kprogress: converged {c}/{total} after {secs}s");
                } else if c != last || secs.is_multiple_of(10) {
                    eprintln!("progress: converged {c}/{total} after {secs}s");
                }
                last = c;
            }
            _ = &mut sleep => break,
            r = crate::daemon::sys::wait_for_signal() => { r?; break; }
        }
    }
    if tty {
        eprintln!();
    }
    let c = root.peek(|n| n.app().converged());
    println!("converged {c}/{total}");
    // Only `--for` makes the exit status depend on convergence; an
    // interrupted demo exits 0.
    Ok(if d.for_.is_none() || c == total { 0 } else { 1 })
}
