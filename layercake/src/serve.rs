//! `layercake run` and `layercake demo`: set up a process's world (the
//! overlay instances on a single-threaded `LocalSet`), the root's database,
//! API thread and metrics, then wait for SIGINT/SIGTERM (or the demo's
//! `--for`) and shut down gracefully.
//!
//! Threads: the main thread runs every overlay instance and the control
//! task; the API (axum) runs on a second thread with its own runtime and
//! reaches the root through [`crate::world::Control`].

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
use topo::{Role, StrategyKind};

use crate::api::{ApiState, router};
use crate::api_tls::{ApiSecurity, ApiSecurityArgs};
use crate::certs::Pki;
use crate::cli::{DemoArgs, ModuleArgs, RunArgs};
use crate::cluster::{self, Cluster};
use crate::model::Model;
use crate::persist::CfgDb;
use crate::root::{BUS_CAPACITY, RootApp, Selection, WriteOp};
use crate::world::{self, WorldConfig};

/// How long shutdown waits for the API's open connections.
const API_SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// What one process serves.
struct Plan {
    cluster: Arc<Cluster>,
    /// The cluster key (`None`: a `--pki` instance that joins for its ring).
    key: Option<ClusterKey>,
    /// The instance's certificate (`run --pki`): join over QUIC.
    pki: Option<Pki>,
    /// How often a `--pki` instance fetches the root's keyring.
    key_poll: Duration,
    ids: Vec<u32>,
    modules: VirtualConfig,
    seed: u64,
    data_dir: PathBuf,
    api: SocketAddr,
    api_security: ApiSecurityArgs,
    /// BMC power options (`run` only).
    power: Option<crate::bmc::PowerArgs>,
    demo: Option<DemoPlan>,
}

struct DemoPlan {
    for_: Option<Duration>,
    boot: bool,
    remove_data_dir: bool,
}

fn modules(a: &ModuleArgs) -> Result<VirtualConfig> {
    if a.step_min_ms > a.step_max_ms {
        bail!("--step-min-ms must not exceed --step-max-ms");
    }
    let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
    if !rate_ok(a.fail_rate) || !rate_ok(a.hang_rate) || a.fail_rate + a.hang_rate > 1.0 {
        bail!("--fail-rate and --hang-rate must be in [0, 1] and add up to at most 1");
    }
    Ok(VirtualConfig {
        delay_min_ms: a.step_min_ms,
        delay_max_ms: a.step_max_ms,
        fail_rate: a.fail_rate,
        hang_rate: a.hang_rate,
        on_fraction: 0.0,
    })
}

fn check_strategy(s: StrategyKind) -> Result<()> {
    if s != StrategyKind::Tree {
        bail!(
            "sync strategy `{s}` is not built yet (only `tree`; hybrid and gossip come with sync-gossip)"
        );
    }
    Ok(())
}

/// `layercake run`.
pub fn run(a: RunArgs) -> Result<i32> {
    let cluster = Cluster::load(&a.topology)?;
    let id = cluster
        .flat
        .by_name(&a.id)
        .with_context(|| format!("`{}` is not an instance of {}", a.id, a.topology.display()))?;
    check_strategy(cluster.flat.instances[id as usize].sync.strategy)?;
    let pki = a.pki.load(&a.id)?;
    // With a certificate, an instance joins for its keyring; only the root
    // reads the topology's key (to seed its stored ring), if there is one.
    let key = match (&pki, id, &cluster.topo.key_file) {
        (Some(_), 0, None) | (Some(_), 1.., _) => None,
        _ => Some(cluster::read_key(&cluster.topo)?),
    };
    let plan = Plan {
        cluster: Arc::new(cluster),
        key,
        pki,
        key_poll: a.key_poll,
        ids: vec![id],
        modules: modules(&a.modules)?,
        seed: a.modules.seed,
        data_dir: a.data_dir,
        api: a.api,
        api_security: a.api_security,
        power: Some(a.power),
        demo: None,
    };
    serve(plan)
}

/// `layercake demo`.
pub fn demo(a: DemoArgs) -> Result<i32> {
    let strategy: StrategyKind = a
        .strategy
        .parse()
        .map_err(|e| anyhow::anyhow!("--strategy: {e}"))?;
    check_strategy(strategy)?;
    let port = if a.port == 0 {
        free_udp_port()?
    } else {
        a.port
    };
    let topo = cluster::demo_topology(a.nodes, a.racks, port, a.hello)?;
    let cluster = Cluster::new(topo)?;
    let ids = (0..cluster.flat.instances.len() as u32).collect();
    let (data_dir, remove) = match a.data_dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("layercake-demo-{}", std::process::id())),
            true,
        ),
    };
    let plan = Plan {
        cluster: Arc::new(cluster),
        key: Some(ClusterKey::from_seed(
            port as u64 ^ u64::from(std::process::id()) << 16,
        )),
        pki: None,
        key_poll: Duration::from_secs(10),
        ids,
        modules: modules(&a.modules)?,
        seed: a.modules.seed,
        data_dir,
        api: a.api,
        api_security: a.api_security,
        power: None,
        demo: Some(DemoPlan {
            for_: a.for_,
            boot: !a.no_boot,
            remove_data_dir: remove,
        }),
    };
    serve(plan)
}

/// A UDP port free on 127.0.0.1 right now (the demo binds it on every
/// 127.x address it uses).
fn free_udp_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(s.local_addr()?.port())
}

fn serve(plan: Plan) -> Result<i32> {
    let limit = crate::sys::raise_nofile();
    let need = plan.ids.len() as u64 + 64;
    if limit < need {
        bail!(
            "this process may open {limit} files but needs about {need} (one socket per instance); raise `ulimit -n`"
        );
    }
    let model = Arc::new(Model::new()?);
    let prom = crate::metrics::install()?;
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
    let setup = crate::join::Setup {
        cluster: &plan.cluster,
        me,
        key,
        pki,
        poll: plan.key_poll,
    };
    let Some((ring, keys)) = crate::join::keyring(setup, db.as_ref(), upload_ok).await? else {
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
            Some(p) => Some(crate::bmc::PowerSetup::new(p)?),
            None => None,
        },
    };
    let hosted = world::start(&cfg, &model)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut api_thread = None;
    let (ctl, rx) = world::control_channel();
    if let (Some(root), Some(db), Some(listener)) = (&hosted.root, &db, listener) {
        tokio::task::spawn_local(world::control_task(root.clone(), db.clone(), rx));
        let state = ApiState {
            ctl: ctl.clone(),
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
    tokio::task::spawn_local(world::sampler_task(
        hosted.root.clone(),
        hosted.members.clone(),
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
    }
    let code = match (&plan.demo, &hosted.root) {
        (Some(d), Some(root)) => run_demo(d, root, &ctl).await?,
        _ => {
            wait_for_signal().await?;
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

fn spawn_api(
    listener: TcpListener,
    state: ApiState,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) -> Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("layercake-api")
        .enable_all()
        .build()?;
    let t = std::thread::Builder::new()
        .name("layercake-api".into())
        .spawn(move || {
            rt.block_on(async move {
                let l = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("API listener: {e}");
                        return;
                    }
                };
                if let Some(t) = state.auth.clone() {
                    tokio::spawn(crate::auth::reload_on_hangup(t));
                }
                if let Some(tls) = tls {
                    crate::api_tls::serve(l, router(state), tls, stop).await;
                    return;
                }
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(l, router(state))
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!("API server: {e}");
                }
            });
        })?;
    Ok(t)
}

/// Waits for SIGINT or SIGTERM.
pub(crate) async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Boots every node, shows progress, and waits for `--for` or a signal.
async fn run_demo(d: &DemoPlan, root: &Handle<RootApp>, ctl: &world::Control) -> Result<i32> {
    let total = root.peek(RootApp::len);
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
                let c = root.peek(RootApp::converged);
                let secs = t0.elapsed().as_secs();
                if tty {
                    eprint!("\r\x1b[2Kprogress: converged {c}/{total} after {secs}s");
                } else if c != last || secs.is_multiple_of(10) {
                    eprintln!("progress: converged {c}/{total} after {secs}s");
                }
                last = c;
            }
            _ = &mut sleep => break,
            r = wait_for_signal() => { r?; break; }
        }
    }
    if tty {
        eprintln!();
    }
    let c = root.peek(RootApp::converged);
    println!("converged {c}/{total}");
    // Only `--for` makes the exit status depend on convergence; an
    // interrupted demo exits 0.
    Ok(if d.for_.is_none() || c == total { 0 } else { 1 })
}
