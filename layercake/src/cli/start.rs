//! From the `run` and `demo` flags to a [`serve::Plan`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use engine::virt::VirtualConfig;
use overlay::envelope::ClusterKey;
use topo::StrategyKind;

use crate::cli::{DemoArgs, ModuleArgs, RunArgs};
use crate::daemon::cluster::{self, Cluster};
use crate::serve::{self, DemoPlan, Plan, QuicPlan};

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

fn image_options(
    a: &crate::cli::ImageArgs,
    data_dir: &std::path::Path,
) -> Result<Option<crate::modules::image::ImageOptions>> {
    if !a.images {
        if a.image_dir.is_some() {
            bail!("--image-dir needs --images");
        }
        return Ok(None);
    }
    if let Some(d) = &a.image_dir
        && !d.is_dir()
    {
        bail!("--image-dir {}: not a directory", d.display());
    }
    if a.image_retries > 10 {
        bail!("--image-retries: at most 10");
    }
    Ok(Some(crate::modules::image::ImageOptions {
        runtime: a.runtime.clone(),
        dir: data_dir.join("images"),
        serve_dir: a.image_dir.clone(),
        retries: a.image_retries,
        backoff: a.image_backoff,
        monitor: a.image_monitor,
    }))
}

/// `layercake run`.
pub fn run(a: RunArgs) -> Result<i32> {
    let cluster = Cluster::load(&a.topology)?;
    let id = cluster
        .flat
        .by_name(&a.id)
        .with_context(|| format!("`{}` is not an instance of {}", a.id, a.topology.display()))?;
    let pki = a.pki.load(&a.id)?;
    // With a certificate, an instance joins for its keyring; only the root
    // reads the topology's key (to seed its stored ring), if there is one.
    let key = match (&pki, id, &cluster.topo.key_file) {
        (Some(_), 0, None) | (Some(_), 1.., _) => None,
        _ => Some(cluster::read_key(&cluster.topo)?),
    };
    let images = image_options(&a.images, &a.data_dir)?;
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
        api_security: a.api_security.options(),
        power: Some(a.power.options()),
        boot: a.boot.options()?,
        quic: QuicPlan::FromPki,
        metrics: a.metrics,
        demo: None,
        agent_socket: Some(a.agent_socket).filter(|p| p.as_os_str() != "none"),
        images,
    };
    serve::serve(plan)
}

/// `layercake demo`.
pub fn demo(a: DemoArgs) -> Result<i32> {
    let strategy: StrategyKind = a
        .strategy
        .parse()
        .map_err(|e| anyhow::anyhow!("--strategy: {e}"))?;
    let port = if a.port == 0 {
        free_udp_port()?
    } else {
        a.port
    };
    let topo = cluster::demo_topology(a.nodes, a.racks, port, a.hello, strategy)?;
    let cluster = Cluster::new(topo)?;
    let ids: Vec<u32> = (0..cluster.flat.instances.len() as u32).collect();
    let quic = match a.transport.as_str() {
        "udp" => QuicPlan::Off,
        "auto" => {
            // Two sockets per instance with QUIC: fall back to plain UDP
            // when the process may not open that many files.
            let need = ids.len() as u64 * 2 + 64;
            let limit = crate::daemon::sys::raise_nofile();
            if limit < need {
                eprintln!(
                    "demo: plain UDP (the QUIC fallback needs {need} open files, the limit is {limit})"
                );
                QuicPlan::Off
            } else {
                QuicPlan::Generate
            }
        }
        other => bail!("--transport {other}: use `auto` (UDP with the QUIC fallback) or `udp`"),
    };
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
        api_security: a.api_security.options(),
        power: None,
        boot: None,
        quic,
        metrics: None,
        agent_socket: None,
        images: None,
        demo: Some(DemoPlan {
            for_: a.for_,
            boot: !a.no_boot,
            remove_data_dir: remove,
        }),
    };
    serve::serve(plan)
}

/// A UDP port free on 127.0.0.1 right now (the demo binds it on every
/// 127.x address it uses).
fn free_udp_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(s.local_addr()?.port())
}
